//! Every agent on every gateway, and the node as the authority on its
//! capacity: three gateway processes on one etcd, four agents each given
//! ONE gateway's address. Every agent ends up registered on every gateway
//! (it follows the member list), a call through each gateway reaches every
//! node, and a service with `max_concurrent = 1` called through all three
//! gateways at once never runs two calls at a time, while its callers see
//! no error (a refusal for being full makes the gateway pick again).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::cluster::ClusterFleet;
use crate::common::cluster::etcd_installed;
use crate::common::service;

/// The agents, agent k given gateway k mod 3's address.
const NODES: [&str; 4] = ["node-0", "node-1", "node-2", "node-3"];
/// A call's deadline in these tests.
const DEADLINE: Duration = Duration::from_secs(20);
/// Calls of the one-at-a-time service per gateway, all at once.
const CALLS_PER_GATEWAY: usize = 4;

/// A command service `name` that answers with `node`'s id.
fn whoami(node: &str) -> String {
    service(
        "whoami",
        "command",
        &format!(
            "command = [\"sh\", \"-c\", \"cat >/dev/null; printf {node}\"]\nmax_concurrent = 8"
        ),
    )
}

/// A command service `one` (`max_concurrent = 1`) whose every run takes
/// about 100 ms holding a lock directory in `dir`: a run that finds the
/// lock taken appends a line to `dir/overlaps`; each run appends one to
/// `dir/runs`.
fn one_at_a_time(dir: &std::path::Path) -> String {
    let dir = dir.display();
    let script = format!(
        "cat >/dev/null; echo run >> {dir}/runs; \
         if mkdir {dir}/lock 2>/dev/null; then sleep 0.1; rmdir {dir}/lock; \
         else echo overlap >> {dir}/overlaps; sleep 0.1; fi; printf ok"
    );
    service(
        "one",
        "command",
        &format!("command = [\"sh\", \"-c\", {script:?}]\nmax_concurrent = 1"),
    )
}

#[tokio::test]
async fn every_agent_serves_every_gateway_and_a_full_node_makes_them_pick_again() {
    if !etcd_installed() {
        return;
    }
    let mut fleet = ClusterFleet::start(3, "").await;
    let marks = fleet.path().join("one");
    std::fs::create_dir_all(&marks).unwrap();
    for (k, id) in NODES.iter().enumerate() {
        let mut services = whoami(id);
        if k == 0 {
            services.push_str(&one_at_a_time(&marks));
        }
        fleet.spawn_agent(id, k % 3, &services);
    }
    // Each agent was given one gateway: it registers with all three.
    fleet.wait_nodes_everywhere(&NODES).await;

    // A call through each gateway reaches every node.
    for i in fleet.live() {
        let client = fleet.gateway(i).client(1).await;
        let mut seen = BTreeSet::new();
        let start = Instant::now();
        while seen.len() < NODES.len() && start.elapsed() < Duration::from_secs(20) {
            let result = client
                .call("whoami", "?")
                .timeout(DEADLINE)
                .await
                .unwrap_or_else(|e| panic!("whoami via gw-{i}: {e}\n{}", fleet.log_tails()));
            let answer = String::from_utf8_lossy(&result.data).to_string();
            assert_eq!(answer, result.meta.node_id, "the node that ran it answers");
            seen.insert(answer);
        }
        assert_eq!(
            seen.len(),
            NODES.len(),
            "gw-{i} reached {seen:?}\n{}",
            fleet.log_tails()
        );
        client.close().await;
    }

    // node-0's `one` runs one call at a time, whichever gateway sent it:
    // calls through all three at once all succeed, one after another.
    let mut clients = Vec::new();
    for i in fleet.live() {
        clients.push(fleet.gateway(i).client(1).await);
    }
    let mut calls = tokio::task::JoinSet::new();
    for (i, client) in clients.iter().enumerate() {
        for _ in 0..CALLS_PER_GATEWAY {
            let client = client.clone();
            calls.spawn(async move { (i, client.call("one", "x").timeout(DEADLINE).await) });
        }
    }
    let mut errors = Vec::new();
    let mut ok = 0;
    while let Some(done) = calls.join_next().await {
        match done.unwrap() {
            (_, Ok(result)) => {
                assert_eq!(&result.data[..], b"ok");
                assert_eq!(result.meta.node_id, "node-0");
                ok += 1;
            }
            (i, Err(e)) => errors.push(format!("via gw-{i}: {e}")),
        }
    }
    assert!(
        errors.is_empty(),
        "callers saw errors: {errors:?}\n{}",
        fleet.log_tails()
    );
    let total = clients.len() * CALLS_PER_GATEWAY;
    assert_eq!(ok, total);
    let runs = std::fs::read_to_string(marks.join("runs")).unwrap_or_default();
    assert_eq!(runs.lines().count(), total, "each call ran once");
    let overlaps = std::fs::read_to_string(marks.join("overlaps")).unwrap_or_default();
    assert!(
        overlaps.is_empty(),
        "the node ran {} calls while another one ran",
        overlaps.lines().count()
    );
    for client in clients {
        client.close().await;
    }
}
