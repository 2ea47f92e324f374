//! Run-time changes in a cluster of three gateway processes on one etcd:
//! a policy pushed through one gateway is loaded by all three (the same
//! BLAKE3 hash) and serves calls through each; a node drained through one
//! takes no new call through any; while etcd is down calls keep flowing
//! and changes are refused with `cluster_degraded`, and work again once
//! it is back; a tenant's `calls_per_s` holds for the three together.
//! Without a cluster, `switchyard policy push` loads a component on the
//! one gateway and keeps it in its plugins folder.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use client::{ClientConfig, ErrorKind};
use serde_json::Value;

use crate::common::cluster::ClusterFleet;
use crate::common::cluster::etcd_installed;
use crate::common::{ADMIN, service};

/// A component compiled against the policy contract 1.0.0, kept as a
/// fixture: other bytes than the plugins folder's policy of that name.
fn fixture(name: &str) -> PathBuf {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../policy-host/tests/plugins/fixtures/wit-1.0.0")
        .join(format!("{name}.wasm"));
    assert!(path.exists(), "{} missing", path.display());
    path
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// `method` on gateway `i`'s admin `path` with the admin token and
/// `body`: the status and the JSON answer.
pub(crate) async fn admin(
    fleet: &ClusterFleet,
    i: usize,
    method: reqwest::Method,
    path: &str,
    body: reqwest::Body,
) -> (u16, Value) {
    let url = format!("http://{}{path}", fleet.gateway(i).admin);
    let response = http()
        .request(method, &url)
        .bearer_auth(ADMIN)
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, json)
}

/// Pushes the fixture `name` through gateway `i`.
async fn push(fleet: &ClusterFleet, i: usize, name: &str) -> (u16, Value) {
    let bytes = std::fs::read(fixture(name)).unwrap();
    admin(
        fleet,
        i,
        reqwest::Method::PUT,
        &format!("/api/policies/{name}"),
        bytes.into(),
    )
    .await
}

/// The hash and file of policy `name` in gateway `i`'s table.
async fn policy_of(fleet: &ClusterFleet, i: usize, name: &str) -> Option<(String, String)> {
    let table = fleet.admin_json(i, "/api/policies").await.ok()?;
    let policy = table["policies"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)?
        .clone();
    Some((
        policy["content_hash"].as_str()?.to_string(),
        policy["file"].as_str()?.to_string(),
    ))
}

/// Waits until every gateway has `name` from etcd with `hash`; how long
/// it took.
async fn wait_policy_everywhere(fleet: &ClusterFleet, name: &str, hash: &str) -> Duration {
    let file = format!("etcd:{name}");
    let what = format!("policy {name} {hash} on every gateway");
    fleet
        .wait(&what, Duration::from_secs(15), async |i| {
            let have = policy_of(fleet, i, name).await;
            if have.as_ref().map(|(h, f)| (h.as_str(), f.as_str())) == Some((hash, file.as_str())) {
                Ok(())
            } else {
                Err(format!("{} has {have:?}", ClusterFleet::name(i)))
            }
        })
        .await
}

/// Whether gateway `i` shows `node` draining.
async fn draining(fleet: &ClusterFleet, i: usize, node: &str) -> Option<bool> {
    let nodes = fleet.admin_json(i, "/api/nodes").await.ok()?;
    nodes.as_array()?.iter().find(|n| n["spec"]["id"] == node)?["draining"].as_bool()
}

async fn wait_draining_everywhere(fleet: &ClusterFleet, node: &str, want: bool) -> Duration {
    let what = format!("{node} draining = {want} on every gateway");
    fleet
        .wait(&what, Duration::from_secs(15), async |i| {
            match draining(fleet, i, node).await {
                Some(have) if have == want => Ok(()),
                have => Err(format!("{} shows {have:?}", ClusterFleet::name(i))),
            }
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_drains_and_an_etcd_outage_reach_every_gateway() {
    if !etcd_installed() {
        return;
    }
    let mut fleet = ClusterFleet::start(3, "").await;
    let echo = service("echo", "echo", "max_concurrent = 8");
    fleet.spawn_agent("node-a", 0, &echo);
    fleet.spawn_agent("node-b", 1, &echo);
    fleet.wait_nodes_everywhere(&["node-a", "node-b"]).await;
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(fleet.gateway(i).client(1).await);
    }

    // A policy pushed through gw-0: all three load the same bytes.
    let (_, before) = policy_of(&fleet, 1, "least-request")
        .await
        .expect("the plugins folder's least-request");
    let (status, pushed) = push(&fleet, 0, "least-request").await;
    assert_eq!(status, 200, "{pushed}");
    let hash = pushed["hash"].as_str().unwrap().to_string();
    assert_eq!(pushed["stored"], "etcd");
    assert_eq!(hash.len(), 64);
    assert_ne!(
        Some(hash.clone()),
        Some(before),
        "other bytes than the file's"
    );
    let took = wait_policy_everywhere(&fleet, "least-request", &hash).await;
    eprintln!(
        "pushed policy on all three gateways {} ms after the push answered",
        took.as_millis()
    );
    for (i, client) in clients.iter().enumerate() {
        let result = client
            .call("echo", "hi")
            .policy("least-request")
            .await
            .unwrap_or_else(|e| panic!("call through gw-{i}: {e}"));
        assert_eq!(result.meta.policy, "least-request", "through gw-{i}");
    }

    // A component that does not load is refused and stored nowhere.
    let (status, refused) = admin(
        &fleet,
        1,
        reqwest::Method::PUT,
        "/api/policies/junk",
        b"not a component".to_vec().into(),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert!(policy_of(&fleet, 2, "junk").await.is_none());

    // node-a drained through gw-1: no new call reaches it through any.
    let (status, answer) = admin(
        &fleet,
        1,
        reqwest::Method::POST,
        "/api/nodes/node-a/drain",
        reqwest::Body::from(""),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let took = wait_draining_everywhere(&fleet, "node-a", true).await;
    eprintln!(
        "drain on all three gateways {} ms after it answered",
        took.as_millis()
    );
    for (i, client) in clients.iter().enumerate() {
        for _ in 0..10 {
            let result = client.call("echo", "x").await.unwrap();
            assert_eq!(result.meta.node_id, "node-b", "through gw-{i}");
        }
    }
    let (status, answer) = admin(
        &fleet,
        2,
        reqwest::Method::POST,
        "/api/nodes/node-a/undrain",
        reqwest::Body::from(""),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    wait_draining_everywhere(&fleet, "node-a", false).await;

    // etcd down: calls keep flowing, changes are refused.
    fleet.etcd.stop();
    for (i, client) in clients.iter().enumerate() {
        client
            .call("echo", "still")
            .await
            .unwrap_or_else(|e| panic!("call through gw-{i} with etcd down: {e}"));
    }
    let (status, refused) = push(&fleet, 2, "round-robin").await;
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["error"]["code"], "cluster_degraded", "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("etcd") && message.contains("retry"),
        "{message}"
    );
    let set = reqwest::Body::from(r#"{"policy": "least-request"}"#);
    let url = format!("http://{}/api/services/echo/policy", fleet.gateway(1).admin);
    let response = http()
        .put(&url)
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(set)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let refused = clients[0]
        .set_policy(ADMIN, "echo", "least-request")
        .await
        .expect_err("refused over QUIC too");
    assert!(
        refused.to_string().contains("cluster degraded"),
        "{refused}"
    );

    // etcd back: the push goes through and reaches every gateway.
    fleet.etcd.restart().expect("etcd restarts");
    let start = Instant::now();
    let pushed = loop {
        let (status, answer) = push(&fleet, 2, "round-robin").await;
        if status == 200 {
            break answer;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "push after etcd came back: {status} {answer}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "push accepted {} ms after etcd restarted",
        start.elapsed().as_millis()
    );
    let hash = pushed["hash"].as_str().unwrap();
    wait_policy_everywhere(&fleet, "round-robin", hash).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenants_rate_holds_for_three_gateways_together() {
    if !etcd_installed() {
        return;
    }
    const RATE: f64 = 10.0;
    const BURST: u32 = 10;
    let tenants = format!(
        "[[tenants]]\nname = \"metered\"\napi_keys = [\"sk-metered\"]\ncalls_per_s = {RATE:.1}\nburst = {BURST}\n"
    );
    let mut fleet = ClusterFleet::start(3, &tenants).await;
    fleet.spawn_agent("node-a", 0, &service("echo", "echo", "max_concurrent = 32"));
    fleet.wait_nodes_everywhere(&["node-a"]).await;
    let mut tasks = Vec::new();
    let length = Duration::from_secs(3);
    let t0 = Instant::now();
    for i in 0..3 {
        let gateway = fleet.gateway(i);
        let mut config = ClientConfig::new(gateway.addr.to_string(), gateway.ca.clone());
        config.api_key = Some("sk-metered".into());
        let client = client::Client::connect(config).await.unwrap();
        for _ in 0..4 {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let (mut ok, mut limited) = (0u32, 0u32);
                while t0.elapsed() < length {
                    match client.call("echo", "x").await {
                        Ok(_) => ok += 1,
                        Err(e) if e.kind() == Some(ErrorKind::RateLimited) => {
                            limited += 1;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err(e) => panic!("unexpected: {e}"),
                    }
                }
                (ok, limited)
            }));
        }
    }
    let (mut ok, mut limited) = (0u32, 0u32);
    for task in tasks {
        let (o, l) = task.await.unwrap();
        ok += o;
        limited += l;
    }
    let seconds = t0.elapsed().as_secs_f64();
    // Evenly spread over n gateways, each admits its share: RATE / n per
    // second and a bucket of ceil(BURST / n), so the cluster admits at
    // most RATE × seconds + BURST + (n - 1).
    let bound = RATE * seconds + f64::from(BURST) + 2.0;
    eprintln!(
        "tenant at {RATE} calls/s (burst {BURST}) over 3 gateways: {ok} admitted, {limited} rate limited in {seconds:.2} s (bound {bound:.0})"
    );
    assert!(f64::from(ok) <= bound, "{ok} admitted > {bound}");
    assert!(limited > 0, "the load exceeds the rate");
    assert!(
        f64::from(ok) >= RATE * seconds / 2.0,
        "{ok} admitted: the shares add up to far less than the rate"
    );
}

/// Runs the CLI (`switchyard-e2e-cli`, the same `main`) with `args`.
async fn cli(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard-e2e-cli"))
        .args(args)
        .env_remove("SWITCHYARD_ADMIN_TOKEN")
        .env_remove("SWITCHYARD_GATEWAY")
        .kill_on_drop(true)
        .output()
        .await
        .expect("the CLI runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cluster_policy_push_loads_on_the_gateway_and_keeps_the_file() {
    let fleet = crate::common::Fleet::start(|c| {
        c.plugins_dir =
            crate::common::plugin_copies(c.data_dir.parent().unwrap(), &["round-robin"]);
    })
    .await;
    let admin_url = format!("http://{}", fleet.gateway.admin_addr().unwrap());
    let plugins = fleet.dir.path().join("plugins");
    let component = fixture("least-request");
    let out = cli(&[
        "--admin-url",
        &admin_url,
        "policy",
        "push",
        component.to_str().unwrap(),
        "--name",
        "least-request",
        "--admin-token",
        ADMIN,
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "push failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("policy least-request loaded (blake3 "),
        "{stdout}"
    );
    assert!(stdout.contains("kept in"), "{stdout}");
    let hash = stdout
        .split("blake3 ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap()
        .to_string();
    assert_eq!(hash.len(), 64, "{stdout}");
    // Kept in the plugins folder, so a restart loads it again.
    let kept = std::fs::read(plugins.join("least-request.wasm")).expect("the file is written");
    assert_eq!(kept, std::fs::read(&component).unwrap());

    // `policy list` shows it with that hash, from the gateway.
    let ca = fleet.ca();
    let out = cli(&[
        "--gateway",
        &fleet.addr,
        "--ca",
        ca.to_str().unwrap(),
        "policy",
        "list",
        "--json",
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table: Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = table["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "least-request")
        .unwrap_or_else(|| panic!("least-request listed: {table}"));
    assert_eq!(listed["content_hash"], hash.as_str());

    // A component that does not load is refused and written nowhere.
    let junk = fleet.dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not a component").unwrap();
    let out = cli(&[
        "--admin-url",
        &admin_url,
        "policy",
        "push",
        junk.to_str().unwrap(),
        "--admin-token",
        ADMIN,
    ])
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("400") && stderr.contains("does not load"),
        "{stderr}"
    );
    let files: Vec<_> = std::fs::read_dir(&plugins)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut files = files;
    files.sort();
    assert_eq!(files, ["least-request.wasm", "round-robin.wasm"]);
}
