//! Scenario 5: hot-swap a policy 100 times under load: the plugin file the
//! service's policy comes from is replaced (write, then rename into the
//! gateway's plugins folder) by another built plugin and back, 100 times,
//! each swap waited for; no call fails.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gateway::config::ServiceConfig;
use tokio::sync::Mutex;

use super::{Record, assert_all_ended_typed, ms, percentile, print_figures, scenario};
use crate::common::{Fleet, TOKEN, built_plugin, plugin_copies, service};

const SWAPS: usize = 100;

/// Installs `bytes` as `dir/name` the documented way: write, then rename.
fn install(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_a_policy_100_times_under_load() {
    scenario("policy-swap", Duration::from_secs(120), async {
        let mut fleet = Fleet::start(|c| {
            c.plugins_dir = plugin_copies(c.data_dir.parent().unwrap(), &["round-robin"]);
            c.services.insert(
                "echo".into(),
                ServiceConfig {
                    policy: Some("latency".into()),
                    ..ServiceConfig::default()
                },
            );
        })
        .await;
        let plugins = fleet.gateway.policies().clone();
        let dir = fleet.dir.path().join("plugins");
        fleet.spawn_agent("node-a", TOKEN, &service("echo", "echo", "max_concurrent = 16"));
        fleet.spawn_agent("node-b", TOKEN, &service("echo", "echo", "max_concurrent = 16"));
        fleet.wait_nodes(2).await;
        let latency = std::fs::read(built_plugin("latency")).unwrap();
        let least = std::fs::read(built_plugin("least-request")).unwrap();

        let client = Arc::new(fleet.client().await);
        let t0 = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(Mutex::new(Vec::<(Record, String)>::new()));
        let callers: Vec<_> = (0..4)
            .map(|_| {
                let (client, stop, records) = (client.clone(), stop.clone(), records.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let start = Instant::now();
                        let call = client.call("echo", "ping").timeout(Duration::from_secs(10));
                        let (outcome, policy) = match tokio::time::timeout(Duration::from_secs(20), call).await {
                            Ok(Ok(r)) => (super::Outcome::Ok(r.meta.node_id), r.meta.policy),
                            Ok(Err(e)) => (super::classify(&e), String::new()),
                            Err(_) => (super::Outcome::Hung, String::new()),
                        };
                        let record = Record { at: start.duration_since(t0), took: start.elapsed(), outcome, attempts: 0 };
                        records.lock().await.push((record, policy));
                    }
                })
            })
            .collect();

        // Swap i installs latency (even i) or least-request (odd i) as
        // `active.wasm`: echo's policy `latency` is there, or gone (echo
        // falls back to the default, round-robin).
        let mut swap_times = Vec::new();
        for i in 0..SWAPS {
            let start = Instant::now();
            let (bytes, want_latency) = if i % 2 == 0 { (&latency, true) } else { (&least, false) };
            install(&dir, "active.wasm", bytes);
            while plugins.is_loaded("latency") != want_latency
                || plugins.is_loaded("least-request") == want_latency
            {
                assert!(start.elapsed() < Duration::from_secs(10), "swap {i} never took effect");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            swap_times.push(start.elapsed());
        }
        stop.store(true, Ordering::Relaxed);
        for c in callers {
            c.await.unwrap();
        }
        let all = records.lock().await.clone();
        let records: Vec<Record> = all.iter().map(|(r, _)| r.clone()).collect();
        let by_latency = all.iter().filter(|(_, p)| p == "latency").count();
        let by_default = all.iter().filter(|(_, p)| p == "round-robin").count();
        print_figures("policy-swap", &records);
        eprintln!(
            "chaos policy-swap: {SWAPS} swaps in {:.1} s (each seen by the gateway after p50 {} p99 {}); calls picked by latency {by_latency}, by round-robin {by_default}",
            t0.elapsed().as_secs_f64(),
            ms(percentile(&swap_times, 50.0)),
            ms(percentile(&swap_times, 99.0)),
        );
        assert_all_ended_typed("policy-swap", &records);
        let failed: Vec<&Record> = records.iter().filter(|r| !r.ok()).collect();
        assert!(failed.is_empty(), "no call failed across {SWAPS} swaps: {failed:?}");
        assert!(records.len() > SWAPS, "the load kept running: {} calls", records.len());
        assert!(by_latency > 0 && by_default > 0, "both policies picked calls");
    })
    .await;
}
