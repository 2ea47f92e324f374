//! What the dashboard and `/api/services` show: a snapshot of nodes,
//! services (policy, queue, rate, latency, each tenant's rate), per-second
//! series and each node's share of calls; and the change events
//! `/api/events` streams.

use std::collections::BTreeMap;
use std::sync::Weak;
use std::time::{Duration, Instant};

use protocol::{CacheStatsView, NodeView, PolicyTable, QueueView};
use serde::Serialize;

use crate::Shared;
use crate::events::unix_ms;
use crate::telemetry::{Point, QueuePoint, TenantRate};

/// Seconds of per-second series a snapshot carries.
pub(super) const SERIES_S: u64 = 120;
/// Seconds the rates (the services' and their tenants'), percentiles and
/// node shares are computed over (or fewer, while the gateway is younger:
/// rates divide by the time covered, [`Snapshot::rate_window_s`]).
pub(super) const SUMMARY_S: u64 = 60;

/// How often every queue's depth is sampled into the call window.
const QUEUE_SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// Everything the dashboard draws, at one instant.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Snapshot {
    /// When, ms since the Unix epoch.
    pub at_unix_ms: u64,
    /// Seconds since the gateway started.
    pub uptime_s: u64,
    /// Every node.
    pub nodes: Vec<NodeView>,
    /// Every service some node hosts or that has a queue.
    pub services: Vec<ServiceSummary>,
    /// The time the rates cover, s: [`SUMMARY_S`], or the gateway's age
    /// while it is younger (at least 1).
    pub rate_window_s: f64,
    /// Per service, one point per second for the last [`SERIES_S`] s: at
    /// most the window's `CHARTED_SERVICES` services apart (the most
    /// calls), the rest summed as `OTHER_SERVICES` (`"(other)"`).
    pub series: BTreeMap<String, Vec<Point>>,
    /// Per service whose queue was non-empty in the last [`SERIES_S`] s,
    /// its deepest queue each second (sampled every second); bounded like
    /// `series` (the deepest queues apart).
    pub queue_series: BTreeMap<String, Vec<QueuePoint>>,
    /// Calls each node served in the last [`SUMMARY_S`] s.
    pub node_share: BTreeMap<String, u64>,
    /// Loaded policies and which service uses which.
    pub policies: PolicyTable,
    /// The result cache: size, and per cached service its counters.
    pub cache: CacheStatsView,
}

/// One service across the fleet.
#[derive(Debug, Clone, Serialize)]
pub(super) struct ServiceSummary {
    /// Service name.
    pub name: String,
    /// The policy picking for it now.
    pub policy: String,
    /// Nodes with it loaded now.
    pub nodes_loaded: Vec<String>,
    /// Nodes that could load it into a slot.
    pub nodes_can_host: Vec<String>,
    /// Calls in flight, all nodes.
    pub in_flight: u32,
    /// Its queue.
    pub queue: QueueView,
    /// Calls per second over the last [`SUMMARY_S`] s (calls in that time
    /// divided by the time covered, `rate_window_s`).
    pub calls_per_s: f64,
    /// Failed calls per second over the same window.
    pub errors_per_s: f64,
    /// Median latency over the window, ms.
    pub p50_ms: f32,
    /// 99th percentile latency over the window, ms.
    pub p99_ms: f32,
    /// Each tenant that called it in the last [`SUMMARY_S`] s: its calls/s
    /// and errors/s over that window (counts / the time covered), highest
    /// calls/s first. At most the window's `TENANTS_PER_S` tenants apart,
    /// the rest summed as `OTHER_TENANTS`. Empty without
    /// calls in the window.
    pub tenants: Vec<TenantRate>,
}

impl Snapshot {
    /// Takes a snapshot at `now`.
    pub(crate) fn take(shared: &Shared, now: Instant) -> Self {
        let hosted = shared.registry.service_names();
        Self {
            at_unix_ms: unix_ms(),
            uptime_s: now.saturating_duration_since(shared.started).as_secs(),
            nodes: shared.registry.views(now),
            services: service_summaries(shared, now),
            rate_window_s: shared.window.span_s(SUMMARY_S, now),
            series: shared.window.series(SERIES_S, now),
            queue_series: shared.window.queue_series(SERIES_S, now),
            node_share: shared.window.node_share(SUMMARY_S, now),
            policies: shared.policies.table(&hosted),
            cache: shared.cache.stats(),
        }
    }
}

/// Every service some node hosts or that has a queue.
pub(crate) fn service_summaries(shared: &Shared, now: Instant) -> Vec<ServiceSummary> {
    let hosted = shared.registry.service_names();
    let table = shared.policies.table(&hosted);
    let queues = shared.scheduler.views(now);
    let nodes = shared.registry.all();
    let mut tenants = shared.window.tenant_rates(SUMMARY_S, now);
    let span = shared.window.span_s(SUMMARY_S, now);
    queues
        .into_iter()
        .map(|queue| {
            let name = queue.service.clone();
            let (calls, errors, p50_ms, p99_ms) = shared.window.summary(&name, SUMMARY_S, now);
            let loaded: Vec<_> = nodes.iter().filter(|n| n.is_loaded(&name)).collect();
            ServiceSummary {
                policy: table
                    .services
                    .iter()
                    .find(|s| s.service == name)
                    .map_or_else(|| table.default_policy.clone(), |s| s.active.clone()),
                nodes_loaded: loaded.iter().map(|n| n.spec.id.clone()).collect(),
                nodes_can_host: nodes
                    .iter()
                    .filter(|n| n.services.contains_key(&name) && !n.is_loaded(&name))
                    .map(|n| n.spec.id.clone())
                    .collect(),
                in_flight: nodes.iter().map(|n| n.in_flight(&name)).sum(),
                calls_per_s: calls as f64 / span,
                errors_per_s: errors as f64 / span,
                p50_ms,
                p99_ms,
                tenants: tenants.remove(&name).unwrap_or_default(),
                queue,
                name,
            }
        })
        .collect()
}

/// Samples every service's queue depth into the call window every
/// [`QUEUE_SAMPLE_EVERY`] (the queue-depth chart, kept like the other
/// series whether or not a dashboard is open), until the gateway is gone.
pub(super) async fn sample_queues(shared: Weak<Shared>) {
    let mut tick = tokio::time::interval(QUEUE_SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = Instant::now();
        for queue in shared.scheduler.views(now) {
            shared
                .window
                .record_queue(&queue.service, queue.length, now);
        }
    }
}
