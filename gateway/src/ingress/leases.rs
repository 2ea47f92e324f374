//! Leases over HTTP: `POST /v1/leases` asks for a lease (a JSON body; the
//! API key as for calls) and answers the grant as JSON, or with `Accept:
//! text/event-stream` as server-sent events: `queued` (`{"position": N}`,
//! each change) and `reserved` while it waits, then `lease` (the grant) or
//! `error` (the usual JSON error). `DELETE /v1/leases/{lease_id}` with the
//! lease's token in `x-switchyard-lease-token` releases it: 204, 401 for a
//! token this gateway did not sign or that names another lease, 404 for a
//! lease this gateway does not hold. A client that leaves while its lease
//! waits takes it out of the queue; one that leaves as it is granted
//! releases it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use protocol::{CallError, CallHead, ErrorKind, LeaseRequest, Message};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::answer::{error_response, fail, http_error};
use super::openai::read_body;
use crate::calls::{Caller, Failure};
use crate::{Shared, leases};

/// Header carrying the lease's token on a release.
const TOKEN_HEADER: &str = "x-switchyard-lease-token";

/// Frames an event-stream client may be behind (positions only).
const EVENT_FRAMES: usize = 16;

/// `POST /v1/leases`'s body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseBody {
    /// The service to lease a node of.
    service: String,
    /// Hints for the policy (`key: value`).
    #[serde(default)]
    hints: BTreeMap<String, String>,
    #[serde(default)]
    priority: i32,
    /// Fail with `occupied` rather than wait.
    #[serde(default)]
    realtime: bool,
    /// How long to wait for a node, ms (default `[http] timeout_ms`).
    timeout_ms: Option<u32>,
    #[serde(default)]
    max_calls: u32,
    #[serde(default)]
    idle_ms: u32,
    #[serde(default)]
    ttl_ms: u32,
    /// The policy to pick with (the `policy` hint).
    policy: Option<String>,
}

impl LeaseBody {
    /// The lease request, with the caller's headers' key, request id.
    fn request(self, headers: &HeaderMap, default_timeout_ms: u32) -> LeaseRequest {
        let mut head = CallHead::new(
            self.service,
            0,
            self.timeout_ms.unwrap_or(default_timeout_ms),
        );
        head.hints = self.hints.into_iter().collect();
        if let Some(policy) = self.policy {
            head.hints.push(("policy".into(), policy));
        }
        head.priority = self.priority;
        head.realtime = self.realtime;
        head.api_key = crate::tenants::api_key(headers);
        head.request_id = crate::calls::request_id::of_headers(headers);
        LeaseRequest {
            head,
            max_calls: self.max_calls,
            idle_ms: self.idle_ms,
            ttl_ms: self.ttl_ms,
        }
    }
}

/// A caller reading the lease's frames from a channel.
struct Events(mpsc::Sender<Message>);

impl Caller for Events {
    async fn send(&mut self, message: Message) -> Result<(), crate::calls::Gone> {
        self.0.send(message).await.map_err(|_| crate::calls::Gone)
    }

    fn gone(&self) -> impl Future<Output = ()> + Send + 'static {
        let tx = self.0.clone();
        async move { tx.closed().await }
    }
}

/// `POST /v1/leases`.
pub(super) async fn lease(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let arrived = Instant::now();
    let body = match read_body(&shared, body) {
        Ok(body) => body,
        Err(response) => return *response,
    };
    let body: LeaseBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => return fail(ErrorKind::BadRequest, format!("lease request: {e}")),
    };
    let mut request = body.request(&headers, shared.config.http.timeout_ms);
    let in_flight = match shared.drain.enter() {
        Ok(in_flight) => in_flight,
        Err(error) => return error_response(&error, None),
    };
    let admitted = match crate::calls::admit(&shared, &mut request.head) {
        Ok(admitted) => admitted,
        Err(refused) => {
            refused.record(&shared, &request.head.service, arrived);
            return refused.into_response();
        }
    };
    // The lease runs on its own task, its frames on a channel: a client
    // that leaves drops the receiver, which takes the lease out of the
    // queue, or releases it when it was granted meanwhile.
    let (tx, mut rx) = mpsc::channel(EVENT_FRAMES);
    tokio::spawn(async move {
        let mut events = Events(tx);
        let answer = leases::lease(&shared, request, admitted, &mut events, arrived).await;
        drop(in_flight);
        let last = match answer {
            Ok(grant) => {
                let lease_id = grant.lease_id.clone();
                if events.0.send(Message::Leased(grant)).await.is_err() {
                    leases::abandon(&shared, &lease_id);
                }
                return;
            }
            Err(Failure::Gone) => return,
            Err(failure) => Message::Error(failure_error(failure)),
        };
        let _ = events.0.send(last).await;
    });
    if !wants_events(&headers) {
        while let Some(message) = rx.recv().await {
            match message {
                Message::Leased(grant) => return axum::Json(grant).into_response(),
                Message::Error(error) => return error_response(&error, None),
                _ => {}
            }
        }
        return fail(ErrorKind::Internal, "the lease ended without an answer");
    }
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let message = rx.recv().await?;
        let event = event(&message)?;
        Some((Ok::<_, Infallible>(Bytes::from(event)), rx))
    });
    let mut response = Response::new(Body::from_stream(stream));
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Whether the caller asked for server-sent events.
fn wants_events(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// The error a failed lease request answers.
fn failure_error(failure: Failure) -> CallError {
    match failure {
        Failure::Reply(error) => error,
        Failure::Gone => CallError::new(ErrorKind::Internal, "the caller left"),
        Failure::Cut(_, why) => CallError::new(ErrorKind::NodeLost, why),
    }
}

/// One server-sent event for a frame of the lease's wait (`None` for a
/// frame that has none).
fn event(message: &Message) -> Option<String> {
    let (name, data) = match message {
        Message::Queued(position) => ("queued", serde_json::json!({ "position": position })),
        Message::Reserved(notice) => ("reserved", serde_json::to_value(notice).ok()?),
        Message::Leased(grant) => ("lease", serde_json::to_value(grant).ok()?),
        Message::Error(error) => ("error", http_error(error, None).body()),
        _ => return None,
    };
    Some(format!("event: {name}\ndata: {data}\n\n"))
}

/// `DELETE /v1/leases/{lease_id}`.
pub(super) async fn release(
    State(shared): State<Arc<Shared>>,
    Path(lease_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(token) = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()) else {
        return fail(
            ErrorKind::Unauthorized,
            format!("a release needs the lease's token in {TOKEN_HEADER}"),
        );
    };
    match leases::release(&shared, token.trim(), Some(&lease_id)).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e @ leases::ReleaseError::Token(_)) => fail(ErrorKind::Unauthorized, e.to_string()),
        Err(e @ leases::ReleaseError::Unknown(_)) => {
            crate::http_error::not_found(&e.to_string()).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_body_becomes_a_lease_request() {
        let body: LeaseBody = serde_json::from_str(
            r#"{"service": "echo", "hints": {"k": "v"}, "priority": 2, "max_calls": 3,
                "idle_ms": 100, "ttl_ms": 5000, "policy": "pick-first"}"#,
        )
        .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer KEY"));
        let request = body.request(&headers, 30_000);
        assert_eq!(request.head.service, "echo");
        assert_eq!(request.head.timeout_ms, 30_000, "the default wait");
        assert_eq!(request.head.payload_len, 0);
        assert_eq!(
            request.head.hints,
            vec![
                ("k".to_string(), "v".to_string()),
                ("policy".to_string(), "pick-first".to_string())
            ]
        );
        assert_eq!(request.head.api_key.as_deref(), Some("KEY"));
        assert_eq!(
            (request.max_calls, request.idle_ms, request.ttl_ms),
            (3, 100, 5000)
        );
        assert!(serde_json::from_str::<LeaseBody>(r#"{"service": "x", "nope": 1}"#).is_err());
        assert!(serde_json::from_str::<LeaseBody>(r#"{"hints": {}}"#).is_err());
    }

    #[test]
    fn wait_frames_become_events() {
        assert_eq!(
            event(&Message::Queued(3)).as_deref(),
            Some("event: queued\ndata: {\"position\":3}\n\n")
        );
        let error = event(&Message::Error(CallError::new(
            ErrorKind::Timeout,
            "no node",
        )))
        .unwrap();
        assert!(
            error.starts_with("event: error\ndata: {\"error\""),
            "{error}"
        );
        assert!(error.contains("no node"), "{error}");
        assert_eq!(event(&Message::Ack("x".into())), None);
    }

    #[test]
    fn event_streams_are_asked_by_accept() {
        let mut headers = HeaderMap::new();
        assert!(!wants_events(&headers));
        headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        assert!(wants_events(&headers));
    }
}
