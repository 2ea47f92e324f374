//! The HTTP ingress (axum on hyper; HTTP/1.1 and HTTP/2, TLS with the
//! gateway's certificate when `[http] tls`), a port of its own (default
//! `127.0.0.1:4480`):
//!
//! - OpenAI-compatible routes, so the `openai` Python client, LangChain,
//!   curl and chat UIs work unchanged: `POST /v1/chat/completions`,
//!   `/v1/completions`, `/v1/embeddings` (the body's `model` names the
//!   service, through the `[models]` aliases; the body goes to the service
//!   unchanged; `"stream": true` answers `text/event-stream`, relayed event
//!   by event) and `GET /v1/models` ([`openai`]);
//! - `POST /v1/call/{service}` for every other service: raw body in, raw
//!   result out, streamed; options and result metadata as `x-switchyard-*`
//!   headers ([`raw`]);
//! - look-aside leases: `POST /v1/leases` and `DELETE /v1/leases/{id}`
//!   ([`leases`]);
//! - durable jobs: `/v1/jobs...` and `/v1/templates` (`crate::jobs::http`,
//!   also mounted on the admin port under `/api`);
//! - the probes `GET /health` and `GET /ready` (`crate::health`).
//!
//! Other routes answer 404 `not_found`. With `[http] cors_origins`,
//! browser pages of those origins may call it ([`cors`]).
//!
//! Every call goes through the same path as a QUIC client's
//! (`calls::spawn`): tenants, queue, policy, cache. While a streamed
//! OpenAI call waits in the queue, the client gets SSE comment lines
//! (`: queued position=3`), which OpenAI clients ignore. A client that
//! disconnects leaves the queue at once or, once its call is dispatched,
//! cancels the node's work. Errors take OpenAI's shape
//! (`{"error": {"message", "type", "code"}}`) with the status a user
//! expects ([`answer`]).

mod answer;
mod cors;
mod headers;
mod leases;
pub(crate) mod models;
mod openai;
mod raw;
mod usage;

pub(crate) use usage::describe_metrics;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::serve::ListenerExt as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::Shared;

/// Binds the ingress listener.
///
/// # Errors
/// The OS error when the address cannot be bound.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves the ingress on `listener` until `shutdown` resolves: plain HTTP
/// (HTTP/1.1, and HTTP/2 with prior knowledge) or, with `tls`, HTTPS with
/// HTTP/2 and HTTP/1.1 chosen by ALPN.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = router(shared);
    // Streamed answers go out event by event: with Nagle's algorithm an
    // event written while the previous one is not yet acknowledged waits
    // for the client's delayed ACK (~40 ms on Linux), the first token
    // included. So every accepted connection sets TCP_NODELAY.
    let Some(mut tls) = tls else {
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(%error, "http ingress stopped");
        }
        return;
    };
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: keep serving.
                    tracing::warn!(%error, "http ingress accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, app) = (acceptor.clone(), app.clone());
        // The handshake runs on the connection's own task, so a slow
        // client never holds up the others.
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "tls handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "tls handshake timed out");
                    return;
                }
            };
            let service = TowerToHyperService::new(app);
            if let Err(error) = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, %error, "https connection ended");
            }
        });
    }
}

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn router(shared: Arc<Shared>) -> Router {
    // Bodies are bounded by the gateway's payload limit, checked by axum
    // before they are buffered; past it the answer is 413.
    let limit = usize::try_from(shared.config.max_payload_bytes).unwrap_or(usize::MAX);
    let router = Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{id}", get(models::one))
        .route("/v1/call/{service}", post(raw::call))
        .route("/v1/leases", post(leases::lease))
        .route("/v1/leases/{lease_id}", delete(leases::release))
        .merge(crate::jobs::http::routes("/v1"))
        .route("/health", get(crate::health::health))
        .route("/ready", get(crate::health::ready))
        .fallback(answer::not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(crate::calls::request_id::tag));
    // Outermost, so that preflights never reach the routes.
    let router = match cors::layer(&shared.config.http.cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.with_state(shared)
}
