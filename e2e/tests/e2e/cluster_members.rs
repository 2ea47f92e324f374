//! Membership of a cluster of three gateway processes on one etcd: each
//! lists all three in `GET /api/cluster` with the addresses they listen
//! on, `switchyard cluster` prints them and the dashboard shows them; a
//! gateway killed with SIGKILL leaves the others' lists when its lease
//! runs out; while etcd is down the others keep their list and say they
//! are degraded (`/api/cluster`, `/health`, the CLI, the dashboard's
//! Cluster panel in headless Chromium) without failing `/ready` for it,
//! and recover when etcd is back. A gateway started with the name of a
//! live one refuses to start, saying so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::Command;

use crate::common::browser::Browser;
use crate::common::cluster::ClusterFleet;
use crate::common::cluster::etcd_installed;

const CLI: &str = env!("CARGO_BIN_EXE_switchyard-e2e-cli");
const GATEWAY: &str = env!("CARGO_BIN_EXE_switchyard-e2e-gateway");

/// `switchyard cluster` against gateway `i`'s admin port: its stdout.
async fn cli_cluster(fleet: &ClusterFleet, i: usize) -> String {
    let url = format!("http://{}", fleet.gateway(i).admin);
    let out = Command::new(CLI)
        .args(["cluster", "--admin-url", &url])
        .env_remove("SWITCHYARD_ADMIN_URL")
        .kill_on_drop(true)
        .output()
        .await
        .expect("the CLI runs");
    assert!(
        out.status.success(),
        "switchyard cluster failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

/// GET `path` on gateway `i`'s admin port: the status and the JSON answer.
async fn probe(fleet: &ClusterFleet, i: usize, path: &str) -> (u16, Value) {
    let url = format!("http://{}{path}", fleet.gateway(i).admin);
    let response = reqwest::get(&url).await.expect(&url);
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

/// Waits up to `limit` for gateway `i`'s `/api/cluster` to satisfy `ok`.
async fn wait_view(fleet: &ClusterFleet, i: usize, limit: Duration, ok: impl Fn(&Value) -> bool) {
    let start = Instant::now();
    loop {
        let view = fleet.admin_json(i, "/api/cluster").await.expect("view");
        if ok(&view) {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "not within {limit:?}: {view}\n{}",
            fleet.log_tails()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_list_each_other_and_keep_their_list_while_etcd_is_down() {
    if !etcd_installed() {
        return;
    }
    let mut fleet = ClusterFleet::start(3, "").await;
    let names: Vec<String> = (0..3).map(ClusterFleet::name).collect();

    for i in 0..3 {
        let view = fleet.admin_json(i, "/api/cluster").await.unwrap();
        assert_eq!(view["me"], names[i].as_str(), "{view}");
        assert_eq!(view["clustered"], true);
        assert_eq!(view["degraded"], false);
        assert_eq!(view["etcd"]["up"], true);
        assert_eq!(view["etcd"]["endpoints"][0], fleet.etcd.endpoint().as_str());
        assert_eq!(view["etcd"]["lease_ttl_s"], 2);
        let members = view["members"].as_array().expect("members");
        assert_eq!(members.len(), 3, "{view}");
        for (j, m) in members.iter().enumerate() {
            let g = fleet.gateway(j);
            assert_eq!(m["name"], names[j].as_str(), "sorted by name: {view}");
            assert_eq!(m["me"], i == j);
            assert_eq!(m["quic"], g.addr.to_string().as_str(), "{view}");
            assert_eq!(m["http"], g.http.to_string().as_str(), "{view}");
            assert_eq!(m["admin"], g.admin.to_string().as_str(), "{view}");
            assert!(m["started_unix_ms"].as_u64().unwrap() > 0);
            assert_eq!(m["agents"], 0);
        }
        let (status, health) = probe(&fleet, i, "/health").await;
        assert_eq!(
            (status, &health["cluster_degraded"]),
            (200, &Value::Bool(false))
        );
    }

    let printed = cli_cluster(&fleet, 1).await;
    for name in &names {
        assert!(printed.contains(name.as_str()), "{printed}");
    }
    assert!(
        printed.contains("gw-1 *"),
        "the gateway asked is marked: {printed}"
    );
    assert!(
        printed.contains(&fleet.gateway(2).addr.to_string()),
        "{printed}"
    );
    assert!(printed.contains("etcd: up"), "{printed}");

    // The dashboard's Cluster panel lists them, in headless Chromium.
    let browser = Browser::start().await;
    browser
        .open(&format!("http://{}/", fleet.gateway(0).admin))
        .await;
    browser
        .wait_for(
            "three members and etcd up in the Cluster panel",
            "const rows = [...document.querySelectorAll('#cluster tbody tr.member')]; \
             return rows.length === 3 \
               && rows[0].classList.contains('me') \
               && rows.map(r => r.cells[0].textContent).join(',') \
                  === 'gw-0 (this gateway),gw-1,gw-2' \
               && document.querySelector('#cluster-etcd').textContent.startsWith('etcd up');",
        )
        .await;

    // A killed gateway stops renewing its lease: it leaves the others'
    // lists when the lease runs out (2 s).
    fleet.kill_gateway(2);
    fleet.wait_members(2).await;

    // etcd lost: the list stays, the gateways say they are degraded.
    fleet.etcd.stop();
    for i in 0..2 {
        wait_view(&fleet, i, Duration::from_secs(10), |v| {
            v["degraded"] == true
        })
        .await;
        let view = fleet.admin_json(i, "/api/cluster").await.unwrap();
        assert_eq!(view["etcd"]["up"], false, "{view}");
        assert!(
            view["etcd"]["degraded_since_unix_ms"].as_u64().is_some(),
            "{view}"
        );
        assert_eq!(
            view["members"].as_array().unwrap().len(),
            2,
            "the list is kept: {view}"
        );
        let (status, health) = probe(&fleet, i, "/health").await;
        assert_eq!(
            (status, &health["cluster_degraded"]),
            (200, &Value::Bool(true))
        );
        let (_, ready) = probe(&fleet, i, "/ready").await;
        assert_eq!(ready["cluster_degraded"], true, "{ready}");
        let reasons = ready["reasons"].to_string();
        assert!(
            !reasons.contains("etcd"),
            "/ready does not fail for etcd: {ready}"
        );
    }
    let printed = cli_cluster(&fleet, 0).await;
    assert!(printed.contains("etcd: DOWN"), "{printed}");
    browser
        .wait_for(
            "etcd down in the Cluster panel, the list kept",
            "return document.querySelector('#cluster-etcd').textContent.startsWith('etcd down') \
               && document.querySelectorAll('#cluster tbody tr.member').length === 2;",
        )
        .await;
    browser.close().await;
    assert!(printed.contains("gw-1"), "{printed}");

    // etcd back: both rejoin.
    fleet.etcd.restart().expect("etcd restarts");
    for i in 0..2 {
        wait_view(&fleet, i, Duration::from_secs(15), |v| {
            v["degraded"] == false && v["members"].as_array().is_some_and(|m| m.len() == 2)
        })
        .await;
    }
    let (_, health) = probe(&fleet, 0, "/health").await;
    assert_eq!(health["cluster_degraded"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_named_as_a_live_member_refuses_to_start() {
    if !etcd_installed() {
        return;
    }
    let fleet = ClusterFleet::start(1, "").await;
    let dir = fleet.path();
    let config = dir.join("twin.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n\
             [http]\nlisten = \"127.0.0.1:0\"\n[jobs]\nenabled = false\n{}",
            dir.join("twin"),
            crate::common::cluster::cluster_table(&fleet.etcd, &ClusterFleet::name(0)),
        ),
    )
    .unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(GATEWAY)
            .arg("--config")
            .arg(&config)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("it exits by itself")
    .expect("the gateway runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second gw-0 started: {stderr}");
    assert!(
        stderr.contains("another live gateway holds the cluster name \"gw-0\""),
        "{stderr}"
    );
    assert_eq!(
        fleet.members_of(0).await.unwrap(),
        ["gw-0"],
        "the live one keeps its place"
    );
}
