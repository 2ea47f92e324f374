//! The admin HTTP port end to end: Prometheus `/metrics` (checked by
//! `promtool check metrics`), the JSON API (lists, policy change, drain),
//! Server-Sent Events, and the dashboard rendered by headless Chromium
//! (with two tenants, whose rates the services table shows).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use client::{Client, ClientConfig, ErrorKind};
use gateway::config::TenantConfig;
use serde_json::Value;

use crate::common::browser::Browser;
use crate::common::{ADMIN, Fleet, TOKEN, promtool_check, service};

fn base(fleet: &Fleet) -> String {
    format!("http://{}", fleet.gateway.admin_addr().expect("admin port"))
}

async fn get_json(url: &str) -> Value {
    let r = reqwest::get(url).await.expect("GET");
    assert!(r.status().is_success(), "{url}: {}", r.status());
    serde_json::from_str(&r.text().await.unwrap()).expect("JSON")
}

async fn send(method: reqwest::Method, url: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let r = request.send().await.expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn two_echo_nodes() -> Fleet {
    two_echo_nodes_with(|_| {}).await
}

/// Caches `echo` for a minute.
fn cache_echo(config: &mut gateway::GatewayConfig) {
    config.services.insert(
        "echo".into(),
        gateway::config::ServiceConfig {
            cache_ttl_s: Some(60),
            ..Default::default()
        },
    );
}

/// Two tenants, `team-a` (key `sk-a`) and `team-b` (key `sk-b`).
fn two_tenants(config: &mut gateway::GatewayConfig) {
    config.tenants = ["a", "b"]
        .map(|t| TenantConfig {
            api_keys: vec![format!("sk-{t}")],
            ..TenantConfig::new(format!("team-{t}"))
        })
        .to_vec();
}

/// An SDK client presenting `key`.
async fn keyed_client(fleet: &Fleet, key: &str) -> Client {
    let mut config = ClientConfig::new(fleet.addr.clone(), fleet.ca());
    config.api_key = Some(key.into());
    Client::connect(config).await.expect("client connects")
}

/// A gateway (`tweak`ed) and two agents hosting `echo`.
async fn two_echo_nodes_with(tweak: impl FnOnce(&mut gateway::GatewayConfig)) -> Fleet {
    let mut fleet = Fleet::start(tweak).await;
    fleet.spawn_agent("node-a", TOKEN, &service("echo", "echo", ""));
    fleet.spawn_agent("node-b", TOKEN, &service("echo", "echo", ""));
    fleet.wait_nodes(2).await;
    fleet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_exported_and_pass_promtool() {
    let fleet = two_echo_nodes_with(cache_echo).await;
    let client = fleet.client().await;
    client.call("echo", "m0").await.expect("repeat");
    for i in 0..6 {
        client.call("echo", format!("m{i}")).await.expect("echo");
    }
    let err = client
        .call("no-such-service", "x")
        .await
        .expect_err("unknown");
    assert_eq!(err.kind(), Some(ErrorKind::UnknownService));
    // Stats (every 200 ms) set the node gauges.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let text = reqwest::get(format!("{}/metrics", base(&fleet)))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "# TYPE calls_total counter",
        "service=\"echo\"",
        "outcome=\"ok\"",
        "outcome=\"unknown_service\"",
        "# TYPE call_duration_seconds histogram",
        "call_duration_seconds_bucket{",
        "node_cpu_percent{node=\"node-a\"}",
        "node_memory_total_bytes{node=\"node-b\"}",
        "node_in_flight{node=\"node-a\"}",
        "connected_agents",
        "connected_clients",
        "policy_pick_duration_seconds_bucket",
        "cache_hits_total{service=\"echo\"}",
        "cache_misses_total{service=\"echo\"}",
        "cache_bytes",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }

    promtool_check(&text).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_lists_changes_policies_and_drains_nodes() {
    let fleet = two_echo_nodes().await;
    let url = base(&fleet);
    let client = fleet.client().await;
    client.call("echo", "warm").await.unwrap();

    let nodes = get_json(&format!("{url}/api/nodes")).await;
    let ids: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["spec"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["node-a", "node-b"]);
    let services = get_json(&format!("{url}/api/services")).await;
    let echo = services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "echo")
        .expect("echo listed");
    assert_eq!(echo["nodes_loaded"].as_array().unwrap().len(), 2);
    assert_eq!(echo["policy"], "round-robin");
    let policies = get_json(&format!("{url}/api/policies")).await;
    assert!(
        policies["policies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "least-request")
    );
    get_json(&format!("{url}/api/queues")).await;

    // Drain node-a: every call goes to node-b; undrain: both serve again.
    let drain = format!("{url}/api/nodes/node-a/drain");
    let (status, body) = send(reqwest::Method::POST, &drain, None, "").await;
    assert_eq!(status, 401, "changes need the admin token");
    // The admin port's one error shape (the ingress's and the jobs' too).
    assert_eq!(body["error"]["type"], "authentication_error", "{body}");
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    assert!(body["error"]["message"].as_str().is_some(), "{body}");
    let (status, body) = send(reqwest::Method::POST, &drain, Some(ADMIN), "").await;
    assert_eq!((status, &body["draining"]), (200, &Value::Bool(true)));
    for _ in 0..6 {
        let r = client.call("echo", "d").await.unwrap();
        assert_eq!(r.meta.node_id, "node-b", "a drained node gets no new call");
    }
    let nodes = get_json(&format!("{url}/api/nodes")).await;
    assert_eq!(nodes[0]["draining"], true);
    let undrain = format!("{url}/api/nodes/node-a/undrain");
    let (status, _) = send(reqwest::Method::POST, &undrain, Some(ADMIN), "").await;
    assert_eq!(status, 200);
    let mut served = Vec::new();
    for _ in 0..4 {
        served.push(client.call("echo", "u").await.unwrap().meta.node_id);
    }
    assert!(served.iter().any(|n| n == "node-a"), "{served:?}");
    let (status, body) = send(
        reqwest::Method::POST,
        &format!("{url}/api/nodes/nope/drain"),
        Some(ADMIN),
        "",
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        (&body["error"]["type"], &body["error"]["code"]),
        (
            &Value::from("not_found_error"),
            &Value::from("unknown_node")
        ),
        "{body}"
    );

    // The cache: stats, and purge (admin).
    let cache = get_json(&format!("{url}/api/cache")).await;
    assert!(cache["max_bytes"].as_u64().unwrap() > 0, "{cache}");
    let (status, _) = send(
        reqwest::Method::DELETE,
        &format!("{url}/api/cache"),
        None,
        "",
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = send(
        reqwest::Method::DELETE,
        &format!("{url}/api/cache?service=echo"),
        Some(ADMIN),
        "",
    )
    .await;
    assert_eq!(
        (status, &body["service"]),
        (200, &Value::from("echo")),
        "{body}"
    );

    // Policy change over HTTP.
    let policy = format!("{url}/api/services/echo/policy");
    let (status, _) = send(
        reqwest::Method::PUT,
        &policy,
        Some("wrong"),
        r#"{"policy":"least-request"}"#,
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = send(
        reqwest::Method::PUT,
        &policy,
        Some(ADMIN),
        r#"{"policy":"nope"}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = send(
        reqwest::Method::PUT,
        &policy,
        Some(ADMIN),
        r#"{"policy":"least-request"}"#,
    )
    .await;
    assert_eq!(status, 200);
    let r = client.call("echo", "p").await.unwrap();
    assert_eq!(r.meta.policy, "least-request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_snapshots_and_changes() {
    let fleet = two_echo_nodes().await;
    let url = base(&fleet);
    let mut events = reqwest::get(format!("{url}/api/events")).await.unwrap();
    assert_eq!(
        events.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut seen = String::new();
    let start = Instant::now();
    while !(seen.contains("event: snapshot") && seen.contains("\"node-b\"")) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no snapshot: {seen}"
        );
        let chunk = events.chunk().await.unwrap().expect("stream open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let (status, _) = send(
        reqwest::Method::POST,
        &format!("{url}/api/nodes/node-b/drain"),
        Some(ADMIN),
        "",
    )
    .await;
    assert_eq!(status, 200);
    let start = Instant::now();
    while !seen.contains("event: change") {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no change event: {seen}"
        );
        let chunk = events.chunk().await.unwrap().expect("stream open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("\"kind\":\"drain\""), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_renders_nodes_and_charts_live_in_headless_chromium() {
    let mut fleet = Fleet::start(|config| {
        cache_echo(config);
        two_tenants(config);
    })
    .await;
    // `a-idle` comes first by name but gets no call: "why this node"
    // opens on the busiest service, `echo`.
    let both = format!(
        "{}{}",
        service("a-idle", "echo", ""),
        service("echo", "echo", "")
    );
    fleet.spawn_agent("node-a", TOKEN, &both);
    fleet.spawn_agent("node-b", TOKEN, &service("echo", "echo", ""));
    fleet.wait_nodes(2).await;
    let (a, b) = (
        keyed_client(&fleet, "sk-a").await,
        keyed_client(&fleet, "sk-b").await,
    );
    // 20 distinct calls, then 20 repeats answered by the cache: 50 %.
    // team-a makes the first 20 and half the repeats (30 calls), team-b
    // the other half (10).
    for round in 0..2 {
        for i in 0..20 {
            let client = if round == 1 && i >= 10 { &b } else { &a };
            let r = client.call("echo", format!("d{i}")).await.unwrap();
            assert_eq!(r.meta.cache.is_some(), round == 1, "{:?}", r.meta.cache);
        }
    }
    // Each tenant's rate over the last minute (or the gateway's age, when
    // younger: `rate_window_s`), busiest first: 30 and 10 calls over that
    // time (a call is counted just after its answer is sent, so the last
    // may lag a little).
    let want = [("team-a", 30.0, 0.0), ("team-b", 10.0, 0.0)];
    let start = Instant::now();
    loop {
        let snapshot = get_json(&format!("{}/api/snapshot", base(&fleet))).await;
        let covered = snapshot["rate_window_s"].as_f64().expect("rate_window_s");
        assert!((1.0..=60.0).contains(&covered), "{covered}");
        let echo = snapshot["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "echo")
            .expect("echo listed")
            .clone();
        let tenants: Vec<(String, f64, f64)> = echo["tenants"]
            .as_array()
            .unwrap_or_else(|| panic!("no tenants in {echo}"))
            .iter()
            .map(|t| {
                (
                    t["tenant"].as_str().unwrap().to_string(),
                    (t["calls_per_s"].as_f64().unwrap() * covered).round(),
                    (t["errors_per_s"].as_f64().unwrap() * covered).round(),
                )
            })
            .collect();
        if tenants
            .iter()
            .map(|(t, c, e)| (t.as_str(), *c, *e))
            .eq(want.iter().copied())
        {
            let calls = echo["calls_per_s"].as_f64().unwrap() * covered;
            assert!(
                (calls - 40.0).abs() < 1e-6,
                "40 calls over {covered} s: {echo}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "want {want:?} in {echo}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The page itself carries the snapshot it draws first.
    let page = reqwest::get(format!("{}/", base(&fleet)))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let slot = r#"<script id="snapshot" type="application/json">"#;
    let embedded = &page[page.find(slot).expect("a snapshot slot") + slot.len()..];
    let embedded: Value = serde_json::from_str(&embedded[..embedded.find("</script>").unwrap()])
        .expect("the page's snapshot is JSON");
    assert_eq!(
        embedded["nodes"].as_array().map(Vec::len),
        Some(2),
        "{embedded}"
    );

    let browser = Browser::start().await;
    // With the event stream and the snapshot API unreachable, the page
    // still draws the fleet from the snapshot it came with.
    browser.cdp("Network.enable", serde_json::json!({})).await;
    browser
        .cdp(
            "Network.setBlockedURLs",
            serde_json::json!({"urls": ["*/api/events*", "*/api/snapshot*"]}),
        )
        .await;
    browser.open(&format!("{}/", base(&fleet))).await;
    let at_load = browser
        .eval(
            "return [document.querySelectorAll('#nodes .node[data-node]').length, \
             document.querySelectorAll('#services tr[data-service]').length, \
             document.querySelector('#status').textContent !== 'live']",
        )
        .await;
    assert_eq!(
        at_load,
        serde_json::json!([2, 2, true]),
        "nodes and services drawn once the page loaded, with no event stream"
    );
    browser
        .cdp("Network.setBlockedURLs", serde_json::json!({"urls": []}))
        .await;
    browser.open(&format!("{}/", base(&fleet))).await;
    browser
        .wait_for(
            "both nodes",
            "return document.querySelectorAll('#nodes .node[data-node]').length === 2",
        )
        .await;
    browser
        .wait_for(
            "the live event stream",
            "return document.querySelector('#status').textContent === 'live'",
        )
        .await;
    for (what, script) in [
        (
            "the topology tree",
            "return document.querySelectorAll('#topology .topo-node').length === 2 && document.querySelectorAll('#topology .topo-service').length === 3",
        ),
        (
            "the echo service row",
            "return !!document.querySelector('#services tr[data-service=\"echo\"] select')",
        ),
        (
            "the calls/s chart",
            "return !!document.querySelector('#chart-rate .uplot canvas')",
        ),
        (
            "the latency chart",
            "return !!document.querySelector('#chart-latency .uplot canvas')",
        ),
        (
            "the queue chart",
            "return !!document.querySelector('#chart-queue .uplot canvas')",
        ),
        (
            "each node's share",
            "return document.querySelectorAll('#share .share-row').length === 2",
        ),
        (
            "GPU or no-GPU lines",
            "return document.querySelectorAll('#nodes .node .bar').length >= 4",
        ),
        (
            "each tenant's rate in the echo row, busiest first",
            "const echo = window.lastSnapshot.services.find(s => s.name === 'echo'); \
             return [...document.querySelectorAll('#services tr[data-service=\"echo\"] td.tenants .tenant')].map(t => t.textContent).join(' · ') === \
             echo.tenants.map(t => `${t.tenant} ${t.calls_per_s.toFixed(2)}/s`).join(' · ') && echo.tenants.map(t => t.tenant).join() === 'team-a,team-b'",
        ),
        (
            "why this node: opened on the busiest service, echo, and its decisions",
            "return document.querySelector('#why-service').value === 'echo' && document.querySelectorAll('#why tbody tr[data-call]').length > 0",
        ),
        (
            "why this node: each decision's call cell tells its request id",
            "return [...document.querySelectorAll('#why tbody tr[data-call] td:nth-child(2)')].every(td => /^request id [0-9a-f]{32}$/.test(td.title))",
        ),
        (
            "the cache hit ratio",
            "return (document.querySelector('#cache .cache-row[data-service=\"echo\"] .label') || {}).textContent === 'echo 50%'",
        ),
    ] {
        browser.wait_for(what, script).await;
    }
    // Live: a drained node shows up as such without a reload.
    let (status, _) = send(
        reqwest::Method::POST,
        &format!("{}/api/nodes/node-b/drain", base(&fleet)),
        Some(ADMIN),
        "",
    )
    .await;
    assert_eq!(status, 200);
    browser
        .wait_for(
            "the drained node and its alert",
            "return !!document.querySelector('#nodes .node.draining[data-node=\"node-b\"]') && [...document.querySelectorAll('#alerts li')].some(li => li.textContent.includes('node-b is draining'))",
        )
        .await;
    let calls_drawn = browser
        .eval("return Object.keys(window.lastSnapshot ? window.lastSnapshot.series : {}).length")
        .await;
    assert_eq!(calls_drawn, serde_json::json!(1), "one service charted");
    let tenants_sent = browser
        .eval("return window.lastSnapshot.services.find(s => s.name === 'echo').tenants.map(t => t.tenant)")
        .await;
    assert_eq!(
        tenants_sent,
        serde_json::json!(["team-a", "team-b"]),
        "the live snapshot carries the tenants too"
    );

    let png = browser.screenshot().await;
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real PNG"
    );
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dashboard.png");
    std::fs::write(&path, &png).unwrap();
    eprintln!("dashboard screenshot: {}", path.display());
    browser.close().await;
}
