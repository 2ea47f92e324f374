//! The job routes on an in-process gateway and agents: the life of a job,
//! the watchdog, realtime, priorities, the per-node limit, cancel,
//! restart and delete.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Db, Jobs, script, shell, states};
use crate::common::{Fleet, TOKEN};

const LIMIT: Duration = Duration::from_secs(20);

on_both_stores!(
    submit_run_log_result_over_http_and_curl,
    the_watchdog_kills_a_stuck_job_and_its_log_stays,
    realtime_is_occupied_and_waiting_jobs_run_by_priority,
    a_node_runs_at_most_its_slots,
    cancel_restart_and_delete,
    a_short_attempt_stores_its_node_with_its_end
);

async fn fleet(slots: u32, db: &Db) -> (Fleet, Jobs) {
    let url = db.url.clone();
    let mut fleet = Fleet::start(|c| {
        c.jobs.lease_timeout_s = 5;
        c.jobs.database_url = url;
    })
    .await;
    fleet.spawn_agent("node-a", TOKEN, &shell(slots));
    fleet.wait_nodes(1).await;
    let jobs = Jobs::new(fleet.gateway.http_url().expect("ingress"), None);
    (fleet, jobs)
}

fn id(job: &Value) -> String {
    job["id"].as_str().expect("job id").to_owned()
}

async fn submit_run_log_result_over_http_and_curl(db: Db) {
    let (fleet, jobs) = fleet(2, &db).await;
    let job = jobs
        .submit(json!({
            "service": "sh",
            "payload": "echo hello; echo warming >&2; sleep 0.3; echo done",
            "labels": {"team": "ml"},
            "priority": 3,
        }))
        .await;
    assert!(
        ["waiting", "running"].contains(&job["state"].as_str().unwrap()),
        "{job}"
    );
    assert_eq!(job["labels"]["team"], "ml");
    let id = id(&job);
    let done = jobs.wait_state(&id, &["succeeded"], LIMIT).await;
    assert_eq!(done["attempt"], 1, "{done}");
    assert_eq!(done["node"], "node-a", "{done}");
    let states = states(&done);
    assert_eq!(states.first(), Some(&"waiting"), "{done}");
    assert_eq!(states.last(), Some(&"succeeded"), "{done}");
    assert!(states.contains(&"running"), "{done}");
    let (status, result) = jobs.result(&id).await;
    assert_eq!((status, result.as_str()), (200, "hello\ndone\n"));
    let log = jobs.log(&id).await;
    for want in ["stdout: hello", "stderr: warming", "stdout: done"] {
        assert!(log.iter().any(|l| l == want), "{want} not in {log:?}");
    }
    let page = jobs.list("service=sh&state=succeeded").await;
    assert!(
        page["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == id.as_str()),
        "{page}"
    );

    // The same with curl, a real HTTP client.
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .args(args)
            .output()
            .expect("curl runs");
        assert!(out.status.success(), "curl {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let body = json!({"service": "sh", "payload": "echo from-curl"}).to_string();
    let created = curl(&[
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "-d",
        &body,
        &format!("{}/v1/jobs", jobs.base),
    ]);
    let created: Value = serde_json::from_str(&created).expect("json");
    let curl_id = id_of(&created);
    jobs.wait_state(&curl_id, &["succeeded"], LIMIT).await;
    let result = curl(&[&format!("{}/v1/jobs/{curl_id}/result", jobs.base)]);
    assert_eq!(result, "from-curl\n");

    // Prometheus: jobs by service and state, durations, queue waits.
    let admin = fleet.gateway.admin_addr().expect("admin port");
    let metrics = curl(&[&format!("http://{admin}/metrics")]);
    for name in [
        "jobs_submitted_total",
        "jobs_finished_total",
        "job_duration_seconds",
        "job_queue_wait_seconds",
        "jobs_max_per_node",
    ] {
        assert!(metrics.contains(name), "{name} not in /metrics");
    }
    crate::common::promtool_check(&metrics).await;
}

/// An attempt shorter than the first log flush (250 ms) stores its node
/// and its dispatch line with its end: three transitions (waiting,
/// running, succeeded), no `running` "on node" one between.
async fn a_short_attempt_stores_its_node_with_its_end(db: Db) {
    let url = db.url.clone();
    let mut fleet = Fleet::start(|c| c.jobs.database_url = url).await;
    let echo = crate::common::service("echo", "echo", "max_concurrent = 8");
    fleet.spawn_agent("node-a", TOKEN, &echo);
    fleet.wait_nodes(1).await;
    let jobs = Jobs::new(fleet.gateway.http_url().expect("ingress"), None);
    let submits =
        (0..24).map(|i| jobs.submit(json!({"service": "echo", "payload": format!("{i}")})));
    let ids: Vec<String> = futures_util::future::join_all(submits)
        .await
        .iter()
        .map(id)
        .collect();
    let mut short = 0;
    for id in &ids {
        let done = jobs.wait_state(id, &["succeeded"], LIMIT).await;
        assert_eq!(done["node"], "node-a", "{done}");
        let took = done["finished_ms"].as_u64().unwrap() - done["started_ms"].as_u64().unwrap();
        if took >= 200 {
            continue;
        }
        short += 1;
        assert_eq!(states(&done), ["waiting", "running", "succeeded"], "{done}");
        let log = jobs.log(id).await;
        let dispatched = log
            .iter()
            .filter(|l| l.contains("dispatched to node node-a"));
        assert_eq!(dispatched.count(), 1, "{log:?}");
    }
    assert!(short >= 12, "only {short} of 24 attempts under 200 ms");
}

async fn the_watchdog_kills_a_stuck_job_and_its_log_stays(db: Db) {
    let (_fleet, jobs) = fleet(1, &db).await;
    let job = jobs
        .submit(json!({
            "service": "sh",
            "payload": "echo started; echo stuck >&2; sleep 1000",
            "watchdog_s": 2,
        }))
        .await;
    let id = id(&job);
    let done = jobs.wait_state(&id, &["timed_out"], LIMIT).await;
    assert!(
        done["error"].as_str().unwrap_or("").contains("watchdog"),
        "{done}"
    );
    let log = jobs.log(&id).await;
    assert!(log.iter().any(|l| l == "stdout: started"), "{log:?}");
    assert!(log.iter().any(|l| l == "stderr: stuck"), "{log:?}");
    assert!(
        log.iter()
            .any(|l| l.starts_with("system: ") && l.contains("watchdog")),
        "{log:?}"
    );
    // The process was killed: the one slot runs the next job.
    let next = jobs.submit(script("echo next")).await;
    jobs.wait_state(&id_of(&next), &["succeeded"], LIMIT).await;
}

fn id_of(job: &Value) -> String {
    id(job)
}

async fn realtime_is_occupied_and_waiting_jobs_run_by_priority(db: Db) {
    let (_fleet, jobs) = fleet(1, &db).await;
    let blocker = jobs.submit(script("sleep 1.5; echo blocker")).await;
    let blocker = id(&blocker);
    jobs.wait_state(&blocker, &["running"], LIMIT).await;
    // No free slot: a realtime job ends occupied, at once.
    let (status, rt) = jobs
        .try_submit(json!({"service": "sh", "payload": "echo rt", "realtime": true}))
        .await;
    assert_eq!(status, 201, "{rt}");
    assert_eq!(rt["state"], "occupied", "{rt}");
    // Waiting jobs start when the slot frees, highest priority first.
    let mut ids = Vec::new();
    for (name, priority) in [("low", 0), ("mid", 1), ("high", 5), ("low2", 0)] {
        let job = jobs
            .submit(
                json!({"service": "sh", "payload": format!("echo {name}"), "priority": priority}),
            )
            .await;
        assert_eq!(job["state"], "waiting", "{job}");
        ids.push((name, id(&job)));
    }
    let high = jobs.get(&ids[2].1).await;
    assert_eq!(high["position"], 1, "{high}");
    let mut started = Vec::new();
    for (name, id) in &ids {
        let done = jobs.wait_state(id, &["succeeded"], LIMIT).await;
        started.push((done["started_ms"].as_u64().unwrap(), *name));
    }
    started.sort();
    let order: Vec<&str> = started.iter().map(|(_, n)| *n).collect();
    assert_eq!(order, ["high", "mid", "low", "low2"]);
}

async fn a_node_runs_at_most_its_slots(db: Db) {
    let (_fleet, jobs) = fleet(2, &db).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let job = jobs.submit(script(&format!("sleep 0.4; echo {i}"))).await;
        ids.push(id(&job));
    }
    let mut spans = Vec::new();
    for id in &ids {
        let done = jobs.wait_state(id, &["succeeded"], LIMIT).await;
        let (_, start, end) = super::span(&done);
        spans.push((start, end));
    }
    let most = spans
        .iter()
        .map(|(start, _)| {
            spans
                .iter()
                .filter(|(s, e)| s <= start && start < e)
                .count()
        })
        .max()
        .unwrap();
    assert!(most <= 2, "{most} jobs ran at once on 2 slots: {spans:?}");
}

async fn cancel_restart_and_delete(db: Db) {
    let (_fleet, jobs) = fleet(1, &db).await;
    let job = jobs.submit(script("echo begun; sleep 1000")).await;
    let id = id(&job);
    jobs.wait_state(&id, &["running"], LIMIT).await;
    crate::jobs::wait_log(&jobs, &id, "stdout: begun").await;
    let cancelled = jobs.post(&id, "cancel").await;
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    // Its process is gone: the one slot runs the next job.
    let next = jobs.submit(script("echo next")).await;
    jobs.wait_state(&id_of(&next), &["succeeded"], LIMIT).await;

    let restarted = jobs.post(&id, "restart").await;
    assert!(
        ["waiting", "running"].contains(&restarted["state"].as_str().unwrap()),
        "{restarted}"
    );
    let running = jobs.wait_state(&id, &["running"], LIMIT).await;
    assert_eq!(running["attempt"], 2, "{running}");
    // A waiting job is cancelled too.
    let queued = jobs.submit(script("echo never")).await;
    let queued = id_of(&queued);
    assert_eq!(jobs.post(&queued, "cancel").await["state"], "cancelled");

    assert_eq!(jobs.delete(&id).await, 204);
    let gone = jobs
        .http
        .get(format!("{}/v1/jobs/{id}", jobs.base))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status().as_u16(), 404);
    // The slot is free again for the next job.
    let after = jobs.submit(script("echo after")).await;
    jobs.wait_state(&id_of(&after), &["succeeded"], LIMIT).await;
    let (status, _) = jobs.result(&queued).await;
    assert_eq!(status, 409, "a cancelled job that never ran has no result");
}
