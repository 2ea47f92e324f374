//! Scenario: kill -9 an agent holding leases. The gateway frees them (its
//! active leases drop to none, the node's slots are no longer counted), a
//! call waiting in the queue meanwhile is served by another node, and the
//! agent, started again, registers with every slot free.

use std::time::{Duration, Instant};

use client::ErrorKind;

use super::scenario;
use crate::common::direct::{Wire, call_head, lease_request};
use crate::common::{Fleet, eventually, service};
use crate::leases::metric;

/// The service's label in the gateway's metrics.
const SERVICE: &str = "service=\"leased-kill\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_an_agent_holding_leases_frees_them() {
    scenario("kill-leased-agent", Duration::from_secs(90), async {
        let mut fleet = Fleet::start(|_| {}).await;
        let leased = service("leased-kill", "sleep", "max_concurrent = 2");
        let (index, port) = fleet.spawn_direct_agent_process("node-0", &leased);
        fleet.wait_nodes(1).await;
        let gateway = Wire::gateway(&fleet).await;
        let mut grants = Vec::new();
        for _ in 0..2 {
            let grant = gateway
                .lease(lease_request("leased-kill", 1, 60_000), &mut Vec::new())
                .await
                .expect("lease granted");
            assert_eq!(grant.node_id, "node-0");
            grants.push(grant);
        }
        crate::leases::wait_in_flight(&fleet, "node-0", "leased-kill", 2).await;
        assert_eq!(metric(&fleet, "leases_active", &[SERVICE]).await, 2.0);

        // node-1 joins busy with a long call: the next call waits.
        let (_busy_index, _) = fleet.spawn_direct_agent_process(
            "node-1",
            &service("leased-kill", "sleep", "max_concurrent = 1"),
        );
        fleet.wait_nodes(2).await;
        let client = std::sync::Arc::new(fleet.client().await);
        let busy = {
            let client = client.clone();
            tokio::spawn(async move { client.call("leased-kill", "4000").await })
        };
        crate::leases::wait_in_flight(&fleet, "node-1", "leased-kill", 1).await;
        let queued = {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .call("leased-kill", "10")
                    .timeout(Duration::from_secs(30))
                    .await
            })
        };
        eventually(Duration::from_secs(10), || {
            let length = fleet
                .gateway
                .queues()
                .iter()
                .find(|q| q.service == "leased-kill")
                .map_or(0, |q| q.length);
            (length == 1)
                .then_some(())
                .ok_or(format!("expected a queued call, have {length}"))
        })
        .await;

        let killed = Instant::now();
        fleet.agent(index).kill();
        fleet.wait_nodes(1).await;
        let start = Instant::now();
        while metric(&fleet, "leases_active", &[SERVICE]).await > 0.0 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the dead node's leases are still active"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "chaos kill-leased-agent: node lost and its 2 leases freed {:.0} ms after kill -9",
            killed.elapsed().as_secs_f64() * 1000.0
        );
        busy.await.unwrap().expect("node-1's call ends");
        let served = queued
            .await
            .unwrap()
            .expect("the queued call is served by another node");
        assert_eq!(served.meta.node_id, "node-1");

        // The dead node's tokens reach nothing.
        let dead = Wire::connect(port, &fleet.ca(), "127.0.0.1").await;
        assert!(dead.is_err(), "nothing listens at the dead node's port");

        // node-0 again: registered with both slots free.
        let (_again, port) = fleet.spawn_direct_agent_process("node-0", &leased);
        fleet.wait_nodes(2).await;
        crate::leases::wait_in_flight(&fleet, "node-0", "leased-kill", 0).await;
        let node = Wire::direct(&fleet, port).await;
        let stale = node
            .call(call_head("leased-kill", Some(&grants[0].token)), b"1")
            .await
            .expect_err("a lease of the dead agent")
            .refused();
        assert!(
            matches!(stale.kind, ErrorKind::LeaseEnded | ErrorKind::Unauthorized),
            "{stale:?}"
        );
        // Three slots free in all (node-0's two, node-1's one): three
        // realtime calls at once all run.
        let calls: Vec<_> = (0..3)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { client.call("leased-kill", "500").realtime(true).await })
            })
            .collect();
        for call in calls {
            call.await
                .unwrap()
                .expect("a free slot serves each realtime call");
        }
    })
    .await;
}
