//! `pick-first` across two gateways of one cluster, with real gateway and
//! agent processes: calls through either gateway fill the first node by id
//! before the next, whichever gateway sent the calls already there (each
//! counts the other's from the agents' load reports, and a node full of
//! the other's calls makes it pick again), and come back to it once it has
//! room.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use client::{CallResult, Client, ClientError};
use tokio::task::JoinHandle;

use crate::common::cluster::{ClusterFleet, etcd_installed};
use crate::common::service;

/// Slots of `sleep` per node.
const SLOTS: usize = 2;
/// A call's deadline in this test.
const DEADLINE: Duration = Duration::from_secs(20);
/// The nodes, first by id first.
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

/// A short call through `client`: the node that served it, checking it was
/// pick-first's pick.
async fn short_call(client: &Client) -> String {
    let r = client
        .call("sleep", "1")
        .timeout(DEADLINE)
        .await
        .expect("short call succeeds");
    assert_eq!(r.meta.policy, "pick-first");
    r.meta.node_id
}

/// Calls of `sleep` each gateway runs now, every node together, by its
/// own count (`/api/nodes`).
async fn running(fleet: &ClusterFleet) -> Result<usize, String> {
    let mut total = 0;
    for i in fleet.live() {
        let nodes = fleet.admin_json(i, "/api/nodes").await?;
        for node in nodes.as_array().ok_or("no node list")? {
            for s in node["services"].as_array().ok_or("no services")? {
                if s["name"] == "sleep" {
                    total += s["in_flight"].as_u64().unwrap_or(0) as usize;
                }
            }
        }
    }
    Ok(total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_fill_the_first_node_before_the_next_and_come_back_to_it() {
    if !etcd_installed() {
        return;
    }
    let mut fleet = ClusterFleet::start(2, "[services.sleep]\npolicy = \"pick-first\"\n").await;
    // Registered in the reverse of their id order, each given one
    // gateway's address (they register with both).
    let sleep = service("sleep", "sleep", &format!("max_concurrent = {SLOTS}"));
    for (k, id) in NODES.iter().rev().enumerate() {
        fleet.spawn_agent(id, k % 2, &sleep);
    }
    fleet.wait_nodes_everywhere(&NODES).await;
    let clients = [
        fleet.gateway(0).client(1).await,
        fleet.gateway(1).client(1).await,
    ];

    // One call at a time, through either gateway: always the first node.
    for k in 0..6 {
        assert_eq!(short_call(&clients[k % 2]).await, "node-a", "call {k}");
    }

    // Held calls through the two gateways in turn, each once the one
    // before is dispatched: node-a's slots, then node-b's, then one on
    // node-c.
    let expected = ["node-a", "node-a", "node-b", "node-b", "node-c"];
    let mut held: Vec<JoinHandle<Result<CallResult, ClientError>>> = Vec::new();
    for k in 0..expected.len() {
        let client = clients[k % 2].clone();
        held.push(tokio::spawn(async move {
            client
                .call("sleep", "3000")
                .timeout(DEADLINE)
                .explain()
                .await
        }));
        let start = Instant::now();
        loop {
            match running(&fleet).await {
                Ok(n) if n == k + 1 => break,
                Ok(n) if start.elapsed() > Duration::from_secs(10) => {
                    panic!(
                        "{n} calls running, expected {}\n{}",
                        k + 1,
                        fleet.log_tails()
                    )
                }
                Err(e) if start.elapsed() > Duration::from_secs(10) => panic!("{e}"),
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }
    let mut served = Vec::new();
    let mut why = Vec::new();
    for task in held {
        let r = task.await.unwrap().expect("held call succeeds");
        assert_eq!(r.meta.policy, "pick-first");
        served.push(r.meta.node_id);
        why.push(r.meta.explain.unwrap_or_default());
    }
    // A call counts at its gateway once dispatched, a moment before the
    // node takes its slot: the next call (through the other gateway) may
    // reach the same node first and take the slot it was headed for, and
    // the one it displaced moves on to the next node. So the calls fill
    // the nodes in order, two and two and one, but the last three may
    // swap places.
    assert_eq!(
        served[..2],
        expected[..2],
        "node-a first; the picks: {why:#?}"
    );
    let mut sorted = served.clone();
    sorted.sort();
    assert_eq!(
        sorted, expected,
        "node-b before node-c; the picks: {why:#?}"
    );

    // node-a is free again: both gateways come back to it once the node's
    // load report says so (within a report's coalescing, 25 ms, and its
    // trip; 2 s allowed).
    for (i, client) in clients.iter().enumerate() {
        let start = Instant::now();
        loop {
            let node = short_call(client).await;
            if node == "node-a" {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "gw-{i} still sends to {node}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for client in clients {
        client.close().await;
    }
}
