//! Echo waves on the real three-level tree: the topology comes back whole,
//! and partial (never a hang) with a branch stopped; a change pushed down
//! is confirmed only once every gateway applied it, and a stopped branch
//! is named instead.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::Tree;
use crate::chaos::GatewayProcess;
use crate::common::ADMIN;

/// Stats period here, ms: a stopped gateway stays in its parent's fleet
/// for three of them, longer than the waves below wait for it.
const SLOW_STATS_MS: u32 = 1500;

async fn topology(gateway: &GatewayProcess, timeout_ms: u32) -> (Value, Duration) {
    let started = Instant::now();
    let body = reqwest::get(format!(
        "http://{}/api/topology?timeout_ms={timeout_ms}",
        gateway.admin
    ))
    .await
    .expect("topology")
    .json::<Value>()
    .await
    .expect("json");
    (body, started.elapsed())
}

async fn push(gateway: &GatewayProcess, body: Value, timeout_ms: u32) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!(
            "http://{}/api/tree/push?timeout_ms={timeout_ms}",
            gateway.admin
        ))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .expect("push");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

/// `id`'s children's ids in a topology answer's `tree`.
fn children(tree: &Value) -> Vec<String> {
    tree["children"]
        .as_array()
        .expect("children")
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

fn child<'a>(tree: &'a Value, id: &str) -> &'a Value {
    tree["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no child {id} in {tree}"))
}

fn node_ids(gateway: &Value) -> Vec<String> {
    gateway["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect()
}

async fn policy_of(gateway: &GatewayProcess, service: &str) -> String {
    let services: Value = reqwest::get(format!("http://{}/api/services", gateway.admin))
        .await
        .expect("services")
        .json()
        .await
        .expect("json");
    services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == service)
        .map(|s| s["policy"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topology_wave_returns_the_tree_and_marks_a_stopped_branch() {
    let tree = Tree::start_every("", "", SLOW_STATS_MS).await;
    let (answer, took) = topology(&tree.root, 3000).await;
    eprintln!(
        "topology of 3 levels, 4 gateways: {took:?} (wave {} ms)",
        answer["took_ms"]
    );
    assert_eq!(answer["partial"], false, "{answer}");
    assert_eq!(answer["gateways"], 4, "{answer}");
    let root = &answer["tree"];
    assert_eq!(root["id"], "root");
    assert_eq!(children(root), ["site-a", "site-b"]);
    assert!(
        node_ids(root).is_empty(),
        "the root's nodes are gateways: {root}"
    );
    let site_a = child(root, "site-a");
    assert_eq!(node_ids(site_a), ["node-a"]);
    assert_eq!(node_ids(child(site_a, "site-a1")), ["node-a1"]);
    assert_eq!(node_ids(child(root, "site-b")), ["node-b"]);
    assert_eq!(child(site_a, "site-a1")["nodes"][0]["capacity"], 4 + 2 + 1);

    // The CLI draws the same tree.
    let admin_url = format!("http://{}", tree.root.admin);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard-e2e-cli"))
        .args(["--admin-url", &admin_url, "topology"])
        .output()
        .expect("switchyard topology runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "root [gateway]",
        "  site-a [gateway]",
        "    site-a1 [gateway]",
        "      node-a1 ",
        "  site-b [gateway]",
        "    node-b ",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(line)),
            "no line {line:?} in:\n{text}"
        );
    }

    // A stopped grandchild: the wave ends at its deadline, partial.
    tree.site_a1.process.signal("STOP");
    let (answer, took) = topology(&tree.root, 800).await;
    tree.site_a1.process.signal("CONT");
    eprintln!("topology with site-a1 stopped: {took:?}");
    assert!(
        took < Duration::from_millis(800 + 700),
        "bounded by its timeout: {took:?}"
    );
    assert_eq!(answer["partial"], true, "{answer}");
    // site-a waits for site-a1 until its own deadline, one hop before the
    // root's; on a loaded machine its answer may itself come too late,
    // and then the whole branch is the one marked missing.
    let site_a = child(&answer["tree"], "site-a");
    if site_a["missing"].is_null() {
        let stopped = child(site_a, "site-a1");
        assert!(stopped["missing"].is_string(), "{stopped}");
    }
    assert_eq!(node_ids(child(&answer["tree"], "site-b")), ["node-b"]);
    // It answers again once it runs.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (answer, _) = topology(&tree.root, 2000).await;
        if answer["partial"] == false && answer["gateways"] == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "still partial: {answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_policy_is_confirmed_only_once_every_gateway_has_it() {
    let tree = Tree::start_every("", "", SLOW_STATS_MS).await;
    let gateways = [&tree.root, &tree.site_a, &tree.site_a1, &tree.site_b];
    let change = serde_json::json!({"set_policy": {"service": "echo", "policy": "least-request"}});
    let (status, answer) = push(&tree.root, change, 3000).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["confirmed"], true, "{answer}");
    assert_eq!(answer["gateways"], 4);
    // Confirmed means applied: every gateway has it now.
    for gateway in gateways {
        assert_eq!(
            policy_of(gateway, "echo").await,
            "least-request",
            "{}",
            gateway.process.name
        );
    }

    // A drain finds its node wherever it is: node-a1, two levels down.
    let drain = serde_json::json!({"drain": {"node": "node-a1", "draining": true}});
    let (status, answer) = push(&tree.root, drain, 3000).await;
    assert_eq!(status, 200, "{answer}");
    let (topo, _) = topology(&tree.root, 3000).await;
    let a1 = child(child(&topo["tree"], "site-a"), "site-a1");
    assert_eq!(a1["nodes"][0]["draining"], true, "{a1}");
    assert_eq!(
        child(&topo["tree"], "site-b")["nodes"][0]["draining"],
        false
    );

    // A policy no gateway has: refused everywhere, and said where.
    let bad = serde_json::json!({"set_policy": {"service": "echo", "policy": "no-such-policy"}});
    let (status, answer) = push(&tree.root, bad, 3000).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["confirmed"], false);
    assert_eq!(answer["failures"].as_array().unwrap().len(), 4, "{answer}");

    // A stopped branch: not confirmed, and the failure names it; the
    // others applied it.
    tree.site_b.process.signal("STOP");
    let change = serde_json::json!({"set_policy": {"service": "echo", "policy": "random"}});
    let (status, answer) = push(&tree.root, change, 800).await;
    tree.site_b.process.signal("CONT");
    assert_eq!(status, 409, "{answer}");
    let failures = answer["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{answer}");
    assert_eq!(failures[0]["path"], serde_json::json!(["root", "site-b"]));
    for gateway in [&tree.root, &tree.site_a, &tree.site_a1] {
        assert_eq!(
            policy_of(gateway, "echo").await,
            "random",
            "{}",
            gateway.process.name
        );
    }
    // The CLI says so too, and fails.
    let admin_url = format!("http://{}", tree.root.admin);
    tree.site_b.process.signal("STOP");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard-e2e-cli"))
        .args([
            "--admin-url",
            &admin_url,
            "tree",
            "--timeout-ms",
            "800",
            "--admin-token",
            ADMIN,
        ])
        .args(["policy", "echo", "round-robin"])
        .output()
        .expect("switchyard tree runs");
    tree.site_b.process.signal("CONT");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "not confirmed: {err}");
    assert!(err.contains("root > site-b: "), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_draws_the_live_tree_coloured_by_load() {
    let tree = Tree::start("", "").await;
    let browser = crate::common::browser::Browser::start().await;
    browser.open(&format!("http://{}/", tree.root.admin)).await;
    browser
        .wait_for(
            "every gateway and leaf node in the Gateways panel",
            "const ids = [...document.querySelectorAll('#tree [data-id]')].map(e => e.dataset.id); \
             return ['root', 'site-a', 'site-a1', 'site-b', 'node-a', 'node-a1', 'node-b'] \
               .every(id => ids.includes(id)) \
               && document.querySelector('#tree-status').textContent.startsWith('4 gateways');",
        )
        .await;
    // The nesting is the tree's: node-a1 under site-a1 under site-a.
    let nested = browser
        .eval(
            "return document.querySelector('#tree [data-id=\"site-a\"] [data-id=\"site-a1\"] [data-id=\"node-a1\"]') !== null;",
        )
        .await;
    assert_eq!(nested, true);
    // Two long calls on node-b: its colour follows its load (2 of 7).
    let client = tree.root.client(1).await;
    let busy: Vec<_> = (0..4)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.call("work", "4000").await })
        })
        .collect();
    browser
        .wait_for(
            "node-b drawn with its calls in flight",
            "const n = document.querySelector('#tree [data-id=\"node-b\"]'); \
             return n !== null && Number(n.dataset.load) > 0;",
        )
        .await;
    let png = browser.screenshot().await;
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tree.png"), &png).unwrap();
    browser.close().await;
    for call in busy {
        call.await.unwrap().expect("work");
    }
}
