//! Autoscaling signals end to end: a steady load of calls to a service that
//! sleeps a known time, through a real gateway and two agents; `GET
//! /api/scale` reports arrivals near the offered rate, calls running, a
//! utilisation in (0, 1] and a desired node count that is Little's law of
//! what it measured; the `service_*` series are in `/metrics` and pass
//! `promtool check metrics`. In a cluster of three gateways on etcd, one
//! gateway's answer sums the members' (arrivals added, the fleet's capacity
//! not), and a member killed is listed as missing at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinSet;

use crate::common::cluster::ClusterFleet;
use crate::common::cluster::etcd_installed;
use crate::common::{ADMIN, Fleet, TOKEN, promtool_check, service};

/// Calls started per second.
const RATE: f64 = 20.0;
/// How long each call sleeps on its node, ms.
const SLEEP_MS: u64 = 200;
/// How long the load lasts.
const LOAD: Duration = Duration::from_secs(4);

async fn get(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.expect("GET");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The `sleep` service's entry of a scale report.
fn sleep_entry(report: &Value) -> Value {
    report["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["service"] == "sleep")
        .unwrap_or_else(|| panic!("no sleep service in {report}"))
        .clone()
}

fn num(entry: &Value, key: &str) -> f64 {
    entry[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {entry}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_load_gives_littles_law_figures() {
    let mut fleet = Fleet::start(|_| {}).await;
    for id in ["node-a", "node-b"] {
        fleet.spawn_agent(id, TOKEN, &service("sleep", "sleep", "max_concurrent = 4"));
    }
    fleet.wait_nodes(2).await;
    let admin = format!("http://{}", fleet.gateway.admin_addr().expect("admin port"));
    let client = Arc::new(fleet.client().await);

    // Before any call: the fleet's capacity, nothing offered, no node wanted.
    let (status, idle) = get(&format!("{admin}/api/scale")).await;
    assert_eq!(status, 200, "{idle}");
    assert_eq!(
        idle["scope"], "gateway",
        "a cluster of one answers for itself"
    );
    let entry = sleep_entry(&idle);
    assert_eq!(entry["capacity"], 8, "{entry}");
    assert_eq!(entry["nodes"], 2, "{entry}");
    assert_eq!(entry["desired_nodes"], 0, "{entry}");

    // The load: RATE calls/s for LOAD, each sleeping SLEEP_MS.
    let started = Instant::now();
    let total = (RATE * LOAD.as_secs_f64()) as u32;
    let load = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut calls = JoinSet::new();
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / RATE));
            for _ in 0..total {
                tick.tick().await;
                let client = client.clone();
                calls.spawn(async move { client.call("sleep", SLEEP_MS.to_string()).await });
            }
            let mut failed = 0;
            while let Some(result) = calls.join_next().await {
                if !matches!(result, Ok(Ok(_))) {
                    failed += 1;
                }
            }
            failed
        })
    };

    // While it runs: calls hold slots, within the fleet's.
    tokio::time::sleep(LOAD / 2).await;
    let mut running = None;
    while started.elapsed() < LOAD {
        let (_, report) = get(&format!("{admin}/api/scale?local=1")).await;
        let entry = sleep_entry(&report);
        if entry["running"].as_u64().unwrap() > 0 {
            running = Some(entry);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let running = running.expect("calls running while the load lasts");
    let utilisation = num(&running, "utilisation");
    assert!(
        utilisation > 0.0 && utilisation <= 1.0,
        "utilisation {utilisation} in {running}"
    );
    assert!(running["running"].as_u64().unwrap() <= 8, "{running}");

    // The metrics while the load lasts.
    let text = reqwest::get(format!("{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    // At its end: the rate, the slot time and Little's law of the two.
    let (_, report) = get(&format!("{admin}/api/scale")).await;
    let sleep = sleep_entry(&report);
    eprintln!("the sleep service at the end of the load: {sleep}");
    assert_eq!(load.await.unwrap(), 0, "every call served");
    let arrivals = num(&sleep, "arrivals_per_s");
    assert!(
        (RATE * 0.5..=RATE * 1.5).contains(&arrivals),
        "arrivals {arrivals}/s for {RATE}/s offered: {sleep}"
    );
    let hold = num(&sleep, "hold_s");
    let slept = SLEEP_MS as f64 / 1000.0;
    assert!(
        (slept..slept * 5.0).contains(&hold),
        "a slot is held at least the sleep: {hold} s in {sleep}"
    );
    let offered = num(&sleep, "offered_load");
    assert!((offered - arrivals * hold).abs() < 1e-6, "L = λ·W: {sleep}");
    assert_eq!(num(&sleep, "slots_per_node"), 4.0, "{sleep}");
    assert_eq!(num(&sleep, "target_utilisation"), 0.7, "{sleep}");
    let share = num(&sleep, "desired_nodes_share");
    assert!((share - offered / (0.7 * 4.0)).abs() < 1e-6, "{sleep}");
    let desired = sleep["desired_nodes"].as_u64().unwrap();
    assert_eq!(desired, share.ceil() as u64, "{sleep}");
    // About 20/s × 0.2 s = 4 slots: 4 / 2.8 = 1.4, so 2 nodes (1 to 3 on
    // a slow machine).
    assert!((1..=3).contains(&desired), "{sleep}");
    assert!(
        sleep["queue_waits"].as_array().unwrap().len() > 1,
        "the wait buckets: {sleep}"
    );

    // The series, for Prometheus.
    for needle in [
        "# TYPE service_arrivals_total counter",
        "service_arrivals_total{service=\"sleep\"}",
        "# TYPE service_in_flight gauge",
        "service_in_flight{service=\"sleep\"}",
        "service_fleet_capacity{service=\"sleep\"} 8",
        "service_offered_load{service=\"sleep\"}",
        "service_desired_nodes{service=\"sleep\"}",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    promtool_check(&text).await;

    // The cluster's view of a cluster of one is this gateway's; a bad flag
    // is a clear error.
    let (status, cluster) = get(&format!("{admin}/api/scale?cluster=1")).await;
    assert_eq!(status, 200, "{cluster}");
    assert_eq!(cluster["scope"], "cluster");
    assert_eq!(cluster["members"].as_array().unwrap().len(), 1, "{cluster}");
    assert_eq!(cluster["missing"], serde_json::json!([]), "{cluster}");
    assert_eq!(sleep_entry(&cluster)["capacity"], 8);
    let (status, error) = get(&format!("{admin}/api/scale?local=yes")).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["code"], "bad_request", "{error}");

    // A drained node takes no new call: its slots leave the capacity, not
    // the size of a node.
    let drained = reqwest::Client::new()
        .post(format!("{admin}/api/nodes/node-b/drain"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert!(drained.status().is_success(), "{}", drained.status());
    let (_, report) = get(&format!("{admin}/api/scale")).await;
    let sleep = sleep_entry(&report);
    assert_eq!(sleep["capacity"], 4, "{sleep}");
    assert_eq!(sleep["nodes"], 1, "{sleep}");
    assert_eq!(num(&sleep, "slots_per_node"), 4.0, "{sleep}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_service_wants_more_nodes_than_it_has() {
    let mut fleet = Fleet::start(|_| {}).await;
    fleet.spawn_agent(
        "node-a",
        TOKEN,
        &service("sleep", "sleep", "max_concurrent = 1"),
    );
    fleet.wait_nodes(1).await;
    let admin = format!("http://{}", fleet.gateway.admin_addr().expect("admin port"));
    let client = Arc::new(fleet.client().await);

    // 10 calls/s of 300 ms on one slot: 3 slots offered, 1 served; the
    // rest queue.
    let mut calls = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for _ in 0..20 {
        tick.tick().await;
        let client = client.clone();
        calls.spawn(async move { client.call("sleep", "300").await });
    }
    let (_, report) = get(&format!("{admin}/api/scale")).await;
    let sleep = sleep_entry(&report);
    eprintln!("the overloaded sleep service: {sleep}");
    assert!(
        sleep["waiting"].as_u64().unwrap() > 0,
        "calls queue: {sleep}"
    );
    assert_eq!(sleep["running"], 1, "{sleep}");
    assert_eq!(num(&sleep, "utilisation"), 1.0, "{sleep}");
    assert_eq!(sleep["capacity"], 1, "{sleep}");
    let offered = num(&sleep, "offered_load");
    assert!(
        offered > 1.0,
        "more slots offered than the one there is: {sleep}"
    );
    let desired = sleep["desired_nodes"].as_u64().unwrap();
    assert!(
        desired >= 2,
        "more nodes wanted than the one there is: {sleep}"
    );
    assert!(
        num(&sleep, "queue_wait_p90_s") > 0.0,
        "calls that queued waited: {sleep}"
    );
    let text = reqwest::get(format!("{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("queue_length{service=\"sleep\""),
        "the waiting calls' gauge:\n{text}"
    );
    while let Some(call) = calls.join_next().await {
        call.unwrap().expect("a queued call is served in the end");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_sums_its_members_and_lists_a_dead_one_missing() {
    if !etcd_installed() {
        return;
    }
    let mut fleet = ClusterFleet::start(3, "").await;
    for (id, via) in [("node-a", 0), ("node-b", 1)] {
        fleet.spawn_agent(id, via, &service("sleep", "sleep", "max_concurrent = 4"));
    }
    fleet.wait_nodes_everywhere(&["node-a", "node-b"]).await;

    // 10 calls/s of 200 ms through gw-0 and through gw-1, none through
    // gw-2.
    let mut calls = JoinSet::new();
    let clients = [
        fleet.gateway(0).client(1).await,
        fleet.gateway(1).client(1).await,
    ];
    let clients: Vec<_> = clients.into_iter().map(Arc::new).collect();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for _ in 0..30 {
        tick.tick().await;
        for client in &clients {
            let client = client.clone();
            calls.spawn(async move { client.call("sleep", "200").await });
        }
    }
    let cluster = fleet.admin_json(2, "/api/scale").await.unwrap();
    let local: Vec<Value> = {
        let mut local = Vec::new();
        for i in 0..3 {
            local.push(fleet.admin_json(i, "/api/scale?local=1").await.unwrap());
        }
        local
    };
    while let Some(call) = calls.join_next().await {
        call.unwrap().expect("every call served");
    }
    eprintln!("the cluster's sleep service: {}", sleep_entry(&cluster));
    assert_eq!(
        cluster["scope"], "cluster",
        "several members: summed by default"
    );
    assert_eq!(
        cluster["members"],
        serde_json::json!(["gw-0", "gw-1", "gw-2"])
    );
    assert_eq!(cluster["missing"], serde_json::json!([]), "{cluster}");
    let summed = sleep_entry(&cluster);
    let arrivals = num(&summed, "arrivals_per_s");
    assert!(
        (10.0..=30.0).contains(&arrivals),
        "about 10/s through each of two gateways: {summed}"
    );
    assert_eq!(summed["capacity"], 8, "the fleet's, not added: {summed}");
    assert_eq!(summed["nodes"], 2, "{summed}");
    let share = num(&summed, "desired_nodes_share");
    assert_eq!(
        summed["desired_nodes"].as_u64().unwrap(),
        share.ceil() as u64,
        "{summed}"
    );
    for (i, report) in local.iter().enumerate() {
        let own = sleep_entry(report);
        assert_eq!(report["scope"], "gateway");
        assert_eq!(own["capacity"], 8, "gw-{i} sees every node: {own}");
        let arrivals = num(&own, "arrivals_per_s");
        if i == 2 {
            assert_eq!(arrivals, 0.0, "no call came through gw-2: {own}");
            assert_eq!(own["desired_nodes_share"], 0.0, "{own}");
        } else {
            assert!(arrivals > 0.0, "gw-{i}: {own}");
        }
    }

    // gw-1 dies: until its lease runs out it is still a member, and the
    // others' answer lists it missing at once rather than waiting for it.
    fleet.kill_gateway(1);
    let asked = Instant::now();
    let cluster = fleet.admin_json(0, "/api/scale").await.unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "answered in {:?}",
        asked.elapsed()
    );
    assert_eq!(
        cluster["members"],
        serde_json::json!(["gw-0", "gw-2"]),
        "{cluster}"
    );
    let missing = cluster["missing"].as_array().unwrap();
    assert_eq!(missing.len(), 1, "{cluster}");
    assert_eq!(missing[0]["name"], "gw-1", "{cluster}");
    assert!(
        missing[0]["error"]
            .as_str()
            .unwrap()
            .contains("GET http://"),
        "{cluster}"
    );
}
