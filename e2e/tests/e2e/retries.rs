//! Retries that never duplicate work, and circuit breakers: two nodes, one
//! whose `command` exits 1 on every call; every run appends a line to its
//! node's counter file, so the runs are counted where they happen.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream;

use crate::common::browser::Browser;
use crate::common::{Fleet, TOKEN, service};
use client::ErrorKind;

/// Calls made by each test, CALLS at most CONCURRENCY at a time.
const CALLS: usize = 1000;
const CONCURRENCY: usize = 32;

/// Lines in `path` (0 when it does not exist yet).
fn runs(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

/// A `command` service that appends a line to `counter` on every run, then
/// echoes its payload (`fail`: exits 1 instead).
fn counted(name: &str, counter: &Path, fail: bool, max_concurrent: u32) -> String {
    let tail = if fail { "exit 1" } else { "cat" };
    service(
        name,
        "command",
        &format!(
            "max_concurrent = {max_concurrent}\ncommand = [\"sh\", \"-c\", \"echo run >> {}; {tail}\"]",
            counter.display()
        ),
    )
}

/// What the calls of one run came to.
struct Outcome {
    ok: usize,
    /// Errors by kind.
    failed: Vec<ErrorKind>,
    /// `attempts` of each successful result.
    attempts: Vec<u32>,
    bad_runs: usize,
    good_runs: usize,
}

/// Starts a gateway (with `service` idempotent or not, ejections lasting
/// past the test) and two agents, `bad` failing every call, and makes
/// CALLS calls.
async fn run(svc: &str, idempotent: bool, bad: &str, good: &str) -> (Fleet, Outcome) {
    let name = svc.to_string();
    let mut fleet = Fleet::start(|c| {
        c.outlier.base_ejection_s = 600;
        c.outlier.max_ejection_s = 600;
        c.services.insert(
            name,
            gateway::config::ServiceConfig {
                idempotent,
                ..Default::default()
            },
        );
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (bad_count, good_count) = (dir.path().join("bad"), dir.path().join("good"));
    // 2000 process runs load the machine: a stats report late by 600 ms
    // must not drop a node (3 missed intervals do).
    fleet.stats_ms = 2000;
    // The bad node runs two calls at once: one may race the ejection.
    fleet.spawn_agent(bad, TOKEN, &counted(svc, &bad_count, true, 2));
    fleet.spawn_agent(good, TOKEN, &counted(svc, &good_count, false, 8));
    fleet.wait_nodes(2).await;
    let client = fleet.client().await;
    let started = Instant::now();
    let results: Vec<_> = stream::iter(0..CALLS)
        .map(|i| {
            let client = client.clone();
            async move {
                let payload = format!("call {i}");
                let r = client.call(svc, payload.clone()).await;
                if let Ok(r) = &r {
                    assert_eq!(r.data, payload.as_bytes(), "its own answer");
                }
                r
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut outcome = Outcome {
        ok: 0,
        failed: Vec::new(),
        attempts: Vec::new(),
        bad_runs: runs(&bad_count),
        good_runs: runs(&good_count),
    };
    for r in results {
        match r {
            Ok(r) => {
                assert_eq!(r.meta.node_id, good, "only the good node answers");
                outcome.ok += 1;
                outcome.attempts.push(r.meta.timings.attempts);
            }
            Err(e) => outcome.failed.push(e.kind().expect("a typed error")),
        }
    }
    eprintln!(
        "{svc}: {CALLS} calls in {:?}: {} ok, failed {:?}, runs bad {} good {}",
        started.elapsed(),
        outcome.ok,
        outcome.failed,
        outcome.bad_runs,
        outcome.good_runs
    );
    (fleet, outcome)
}

/// An idempotent service: the bad node's failures are retried on the good
/// one (≥ 99.9% succeed), it is ejected after its fifth failure (a sixth
/// may have been running then: it runs two at once), and each result's
/// `attempts` accounts for every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_calls_are_retried_elsewhere_and_the_bad_node_is_ejected() {
    let (fleet, o) = run("retry-idem", true, "idem-bad", "idem-good").await;
    assert!(
        o.ok * 1000 >= CALLS * 999,
        "{} of {CALLS} ok: {:?}",
        o.ok,
        o.failed
    );
    assert!(
        (5..=6).contains(&o.bad_runs),
        "ejected within its first failures: {} runs",
        o.bad_runs
    );
    assert!(
        o.attempts.iter().all(|a| (1..=2).contains(a)),
        "{:?}",
        o.attempts
    );
    let retried = o.attempts.iter().filter(|a| **a == 2).count();
    if o.failed.is_empty() {
        assert_eq!(retried, o.bad_runs, "one retry per failed run");
        assert_eq!(o.good_runs, CALLS, "each call ran once on the good node");
    }
    let sum: u32 = o.attempts.iter().sum();
    assert!(sum as usize <= o.bad_runs + o.good_runs);
    let metrics = gateway::telemetry::render();
    assert!(
        metrics.contains(r#"outlier_ejections_total{node="idem-bad",service="retry-idem"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            r#"retries_total{{service="retry-idem"}} {retried}"#
        )),
        "{metrics}"
    );
    ejection_is_visible(&fleet, retried).await;
}

/// The bad node's ejection shows in the admin API (why, for how long), in
/// `/metrics`, and on the dashboard in headless Chromium (its service
/// marked, an alert); the retries in `/api/queues`.
async fn ejection_is_visible(fleet: &Fleet, retried: usize) {
    let base = format!("http://{}", fleet.gateway.admin_addr().unwrap());
    let get = |path: &str| {
        let url = format!("{base}{path}");
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    let nodes: serde_json::Value = serde_json::from_str(&get("/api/nodes").await).unwrap();
    let bad = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["spec"]["id"] == "idem-bad")
        .expect("the bad node listed")["services"][0]
        .clone();
    assert_eq!(bad["ejected_why"], "consecutive_failures", "{bad}");
    assert_eq!(bad["ejections"], 1, "{bad}");
    let left = bad["ejected_for_ms"].as_u64().unwrap();
    assert!((500_000..=600_000).contains(&left), "out for 600 s: {bad}");
    let queues: serde_json::Value = serde_json::from_str(&get("/api/queues").await).unwrap();
    let queue = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["service"] == "retry-idem")
        .expect("its queue listed")
        .clone();
    assert_eq!(queue["retries_total"], retried, "{queue}");
    let metrics = get("/metrics").await;
    assert!(
        metrics.contains(r#"outlier_ejected_seconds{node="idem-bad",service="retry-idem"} 5"#),
        "{metrics}"
    );
    let browser = Browser::start().await;
    browser.open(&format!("{base}/")).await;
    browser
        .wait_for(
            "the ejected node's service and its alert",
            r#"return /ejected \(consecutive failures\)/.test((document.querySelector('#nodes .node[data-node="idem-bad"] .svc.ejected[data-service="retry-idem"]') || {}).textContent || '') && [...document.querySelectorAll('#alerts li')].some(li => li.textContent.includes('idem-bad ejected from retry-idem'))"#,
        )
        .await;
    browser.close().await;
}

/// A service that is not idempotent: the bad node's failures reach the
/// callers as `service failed`, it is ejected the same, and no call ran
/// twice: runs on both nodes = calls that reached a node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_are_not_idempotent_never_run_twice() {
    let (_fleet, o) = run("retry-once", false, "once-bad", "once-good").await;
    assert!(
        o.failed.iter().all(|k| *k == ErrorKind::ServiceFailed),
        "{:?}",
        o.failed
    );
    assert_eq!(o.failed.len(), o.bad_runs, "every failure surfaces");
    assert!((5..=6).contains(&o.bad_runs), "{} runs", o.bad_runs);
    assert_eq!(o.ok, o.good_runs);
    assert_eq!(o.bad_runs + o.good_runs, CALLS, "nothing ran twice");
    assert!(o.attempts.iter().all(|a| *a == 1));
    let metrics = gateway::telemetry::render();
    assert!(!metrics.contains(r#"retries_total{service="retry-once"}"#));
}

/// Circuit breakers: with `max_in_flight = 1`, a second call while one
/// runs is refused with `overloaded` at once, and the trip is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_the_in_flight_breaker_is_refused_at_once() {
    let mut fleet = Fleet::start(|c| {
        c.services.insert(
            "breaker".into(),
            gateway::config::ServiceConfig {
                max_in_flight: Some(1),
                ..Default::default()
            },
        );
    })
    .await;
    fleet.spawn_agent(
        "breaker-node",
        TOKEN,
        &service(
            "breaker",
            "command",
            "max_concurrent = 4\ncommand = [\"sh\", \"-c\", \"sleep 2; cat\"]",
        ),
    );
    fleet.wait_nodes(1).await;
    let client = fleet.client().await;
    let slow = {
        let client = client.clone();
        tokio::spawn(async move { client.call("breaker", "first").await })
    };
    // Wait until the first call runs on the node.
    let start = Instant::now();
    while fleet_in_flight(&fleet) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "first call never ran"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused_at = Instant::now();
    let e = client.call("breaker", "second").await.unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Overloaded), "{e}");
    assert!(
        refused_at.elapsed() < Duration::from_secs(1),
        "refused at once, not after the first call's 2 s"
    );
    assert!(e.to_string().contains("max_in_flight"), "{e}");
    assert_eq!(slow.await.unwrap().unwrap().data, "first".as_bytes());
    let metrics = gateway::telemetry::render();
    assert!(
        metrics.contains(
            r#"circuit_breaker_trips_total{service="breaker",breaker="max_in_flight"} 1"#
        ),
        "{metrics}"
    );
}

/// Calls of `breaker` running on nodes, as the gateway counts them.
fn fleet_in_flight(fleet: &Fleet) -> u32 {
    fleet
        .gateway
        .registry()
        .views(Instant::now())
        .iter()
        .flat_map(|n| n.services.iter())
        .filter(|s| s.name == "breaker")
        .map(|s| s.in_flight)
        .sum()
}
