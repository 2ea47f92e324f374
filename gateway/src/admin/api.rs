//! The JSON admin API handlers.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde::Deserialize;

use super::snapshot::{Snapshot, service_summaries};
use super::{authorized, fail};
use crate::Shared;
use crate::events::AdminEvent;

/// `GET /metrics`: the Prometheus exposition text. Before rendering, the
/// outlier gauges are set from the core's views:
/// `outlier_ejected_seconds{node, service}` is how long a node that was
/// ever ejected from a service stays out (0 when it is in); and the
/// autoscaling gauges from this gateway's scale report
/// (`super::scale::set_gauges`).
pub(super) async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    super::scale::set_gauges(&shared);
    for node in shared.registry.views(Instant::now()) {
        for s in node.services.iter().filter(|s| s.ejections > 0) {
            metrics::gauge!(
                "outlier_ejected_seconds",
                "node" => node.spec.id.clone(),
                "service" => s.name.clone(),
            )
            .set(s.ejected_for_ms as f64 / 1000.0);
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::render(),
    )
        .into_response()
}

/// `GET /api/nodes`: every node (spec, stats, services, slots, draining).
pub(super) async fn nodes(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.registry.views(Instant::now())).into_response()
}

/// `GET /api/leases`: the leases this gateway granted that hold a slot
/// now, the oldest first: `[{lease_id, service, node_id, tenant,
/// max_calls, granted_unix_ms, expires_unix_ms}]` (never their tokens).
pub(super) async fn leases(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.leases.list()).into_response()
}

/// `GET /api/services`: every service: policy, nodes, queue, rate, latency.
pub(super) async fn services(State(shared): State<Arc<Shared>>) -> Response {
    Json(service_summaries(&shared, Instant::now())).into_response()
}

/// `GET /api/policies`: the policy table.
pub(super) async fn policies(State(shared): State<Arc<Shared>>) -> Response {
    let hosted = shared.registry.service_names();
    Json(shared.policies.table(&hosted)).into_response()
}

/// `GET /api/queues`: every service's queue.
pub(super) async fn queues(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.scheduler.views(Instant::now())).into_response()
}

/// `GET /api/snapshot`: what the dashboard shows, at once.
pub(super) async fn snapshot(State(shared): State<Arc<Shared>>) -> Response {
    Json(Snapshot::take(&shared, Instant::now())).into_response()
}

/// Query of `GET /api/decisions`.
#[derive(Debug, Deserialize)]
pub(super) struct DecisionsQuery {
    /// The service; none: every service with decisions.
    service: Option<String>,
    /// Decisions per service, newest first (default 20).
    limit: Option<usize>,
}

/// `GET /api/decisions?service=NAME&limit=N`: the policies' latest
/// decisions ("why this node"), newest first: `{"service", "decisions":
/// [{at_unix_ms, call_id, service, policy, node, reason, offered,
/// prefix_blocks, top: [{node, score, in_flight, max_concurrent}]}]}`;
/// without `service`, `{"services": {NAME: [...]}}`.
pub(super) async fn decisions(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<DecisionsQuery>,
) -> Response {
    let limit = query.limit.unwrap_or(20);
    match query.service {
        Some(service) => {
            let decisions = shared.decisions.recent(&service, limit);
            Json(serde_json::json!({"service": service, "decisions": decisions})).into_response()
        }
        None => {
            let services: serde_json::Map<String, serde_json::Value> = shared
                .decisions
                .services()
                .into_iter()
                .map(|service| {
                    let recent = shared.decisions.recent(&service, limit);
                    (service, serde_json::json!(recent))
                })
                .collect();
            Json(serde_json::json!({"services": services})).into_response()
        }
    }
}

/// Body of `PUT /api/services/{name}/policy`.
#[derive(Debug, Deserialize)]
pub(super) struct PolicyBody {
    policy: String,
}

/// `PUT /api/services/{name}/policy` `{"policy": "latency"}` (admin).
pub(super) async fn set_policy(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Option<Json<PolicyBody>>,
) -> Response {
    if let Err(denied) = authorized(&shared, &headers) {
        return *denied;
    }
    let Some(Json(body)) = body else {
        return fail(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "expected a JSON body {\"policy\": \"NAME\"}",
        );
    };
    match crate::sync::set_service_policy(&shared, &name, &body.policy).await {
        Ok(previous) => {
            tracing::info!(service = %name, policy = %body.policy, "service policy changed (HTTP)");
            shared.announce(AdminEvent::new(
                "policy",
                format!("service {name} now uses policy {}", body.policy),
            ));
            Json(serde_json::json!({
                "service": name,
                "policy": body.policy,
                "previous": previous,
            }))
            .into_response()
        }
        Err(error) => refused(&error),
    }
}

/// An error answer for a refused run-time change: 503 `cluster_degraded`
/// while etcd does not answer, 400 `bad_request`, 404 `unknown_node`.
fn refused(error: &crate::sync::SyncError) -> Response {
    fail(error.status(), error.code(), error.to_string())
}

/// Query of `POST /api/policies`.
#[derive(Debug, Deserialize)]
pub(super) struct PushQuery {
    /// The name the component must answer (default: whichever it does).
    name: Option<String>,
}

/// `POST /api/policies[?name=NAME]` (admin), the component's bytes as the
/// body: loads it and keeps it (with `[cluster]` in etcd, for every
/// gateway; else in the plugins folder). Answers `{"name", "hash",
/// "bytes", "stored"}`.
pub(super) async fn push_policy(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<PushQuery>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    push(&shared, query.name, &headers, body).await
}

/// `PUT /api/policies/{name}` (admin): [`push_policy`] of a component
/// that must answer `name`.
pub(super) async fn put_policy(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    push(&shared, Some(name), &headers, body).await
}

async fn push(
    shared: &Arc<Shared>,
    name: Option<String>,
    headers: &HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(denied) = authorized(shared, headers) {
        return *denied;
    }
    match crate::sync::push_policy(shared, name, body.to_vec()).await {
        Ok(pushed) => Json(pushed).into_response(),
        Err(error) => refused(&error),
    }
}

/// `POST /api/nodes/{id}/drain` (admin): no new calls; in-flight ones finish.
pub(super) async fn drain(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    set_draining(&shared, &id, &headers, true).await
}

/// `POST /api/nodes/{id}/undrain` (admin): the node takes calls again.
pub(super) async fn undrain(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    set_draining(&shared, &id, &headers, false).await
}

async fn set_draining(shared: &Shared, id: &str, headers: &HeaderMap, draining: bool) -> Response {
    if let Err(denied) = authorized(shared, headers) {
        return *denied;
    }
    let in_flight = match crate::sync::set_draining(shared, id, draining).await {
        Ok(in_flight) => in_flight,
        Err(error) => return refused(&error),
    };
    let verb = if draining { "drain" } else { "undrain" };
    tracing::info!(node = %id, in_flight, "node {verb}ed");
    shared.announce(AdminEvent::new(verb, id.to_string()));
    Json(serde_json::json!({
        "node": id,
        "draining": draining,
        "in_flight": in_flight,
    }))
    .into_response()
}

/// `GET /api/cache`: the cache's size and per-service counters.
pub(super) async fn cache(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.cache.stats()).into_response()
}

/// `DELETE /api/cache[?service=NAME]` (admin): drops cached results, of one
/// service or all.
pub(super) async fn purge_cache(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    if let Err(denied) = authorized(&shared, &headers) {
        return *denied;
    }
    let service = query.as_deref().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("service="))
            .map(str::to_string)
    });
    let (entries, bytes) = match crate::sync::purge_cache(&shared, service.as_deref()).await {
        Ok(purged) => purged,
        Err(error) => return refused(&error),
    };
    shared.announce(AdminEvent::new(
        "cache_purge",
        format!(
            "{} ({entries} entries, {bytes} bytes)",
            service.as_deref().unwrap_or("all services")
        ),
    ));
    Json(serde_json::json!({
        "service": service,
        "entries": entries,
        "bytes": bytes,
    }))
    .into_response()
}
