//! Observability: the Prometheus recorder behind the `metrics` facade
//! (served as text at `GET /metrics` on the admin port), the label value of
//! a call's outcome, and the rolling window of finished calls the
//! dashboard charts ([`CallWindow`]).
//!
//! Each module records and describes its own series (a
//! `describe_metrics` function beside the code that records them); the
//! gateway describes them all once the recorder is installed.
//!
//! Names follow Prometheus conventions (and pass `promtool check metrics`):
//! base units in the name (`_seconds`, `_bytes`, `_percent`, `_celsius`,
//! `_watts`), counters end in `_total`. Histograms are true Prometheus
//! histograms (buckets below, from 1 ms to 5 min), not summaries.
//!
//! The recorder is process-wide (the `metrics` facade has one global
//! recorder): several gateways in one process share it.
//!
//! Series stay bounded: label values that come from a caller's input go
//! through [`labels`] (a name the gateway does not know counts under
//! `_unknown`), and counters and histograms not updated for `[metrics]
//! idle_timeout_s` are dropped (gauges are set from the fleet's own state
//! and stay).

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use protocol::ErrorKind;

pub(crate) mod labels;
pub(crate) mod scale;
mod window;

pub(crate) use window::{CallWindow, Point, QueuePoint, TenantRate};

/// Buckets of the `_seconds` histograms (call latency, queue wait, swap
/// time), s: 1 ms to 5 min.
pub(crate) const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Buckets of the policy pick time, s: 1 µs to 5 ms.
pub(crate) const PICK_BUCKETS: &[f64] = &[
    0.000_001,
    0.000_002_5,
    0.000_005,
    0.000_01,
    0.000_025,
    0.000_05,
    0.000_1,
    0.000_25,
    0.000_5,
    0.001,
    0.005,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder (once per process) and returns its
/// handle; `None` when another recorder was installed first (then
/// `/metrics` says so). Counters and histograms not updated for
/// `idle_timeout` are dropped when `/metrics` is next rendered (`None`:
/// never); names known to [`labels`] linger as long. The first call in a
/// process sets both.
pub(crate) fn install(idle_timeout: Option<Duration>) -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            labels::set_linger(idle_timeout.unwrap_or(Duration::MAX));
            let builder = PrometheusBuilder::new()
                .idle_timeout(
                    MetricKindMask::COUNTER | MetricKindMask::HISTOGRAM,
                    idle_timeout,
                )
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("policy_pick_duration_seconds".into()),
                        PICK_BUCKETS,
                    )
                });
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                Err(error) => {
                    tracing::warn!(%error, "cannot configure the Prometheus recorder");
                    return None;
                }
            };
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => Some(handle),
                Err(_) => {
                    tracing::warn!("another metrics recorder is installed; /metrics is empty");
                    None
                }
            }
        })
        .clone()
}

/// The exposition text for `GET /metrics`.
pub fn render() -> String {
    match HANDLE.get().and_then(Option::as_ref) {
        Some(handle) => handle.render(),
        None => "# no Prometheus recorder installed in this process\n".into(),
    }
}

/// A call's outcome as a label value: `ok` or the error kind in snake case.
pub(crate) fn outcome(result: Result<(), ErrorKind>) -> &'static str {
    match result {
        Ok(()) => "ok",
        Err(kind) => match kind {
            ErrorKind::UnknownService => "unknown_service",
            ErrorKind::NoNodeAvailable => "no_node_available",
            ErrorKind::Timeout => "timeout",
            ErrorKind::NodeLost => "node_lost",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::ServiceFailed => "service_failed",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Occupied => "occupied",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::ShuttingDown => "shutting_down",
            ErrorKind::Internal => "internal",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::LeaseEnded => "lease_ended",
        },
    }
}
