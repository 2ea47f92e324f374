//! Clients of several gateways: the SDK's cluster client and the CLI given
//! a bootstrap list of three real gateway processes, each with a real agent
//! of its own (none of them on etcd, so each names itself alone and the
//! client spreads over the bootstrap list). Calls spread over all three;
//! after a kill -9 of one, the next calls all succeed through the others
//! within their deadlines; a call in flight on the killed gateway ends with
//! `GatewayLost` unless it is idempotent; a dead first address is skipped.
//! On a cluster on etcd ([`ClusterFleet`]), a client given one member
//! learns the others, spreads over them, drops a killed one and calls it
//! again once it is back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use client::{Client, ClientConfig, ClientError};
use tokio::process::Command;

use crate::chaos::{GRACE, GatewayProcess, Process, agent_process, scenario};
use crate::common::cluster::ClusterFleet;
use crate::common::cluster::etcd_installed;
use crate::common::{ADMIN, service};

const CLI: &str = env!("CARGO_BIN_EXE_switchyard-e2e-cli");

/// A call's deadline in these tests.
const DEADLINE: Duration = Duration::from_secs(8);

/// Three gateway processes (one CA), each with its own agent `node-N`
/// serving `echo` (cat) and `sleep`.
struct Three {
    _dir: tempfile::TempDir,
    gateways: Vec<GatewayProcess>,
    _agents: Vec<Process>,
}

impl Three {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let services = format!(
            "{}{}",
            service("echo", "command", "command = [\"cat\"]\nmax_concurrent = 8"),
            service("sleep", "sleep", "max_concurrent = 8"),
        );
        let first = GatewayProcess::start(dir.path(), "gw-0", "", None).await;
        let second = GatewayProcess::start(dir.path(), "gw-1", "", Some(&first)).await;
        let third = GatewayProcess::start(dir.path(), "gw-2", "", Some(&first)).await;
        let gateways = vec![first, second, third];
        let mut agents = Vec::new();
        for (i, gateway) in gateways.iter().enumerate() {
            let id = format!("node-{i}");
            agents.push(agent_process(
                dir.path(),
                &id,
                gateway.addr,
                &gateway.ca,
                200,
                &services,
            ));
            let client = gateway.client(1).await;
            gateway.wait_nodes(&client, 1).await;
            client.close().await;
        }
        Self {
            _dir: dir,
            gateways,
            _agents: agents,
        }
    }

    fn addresses(&self) -> Vec<String> {
        self.gateways.iter().map(|g| g.addr.to_string()).collect()
    }

    fn ca(&self) -> std::path::PathBuf {
        self.gateways[0].ca.clone()
    }

    /// A cluster client of all three that finds a dead one within 1 s.
    async fn client(&self) -> Client {
        let config = ClientConfig::for_cluster(self.addresses(), self.ca())
            .with_dead_after(Duration::from_secs(1))
            .with_connect_timeout(Duration::from_secs(1));
        Client::connect(config).await.expect("the client connects")
    }

    /// Calls served by gateway `i`'s node, as its admin API counts them.
    async fn served_by(&self, i: usize) -> u64 {
        let url = format!("http://{}/api/nodes", self.gateways[i].admin);
        let nodes: serde_json::Value = reqwest::Client::new()
            .get(&url)
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        nodes
            .as_array()
            .or_else(|| nodes["nodes"].as_array())
            .unwrap_or_else(|| panic!("no node list in {nodes}"))
            .iter()
            .map(|n| n["calls_total"].as_u64().unwrap_or(0))
            .sum()
    }
}

/// Makes `n` echo calls one after the other; returns how many each node
/// served. Every call must succeed within its deadline.
async fn echo_calls(client: &Client, n: usize, label: &str) -> BTreeMap<String, usize> {
    let mut by_node = BTreeMap::new();
    for i in 0..n {
        let payload = format!("{label}-{i}");
        let started = Instant::now();
        let result = tokio::time::timeout(
            DEADLINE + GRACE,
            client
                .call("echo", payload.clone().into_bytes())
                .timeout(DEADLINE),
        )
        .await
        .unwrap_or_else(|_| panic!("{label}: call {i} hung past its deadline"))
        .unwrap_or_else(|e| panic!("{label}: call {i} failed: {e}"));
        assert!(started.elapsed() < DEADLINE + GRACE);
        assert_eq!(result.data, payload.as_bytes());
        *by_node.entry(result.meta.node_id).or_insert(0) += 1;
    }
    by_node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_client_spreads_over_three_gateways_and_moves_on_when_one_is_killed() {
    let name = "cluster-clients-spread-and-kill";
    scenario(name, Duration::from_secs(150), async {
        let mut three = Three::start().await;
        let client = three.client().await;
        assert_eq!(client.gateway_addresses(), three.addresses());
        // Each gateway, without a cluster, names itself alone.
        let members = client.members().await.expect("a member list");
        assert_eq!(members.members.len(), 1, "{members:?}");

        let mut before = Vec::new();
        for i in 0..3 {
            before.push(three.served_by(i).await);
        }
        let by_node = echo_calls(&client, 30, "spread").await;
        eprintln!("{name}: 30 calls by node {by_node:?}");
        for (i, before) in before.iter().enumerate() {
            let node = format!("node-{i}");
            assert!(
                by_node.get(&node).copied().unwrap_or(0) >= 5,
                "calls spread over every gateway: {by_node:?}"
            );
            let served = three.served_by(i).await - before;
            assert_eq!(
                served as usize, by_node[&node],
                "gateway {i} counted what its node served"
            );
        }
        assert_eq!(client.pool_stats().gateways.len(), 3);

        // A client of gateway 1 alone, connected before the kill.
        let alone = three.gateways[1].client(1).await;

        // kill -9 gateway 1: every next call succeeds through the others.
        three.gateways[1].process.kill();
        let killed = Instant::now();
        let after = echo_calls(&client, 30, "after-kill").await;
        eprintln!(
            "{name}: 30 calls after the kill in {:.1} s, by node {after:?}",
            killed.elapsed().as_secs_f64()
        );
        assert!(!after.contains_key("node-1"), "{after:?}");
        assert!(after.contains_key("node-0") && after.contains_key("node-2"));
        let stats = client.pool_stats();
        let dead = &stats.gateways[1];
        assert_eq!(dead.address, three.gateways[1].addr.to_string());
        assert_eq!(dead.connections, 0, "{stats:?}");
        assert!(dead.last_error.is_some(), "{stats:?}");

        // With no other gateway to go to, a call the dead one never had
        // fails as a connect error: safe to call again.
        let error = alone
            .call("echo", b"late".to_vec())
            .timeout(DEADLINE)
            .await
            .expect_err("its only gateway is dead");
        assert!(matches!(error, ClientError::Connect(_)), "{error:?}");
        assert!(error.retry_safe(), "{error}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_flight_on_a_killed_gateway_is_lost_unless_idempotent() {
    let name = "cluster-clients-in-flight";
    scenario(name, Duration::from_secs(150), async {
        let mut three = Three::start().await;
        // Two clients, each with three slow calls spread round-robin over
        // the three gateways (one per gateway): the plain client's and the
        // idempotent client's.
        let plain = three.client().await;
        let idempotent = three.client().await;
        let before = three.served_by(0).await + three.served_by(2).await;
        let mut calls = Vec::new();
        for (client, is_idempotent) in [(&plain, false), (&idempotent, true)] {
            for _ in 0..3 {
                let client = client.clone();
                calls.push(tokio::spawn(async move {
                    let started = Instant::now();
                    let result = client
                        .call("sleep", "3000")
                        .timeout(DEADLINE)
                        .idempotent(is_idempotent)
                        .await;
                    (is_idempotent, started.elapsed(), result)
                }));
            }
        }
        // Wait until gateway 1's node runs its calls, then kill -9 it.
        let gateway = three.gateways[1].client(1).await;
        let start = Instant::now();
        loop {
            let nodes = gateway.nodes().await.unwrap();
            let running: u32 = nodes[0].services.iter().map(|s| s.in_flight).sum();
            if running == 2 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(5), "no call on gw-1");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        three.gateways[1].process.kill();

        let mut lost = 0;
        let mut done = 0;
        for call in calls {
            let (idempotent, took, result) = call.await.unwrap();
            assert!(took < DEADLINE + GRACE, "a call took {took:?}");
            match result {
                Ok(r) => {
                    assert_ne!(r.meta.node_id, "node-1");
                    done += 1;
                }
                Err(e @ ClientError::GatewayLost { .. }) => {
                    assert!(!idempotent, "an idempotent call is sent again: {e}");
                    assert!(!e.retry_safe());
                    assert!(e.to_string().contains("may have run"), "{e}");
                    lost += 1;
                }
                Err(e) => panic!("untyped or unexpected failure: {e:?}"),
            }
        }
        // The plain call on gw-1 failed; the idempotent one ran again on
        // another gateway's node: the others served five calls in all.
        let served = three.served_by(0).await + three.served_by(2).await - before;
        eprintln!("{name}: {lost} call lost with gw-1, {done} done, {served} served by the others");
        assert_eq!((lost, done), (1, 5));
        assert_eq!(served, 5);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_first_address_is_skipped_by_the_sdk_and_the_cli() {
    let name = "cluster-clients-dead-first";
    scenario(name, Duration::from_secs(120), async {
        let three = Three::start().await;
        // A loopback UDP port nothing listens on.
        let dead = {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.local_addr().unwrap().to_string()
        };
        let live = three.gateways[2].addr.to_string();
        let config = ClientConfig::for_cluster([dead.clone(), live.clone()], three.ca())
            .with_connect_timeout(Duration::from_secs(1));
        let client = Client::connect(config)
            .await
            .expect("connects to the live one");
        for _ in 0..4 {
            let r = client
                .call("echo", b"hi".to_vec())
                .timeout(DEADLINE)
                .await
                .expect("served by the live gateway");
            assert_eq!(r.meta.node_id, "node-2");
        }

        let ca = three.ca();
        let ca = ca.to_str().unwrap();
        let list = format!("{dead},{live}");
        // The flag with a list, the flag repeated, and the variable.
        let runs: [(&[&str], Option<&str>); 3] = [
            (&["--gateway", &list], None),
            (&["--gateway", &dead, "--gateway", &live], None),
            (&[], Some(&list)),
        ];
        for (flags, variable) in runs {
            let mut command = Command::new(CLI);
            command
                .args(flags)
                .args(["--ca", ca, "call", "echo", "--data", "from-cli"])
                .env_remove("SWITCHYARD_CA")
                .env_remove("SWITCHYARD_GATEWAY")
                .env_remove("SWITCHYARD_API_KEY")
                .kill_on_drop(true);
            if let Some(variable) = variable {
                command.env("SWITCHYARD_GATEWAY", variable);
            }
            let out = tokio::time::timeout(Duration::from_secs(30), command.output())
                .await
                .expect("the CLI ends")
                .expect("the CLI runs");
            assert!(
                out.status.success(),
                "{flags:?} {variable:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.contains("from-cli"), "{stdout}");
        }
    })
    .await;
}

/// The `echo` calls gateway `admin` finished, from its `/metrics`
/// (`calls_total` summed over the series of the service).
async fn echo_calls_of(admin: std::net::SocketAddr) -> f64 {
    let text = reqwest::Client::new()
        .get(format!("http://{admin}/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("calls_total{") && l.contains("service=\"echo\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `check` every 50 ms until it holds; panics past `limit`.
async fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "{what} after {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_given_one_member_learns_the_cluster_and_follows_it() {
    if !etcd_installed() {
        return;
    }
    let name = "cluster-clients-etcd";
    scenario(name, Duration::from_secs(180), async {
        let mut fleet = ClusterFleet::start(3, "").await;
        fleet.spawn_agent(
            "node-a",
            0,
            &service("echo", "command", "command = [\"cat\"]\nmax_concurrent = 8"),
        );
        fleet.wait_nodes_everywhere(&["node-a"]).await;
        let addresses = |fleet: &ClusterFleet| {
            let mut all: Vec<String> = fleet
                .live()
                .iter()
                .map(|&i| fleet.gateway(i).addr.to_string())
                .collect();
            all.sort();
            all
        };
        let sorted = |client: &Client| {
            let mut have = client.gateway_addresses();
            have.sort();
            have
        };

        // Given gw-0 alone, the client calls all three members.
        let config = ClientConfig::for_cluster([fleet.gateway(0).addr.to_string()], fleet.ca())
            .with_dead_after(Duration::from_secs(1))
            .with_connect_timeout(Duration::from_secs(1))
            .with_member_refresh(Duration::from_millis(500));
        let client = Client::connect(config).await.expect("connects");
        assert_eq!(sorted(&client), addresses(&fleet));
        let members = client.members().await.expect("a member list");
        assert_eq!(members.members.len(), 3, "{members:?}");

        let mut before = Vec::new();
        for i in 0..3 {
            before.push(echo_calls_of(fleet.gateway(i).admin).await);
        }
        echo_calls(&client, 30, "etcd-spread").await;
        for (i, before) in before.iter().enumerate() {
            let through = echo_calls_of(fleet.gateway(i).admin).await - before;
            eprintln!("{name}: gw-{i} took {through} of 30 calls");
            assert!(through >= 5.0, "gw-{i} took {through} of 30 calls");
        }

        // kill -9 gw-1: the calls go on through the others, and the client
        // drops it once its lease has run out.
        fleet.kill_gateway(1);
        let killed = Instant::now();
        echo_calls(&client, 30, "etcd-after-kill").await;
        let survivors = addresses(&fleet);
        eventually("the killed member dropped", Duration::from_secs(15), || {
            sorted(&client) == survivors
        })
        .await;
        eprintln!(
            "{name}: the client dropped gw-1 {:.1} s after its kill -9",
            killed.elapsed().as_secs_f64()
        );

        // Back (on fresh ports): the client calls it again.
        fleet.restart_gateway(1).await;
        fleet.wait_members(3).await;
        let all = addresses(&fleet);
        eventually(
            "the restarted member called",
            Duration::from_secs(15),
            || sorted(&client) == all,
        )
        .await;
        fleet.wait_nodes_everywhere(&["node-a"]).await;
        let back = echo_calls_of(fleet.gateway(1).admin).await;
        echo_calls(&client, 30, "etcd-after-restart").await;
        let through = echo_calls_of(fleet.gateway(1).admin).await - back;
        assert!(
            through >= 5.0,
            "the restarted gw-1 took {through} of 30 calls"
        );
    })
    .await;
}
