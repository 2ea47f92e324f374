//! Autoscaling signals: `GET /api/scale` and the `service_*` gauges of
//! `/metrics`, per service.
//!
//! This gateway's figures come from its scheduler's window
//! ([`crate::telemetry::scale`]: arrivals, slot holds, queue waits), its
//! queues and the fleet it sees ([`report`] has the arithmetic). In a
//! cluster, `GET /api/scale` sums the live members' own reports, fetched
//! from each one's `/api/scale?local=1` ([`members`]); a member that does
//! not answer in time is listed as missing.

mod members;
mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde::{Deserialize, Serialize};

use self::report::{Fleet, ServiceScale, service_scale};
use super::fail;
use crate::Shared;
use crate::telemetry::labels;

/// The answer of `GET /api/scale`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ScaleReport {
    /// `gateway` (this gateway's own figures) or `cluster` (the live
    /// members' summed).
    pub scope: String,
    /// The window rates and waits are measured over, s.
    pub window_s: u64,
    /// The members whose figures are in it (this gateway's name alone for
    /// `gateway`).
    pub members: Vec<String>,
    /// Members that did not answer, and why.
    pub missing: Vec<Missing>,
    /// Per service, sorted by name.
    pub services: Vec<ServiceScale>,
}

/// A member whose figures are missing from a cluster's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Missing {
    /// Its member name.
    pub name: String,
    /// Why: the error or the timeout.
    pub error: String,
}

/// Query of `GET /api/scale`.
#[derive(Debug, Deserialize)]
pub(super) struct ScaleQuery {
    /// `1`: this gateway's figures only.
    local: Option<String>,
    /// `1`: the cluster's (the default when the cluster has several live
    /// members).
    cluster: Option<String>,
}

/// A flag's value: `1`/`true`/empty or `0`/`false`.
fn flag(name: &str, value: Option<&str>) -> Result<Option<bool>, String> {
    match value {
        None => Ok(None),
        Some("1" | "true" | "") => Ok(Some(true)),
        Some("0" | "false") => Ok(Some(false)),
        Some(other) => Err(format!("{name} must be 1 or 0, not {other:?}")),
    }
}

/// `GET /api/scale[?local=1|?cluster=1]`: per service, arrivals/s, mean
/// slot time, offered load, waiting, running, capacity, utilisation,
/// desired nodes and queue-wait p90 (see [`ScaleReport`]); this gateway's
/// with `local=1`, summed over the live members with `cluster=1` or by
/// default in a cluster of several.
pub(super) async fn scale(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<ScaleQuery>,
) -> Response {
    let (local, cluster) = match (
        flag("local", query.local.as_deref()),
        flag("cluster", query.cluster.as_deref()),
    ) {
        (Ok(local), Ok(cluster)) => (local, cluster),
        (Err(why), _) | (_, Err(why)) => return fail(StatusCode::BAD_REQUEST, "bad_request", why),
    };
    let own = local_report(&shared, Instant::now());
    let summed = match (local, cluster) {
        (Some(true), _) | (_, Some(false)) => false,
        (_, Some(true)) => true,
        _ => shared.cluster.live_count() > 1,
    };
    if !summed {
        return Json(own).into_response();
    }
    Json(members::cluster_report(&shared, own).await).into_response()
}

/// This gateway's report at `now`.
pub(crate) fn local_report(shared: &Shared, now: Instant) -> ScaleReport {
    let window = shared.scheduler.scale();
    let mut stats = window.stats(now);
    let mut fleet: BTreeMap<String, Fleet> = BTreeMap::new();
    let members = shared.cluster.live_count();
    let blank = |name: &str| Fleet {
        waiting: 0,
        capacity: 0,
        nodes: 0,
        slots_per_node: None,
        target_utilisation: shared
            .config
            .services
            .get(name)
            .and_then(|s| s.target_utilisation)
            .unwrap_or(shared.config.scale.target_utilisation),
        members,
    };
    // Per service: the nodes hosting it, and those serving it now.
    let mut hosting: BTreeMap<String, (u64, u32)> = BTreeMap::new();
    for node in shared.registry.all() {
        let draining = node.is_draining();
        for (name, spec) in &node.services {
            let label = labels::service(name);
            if label == labels::UNKNOWN {
                continue;
            }
            let entry = hosting.entry(label.clone()).or_default();
            entry.0 += u64::from(spec.max_concurrent);
            entry.1 += 1;
            let f = fleet.entry(label).or_insert_with(|| blank(name));
            if !draining && node.is_loaded(name) {
                f.capacity = f.capacity.saturating_add(spec.max_concurrent);
                f.nodes += 1;
            }
        }
    }
    for (name, (slots, count)) in hosting {
        if let Some(f) = fleet.get_mut(&name) {
            f.slots_per_node = Some(slots as f64 / f64::from(count.max(1)));
        }
    }
    for queue in shared.scheduler.views(now) {
        let label = labels::service(&queue.service);
        if label != labels::UNKNOWN {
            let f = fleet.entry(label).or_insert_with(|| blank(&queue.service));
            f.waiting = f.waiting.saturating_add(queue.length);
        }
    }
    for name in stats.keys() {
        if !fleet.contains_key(name) {
            fleet.insert(name.clone(), blank(name));
        }
    }
    let services = fleet
        .into_iter()
        .map(|(name, f)| {
            let counts = stats.remove(&name).unwrap_or_default();
            service_scale(&name, &counts, f)
        })
        .collect();
    ScaleReport {
        scope: "gateway".into(),
        window_s: window.window().as_secs(),
        members: vec![shared.cluster.me().name.clone()],
        missing: Vec::new(),
        services,
    }
}

/// Sets the `service_*` gauges from this gateway's report (when `/metrics`
/// is read); a service no longer in it gets them set to 0 once.
pub(crate) fn set_gauges(shared: &Shared) {
    let report = local_report(shared, Instant::now());
    let gauges = |service: &str, s: Option<&ServiceScale>| {
        let label = || service.to_string();
        let value = |f: fn(&ServiceScale) -> f64| s.map_or(0.0, f);
        metrics::gauge!("service_in_flight", "service" => label())
            .set(value(|s| f64::from(s.running)));
        metrics::gauge!("service_fleet_capacity", "service" => label())
            .set(value(|s| f64::from(s.capacity)));
        metrics::gauge!("service_offered_load", "service" => label())
            .set(value(|s| s.offered_load));
        metrics::gauge!("service_desired_nodes", "service" => label())
            .set(value(|s| s.desired_nodes_share));
    };
    for s in &report.services {
        gauges(&s.service, Some(s));
    }
    let now: BTreeSet<String> = report.services.iter().map(|s| s.service.clone()).collect();
    for gone in shared.scheduler.scale().exported(now) {
        gauges(&gone, None);
    }
}

/// Help texts of the autoscaling series.
pub(crate) fn describe_metrics() {
    crate::telemetry::scale::describe_metrics();
    metrics::describe_gauge!(
        "service_in_flight",
        "Calls of this gateway holding a node slot now, by service (sum across gateways)."
    );
    metrics::describe_gauge!(
        "service_fleet_capacity",
        "Call slots of the nodes serving the service now (sum of max_concurrent): the \
         fleet's, the same on every gateway (aggregate with max, not sum)."
    );
    metrics::describe_gauge!(
        "service_offered_load",
        "Slots this gateway's calls want on average: arrivals/s x mean slot time over \
         [scale] window_s, by service (sum across gateways)."
    );
    metrics::describe_gauge!(
        "service_desired_nodes",
        "This gateway's share of the nodes the service wants at [scale] \
         target_utilisation (ceil of the sum across gateways: the nodes wanted)."
    );
}
