//! The admin port's counters tell the truth: rates over the time the
//! gateway has run, node call counts across an agent's reconnects, the
//! queue-depth series kept by the gateway, and charts bounded however many
//! made-up names callers send.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use client::Client;
use serde_json::Value;

use crate::common::{Fleet, TOKEN, service};

async fn snapshot(fleet: &Fleet) -> Value {
    let url = format!(
        "http://{}/api/snapshot",
        fleet.gateway.admin_addr().expect("admin port")
    );
    let r = reqwest::get(&url).await.expect("GET");
    assert!(r.status().is_success(), "{url}: {}", r.status());
    serde_json::from_str(&r.text().await.unwrap()).expect("JSON")
}

/// `node`'s `calls_total` as `/api/snapshot` shows it.
async fn node_calls(fleet: &Fleet, node: &str) -> Option<u64> {
    snapshot(fleet).await["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["spec"]["id"] == node)
        .and_then(|n| n["calls_total"].as_u64())
}

/// Waits until `node`'s `calls_total` is `want` (a call is counted when
/// it ends, just after its answer).
async fn wait_node_calls(fleet: &Fleet, node: &str, want: u64) {
    let start = Instant::now();
    loop {
        let calls = node_calls(fleet, node).await;
        if calls == Some(want) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{node}: want {want} calls, have {calls:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Makes `n` successful `echo` calls (a call that meets a node going away
/// is made again).
async fn echo_calls(client: &Client, n: usize) {
    let start = Instant::now();
    let mut done = 0;
    while done < n {
        match client.call("echo", format!("c{done}")).await {
            Ok(_) => done += 1,
            Err(error) => {
                assert!(start.elapsed() < Duration::from_secs(20), "{error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The connection age of `node`, ms.
async fn connected_ms(fleet: &Fleet, node: &str) -> Option<u64> {
    snapshot(fleet).await["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["spec"]["id"] == node)
        .and_then(|n| n["connected_ms"].as_u64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_call_counts_survive_an_agents_reconnects() {
    let mut fleet = Fleet::start(|_| {}).await;
    let echo = service("echo", "echo", "");
    let first = fleet.spawn_agent_process("node-a", TOKEN, &echo);
    fleet.wait_nodes(1).await;
    let client = fleet.client().await;
    echo_calls(&client, 5).await;
    wait_node_calls(&fleet, "node-a", 5).await;

    // Killed, dropped, back: its count goes on.
    fleet.agent(first).kill();
    fleet.wait_nodes(0).await;
    let second = fleet.spawn_agent_process("node-a", TOKEN, &echo);
    fleet.wait_nodes(1).await;
    wait_node_calls(&fleet, "node-a", 5).await;
    echo_calls(&client, 3).await;
    wait_node_calls(&fleet, "node-a", 8).await;

    // Killed and back at once: the new connection may replace the old one
    // before the gateway notices it is gone. Its count goes on too.
    let before = connected_ms(&fleet, "node-a").await.expect("node-a");
    fleet.agent(second).kill();
    fleet.spawn_agent_process("node-a", TOKEN, &echo);
    let start = Instant::now();
    while connected_ms(&fleet, "node-a")
        .await
        .is_none_or(|ms| ms >= before)
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never reconnected"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    echo_calls(&client, 2).await;
    wait_node_calls(&fleet, "node-a", 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_are_over_the_time_the_gateway_has_run() {
    let mut fleet = Fleet::start(|_| {}).await;
    fleet.spawn_agent("node-a", TOKEN, &service("echo", "echo", ""));
    fleet.wait_nodes(1).await;
    let client = fleet.client().await;
    echo_calls(&client, 30).await;
    let start = Instant::now();
    loop {
        let snap = snapshot(&fleet).await;
        let covered = snap["rate_window_s"].as_f64().expect("rate_window_s");
        let uptime = snap["uptime_s"].as_f64().unwrap();
        assert!(
            covered >= uptime.max(1.0) && covered < (uptime + 1.0).max(1.0) + 1e-9,
            "a young gateway's rates cover its age: {covered} s, up {uptime} s"
        );
        let echo = snap["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "echo")
            .expect("echo")
            .clone();
        let calls = echo["calls_per_s"].as_f64().unwrap() * covered;
        if (calls - 30.0).abs() < 1e-6 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "30 calls over {covered} s, not {calls}: {echo}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_depth_series_is_kept_by_the_gateway() {
    let mut fleet = Fleet::start(|_| {}).await;
    fleet.spawn_agent(
        "node-a",
        TOKEN,
        &service("sleep", "sleep", "max_concurrent = 1"),
    );
    fleet.wait_nodes(1).await;
    let client = std::sync::Arc::new(fleet.client().await);
    // One runs for 1.5 s, two wait behind it; nobody watches the dashboard.
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .call("sleep", "1500")
                    .timeout(Duration::from_secs(20))
                    .await
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap().expect("sleep");
    }
    let snap = snapshot(&fleet).await;
    let sleep = snap["queue_series"]["sleep"]
        .as_array()
        .unwrap_or_else(|| panic!("no queue series: {}", snap["queue_series"]));
    let rate = snap["series"]["sleep"].as_array().expect("call series");
    assert_eq!(
        sleep.len(),
        rate.len(),
        "the same seconds as the call charts"
    );
    assert_eq!(sleep[0]["t"], rate[0]["t"]);
    let deepest = sleep.iter().map(|p| p["depth"].as_u64().unwrap()).max();
    assert!(
        deepest.is_some_and(|d| (1..=2).contains(&d)),
        "calls waited: {sleep:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_service_names_leave_the_dashboard_bounded() {
    let mut fleet = Fleet::start(|_| {}).await;
    fleet.spawn_agent("node-a", TOKEN, &service("echo", "echo", ""));
    fleet.wait_nodes(1).await;
    let client = fleet.client().await;
    echo_calls(&client, 3).await;
    for i in 0..500 {
        let name = format!("flood-{i}");
        let err = client.call(&name, "x").await.expect_err("no such service");
        assert_eq!(err.kind(), Some(client::ErrorKind::UnknownService));
    }
    let snap = snapshot(&fleet).await;
    let charted: Vec<&String> = snap["series"].as_object().unwrap().keys().collect();
    assert!(
        charted.iter().all(|name| !name.starts_with("flood-")),
        "{charted:?}"
    );
    assert!(charted.len() <= 9, "{charted:?}");
    assert!(charted.iter().any(|name| *name == "echo"), "{charted:?}");
    let listed: Vec<&str> = snap["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["echo"]);
    let page = serde_json::to_string(&snap).unwrap();
    assert!(!page.contains("flood-"), "{} bytes", page.len());
}
