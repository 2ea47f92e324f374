//! The per-node job limit (the most jobs one node runs at once), set at
//! run time over the API: jobs spread so that no node runs
//! more than the limit, plain calls still take the free slots, and the
//! setting outlives its gateway (it is in the store).

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use super::{Db, Jobs, script, shell, span};
use crate::common::{ADMIN, Fleet, TOKEN, plugin_copies};

const LIMIT: Duration = Duration::from_secs(30);

on_both_stores!(the_job_limit_per_node_is_set_at_run_time_and_kept);

/// A gateway whose policy (`cost`) ranks the cheaper node first for every
/// call: only the job limit sends a job to the other one.
async fn gateway(url: Option<String>) -> Fleet {
    Fleet::start(|c| {
        c.jobs.lease_timeout_s = 5;
        c.jobs.database_url = url;
        c.plugins_dir = plugin_copies(c.data_dir.parent().unwrap(), &["cost"]);
        c.default_policy = "cost".into();
    })
    .await
}

async fn the_job_limit_per_node_is_set_at_run_time_and_kept(db: Db) {
    let mut fleet = gateway(db.url.clone()).await;
    fleet.spawn_agent_with("node-a", TOKEN, "cost_per_hour = 1.0", &shell(4));
    fleet.spawn_agent_with("node-b", TOKEN, "cost_per_hour = 9.0", &shell(4));
    fleet.wait_nodes(2).await;
    let base = fleet.gateway.http_url().expect("ingress");
    let anyone = Jobs::new(base.clone(), None);
    let admin = Jobs::new(base, Some(ADMIN));

    // No limit by default; only the admin changes it; bad bodies are 400.
    let (status, now) = anyone.settings(Method::GET, None).await;
    assert_eq!((status, now), (200, json!({ "max_per_node": 0 })));
    let one = json!({ "max_per_node": 1 });
    let (status, body) = anyone.settings(Method::PUT, Some(one.clone())).await;
    assert_eq!(status, 403, "{body}");
    for bad in [
        json!({ "max_per_node": -1 }),
        json!({ "max_per_nodes": 1 }),
        json!("1"),
    ] {
        let (status, body) = admin.settings(Method::PUT, Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad} → {body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    let (status, body) = admin.settings(Method::PUT, Some(one.clone())).await;
    assert_eq!((status, body), (200, one.clone()));

    // Eight slots, four jobs, one job per node: two at a time, one on each.
    let mut ids = Vec::new();
    for i in 0..4 {
        let job = anyone.submit(script(&format!("sleep 1; echo {i}"))).await;
        ids.push(job["id"].as_str().unwrap().to_owned());
    }
    // While each node runs its one job, a plain realtime call still finds
    // a free slot (the limit counts jobs only).
    let start = Instant::now();
    while running(&anyone).await < 2 {
        assert!(start.elapsed() < LIMIT, "two jobs never ran at once");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = fleet.client().await;
    let plain = client
        .call("sh", "echo plain")
        .realtime(true)
        .await
        .expect("a plain call runs beside the jobs");
    assert_eq!(&plain.data[..], b"plain\n");
    // The nodes' views count the jobs each runs (one each).
    let start = Instant::now();
    loop {
        let nodes = client.nodes().await.expect("nodes");
        let jobs: Vec<u32> = nodes.iter().map(|n| n.jobs_in_flight).collect();
        if jobs == [1, 1] {
            break;
        }
        assert!(jobs.iter().all(|&j| j <= 1), "over the limit: {jobs:?}");
        assert!(start.elapsed() < LIMIT, "jobs per node {jobs:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let now = running(&anyone).await;
    assert!(now <= 2, "{now} jobs run on two nodes of one job each");
    let mut spans = Vec::new();
    for id in &ids {
        let done = anyone.wait_state(id, &["succeeded"], LIMIT).await;
        spans.push(span(&done));
    }
    for node in ["node-a", "node-b"] {
        let on: Vec<_> = spans.iter().filter(|s| s.0 == node).collect();
        assert!(!on.is_empty(), "{node} ran no job: {spans:?}");
        let most = on
            .iter()
            .map(|(_, start, _)| {
                on.iter()
                    .filter(|(_, s, e)| s <= start && start < e)
                    .count()
            })
            .max()
            .unwrap();
        assert_eq!(most, 1, "{node} ran {most} jobs at once: {spans:?}");
    }

    // The setting is in the store: a gateway started on it has it.
    let url = db.url.clone().unwrap_or_else(|| {
        let path = fleet.dir.path().join("gateway").join("jobs.db");
        format!("sqlite://{}?mode=rwc", path.display())
    });
    fleet.shut_down_gateway();
    let next = gateway(Some(url)).await;
    let next = Jobs::new(next.gateway.http_url().expect("ingress"), None);
    let (status, kept) = next.settings(Method::GET, None).await;
    assert_eq!((status, kept), (200, one));
}

/// How many jobs run now.
async fn running(jobs: &Jobs) -> usize {
    jobs.list("state=running").await["jobs"]
        .as_array()
        .map_or(0, Vec::len)
}
