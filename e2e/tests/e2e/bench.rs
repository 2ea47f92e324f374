//! The load generator (`loadgen`, behind `switchyard bench`) against a real
//! fleet, briefly: an echo service over QUIC (the SDK) and over the HTTP
//! ingress (HTTP/1.1 and HTTP/2), closed and open loops; failures counted by
//! kind. Behaviour only: no figure is asserted.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use client::CallOptions;
use loadgen::{Arrival, HttpTarget, HttpTargetConfig, Plan, Process, QuicTarget, Report, Target};

use crate::common::{Fleet, TOKEN, service};

async fn echo_fleet() -> Fleet {
    let mut fleet = Fleet::start(|_| {}).await;
    fleet.spawn_agent("node-a", TOKEN, &service("echo", "echo", ""));
    fleet.wait_nodes(1).await;
    fleet
}

fn plan(arrival: Arrival) -> Plan {
    Plan {
        arrival,
        warm_up: Duration::ZERO,
        duration: Duration::from_millis(500),
        seed: 5,
    }
}

const CLOSED: Arrival = Arrival::Closed { concurrency: 4 };
const OPEN: Arrival = Arrival::Open {
    rate_per_s: 200.0,
    process: Process::Poisson,
    // More than the ~100 calls due in the window: never client-saturated.
    max_in_flight: 256,
};

/// Runs both loops against `target`, checking each ran clean.
async fn both_loops<T: Target>(target: T, what: &str) {
    let target = Arc::new(target);
    for arrival in [CLOSED, OPEN] {
        let report = loadgen::run(target.clone(), &plan(arrival), None).await;
        assert_clean(&report, what);
    }
}

fn assert_clean(report: &Report, what: &str) {
    assert!(report.calls > 0, "{what}: {report:?}");
    assert_eq!(report.errors, 0, "{what}: {report:?}");
    assert!(report.errors_by_kind.is_empty(), "{what}: {report:?}");
    assert!(report.seconds >= 0.5, "{what}: {report:?}");
    let l = report.latency_us;
    assert!(
        0.0 < l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max,
        "{what}: {l:?}"
    );
    assert!(l.mean > 0.0 && l.mean <= l.max, "{what}: {l:?}");
}

fn http(url: String, http2: bool) -> HttpTarget {
    HttpTarget::new(HttpTargetConfig {
        url,
        payload: Bytes::from_static(b"ping"),
        headers: vec![("x-switchyard-timeout-ms".into(), "5000".into())],
        ca: None,
        http2,
        connections: 4,
    })
    .expect("http target")
}

#[tokio::test]
async fn quic_closed_and_open_loops_run_clean() {
    let fleet = echo_fleet().await;
    let options = CallOptions {
        timeout: Duration::from_secs(5),
        ..CallOptions::default()
    };
    let target = QuicTarget::new(
        fleet.client().await,
        "echo".into(),
        Bytes::from_static(b"ping"),
        options,
    );
    both_loops(target, "quic").await;
}

#[tokio::test]
async fn http_ingress_closed_and_open_loops_run_clean_on_both_versions() {
    let fleet = echo_fleet().await;
    let url = format!(
        "{}/v1/call/echo",
        fleet.gateway.http_url().expect("ingress")
    );
    both_loops(http(url.clone(), false), "http/1.1").await;
    both_loops(http(url, true), "h2c").await;
}

#[tokio::test]
async fn calls_to_an_unknown_service_count_as_errors_of_their_kind() {
    let fleet = echo_fleet().await;
    let quic = QuicTarget::new(
        fleet.client().await,
        "nope".into(),
        Bytes::from_static(b"ping"),
        CallOptions {
            timeout: Duration::from_secs(5),
            ..CallOptions::default()
        },
    );
    let report = loadgen::run(Arc::new(quic), &plan(CLOSED), None).await;
    assert_eq!(report.calls, 0, "{report:?}");
    assert!(report.errors > 0, "{report:?}");
    assert_eq!(
        report.errors_by_kind.keys().collect::<Vec<_>>(),
        ["unknown-service"],
        "{report:?}"
    );

    let url = format!(
        "{}/v1/call/nope",
        fleet.gateway.http_url().expect("ingress")
    );
    let report = loadgen::run(Arc::new(http(url, false)), &plan(OPEN), None).await;
    assert_eq!(report.calls, 0, "{report:?}");
    assert_eq!(
        report.errors, report.errors_by_kind["http-404"],
        "{report:?}"
    );
    assert!(report.errors > 0, "{report:?}");

    // Nothing listens there: each call fails to connect.
    let closed = http("http://127.0.0.1:9/v1/call/echo".into(), false);
    let report = loadgen::run(Arc::new(closed), &plan(OPEN), None).await;
    assert_eq!(
        report.errors, report.errors_by_kind["connect"],
        "{report:?}"
    );
    assert!(report.errors > 0, "{report:?}");
}
