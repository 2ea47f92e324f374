//! The tree of gateways below this one, by echo wave
//! ([`crate::tree::wave`]):
//! - `GET /api/topology?timeout_ms=N` (default 2000, at most 60 000): the
//!   subtree, nested, each gateway with its nodes (services, load,
//!   capacity, CPU, drain), its queue, and its children; a branch that did
//!   not answer in time is marked `missing` and the answer `partial`;
//! - `POST /api/tree/push?timeout_ms=N` (admin) with one change,
//!   `{"set_policy": {"service", "policy"}}`, `{"purge_cache": {"service":
//!   null}}`, `{"drain": {"node", "draining"}}` or `{"job_settings":
//!   {"max_per_node"}}`: every gateway below
//!   applies it; answered 200 `confirmed: true` only once every gateway
//!   said it did, else 409 with the `failures` (the path of each gateway
//!   that could not, or whose branch did not answer, and why).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use protocol::{GatewayReport, Push};
use serde::{Deserialize, Serialize};

use super::{authorized, fail};
use crate::Shared;
use crate::tree::wave;

/// A wave's time when the query names none, ms.
const DEFAULT_TIMEOUT_MS: u32 = 2000;

/// `?timeout_ms=N`.
#[derive(Debug, Deserialize)]
pub(super) struct WaveQuery {
    timeout_ms: Option<u32>,
}

impl WaveQuery {
    fn deadline(&self) -> Result<(Instant, u32), Box<Response>> {
        let ms = self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if ms == 0 || ms > wave::MAX_WAVE_MS {
            return Err(Box::new(fail(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("timeout_ms must be in 1..={}", wave::MAX_WAVE_MS),
            )));
        }
        Ok((Instant::now() + Duration::from_millis(u64::from(ms)), ms))
    }
}

/// One gateway of the nested answer.
#[derive(Debug, Serialize)]
struct GatewayView {
    id: String,
    /// Why its branch did not answer (its nodes and children unknown).
    missing: Option<String>,
    /// Calls waiting in its queues.
    queued: u32,
    /// A pushed change it could not apply: why.
    push_error: Option<String>,
    nodes: Vec<protocol::TreeNode>,
    children: Vec<GatewayView>,
}

/// The answer of `GET /api/topology` and `POST /api/tree/push`.
#[derive(Debug, Serialize)]
struct WaveView {
    wave: u64,
    /// Time the wave took here, ms.
    took_ms: f64,
    /// Gateways that answered, this one included.
    gateways: usize,
    /// Some branch did not answer in time.
    partial: bool,
    /// For a push: every gateway applied it.
    #[serde(skip_serializing_if = "Option::is_none")]
    confirmed: Option<bool>,
    /// For a push: where it did not take, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failures: Vec<Failure>,
    tree: GatewayView,
}

#[derive(Debug, Serialize)]
struct Failure {
    path: Vec<String>,
    why: String,
}

/// `GET /api/topology`.
pub(super) async fn topology(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<WaveQuery>,
) -> Response {
    let (deadline, _) = match query.deadline() {
        Ok(d) => d,
        Err(e) => return *e,
    };
    Json(run(&shared, deadline, None).await).into_response()
}

/// `POST /api/tree/push` (admin).
pub(super) async fn push(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<WaveQuery>,
    headers: HeaderMap,
    body: Option<Json<Push>>,
) -> Response {
    if let Err(denied) = authorized(&shared, &headers) {
        return *denied;
    }
    let (deadline, _) = match query.deadline() {
        Ok(d) => d,
        Err(e) => return *e,
    };
    let Some(Json(push)) = body else {
        return fail(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "expected one change: {\"set_policy\": {\"service\", \"policy\"}}, {\"purge_cache\": {\"service\"}} or {\"drain\": {\"node\", \"draining\"}}",
        );
    };
    if let Err(why) = push.validate() {
        return fail(StatusCode::BAD_REQUEST, "bad_request", why.to_string());
    }
    let view = run(&shared, deadline, Some(push)).await;
    let status = if view.confirmed == Some(true) {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    (status, Json(view)).into_response()
}

async fn run(shared: &Arc<Shared>, deadline: Instant, push: Option<Push>) -> WaveView {
    let started = Instant::now();
    let wave = wave::next_wave();
    let pushed = push.is_some();
    let reports = wave::run(shared, wave, deadline, push).await;
    let took_ms = started.elapsed().as_secs_f64() * 1000.0;
    let failures: Vec<Failure> = reports
        .iter()
        .filter_map(|r| {
            let why = r.missing.clone().or_else(|| r.push_error.clone())?;
            Some(Failure {
                path: r.path.clone(),
                why,
            })
        })
        .collect();
    let partial = reports.iter().any(|r| r.missing.is_some());
    let gateways = reports.iter().filter(|r| r.missing.is_none()).count();
    tracing::info!(wave, gateways, partial, took_ms, pushed, "wave ended");
    WaveView {
        wave,
        took_ms,
        gateways,
        partial,
        confirmed: pushed.then_some(failures.is_empty()),
        failures: if pushed { failures } else { Vec::new() },
        tree: nest(&reports, 0),
    }
}

/// The report at `reports[at]` with its children, nested (`reports` in
/// the depth-first order of [`wave::flatten`]).
fn nest(reports: &[GatewayReport], at: usize) -> GatewayView {
    let report = &reports[at];
    let depth = report.path.len();
    // The reports are depth first: a gateway's subtree follows it.
    let children = reports[at + 1..]
        .iter()
        .take_while(|r| r.path.len() > depth && r.path[..depth] == report.path[..])
        .enumerate()
        .filter(|(_, r)| r.path.len() == depth + 1)
        .map(|(i, _)| nest(reports, at + 1 + i))
        .collect();
    GatewayView {
        id: report.path.last().cloned().unwrap_or_default(),
        missing: report.missing.clone(),
        queued: report.queued,
        push_error: report.push_error.clone(),
        nodes: report.nodes.clone(),
        children,
    }
}
