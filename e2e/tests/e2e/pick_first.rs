//! `pick-first` through the gateway with real agents: every call to the
//! first node by id while it has a free slot, then the next, back to the
//! first as soon as it frees one, and on to the next when the first node
//! is killed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use client::{CallResult, Client, ClientError};
use gateway::config::ServiceConfig;
use tokio::task::JoinHandle;

use crate::common::{Fleet, TOKEN, eventually, service};

/// Slots of `sleep` per node.
const SLOTS: u32 = 2;

/// A fleet whose `sleep` calls use `pick-first`, with its nodes registered
/// in the reverse of their id order (so node keys run against the ids):
/// `node-c` and `node-b` in this process, `node-a` a real process to kill.
async fn three_nodes() -> (Fleet, Arc<Client>, usize) {
    let mut fleet = Fleet::start(|c| {
        c.services.insert(
            "sleep".into(),
            ServiceConfig {
                policy: Some("pick-first".into()),
                ..ServiceConfig::default()
            },
        );
    })
    .await;
    let sleep = service("sleep", "sleep", &format!("max_concurrent = {SLOTS}"));
    fleet.spawn_agent("node-c", TOKEN, &sleep);
    fleet.wait_nodes(1).await;
    fleet.spawn_agent("node-b", TOKEN, &sleep);
    fleet.wait_nodes(2).await;
    let a = fleet.spawn_agent_process("node-a", TOKEN, &sleep);
    fleet.wait_nodes(3).await;
    let client = Arc::new(fleet.client().await);
    (fleet, client, a)
}

/// A `sleep` call of `ms`, running on its own task.
fn hold(client: &Arc<Client>, ms: u32) -> JoinHandle<Result<CallResult, ClientError>> {
    let client = client.clone();
    tokio::spawn(async move { client.call("sleep", ms.to_string()).await })
}

/// The node that served a short call, checking it was pick-first's pick.
async fn short_call(client: &Client) -> String {
    let r = client
        .call("sleep", "1")
        .await
        .expect("short call succeeds");
    assert_eq!(r.meta.policy, "pick-first");
    r.meta.node_id
}

/// Waits until the gateway runs `n` calls of `sleep` on `node`.
async fn wait_in_flight(fleet: &Fleet, node: &str, n: u32) {
    let mut seen: Vec<String> = Vec::new();
    eventually(Duration::from_secs(10), || {
        let busy = fleet
            .gateway
            .registry()
            .get(node)
            .map_or(0, |x| x.in_flight("sleep"));
        let all: Vec<String> = ["node-a", "node-b", "node-c"]
            .iter()
            .filter_map(|id| {
                let x = fleet.gateway.registry().get(id)?;
                Some(format!("{id} {}", x.in_flight("sleep")))
            })
            .collect();
        let now = all.join(", ");
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        (busy == n).then_some(()).ok_or(format!(
            "{node}: {busy} calls in flight, expected {n} (seen: {})",
            seen.join(" / ")
        ))
    })
    .await;
}

/// Waits until `node` runs no `sleep` call by the gateway's count and by
/// its own latest stats report (a report sent while a call was still
/// running would count it as another gateway's until the next one).
async fn wait_idle(fleet: &Fleet, node: &str) {
    eventually(Duration::from_secs(10), || {
        let n = fleet.gateway.registry().get(node).ok_or("gone")?;
        let reported = n
            .stats()
            .and_then(|s| s.in_flight.iter().find(|(s, _)| s == "sleep").map(|x| x.1))
            .unwrap_or(0);
        (n.in_flight("sleep") == 0 && reported == 0)
            .then_some(())
            .ok_or(format!("{node}: {reported} calls reported in flight"))
    })
    .await;
}

/// Holds every slot with calls of `ms`, one at a time: the node each went
/// to, in order.
async fn fill(
    fleet: &Fleet,
    client: &Arc<Client>,
    nodes: &[&str],
    ms: u32,
) -> Vec<JoinHandle<Result<CallResult, ClientError>>> {
    let mut held = Vec::new();
    for node in nodes {
        for n in 1..=SLOTS {
            held.push(hold(client, ms));
            // Each call lands before the next starts: on `node`.
            wait_in_flight(fleet, node, n).await;
        }
    }
    held
}

async fn served(held: Vec<JoinHandle<Result<CallResult, ClientError>>>) -> Vec<String> {
    let mut nodes = Vec::new();
    for task in held {
        let r = task.await.unwrap().expect("held call succeeds");
        assert_eq!(r.meta.policy, "pick-first");
        nodes.push(r.meta.node_id);
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pick_first_keeps_to_the_first_node_until_it_is_full_or_gone() {
    let (mut fleet, client, a) = three_nodes().await;

    // One call at a time: always the first node by id.
    for _ in 0..5 {
        assert_eq!(short_call(&client).await, "node-a");
    }

    // Calls held: node-a fills, then node-b, then node-c.
    let first = fill(&fleet, &client, &["node-a"], 1_500).await;
    let rest = fill(&fleet, &client, &["node-b", "node-c"], 4_000).await;
    // Every slot is taken: a call waits in the queue until one frees
    // (node-a's, first).
    let queued = hold(&client, 1);
    assert_eq!(served(first).await, ["node-a", "node-a"]);
    let waited = queued.await.unwrap().expect("queued call succeeds");
    assert_eq!(waited.meta.node_id, "node-a");
    // node-a has room again while node-b and node-c are full: back to it.
    wait_idle(&fleet, "node-a").await;
    assert_eq!(short_call(&client).await, "node-a");
    let nodes = served(rest).await;
    assert_eq!(nodes, ["node-b", "node-b", "node-c", "node-c"]);

    // node-a is killed: once the gateway drops it, node-b is first.
    fleet.agent(a).kill();
    fleet.wait_nodes(2).await;
    wait_idle(&fleet, "node-b").await;
    wait_idle(&fleet, "node-c").await;
    for _ in 0..3 {
        assert_eq!(short_call(&client).await, "node-b");
    }
    let held = fill(&fleet, &client, &["node-b"], 1_000).await;
    assert_eq!(short_call(&client).await, "node-c", "node-b is full");
    assert_eq!(served(held).await, ["node-b", "node-b"]);
}
