//! Hostile input that names things: thousands of calls to made-up
//! services and models, with and without a key, leave the gateway's
//! `/metrics` and its memory where they were. Label values come only from
//! names the fleet knows; every other name counts under `_unknown`.
//!
//! The gateway is a real process (`switchyard-e2e-gateway`), so its
//! resident memory is its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures_util::StreamExt as _;

use crate::chaos::{GatewayProcess, agent_process};
use crate::common::service;

/// Requests of each kind in the flood.
const FLOOD: usize = 3000;
/// Requests in flight at once.
const CONCURRENCY: usize = 32;
/// Most the `/metrics` page may grow by over the flood, bytes: the
/// `_unknown` series' values gain digits, no series is added.
const METRICS_GROWTH: usize = 4 * 1024;
/// Most the gateway's resident memory may grow by over the flood, KiB
/// (allocator arenas of the request tasks: under 1 MiB measured; a series
/// per name grew it by 25 MiB and `/metrics` from 0.25 to 8 MB).
const RSS_GROWTH_KIB: u64 = 8 * 1024;

async fn metrics(client: &reqwest::Client, gateway: &GatewayProcess) -> String {
    let url = format!("http://{}/metrics", gateway.admin);
    let r = client.get(url).send().await.expect("GET /metrics");
    assert!(r.status().is_success());
    r.text().await.unwrap()
}

/// Sends request `i` of the flood: a raw call to `flood-{i}` or a chat
/// completion for model `gpt-4o-{i}`, every other one with a key.
async fn hostile(client: &reqwest::Client, base: &str, i: usize) -> u16 {
    let request = if i.is_multiple_of(2) {
        client.post(format!("{base}/v1/call/flood-{i}")).body("x")
    } else {
        let body =
            format!(r#"{{"model":"gpt-4o-{i}","messages":[{{"role":"user","content":"hi"}}]}}"#);
        client
            .post(format!("{base}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
    };
    let request = if (i / 2).is_multiple_of(2) {
        request.header("authorization", "Bearer sk-team")
    } else {
        request
    };
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let _ = response.bytes().await;
    status
}

/// Runs requests `from..to` of the flood; returns how many got each status.
async fn flood(client: &reqwest::Client, base: &str, from: usize, to: usize) -> Vec<(u16, usize)> {
    let statuses: Vec<u16> = futures_util::stream::iter(from..to)
        .map(|i| hostile(client, base, i))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut counts: Vec<(u16, usize)> = Vec::new();
    for status in statuses {
        match counts.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => counts.push((status, 1)),
        }
    }
    counts.sort_unstable();
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_names_leaves_metrics_and_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let tenants = "[[tenants]]\nname = \"team\"\napi_keys = [\"sk-team\"]\n";
    let gateway = GatewayProcess::start(dir.path(), "gw", tenants, None).await;
    let _agent = agent_process(
        dir.path(),
        "node-a",
        gateway.addr,
        &gateway.ca,
        200,
        &service("echo", "echo", ""),
    );
    let client = reqwest::Client::new();
    let base = format!("http://{}", gateway.http);
    // A known service keeps its own label value.
    let mut served = false;
    for _ in 0..100 {
        let r = client
            .post(format!("{base}/v1/call/echo"))
            .header("authorization", "Bearer sk-team")
            .body("hello")
            .send()
            .await
            .expect("call echo");
        if r.status().is_success() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "echo never answered");

    // A first round creates the `_unknown` series and warms the
    // allocator; the flood after it must add nothing.
    let warm = flood(&client, &base, 0, 200).await;
    let before = metrics(&client, &gateway).await;
    let rss_before = gateway.process.rss_kib().expect("VmRSS");
    let statuses = flood(&client, &base, 200, 200 + 2 * FLOOD).await;
    let after = metrics(&client, &gateway).await;
    let rss_after = gateway.process.rss_kib().expect("VmRSS");
    println!(
        "flood of {} requests ({statuses:?}, warm-up {warm:?}): /metrics {} -> {} bytes, \
         gateway RSS {rss_before} -> {rss_after} KiB",
        2 * FLOOD,
        before.len(),
        after.len()
    );
    assert!(
        statuses
            .iter()
            .all(|(status, _)| [401, 404].contains(status)),
        "unknown names are refused: {statuses:?}"
    );
    for name in ["flood-", "gpt-4o-"] {
        assert!(!after.contains(name), "a series names {name}...:\n{after}");
    }
    assert!(
        after.contains(r#"service="_unknown""#),
        "unknown names count under _unknown:\n{after}"
    );
    assert!(after.contains(r#"calls_total{service="echo""#), "{after}");
    assert!(
        after.len() < before.len() + METRICS_GROWTH,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
    assert!(
        rss_after < rss_before + RSS_GROWTH_KIB,
        "gateway RSS grew from {rss_before} to {rss_after} KiB"
    );
    // The dashboard's window holds no entry per name either.
    let snapshot = client
        .get(format!("http://{}/api/snapshot", gateway.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in ["flood-", "gpt-4o-"] {
        assert!(!snapshot.contains(name), "the snapshot names {name}...");
    }
}
