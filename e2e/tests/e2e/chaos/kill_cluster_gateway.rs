//! A cluster of three gateways on etcd, four agents each given one
//! gateway's address: kill -9 one gateway under load (its calls in flight
//! end typed, no node leaves the other gateways, the survivors serve, the
//! dead one leaves the member list within its lease TTL and rejoins when
//! started again); and etcd lost for a while (calls keep flowing, every
//! gateway says it is degraded, then catches up, a gateway started while
//! etcd was down among them).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use client::{Client, ClientConfig};
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::{GRACE, Record, assert_all_ended_typed, ms, print_figures, scenario, timed_call};
use crate::common::cluster::etcd_installed;
use crate::common::cluster::{ClusterFleet, LEASE_TTL_S};
use crate::common::{ADMIN, service};

const TIMEOUT: Duration = Duration::from_secs(5);
/// The agents, agent k given gateway k mod 3's address.
const NODES: [&str; 4] = ["node-0", "node-1", "node-2", "node-3"];
/// Callers per client.
const CALLERS: usize = 4;

/// Three gateways and the four agents, each registered on every gateway.
async fn three_gateways_four_nodes() -> ClusterFleet {
    let mut fleet = ClusterFleet::start(3, "").await;
    let work = service("work", "sleep", "max_concurrent = 16");
    for (k, id) in NODES.iter().enumerate() {
        fleet.spawn_agent(id, k % 3, &work);
    }
    fleet.wait_nodes_everywhere(&NODES).await;
    fleet
}

/// Callers of `work` (100 ms each) through one client, each call recorded
/// with the client's label.
struct Load {
    records: Arc<Mutex<Vec<(String, Record)>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    fn new() -> Self {
        Self {
            records: Arc::default(),
            stop: Arc::default(),
            tasks: Vec::new(),
        }
    }

    fn add(&mut self, label: &str, client: Client, t0: Instant) {
        for _ in 0..CALLERS {
            let (client, records, stop) = (client.clone(), self.records.clone(), self.stop.clone());
            let label = label.to_string();
            self.tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let r = timed_call(&client, "work", "100", TIMEOUT, t0).await;
                    let failed = !r.ok();
                    records.lock().await.push((label.clone(), r));
                    if failed {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }));
        }
    }

    async fn of(&self, label: &str) -> Vec<Record> {
        let records = self.records.lock().await;
        records
            .iter()
            .filter(|(l, _)| l == label)
            .map(|(_, r)| r.clone())
            .collect()
    }

    async fn finish(self) -> Vec<(String, Record)> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        self.records.lock().await.clone()
    }
}

/// How many nodes the gateway on admin address `admin` lists
/// (`GET /api/nodes`).
async fn node_ids(http: &reqwest::Client, admin: std::net::SocketAddr) -> Result<usize, String> {
    let url = format!("http://{admin}/api/nodes");
    let response = http
        .get(&url)
        .bearer_auth(ADMIN)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let body: Value = response.json().await.map_err(|e| format!("{url}: {e}"))?;
    body.as_array()
        .or_else(|| body["nodes"].as_array())
        .map(Vec::len)
        .ok_or_else(|| format!("no node list in {body}"))
}

/// Polls `/api/nodes` of the gateways on `admins` every 100 ms until
/// stopped; every answer that is not `want` nodes, with its time.
fn watch_nodes(
    admins: Vec<(String, std::net::SocketAddr)>,
    want: usize,
    stop: Arc<AtomicBool>,
    t0: Instant,
) -> JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let mut wrong = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            for (name, admin) in &admins {
                match node_ids(&http, *admin).await {
                    Ok(n) if n == want => {}
                    other => wrong.push(format!("{name} at {}: {other:?}", ms(t0.elapsed()))),
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        wrong
    })
}

/// Polls until no gateway of `survivors` lists `gone`; how long that took.
async fn wait_removed(
    fleet: &ClusterFleet,
    survivors: &[usize],
    gone: &str,
    limit: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let mut listed = None;
        for &i in survivors {
            match fleet.members_of(i).await {
                Ok(names) if !names.iter().any(|n| n == gone) => {}
                other => listed = Some(format!("{}: {other:?}", ClusterFleet::name(i))),
            }
        }
        let Some(listed) = listed else {
            return start.elapsed();
        };
        assert!(
            start.elapsed() < limit,
            "{gone} still listed {limit:?} on: {listed}\n{}",
            fleet.log_tails()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_a_cluster_gateway_no_node_leaves_the_others_and_it_rejoins() {
    if !etcd_installed() {
        return;
    }
    let name = "kill-cluster-gateway";
    scenario(name, Duration::from_secs(150), async {
        let mut fleet = three_gateways_four_nodes().await;
        let t0 = Instant::now();
        let mut load = Load::new();
        for i in 0..3 {
            load.add(&ClusterFleet::name(i), fleet.gateway(i).client(2).await, t0);
        }
        let bootstrap: Vec<String> = (0..3).map(|i| fleet.gateway(i).addr.to_string()).collect();
        let cluster_client = Client::connect(
            ClientConfig::for_cluster(bootstrap, fleet.ca())
                .with_connect_timeout(Duration::from_secs(1)),
        )
        .await
        .unwrap();
        load.add("cluster client", cluster_client, t0);
        let victim = 2;
        let survivors = [0, 1];
        let stop_watch = Arc::new(AtomicBool::new(false));
        let admins = survivors
            .iter()
            .map(|&i| (ClusterFleet::name(i), fleet.gateway(i).admin))
            .collect();
        let watcher = watch_nodes(admins, NODES.len(), stop_watch.clone(), t0);
        tokio::time::sleep(Duration::from_secs(2)).await;

        let killed = Instant::now();
        fleet.kill_gateway(victim);
        let killed_at = killed.duration_since(t0);
        let gone = ClusterFleet::name(victim);
        let ttl = Duration::from_secs(u64::from(LEASE_TTL_S));
        let removal = wait_removed(&fleet, &survivors, &gone, ttl * 5).await;
        // The cluster client's first call started after the kill and served.
        let served_elsewhere = loop {
            let first = load
                .of("cluster client")
                .await
                .iter()
                .filter(|r| r.at >= killed_at && r.ok())
                .map(|r| (r.at + r.took).saturating_sub(killed_at))
                .min();
            if let Some(d) = first {
                break d;
            }
            assert!(killed.elapsed() < Duration::from_secs(20), "no call served after the kill");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // A few seconds of load on the survivors.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let records = load.finish().await;

        let restarted = Instant::now();
        fleet.restart_gateway(victim).await;
        fleet.wait_members(3).await;
        fleet.wait_nodes_everywhere(&NODES).await;
        let rejoin = restarted.elapsed();
        stop_watch.store(true, Ordering::Relaxed);
        let wrong = watcher.await.unwrap();

        let of = |label: &str, after: bool| -> Vec<Record> {
            records
                .iter()
                .filter(|(l, r)| l == label && (r.at >= killed_at) == after)
                .map(|(_, r)| r.clone())
                .collect()
        };
        let victim_in_flight: Vec<Record> = of(&gone, false)
            .into_iter()
            .filter(|r| r.at + r.took > killed_at)
            .collect();
        let survivors_after: Vec<Record> = survivors
            .iter()
            .flat_map(|&i| of(&ClusterFleet::name(i), true))
            .collect();
        let all: Vec<Record> = records.iter().map(|(_, r)| r.clone()).collect();
        print_figures(&format!("{name} before"), &of("gw-0", false));
        print_figures(&format!("{name} in flight on {gone} at the kill"), &victim_in_flight);
        print_figures(&format!("{name} survivors after"), &survivors_after);
        print_figures(&format!("{name} cluster client after"), &of("cluster client", true));
        eprintln!(
            "chaos {name}: kill -9 of {gone} → removed from the survivors' lists {} (lease TTL {LEASE_TTL_S} s); → cluster client's first call served elsewhere {}; restart → a member with the 4 nodes again {}",
            ms(removal),
            ms(served_elsewhere),
            ms(rejoin)
        );

        assert_all_ended_typed(name, &all);
        assert!(
            all.iter().all(|r| r.took <= TIMEOUT + GRACE),
            "no call outlives its deadline plus the grace"
        );
        assert!(!victim_in_flight.is_empty(), "calls were in flight on {gone} at the kill");
        assert!(
            wrong.is_empty(),
            "a node left a survivor's fleet: {wrong:?}\n{}",
            fleet.log_tails()
        );
        assert!(!survivors_after.is_empty());
        let failed: Vec<&Record> = survivors_after.iter().filter(|r| !r.ok()).collect();
        assert!(
            failed.is_empty(),
            "calls through the survivors after the kill failed: {:?}",
            &failed[..failed.len().min(5)]
        );
        assert!(
            removal <= ttl + Duration::from_secs(1),
            "{gone} left the list {} after the kill, past TTL + 1 s",
            ms(removal)
        );
    })
    .await;
}

/// Whether gateway `i`'s `/api/cluster` says it is cut off from etcd.
async fn degraded(fleet: &ClusterFleet, i: usize) -> Result<bool, String> {
    let v = fleet.admin_json(i, "/api/cluster").await?;
    v["degraded"]
        .as_bool()
        .ok_or_else(|| format!("no degraded flag in {v}"))
}

/// Polls until every running gateway's degraded flag is `want`.
async fn wait_degraded(fleet: &ClusterFleet, want: bool, limit: Duration) -> Duration {
    let what = format!("degraded = {want} on every gateway");
    fleet
        .wait(&what, limit, async |i| match degraded(fleet, i).await {
            Ok(d) if d == want => Ok(()),
            other => Err(format!("{}: {other:?}", ClusterFleet::name(i))),
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_lost_calls_keep_flowing_gateways_say_degraded_then_catch_up() {
    if !etcd_installed() {
        return;
    }
    let name = "etcd-lost";
    scenario(name, Duration::from_secs(150), async {
        let mut fleet = three_gateways_four_nodes().await;
        let t0 = Instant::now();
        let mut load = Load::new();
        for i in 0..3 {
            load.add(&ClusterFleet::name(i), fleet.gateway(i).client(2).await, t0);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;

        let lost = Instant::now();
        fleet.etcd.stop();
        let lost_at = lost.duration_since(t0);
        let to_degraded = wait_degraded(&fleet, true, Duration::from_secs(20)).await;
        // A gateway started while etcd is down: gw-3.
        fleet.gateways.push(None);
        fleet.restart_gateway(3).await;
        // It starts degraded (it cannot join yet) and serves its admin port.
        wait_degraded(&fleet, true, Duration::from_secs(20)).await;
        // More calls with etcd gone, past a lease TTL.
        tokio::time::sleep(Duration::from_secs(u64::from(LEASE_TTL_S) + 1)).await;
        let down_for = lost.elapsed();

        let back = Instant::now();
        fleet.etcd.restart().expect("etcd restarts on its ports and data");
        let back_at = back.duration_since(t0);
        fleet.wait_members(4).await;
        let caught_up = back.elapsed();
        wait_degraded(&fleet, false, Duration::from_secs(20)).await;
        // The agents register with the newcomer too, and it serves.
        fleet.wait_nodes_everywhere(&NODES).await;
        let newcomer = fleet.gateway(3).client(1).await;
        let r = timed_call(&newcomer, "work", "1", TIMEOUT, t0).await;
        assert!(r.ok(), "a call through gw-3: {r:?}");
        let records = load.finish().await;

        let during: Vec<Record> = records
            .iter()
            .filter(|(_, r)| r.at >= lost_at && r.at < back_at)
            .map(|(_, r)| r.clone())
            .collect();
        let all: Vec<Record> = records.iter().map(|(_, r)| r.clone()).collect();
        print_figures(&format!("{name} with etcd down"), &during);
        print_figures(&format!("{name} all"), &all);
        eprintln!(
            "chaos {name}: etcd down {}: every gateway degraded {} after; back: all four members listed {} after",
            ms(down_for),
            ms(to_degraded),
            ms(caught_up)
        );
        assert_all_ended_typed(name, &all);
        assert!(!during.is_empty());
        let failed: Vec<&Record> = all.iter().filter(|r| !r.ok()).collect();
        assert!(
            failed.is_empty(),
            "calls failed while etcd was down or back: {:?}",
            &failed[..failed.len().min(5)]
        );
    })
    .await;
}
