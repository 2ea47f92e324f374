//! A child gateway killed with -9: it leaves its parent's fleet, the calls
//! it had end typed (none hangs), and the root's calls go on through the
//! other site.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::Tree;
use crate::chaos::{Record, assert_all_ended_typed, print_figures, scenario, timed_call};

const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_a_child_gateway_it_leaves_the_root_and_its_calls_end_typed() {
    scenario("kill-child-gateway", Duration::from_secs(120), async {
        let mut tree = Tree::start("", "").await;
        let client = Arc::new(tree.root.client(1).await);
        let t0 = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(Mutex::new(Vec::<Record>::new()));
        let callers: Vec<_> = (0..6)
            .map(|_| {
                let (client, stop, records) = (client.clone(), stop.clone(), records.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let r = timed_call(&client, "work", "200", TIMEOUT, t0).await;
                        records.lock().await.push(r);
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let served_b_before = records
            .lock()
            .await
            .iter()
            .filter(|r| r.node() == Some("node-b"))
            .count();
        assert!(served_b_before > 0, "site-b served calls before the kill");
        let killed = Instant::now();
        tree.site_b.process.kill();
        let killed_at = killed.duration_since(t0);
        // The root drops it within three of its stats intervals.
        let gone = async {
            loop {
                let nodes = client.nodes().await.unwrap_or_default();
                if nodes.iter().all(|n| n.spec.id != "site-b") {
                    return killed.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let detected = tokio::time::timeout(Duration::from_secs(15), gone)
            .await
            .unwrap_or_else(|_| panic!("the root kept site-b:\n{}", tree.logs()));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.store(true, Ordering::Relaxed);
        for c in callers {
            c.await.unwrap();
        }
        let records = records.lock().await.clone();
        print_figures("kill-child-gateway", &records);
        eprintln!("site-b left the root's fleet {detected:?} after kill -9");
        assert_all_ended_typed("kill-child-gateway", &records);
        // Calls that started once the root had dropped site-b all went
        // through site-a, and were served.
        let settled = killed_at + detected + Duration::from_millis(100);
        let after: Vec<&Record> = records.iter().filter(|r| r.at > settled).collect();
        assert!(!after.is_empty(), "calls ran after the kill");
        for r in &after {
            assert!(
                matches!(r.node(), Some("node-a" | "node-a1")),
                "a call after site-b left: {r:?}"
            );
        }
    })
    .await;
}
