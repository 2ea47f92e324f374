//! "Why this node": every built-in policy explains its pick, over QUIC
//! (`Call::explain`, hint `explain=1`), over the HTTP ingress
//! (`x-switchyard-explain`), and in `GET /api/decisions`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;

use crate::common::{Fleet, TOKEN, service};

/// Every policy `make plugins` ships except the LLM-aware ones, which have
/// tests of their own.
const BUILT_IN: [&str; 8] = [
    "round-robin",
    "random",
    "least-request",
    "latency",
    "cost",
    "resource-aware",
    "adaptive",
    "pick-first",
];

async fn two_echo_nodes() -> Fleet {
    let mut fleet = Fleet::start(|_| {}).await;
    fleet.spawn_agent("node-a", TOKEN, &service("echo", "echo", ""));
    fleet.spawn_agent("node-b", TOKEN, &service("echo", "echo", ""));
    fleet.wait_nodes(2).await;
    fleet
}

async fn get_json(url: &str) -> Value {
    let r = reqwest::get(url).await.expect("GET");
    assert!(r.status().is_success(), "{url}: {}", r.status());
    serde_json::from_str(&r.text().await.expect("body")).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_built_in_policy_explains_its_pick() {
    let fleet = two_echo_nodes().await;
    let client = fleet.client().await;
    for policy in BUILT_IN {
        let r = client
            .call("echo", "x")
            .policy(policy)
            .explain()
            .await
            .expect("call succeeds");
        let why = r
            .meta
            .explain
            .unwrap_or_else(|| panic!("{policy}: no explanation"));
        let head = format!("{policy} -> {}: ", r.meta.node_id);
        assert!(
            why.starts_with(&head),
            "{policy}: {why:?} should start {head:?}"
        );
        let reason = why[head.len()..].split(" | ").next().unwrap();
        assert!(
            reason.len() > 3 && !reason.starts_with('('),
            "{policy} gives a reason: {why:?}"
        );
        assert!(why.ends_with("(of 2)"), "{policy}: {why:?}");
    }
    // Without the hint, no explanation travels.
    let r = client.call("echo", "y").await.unwrap();
    assert_eq!(r.meta.explain, None);

    // The API keeps them all, newest first, with the scores.
    let admin = fleet.gateway.admin_addr().unwrap();
    let kept = get_json(&format!(
        "http://{admin}/api/decisions?service=echo&limit=50"
    ))
    .await;
    let decisions = kept["decisions"].as_array().expect("a list");
    assert_eq!(decisions.len(), BUILT_IN.len() + 1, "{kept}");
    let policies: Vec<&str> = decisions
        .iter()
        .rev()
        .take(BUILT_IN.len())
        .map(|d| d["policy"].as_str().unwrap())
        .collect();
    assert_eq!(policies, BUILT_IN);
    for d in decisions {
        assert!(!d["reason"].as_str().unwrap().is_empty(), "{d}");
        assert_eq!(d["offered"], 2, "{d}");
        let top = d["top"].as_array().unwrap();
        assert_eq!(top.len(), 2, "{d}");
        assert_eq!(
            top[0]["node"], d["node"],
            "the chosen node comes first: {d}"
        );
        assert!(top.iter().all(|c| c["score"].is_number()), "scored: {d}");
    }
    let all = get_json(&format!("http://{admin}/api/decisions")).await;
    assert!(all["services"]["echo"].is_array(), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingress_returns_the_explanation_in_a_header() {
    let fleet = two_echo_nodes().await;
    let url = format!("http://{}/v1/call/echo", fleet.gateway.http_addr().unwrap());
    let http = reqwest::Client::new();
    let r = http
        .post(&url)
        .header("x-switchyard-explain", "1")
        .header("x-switchyard-policy", "least-request")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let node = r.headers()["x-switchyard-node"]
        .to_str()
        .unwrap()
        .to_string();
    let why = r.headers()["x-switchyard-explain"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        why.starts_with(&format!("least-request -> {node}: ")),
        "{why}"
    );
    let plain = http.post(&url).body("hello").send().await.unwrap();
    assert!(plain.headers().get("x-switchyard-explain").is_none());
    let bad = http
        .post(&url)
        .header("x-switchyard-explain", "maybe")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400, "a bad flag is refused");
}
