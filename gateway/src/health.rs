//! Liveness and readiness probes, served on both HTTP ports (the ingress
//! and the admin port) for load balancers and orchestrators:
//!
//! - `GET /health`: the process answers: always `200 {"status":"ok"}`
//!   (with `[cluster]` also `"cluster_degraded"`, true while etcd does
//!   not answer; neither probe fails for it);
//! - `GET /ready`: it can serve calls: `200 {"status":"ready"}`, else
//!   `503 {"status":"not_ready","reasons":[...]}`, one short sentence per
//!   reason. Ready means: not shutting down; the default policy and every
//!   `[services.NAME] policy` loaded; at least one connected node hosting
//!   each service a `[models]` alias names; and, with `[jobs] enabled`,
//!   the job store answering within [`STORE_PING`].
//!
//! Neither needs a key, and neither creates state. The readiness found is
//! reused for [`FRESH`], probes in the meantime waiting for the one that
//! looks, so a flood of probes costs the core and the job store one look a
//! second.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::Shared;

/// How long `/ready` waits for the job store to answer.
pub(crate) const STORE_PING: Duration = Duration::from_secs(2);
/// How long a readiness found is answered again.
pub(crate) const FRESH: Duration = Duration::from_secs(1);

/// The last readiness found: when, and the reasons (empty: ready).
#[derive(Debug, Default)]
pub(crate) struct Readiness(tokio::sync::Mutex<Option<(Instant, Vec<String>)>>);

/// `GET /health`: `200 {"status":"ok"}` while the process serves HTTP
/// (with `[cluster]`, `"cluster_degraded"` too: whether etcd does not
/// answer; it fails neither probe).
pub(crate) async fn health(State(shared): State<Arc<Shared>>) -> Response {
    let mut body = json!({"status": "ok"});
    with_cluster(&shared, &mut body);
    (StatusCode::OK, Json(body)).into_response()
}

/// Adds `"cluster_degraded"` to a probe's answer with `[cluster]`.
fn with_cluster(shared: &Shared, body: &mut serde_json::Value) {
    if shared.config.cluster.is_some()
        && let Some(fields) = body.as_object_mut()
    {
        fields.insert(
            "cluster_degraded".into(),
            shared.cluster.is_degraded().into(),
        );
    }
}

/// `GET /ready`: `200 {"status":"ready"}`, or `503
/// {"status":"not_ready","reasons":[...]}` saying what is missing.
pub(crate) async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    let reasons = {
        let mut last = shared.readiness.0.lock().await;
        match &*last {
            Some((at, reasons)) if at.elapsed() < FRESH => reasons.clone(),
            _ => {
                let reasons = not_ready(&shared).await;
                *last = Some((Instant::now(), reasons.clone()));
                reasons
            }
        }
    };
    if reasons.is_empty() {
        let mut body = json!({"status": "ready"});
        with_cluster(&shared, &mut body);
        (StatusCode::OK, Json(body)).into_response()
    } else {
        let mut body = json!({"status": "not_ready", "reasons": reasons});
        with_cluster(&shared, &mut body);
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

/// What keeps the gateway from serving calls; empty when it is ready.
async fn not_ready(shared: &Shared) -> Vec<String> {
    let config = &shared.config;
    let mut reasons = Vec::new();
    if shared.drain.is_stopping() {
        reasons.push("shutting down".to_string());
    }
    let policies: BTreeSet<&str> = std::iter::once(config.default_policy.as_str())
        .chain(config.services.values().filter_map(|s| s.policy.as_deref()))
        .collect();
    for policy in policies {
        if !shared.policies.is_loaded(policy) {
            reasons.push(format!(
                "policy {policy:?} is not loaded from {}",
                config.plugins_dir.display()
            ));
        }
    }
    let hosted: BTreeSet<String> = shared.registry.service_names().into_iter().collect();
    for (model, service) in &config.models {
        if hosted.contains(service) {
            continue;
        }
        reasons.push(if model == service {
            format!("no node serves model {model:?}")
        } else {
            format!("no node serves model {model:?} (service {service:?})")
        });
    }
    if config.jobs.enabled {
        match shared.jobs.get() {
            None => reasons.push("the job store is not open".to_string()),
            Some(jobs) => {
                if let Err(why) = jobs.store_reachable(STORE_PING).await {
                    reasons.push(format!("the job store is unreachable: {why}"));
                }
            }
        }
    }
    reasons
}
