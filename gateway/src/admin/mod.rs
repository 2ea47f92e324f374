//! The admin HTTP port (axum, default `127.0.0.1:4490`): Prometheus
//! `/metrics`, the JSON admin API under `/api`, Server-Sent Events at
//! `/api/events`, the dashboard at `/`, and the probes `/health` and
//! `/ready` (`crate::health`). Other routes answer 404 `not_found`.
//!
//! Reads are open (bind the port to loopback or a private network); changes
//! (`PUT`, `POST`, `DELETE`) need `Authorization: Bearer <admin token>`.
//! The job routes under `/api/jobs` and `/api/templates` are the jobs'
//! own (`crate::jobs::http`, also mounted by the ingress under `/v1`): every
//! one, reads too, needs the admin token or a tenant's API key as the
//! bearer (none when no tenants are configured).
//!
//! Admin operations also come over QUIC ([`quic`]: the policy table, a
//! service's policy, the result cache), answered from the same state.

mod api;
mod cluster;
mod dashboard;
pub(crate) mod quic;
mod scale;
mod snapshot;
mod sse;
mod tree;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::Shared;
use crate::http_error::HttpError;
use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

/// Binds the admin listener.
///
/// # Errors
/// The OS error when the address cannot be bound.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves the admin port on `listener` until `shutdown` resolves.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let sampler = tokio::spawn(snapshot::sample_queues(Arc::downgrade(&shared)));
    let app = router(shared);
    // Live events (`/api/events`) go out as they happen, not held back by
    // Nagle's algorithm until the previous one is acknowledged.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!(%error, "admin HTTP server stopped");
    }
    sampler.abort();
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(dashboard::index))
        .route("/assets/{file}", get(dashboard::asset))
        .route("/metrics", get(api::metrics))
        .route("/health", get(crate::health::health))
        .route("/ready", get(crate::health::ready))
        .route("/api/nodes", get(api::nodes))
        .route("/api/services", get(api::services))
        .route(
            "/api/policies",
            get(api::policies)
                .post(api::push_policy)
                .layer(axum::extract::DefaultBodyLimit::max(PUSH_LIMIT)),
        )
        .route(
            "/api/policies/{name}",
            put(api::put_policy).layer(axum::extract::DefaultBodyLimit::max(PUSH_LIMIT)),
        )
        .route("/api/queues", get(api::queues))
        .route("/api/leases", get(api::leases))
        .route("/api/snapshot", get(api::snapshot))
        .route("/api/decisions", get(api::decisions))
        .route("/api/scale", get(scale::scale))
        .route("/api/cluster", get(cluster::cluster))
        .route("/api/topology", get(tree::topology))
        .route("/api/tree/push", post(tree::push))
        .route("/api/services/{name}/policy", put(api::set_policy))
        .route("/api/nodes/{id}/drain", post(api::drain))
        .route("/api/nodes/{id}/undrain", post(api::undrain))
        .route("/api/events", get(sse::stream))
        .route("/api/cache", get(api::cache).delete(api::purge_cache))
        // The job routes, shared with the ingress (their own auth: the
        // admin token or a tenant's key, for reads too).
        .merge(crate::jobs::http::routes("/api"))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(crate::calls::request_id::tag))
        .with_state(shared)
}

/// Largest body of a policy push, bytes: the largest component
/// (`crate::sync::keys::MAX_COMPONENT`).
const PUSH_LIMIT: usize = crate::sync::keys::MAX_COMPONENT;

/// Any other route: 404 `not_found`.
async fn not_found(uri: axum::http::Uri) -> Response {
    crate::http_error::not_found(&format!(
        "no route {} on the admin port: it serves /, /metrics, /health, /ready and /api/...",
        uri.path()
    ))
    .into_response()
}

/// An error answer in the ports' one shape (`crate::http_error`):
/// `{"error": {"message", "type", "code"}}`, `code` naming what went wrong
/// (`bad_request`, `unauthorized`, `unknown_node`, ...).
fn fail(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    HttpError::new(status, message).code(code).into_response()
}

/// Checks `Authorization: Bearer <admin token>`; the error is the 401
/// answer to send.
fn authorized(shared: &Shared, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let given = crate::tenants::api_key(headers).unwrap_or_default();
    if crate::token_matches(&given, &shared.admin_token) {
        Ok(())
    } else {
        Err(Box::new(fail(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "changes need the header `Authorization: Bearer <admin token>`",
        )))
    }
}

/// Help texts of the series computed when `/metrics` is read.
pub(crate) fn describe_metrics() {
    scale::describe_metrics();
    metrics::describe_gauge!(
        "outlier_ejected_seconds",
        "Seconds a node stays ejected from a service (0: in), by node and service."
    );
}
