//! Scenario 6: kill -9 a gateway with two configured in the SDK
//! (`ClientConfig::fallback_gateways`): calls in flight on the dead one end
//! typed or, when it never acknowledged them, move to the other gateway;
//! none hangs, and callers fail over to the other gateway.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use client::{Client, ClientConfig};
use tokio::sync::Mutex;

use super::{
    GRACE, GatewayProcess, Process, Record, assert_all_ended_typed, ms, print_figures, scenario,
    timed_call,
};
use crate::common::service;

const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_the_gateway_callers_fail_over() {
    scenario("kill-gateway", Duration::from_secs(90), async {
        let dir = tempfile::tempdir().unwrap();
        let first = GatewayProcess::start(dir.path(), "gw-1", "", None).await;
        // The second serves the first's certificate: one CA for both.
        let mut second = GatewayProcess::start(dir.path(), "gw-2", "", Some(&first)).await;
        let work = service("work", "sleep", "max_concurrent = 16");
        let _agents: Vec<Process> = [("node-1", &first), ("node-2", &second)]
            .into_iter()
            .map(|(id, gw)| super::agent_process(dir.path(), id, gw.addr, &gw.ca, 200, &work))
            .collect();
        let client = Client::connect(
            ClientConfig::new(first.addr.to_string(), first.ca.clone())
                .with_gateways([first.addr.to_string(), second.addr.to_string()])
                .with_connect_timeout(Duration::from_secs(1)),
        )
        .await
        .unwrap();
        first.wait_nodes(&client, 1).await;
        let client = Arc::new(client);
        let t0 = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(Mutex::new(Vec::<Record>::new()));
        let callers: Vec<_> = (0..16)
            .map(|_| {
                let (client, stop, records) = (client.clone(), stop.clone(), records.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let r = timed_call(&client, "work", "300", TIMEOUT, t0).await;
                        records.lock().await.push(r);
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut first = first;
        let killed = Instant::now();
        first.process.kill();
        let killed_at = killed.duration_since(t0);
        // Until calls are served through the second gateway (its node).
        let failed_over = loop {
            let served = records
                .lock()
                .await
                .iter()
                .any(|r| r.at >= killed_at && r.node() == Some("node-2"));
            if served {
                break killed.elapsed();
            }
            assert!(killed.elapsed() < Duration::from_secs(40), "callers never failed over");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // A few seconds of load on the second gateway.
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, Ordering::Relaxed);
        for c in callers {
            c.await.unwrap();
        }
        let records = records.lock().await.clone();
        let before: Vec<Record> = records.iter().filter(|r| r.at < killed_at).cloned().collect();
        let after: Vec<Record> = records.iter().filter(|r| r.at >= killed_at).cloned().collect();
        // In flight at the kill: started before, ended after.
        let in_flight: Vec<Record> = before
            .iter()
            .filter(|r| r.at + r.took > killed_at)
            .cloned()
            .collect();
        print_figures("kill-gateway before", &before);
        print_figures("kill-gateway in flight at the kill", &in_flight);
        print_figures("kill-gateway after", &after);
        eprintln!(
            "chaos kill-gateway: first result through gw-2 {} after kill -9 of gw-1 (the SDK leaves a gateway silent for its dead_after, 3 s)",
            ms(failed_over)
        );
        assert_all_ended_typed("kill-gateway", &records);
        assert!(!in_flight.is_empty(), "calls were in flight at the kill");
        // A call in flight at the kill ended on node-1 before the kill,
        // moved to gw-2 because gw-1 never acknowledged all of it (it cannot
        // have run there), or ended with the gateway lost (it may have run).
        assert!(
            in_flight
                .iter()
                .all(|r| r.ok() || r.kind() == "connection lost"),
            "{in_flight:?}"
        );
        let moved = in_flight
            .iter()
            .filter(|r| r.node() == Some("node-2"))
            .count();
        eprintln!(
            "chaos kill-gateway: of {} calls in flight at the kill, {moved} moved to gw-2",
            in_flight.len()
        );
        assert!(
            records.iter().all(|r| r.took <= TIMEOUT + GRACE),
            "no call outlives its deadline plus the grace"
        );
        let last_second: Vec<&Record> =
            after.iter().filter(|r| r.at >= killed_at + failed_over).collect();
        assert!(
            last_second.iter().filter(|r| r.ok()).count() * 10 >= last_second.len() * 9,
            "after the failover calls succeed through gw-2"
        );
        second.process.kill();
    })
    .await;
}
