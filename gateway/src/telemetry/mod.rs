//! Metrics: the Prometheus recorder behind the `metrics` facade, and the
//! gateway's own series (calls, nodes, GPUs, connections). Served as text at
//! `GET /metrics` on the admin port.
//!
//! Names follow Prometheus conventions (and pass `promtool check metrics`):
//! base units in the name (`_seconds`, `_bytes`, `_percent`, `_celsius`,
//! `_watts`), counters end in `_total`. Histograms are true Prometheus
//! histograms (buckets below, from 1 ms to 5 min), not summaries.
//!
//! The recorder is process-wide (the `metrics` facade has one global
//! recorder): several gateways in one process share it.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use protocol::{ErrorKind, NodeStats};

/// Buckets of the `_seconds` histograms (call latency, queue wait, swap
/// time), s: 1 ms to 5 min.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Buckets of the policy pick time, s: 1 µs to 5 ms.
pub const PICK_BUCKETS: &[f64] = &[
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
/// `/metrics` says so).
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
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
                Ok(()) => {
                    describe();
                    Some(handle)
                }
                Err(_) => {
                    tracing::warn!("another metrics recorder is installed; /metrics is empty");
                    None
                }
            }
        })
        .clone()
}

/// Help texts, shown as `# HELP` lines.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    crate::admission::describe_metrics();
    crate::certs::describe_metrics();
    crate::jobs::describe_metrics();
    describe_counter!(
        "calls_total",
        "Calls finished, by service, node, policy, outcome and tenant."
    );
    describe_histogram!(
        "call_duration_seconds",
        metrics::Unit::Seconds,
        "Call latency from arrival to answer, by service."
    );
    describe_gauge!("queue_length", "Calls waiting, by service and tenant.");
    describe_histogram!(
        "queue_wait_seconds",
        metrics::Unit::Seconds,
        "Time calls waited in the queue, by service and tenant."
    );
    describe_gauge!("node_in_flight", "Calls in flight, by node.");
    describe_gauge!("node_cpu_percent", "Node CPU utilisation, %.");
    describe_gauge!("node_memory_used_bytes", "Node memory used, bytes.");
    describe_gauge!("node_memory_total_bytes", "Node memory installed, bytes.");
    describe_gauge!(
        "gpu_utilization_percent",
        "GPU utilisation, %, by node and GPU."
    );
    describe_gauge!("gpu_memory_used_bytes", "GPU memory used, bytes.");
    describe_gauge!("gpu_memory_total_bytes", "GPU memory installed, bytes.");
    describe_gauge!("gpu_temperature_celsius", "GPU temperature, °C.");
    describe_gauge!("gpu_power_watts", "GPU power draw, W.");
    describe_gauge!("connected_agents", "Node agents registered now.");
    describe_gauge!(
        "service_healthy",
        "1 while a node's active health check of a service passes (or it has none), 0 while it fails, by node and service."
    );
    describe_gauge!(
        "model_server_waiting_requests",
        "Requests waiting in a node's model server for a service (vLLM num_requests_waiting), as its agent last reported, by node and service."
    );
    describe_gauge!(
        "model_server_running_requests",
        "Requests running in a node's model server for a service (vLLM num_requests_running), as its agent last reported, by node and service."
    );
    describe_gauge!(
        "model_server_kv_cache_percent",
        "KV-cache use of a node's model server for a service, 0..100 (vLLM gpu_cache_usage_perc x 100), as its agent last reported, by node and service."
    );
    describe_gauge!("connected_clients", "Client connections open now.");
    describe_counter!("swaps_started_total", "Swaps the gateway asked for.");
    describe_counter!(
        "swaps_total",
        "Swaps finished, by node, from, to and outcome."
    );
    describe_histogram!(
        "swap_duration_seconds",
        metrics::Unit::Seconds,
        "Time a swap took on the node (stop to ready)."
    );
    describe_counter!(
        "policy_traps_total",
        "Policy picks or observes that trapped."
    );
    describe_histogram!(
        "policy_pick_duration_seconds",
        metrics::Unit::Seconds,
        "Time of one policy pick."
    );
    describe_counter!("policy_loads_total", "Policy versions loaded.");
    describe_counter!(
        "cache_hits_total",
        "Calls answered from a stored result, by service."
    );
    describe_counter!(
        "cache_misses_total",
        "Calls of a cached service that ran on a node."
    );
    describe_counter!(
        "cache_coalesced_total",
        "Calls answered by waiting for an identical call in flight (single flight)."
    );
    describe_counter!(
        "cache_evictions_total",
        "Results evicted to stay within the cache's byte bound."
    );
    describe_gauge!("cache_bytes", "Bytes the result cache holds.");
    describe_counter!("policy_load_failures_total", "Plugin files refused.");
    describe_counter!(
        "outlier_ejections_total",
        "Nodes ejected from a service's candidates, by node and service."
    );
    describe_gauge!(
        "outlier_ejected_seconds",
        "Seconds a node stays ejected from a service (0: in), by node and service."
    );
    describe_counter!(
        "retries_total",
        "Retries of idempotent calls on another node, by service."
    );
    describe_counter!(
        "retries_refused_total",
        "Retries refused, by service and why (budget, breaker)."
    );
    describe_counter!(
        "circuit_breaker_trips_total",
        "Calls or retries refused by a circuit breaker, by service and breaker."
    );
}

/// The exposition text for `GET /metrics`.
pub fn render() -> String {
    match HANDLE.get().and_then(Option::as_ref) {
        Some(handle) => handle.render(),
        None => "# no Prometheus recorder installed in this process\n".into(),
    }
}

/// A call's outcome as a label value: `ok` or the error kind in snake case.
pub fn outcome(result: Result<(), ErrorKind>) -> &'static str {
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
        },
    }
}

/// Records a finished call of `tenant` ([`crate::tenants::ANONYMOUS`] when
/// none is known): `calls_total{service,node,policy,outcome,tenant}` and
/// `call_duration_seconds{service}` (`total_ms` in ms).
pub fn record_call(
    service: &str,
    node: &str,
    policy: &str,
    outcome: &'static str,
    tenant: &str,
    total_ms: f32,
) {
    metrics::counter!(
        "calls_total",
        "service" => service.to_string(),
        "node" => node.to_string(),
        "policy" => policy.to_string(),
        "outcome" => outcome,
        "tenant" => tenant.to_string(),
    )
    .increment(1);
    metrics::histogram!("call_duration_seconds", "service" => service.to_string())
        .record(f64::from(total_ms) / 1000.0);
}

/// Sets a node's resource gauges from its latest stats.
pub fn record_stats(node: &str, stats: &NodeStats) {
    let n = || node.to_string();
    metrics::gauge!("node_cpu_percent", "node" => n()).set(f64::from(stats.cpu_pct));
    metrics::gauge!("node_memory_used_bytes", "node" => n()).set(mib(stats.mem_used_mib));
    metrics::gauge!("node_memory_total_bytes", "node" => n()).set(mib(stats.mem_total_mib));
    for gpu in &stats.gpus {
        let g = || gpu.index.to_string();
        metrics::gauge!("gpu_utilization_percent", "node" => n(), "gpu" => g())
            .set(f64::from(gpu.util_pct));
        metrics::gauge!("gpu_memory_used_bytes", "node" => n(), "gpu" => g())
            .set(mib(gpu.mem_used_mib));
        metrics::gauge!("gpu_memory_total_bytes", "node" => n(), "gpu" => g())
            .set(mib(gpu.mem_total_mib));
        metrics::gauge!("gpu_temperature_celsius", "node" => n(), "gpu" => g())
            .set(f64::from(gpu.temperature_c));
        metrics::gauge!("gpu_power_watts", "node" => n(), "gpu" => g()).set(f64::from(gpu.power_w));
    }
}

/// Sets `service_healthy{node,service}` for every service of `node`: 0 for
/// those its latest stats name `unhealthy`, 1 for the rest.
pub fn record_health(node: &protocol::NodeSpec, unhealthy: &[String]) {
    for service in &node.services {
        let healthy = !unhealthy.contains(&service.name);
        metrics::gauge!("service_healthy", "node" => node.id.clone(), "service" => service.name.clone())
            .set(if healthy { 1.0 } else { 0.0 });
    }
}

/// Sets `model_server_waiting_requests`, `model_server_running_requests`
/// and `model_server_kv_cache_percent` `{node,service}` for every service
/// whose model-server load `node`'s latest stats carry (a service left out
/// keeps its last value).
pub fn record_model_load(node: &str, loads: &[protocol::ServiceLoad]) {
    for load in loads {
        let labels = [
            ("node", node.to_string()),
            ("service", load.service.clone()),
        ];
        metrics::gauge!("model_server_waiting_requests", &labels).set(f64::from(load.waiting));
        metrics::gauge!("model_server_running_requests", &labels).set(f64::from(load.running));
        metrics::gauge!("model_server_kv_cache_percent", &labels).set(f64::from(load.kv_cache_pct));
    }
}

/// MiB to bytes, as a gauge value.
/// Sets `queue_length{service,tenant}`: calls of `tenant` waiting for
/// `service` (the core tells each change, and 0 once when the last left).
pub fn record_queue_length(service: &str, tenant: &str, length: usize) {
    metrics::gauge!(
        "queue_length",
        "service" => service.to_string(),
        "tenant" => tenant.to_string(),
    )
    .set(length as f64);
}

fn mib(value: u64) -> f64 {
    value as f64 * 1024.0 * 1024.0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn calls_and_queues_carry_the_tenant() {
        if install().is_none() {
            return; // another recorder owns this process
        }
        record_call("svc-t", "node-t", "rr", "ok", "team-a", 12.0);
        record_queue_length("svc-t", "team-b", 1);
        let text = render();
        for needle in [
            r#"calls_total{service="svc-t",node="node-t",policy="rr",outcome="ok",tenant="team-a"} 1"#,
            r#"queue_length{service="svc-t",tenant="team-b"} 1"#,
            "# HELP calls_total Calls finished, by service, node, policy, outcome and tenant.",
            "# HELP queue_length Calls waiting, by service and tenant.",
        ] {
            assert!(text.contains(needle), "missing {needle} in:\n{text}");
        }
        record_queue_length("svc-t", "team-b", 0);
        let text = render();
        assert!(
            text.contains(r#"queue_length{service="svc-t",tenant="team-b"} 0"#),
            "{text}"
        );
    }
}
