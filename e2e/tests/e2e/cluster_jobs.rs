//! Jobs in a cluster of three gateway processes on one etcd, each with its
//! own job store: a job setting and a template made through one gateway
//! are in force on the other two (the template runs a job through a third
//! one); a gateway that was down while they changed has them once it is
//! back; while etcd is down both changes are refused with
//! `cluster_degraded`, over HTTP and QUIC. The per-node job limit holds
//! for jobs sent through different gateways: the node reports its job
//! calls in flight to every gateway.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use protocol::JobSettings;
use reqwest::Method;
use serde_json::{Value, json};

use crate::cluster_config::admin;
use crate::common::cluster::ClusterFleet;
use crate::common::cluster::etcd_installed;
use crate::common::service;

/// Every gateway: jobs on, in its own SQLite store.
const JOBS: &str = "[jobs]\nenabled = true\ndefault_max_attempts = 1\n";

/// The per-node job limit gateway `i` has in force.
async fn limit_of(fleet: &ClusterFleet, i: usize) -> Option<u64> {
    let settings = fleet.admin_json(i, "/api/job-settings").await.ok()?;
    settings["max_per_node"].as_u64()
}

/// Template `name` as gateway `i` lists it.
async fn template_of(fleet: &ClusterFleet, i: usize, name: &str) -> Option<Value> {
    let listed = fleet.admin_json(i, "/api/templates").await.ok()?;
    listed["templates"]
        .as_array()?
        .iter()
        .find(|t| t["name"] == name)
        .cloned()
}

/// Polls until `check` holds on every running gateway; how long it took.
async fn wait_everywhere<F>(fleet: &ClusterFleet, what: &str, check: F) -> Duration
where
    F: AsyncFn(usize) -> bool,
{
    let start = Instant::now();
    loop {
        let mut wrong = Vec::new();
        for i in fleet.live() {
            if !check(i).await {
                wrong.push(ClusterFleet::name(i));
            }
        }
        if wrong.is_empty() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{what} not on {wrong:?}\n{}",
            fleet.log_tails()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn body(value: &Value) -> reqwest::Body {
    reqwest::Body::from(value.to_string())
}

/// Submits a job of template `name` through gateway `i` and waits for
/// its result.
async fn run_template(fleet: &ClusterFleet, i: usize, name: &str, who: &str) -> String {
    let submit = json!({"template": name, "params": {"who": who}});
    let (status, job) = admin(fleet, i, Method::POST, "/api/jobs", body(&submit)).await;
    assert!(status == 200 || status == 201, "{status} {job}");
    let id = job["id"].as_str().unwrap().to_string();
    let start = Instant::now();
    loop {
        let job = fleet
            .admin_json(i, &format!("/api/jobs/{id}"))
            .await
            .unwrap();
        match job["state"].as_str().unwrap_or_default() {
            "succeeded" => break,
            "waiting" | "running" => {}
            other => panic!("job {id} ended {other}: {job}"),
        }
        assert!(start.elapsed() < Duration::from_secs(30), "job {id}: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!("http://{}/api/jobs/{id}/result", fleet.gateway(i).admin);
    let result = reqwest::Client::new()
        .get(&url)
        .bearer_auth(crate::common::ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(result.status().as_u16(), 200);
    result.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn job_settings_and_templates_made_on_one_gateway_hold_on_all() {
    if !etcd_installed() {
        return;
    }
    let mut fleet = ClusterFleet::start(3, JOBS).await;
    fleet.spawn_agent("node-a", 0, &service("echo", "echo", "max_concurrent = 4"));
    fleet.wait_nodes_everywhere(&["node-a"]).await;

    // A job setting through gw-0 (admin HTTP): in force on all three.
    let (status, answer) = admin(
        &fleet,
        0,
        Method::PUT,
        "/api/job-settings",
        body(&json!({"max_per_node": 3})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["max_per_node"], 3,
        "the writer has it when it answers"
    );
    let took = wait_everywhere(&fleet, "max_per_node 3", async |i| {
        limit_of(&fleet, i).await == Some(3)
    })
    .await;
    eprintln!(
        "job setting on all three gateways {} ms after it answered",
        took.as_millis()
    );

    // The same over QUIC through gw-2.
    let client = fleet
        .gateway(2)
        .client(1)
        .await
        .with_admin_token(crate::common::ADMIN);
    let set = client
        .set_job_settings(JobSettings { max_per_node: 2 })
        .await
        .expect("set over QUIC");
    assert_eq!(set.max_per_node, 2);
    wait_everywhere(&fleet, "max_per_node 2", async |i| {
        limit_of(&fleet, i).await == Some(2)
    })
    .await;

    // A template through gw-1: listed on all three, and a job of it runs
    // through gw-2.
    let greet = json!({
        "name": "greet",
        "service": "echo",
        "payload": "hello {who}",
        "defaults": {"who": "world"},
        "description": "says hello",
    });
    let (status, answer) = admin(&fleet, 1, Method::POST, "/api/templates", body(&greet)).await;
    assert_eq!(status, 201, "{answer}");
    assert!(
        template_of(&fleet, 1, "greet").await.is_some(),
        "the writer lists it at once"
    );
    let took = wait_everywhere(&fleet, "template greet", async |i| {
        template_of(&fleet, i, "greet")
            .await
            .is_some_and(|t| t["payload"] == "hello {who}" && t["source"] == "api")
    })
    .await;
    eprintln!(
        "template on all three gateways {} ms after it answered",
        took.as_millis()
    );
    assert_eq!(
        run_template(&fleet, 2, "greet", "cluster").await,
        "hello cluster"
    );

    // gw-2 is down while both change; back, it has them from etcd (its own
    // store held the old ones).
    fleet.kill_gateway(2);
    let (status, answer) = admin(
        &fleet,
        0,
        Method::PUT,
        "/api/job-settings",
        body(&json!({"max_per_node": 1})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let later = json!({"name": "greet", "service": "echo", "payload": "hi again {who}"});
    let (status, answer) = admin(&fleet, 1, Method::POST, "/api/templates", body(&later)).await;
    assert_eq!(status, 201, "{answer}");
    fleet.restart_gateway(2).await;
    fleet.wait_members(3).await;
    wait_everywhere(&fleet, "max_per_node 1 and the new greet", async |i| {
        limit_of(&fleet, i).await == Some(1)
            && template_of(&fleet, i, "greet")
                .await
                .is_some_and(|t| t["payload"] == "hi again {who}")
    })
    .await;

    // etcd down: both changes are refused, over HTTP and QUIC, and nothing
    // changes.
    fleet.etcd.stop();
    let (status, refused) = admin(
        &fleet,
        1,
        Method::PUT,
        "/api/job-settings",
        body(&json!({"max_per_node": 7})),
    )
    .await;
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["error"]["code"], "cluster_degraded", "{refused}");
    let (status, refused) = admin(&fleet, 0, Method::POST, "/api/templates", body(&greet)).await;
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["error"]["code"], "cluster_degraded", "{refused}");
    let client = fleet
        .gateway(2)
        .client(1)
        .await
        .with_admin_token(crate::common::ADMIN);
    let refused = client
        .set_job_settings(JobSettings { max_per_node: 7 })
        .await
        .expect_err("refused over QUIC");
    assert!(
        refused.to_string().contains("cluster degraded"),
        "{refused}"
    );
    for i in 0..3 {
        assert_eq!(limit_of(&fleet, i).await, Some(1), "gw-{i}");
    }
}

/// The state and node of job `id` as gateway `i` shows it.
async fn job_state(fleet: &ClusterFleet, i: usize, id: &str) -> String {
    let job = fleet
        .admin_json(i, &format!("/api/jobs/{id}"))
        .await
        .unwrap();
    job["state"].as_str().unwrap_or_default().to_string()
}

/// Submits a job of `ms` milliseconds of the `nap` service through
/// gateway `i`; its id.
async fn nap(fleet: &ClusterFleet, i: usize, ms: u32) -> String {
    let submit = json!({"service": "nap", "payload": ms.to_string()});
    let (status, job) = admin(fleet, i, Method::POST, "/api/jobs", body(&submit)).await;
    assert!(status == 200 || status == 201, "{status} {job}");
    job["id"].as_str().unwrap().to_string()
}

/// The jobs gateway `i` counts on `node`, every gateway's.
async fn jobs_on(fleet: &ClusterFleet, i: usize, node: &str) -> Option<u64> {
    let nodes = fleet.admin_json(i, "/api/nodes").await.ok()?;
    nodes.as_array()?.iter().find(|n| n["spec"]["id"] == node)?["jobs_in_flight"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_per_node_job_limit_holds_for_jobs_sent_through_two_gateways() {
    if !etcd_installed() {
        return;
    }
    let tables = format!("{JOBS}max_per_node = 1\n");
    let mut fleet = ClusterFleet::start(2, &tables).await;
    fleet.spawn_agent("node-a", 0, &service("nap", "sleep", "max_concurrent = 4"));
    fleet.wait_nodes_everywhere(&["node-a"]).await;

    // A job of 3 s through gw-0; gw-1 learns from the node that it runs.
    let first = nap(&fleet, 0, 3000).await;
    wait_everywhere(&fleet, "node-a runs one job", async |i| {
        jobs_on(&fleet, i, "node-a").await == Some(1)
    })
    .await;
    let running_since = Instant::now();
    assert_eq!(job_state(&fleet, 0, &first).await, "running");

    // A job through gw-1 waits while the first runs, though the node has
    // free slots of the service and gw-1 runs no job itself.
    let second = nap(&fleet, 1, 50).await;
    while running_since.elapsed() < Duration::from_secs(2) {
        assert_eq!(job_state(&fleet, 0, &first).await, "running");
        assert_eq!(
            job_state(&fleet, 1, &second).await,
            "waiting",
            "node-a runs gw-0's job: gw-1's waits"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Once the first ended, the second runs.
    let start = Instant::now();
    loop {
        let (a, b) = (
            job_state(&fleet, 0, &first).await,
            job_state(&fleet, 1, &second).await,
        );
        if a == "succeeded" && b == "succeeded" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "first {a}, second {b}\n{}",
            fleet.log_tails()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second_view = fleet
        .admin_json(1, &format!("/api/jobs/{second}"))
        .await
        .unwrap();
    assert_eq!(second_view["node"], "node-a", "{second_view}");
}
