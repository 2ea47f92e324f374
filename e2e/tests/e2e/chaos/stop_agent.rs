//! Scenario 2: SIGSTOP an agent for 10 s under load. The gateway marks it
//! down within three heartbeats, its calls fail typed (or are served
//! by the other nodes), and on SIGCONT it registers again and serves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::{Process, Record, assert_all_ended_typed, print_figures, scenario, timed_call};
use crate::common::{Fleet, STATS_MS, service};

const TIMEOUT: Duration = Duration::from_secs(5);
/// Slack for a loaded machine on top of the three heartbeats.
const DETECT_SLACK: Duration = Duration::from_millis(1500);
/// The agents' heartbeat: their default, two stats intervals.
const HEARTBEAT_MS: u32 = 2 * STATS_MS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_an_agent_for_10_s() {
    scenario("sigstop", Duration::from_secs(75), async {
        let fleet = Fleet::start(|_| {}).await;
        let agents: Vec<Process> = (0..3)
            .map(|i| {
                super::agent_process(
                    fleet.dir.path(),
                    &format!("node-{i}"),
                    fleet.addr.parse().unwrap(),
                    &fleet.ca(),
                    STATS_MS,
                    &service("work", "sleep", "max_concurrent = 8"),
                )
            })
            .collect();
        fleet.wait_nodes(3).await;
        let client = Arc::new(fleet.client().await);
        let t0 = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(Mutex::new(Vec::<Record>::new()));
        let callers: Vec<_> = (0..12)
            .map(|_| {
                let (client, stop, records) = (client.clone(), stop.clone(), records.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let r = timed_call(&client, "work", "100", TIMEOUT, t0).await;
                        records.lock().await.push(r);
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(2)).await;

        let registry = fleet.gateway.registry().clone();
        let stopped_at = Instant::now();
        agents[0].signal("STOP");
        while registry.get("node-0").is_some() {
            assert!(stopped_at.elapsed() < Duration::from_secs(10), "node-0 never marked down");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let detected = stopped_at.elapsed();
        tokio::time::sleep(Duration::from_secs(10).saturating_sub(stopped_at.elapsed())).await;
        let cont_at = Instant::now();
        agents[0].signal("CONT");
        while registry.get("node-0").is_none() {
            assert!(cont_at.elapsed() < Duration::from_secs(20), "node-0 never came back: {}", agents[0].log_text());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let rejoined = cont_at.elapsed();
        // Load on until node-0 served calls again.
        let back = Instant::now();
        loop {
            let served = records
                .lock()
                .await
                .iter()
                .any(|r| r.at > cont_at.duration_since(t0) + rejoined && r.node() == Some("node-0"));
            if served {
                break;
            }
            assert!(back.elapsed() < Duration::from_secs(15), "node-0 serves again after SIGCONT");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let serving_again = cont_at.elapsed();
        stop.store(true, Ordering::Relaxed);
        for c in callers {
            c.await.unwrap();
        }
        let records = records.lock().await.clone();
        let stop_from = stopped_at.duration_since(t0);
        let cont_from = cont_at.duration_since(t0);
        let during: Vec<Record> = records
            .iter()
            .filter(|r| r.at >= stop_from && r.at + Duration::from_millis(500) < cont_from)
            .cloned()
            .collect();
        print_figures("sigstop all", &records);
        print_figures("sigstop while stopped", &during);
        eprintln!(
            "chaos sigstop: marked down {} after SIGSTOP (3 heartbeats = {} ms); registered again {} after SIGCONT, serving again {}",
            super::ms(detected),
            3 * HEARTBEAT_MS,
            super::ms(rejoined),
            super::ms(serving_again),
        );
        assert_all_ended_typed("sigstop", &records);
        assert!(
            detected <= Duration::from_millis(u64::from(3 * HEARTBEAT_MS)) + DETECT_SLACK,
            "marked down within three heartbeats (plus slack): {detected:?}"
        );
        assert!(
            during.iter().filter(|r| r.ok()).count() > during.len() / 2,
            "the other nodes serve while node-0 is stopped"
        );
        assert!(
            during.iter().all(|r| r.node() != Some("node-0")),
            "no result from the stopped node"
        );
    })
    .await;
}
