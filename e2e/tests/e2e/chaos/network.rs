//! Scenario 3: a network fault between one agent and the gateway, through
//! the fault-injecting UDP relay: clear, then 30% loss with 200 ms delay,
//! then a full partition, then healed. Calls go on throughout; every call
//! ends with a result or a typed error within its deadline (none hangs,
//! none is lost), and the agent serves again once the network heals.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::relay::{Fault, Relay};
use super::{Process, Record, assert_all_ended_typed, print_figures, scenario, timed_call};
use crate::common::{Fleet, service};

const TIMEOUT: Duration = Duration::from_secs(3);
/// Stats interval of this scenario's agents, ms: the gateway drops a node
/// after three missed ones.
const STATS_MS: u32 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_delay_partition_and_heal_between_agent_and_gateway() {
    scenario("network", Duration::from_secs(75), async {
        let fleet = Fleet::start(|_| {}).await;
        let gateway_addr = fleet.addr.parse().unwrap();
        let relay = Relay::start(gateway_addr, 0x5eed).await;
        let work = service("work", "sleep", "max_concurrent = 8");
        let dir = fleet.dir.path();
        let _agents: Vec<Process> = vec![
            super::agent_process(dir, "node-far", relay.addr, &fleet.ca(), STATS_MS, &work),
            super::agent_process(dir, "node-near", gateway_addr, &fleet.ca(), STATS_MS, &work),
        ];
        fleet.wait_nodes(2).await;
        let registry = fleet.gateway.registry().clone();
        let client = Arc::new(fleet.client().await);
        let t0 = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(Mutex::new(Vec::<Record>::new()));
        let callers: Vec<_> = (0..8)
            .map(|_| {
                let (client, stop, records) = (client.clone(), stop.clone(), records.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let r = timed_call(&client, "work", "50", TIMEOUT, t0).await;
                        records.lock().await.push(r);
                    }
                })
            })
            .collect();

        let phases = [
            ("clear", Fault::Clear, Duration::from_secs(2)),
            (
                "loss 30% + delay 200 ms",
                Fault::Lossy { loss: 0.3, delay: Duration::from_millis(200) },
                Duration::from_secs(5),
            ),
            ("partition", Fault::Partition, Duration::from_secs(5)),
        ];
        let mut bounds = Vec::new();
        for (name, fault, length) in phases {
            relay.set(fault);
            let from = t0.elapsed();
            tokio::time::sleep(length).await;
            bounds.push((name, from, t0.elapsed()));
        }
        let far_down_in_partition = registry.get("node-far").is_none();
        relay.set(Fault::Clear);
        let healed = Instant::now();
        while registry.get("node-far").is_none() {
            assert!(healed.elapsed() < Duration::from_secs(25), "node-far never came back after the heal");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rejoined = healed.elapsed();
        let heal_from = healed.duration_since(t0);
        loop {
            let served = records
                .lock()
                .await
                .iter()
                .any(|r| r.at > heal_from + rejoined && r.node() == Some("node-far"));
            if served {
                break;
            }
            assert!(healed.elapsed() < Duration::from_secs(40), "node-far serves again after the heal");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let serving_again = healed.elapsed();
        stop.store(true, Ordering::Relaxed);
        for c in callers {
            c.await.unwrap();
        }
        let records = records.lock().await.clone();
        for (name, from, to) in &bounds {
            let phase: Vec<Record> =
                records.iter().filter(|r| r.at >= *from && r.at < *to).cloned().collect();
            print_figures(&format!("network {name}"), &phase);
        }
        let after: Vec<Record> = records.iter().filter(|r| r.at >= heal_from).cloned().collect();
        print_figures("network healed", &after);
        print_figures("network all", &records);
        eprintln!(
            "chaos network: relay forwarded {} datagrams, dropped {}; node-far down by the partition's end: {far_down_in_partition}; registered again {} after the heal, serving {}",
            relay.counts().forwarded.load(Ordering::Relaxed),
            relay.counts().dropped.load(Ordering::Relaxed),
            super::ms(rejoined),
            super::ms(serving_again),
        );
        assert_all_ended_typed("network", &records);
        assert!(far_down_in_partition, "a 5 s partition drops the node (3 heartbeats of 2 stats intervals: {} ms)", 6 * STATS_MS);
        let partition = bounds[2];
        let cut: Vec<&Record> = records
            .iter()
            .filter(|r| r.at >= partition.1 + Duration::from_secs(2) && r.at < partition.2)
            .collect();
        assert!(
            cut.iter().all(|r| r.node() != Some("node-far")),
            "no result crosses a full partition"
        );
        assert!(
            cut.iter().filter(|r| r.ok()).count() * 2 > cut.len(),
            "node-near serves while node-far is cut off"
        );
    })
    .await;
}
