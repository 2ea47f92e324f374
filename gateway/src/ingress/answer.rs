//! Turning a call's frames into an HTTP response, relayed as they come,
//! and errors into OpenAI's shape with the status a user expects.
//!
//! | error kind | status |
//! |---|---|
//! | bad request | 400 |
//! | unauthorized | 401 |
//! | forbidden | 403 |
//! | unknown service (model) | 404 |
//! | payload too large | 413 |
//! | overloaded, occupied, rate limited | 429 with `Retry-After` |
//! | service failed, node lost | 502 |
//! | no node available, shutting down, rejected by policy | 503 |
//! | timeout | 504 |
//! | internal | 500 |
//!
//! A service that answered an error status with a JSON body (a model
//! server's own OpenAI error) is answered with that status and that body,
//! unchanged. Every error names the node the call failed on
//! (`x-switchyard-node`, when it reached one) and its `x-request-id`.

use axum::body::{Body, Bytes};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use protocol::{CallError, ErrorKind, Message, ResultHead};
use tokio::sync::mpsc;

use super::headers::result_headers;
use super::usage::Meter;
use crate::http_error::HttpError;

/// How the response carries the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Raw bytes with the service's media type (`application/octet-stream`
    /// when it names none).
    Raw,
    /// An OpenAI JSON answer (`application/json` unless the service says
    /// otherwise).
    Json,
    /// An OpenAI streamed answer: `text/event-stream`; queue positions go
    /// out as SSE comments, a failure after the start as an SSE `error`
    /// event.
    EventStream,
}

/// Seconds a refused client is told to wait (`Retry-After`) when the
/// refusal says nothing closer.
const DEFAULT_RETRY_AFTER_S: u64 = 1;

/// The HTTP status for an error kind.
pub(super) fn status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::LeaseEnded => StatusCode::GONE,
        ErrorKind::UnknownService => StatusCode::NOT_FOUND,
        ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::Overloaded | ErrorKind::Occupied | ErrorKind::RateLimited => {
            StatusCode::TOO_MANY_REQUESTS
        }
        ErrorKind::ServiceFailed | ErrorKind::NodeLost => StatusCode::BAD_GATEWAY,
        ErrorKind::NoNodeAvailable | ErrorKind::ShuttingDown | ErrorKind::Rejected => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The answer to a call that failed with `error`: its kind's status, and
/// on 429 `Retry-After` (`retry_after_s`, else [`DEFAULT_RETRY_AFTER_S`]).
/// The code is the kind in snake case (`model_not_found` for an unknown
/// service: the body's `model` named it).
pub(super) fn http_error(error: &CallError, retry_after_s: Option<u64>) -> HttpError {
    let status = status(error.kind);
    let code = match error.kind {
        ErrorKind::UnknownService => "model_not_found",
        kind => crate::telemetry::outcome(Err(kind)),
    };
    let answer = HttpError::new(status, error.message.clone()).code(code);
    if status == StatusCode::TOO_MANY_REQUESTS {
        answer.retry_after(retry_after_s.unwrap_or(DEFAULT_RETRY_AFTER_S))
    } else {
        answer
    }
}

/// The answer to a failed call: the service's own error (its status and
/// JSON body, unchanged) when it answered one, else [`http_error`]; with
/// `x-switchyard-node` when the call reached a node and `x-request-id`.
pub(super) fn error_response(error: &CallError, retry_after_s: Option<u64>) -> Response {
    let mut response =
        passed_through(error).unwrap_or_else(|| http_error(error, retry_after_s).into_response());
    let headers = response.headers_mut();
    let mut put = |name: &'static str, value: Option<&str>| {
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(name, value);
        }
    };
    put("x-switchyard-node", error.node_id.as_deref());
    put("x-request-id", error.request_id.as_deref());
    response
}

/// The service's own error answer, when it answered an error status with a
/// JSON body (an OpenAI-compatible model server's `{"error": {...}}`): that
/// status and that body, unchanged.
fn passed_through(error: &CallError) -> Option<Response> {
    let status = StatusCode::from_u16(error.status?)
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error())?;
    let mut response = Response::new(Body::from(String::from(error.body.clone()?)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Some(response)
}

/// An error of `kind` saying `message`.
pub(super) fn fail(kind: ErrorKind, message: impl Into<String>) -> Response {
    error_response(&CallError::new(kind, message.into()), None)
}

/// 404 for a path the ingress does not serve.
pub(super) async fn not_found(uri: axum::http::Uri) -> Response {
    crate::http_error::not_found(&format!(
        "no route {}: the ingress serves /v1/chat/completions, /v1/completions, \
         /v1/embeddings, /v1/models, /v1/call/{{service}}, /v1/jobs, /v1/templates, \
         /health and /ready",
        uri.path()
    ))
    .into_response()
}

/// Waits for the call's answer and responds: an error before the result
/// gets its own status; a result is relayed chunk by chunk as the node
/// sends it. An [`Mode::EventStream`] call that has to wait answers
/// `200 text/event-stream` at once, with `: queued position=N` comments
/// until its result.
pub(super) async fn respond(frames: mpsc::Receiver<Message>, mode: Mode) -> Response {
    respond_metered(frames, mode, None).await
}

/// As [`respond`]; the result's chunks pass through `meter` (an OpenAI
/// answer's token accounting), which may hold back or take out bytes.
pub(super) async fn respond_metered(
    mut frames: mpsc::Receiver<Message>,
    mode: Mode,
    meter: Option<Meter>,
) -> Response {
    loop {
        match frames.recv().await {
            Some(Message::Result(head)) => return result(head, frames, mode, meter),
            Some(Message::Error(error)) => return error_response(&error, None),
            Some(notice @ (Message::Queued(_) | Message::Reserved(_))) => {
                if mode == Mode::EventStream {
                    return waiting_stream(notice, frames, meter);
                }
            }
            Some(other) => {
                tracing::warn!(kind = ?other.kind(), "unexpected frame before a result");
            }
            None => return fail(ErrorKind::Internal, "the call ended without an answer"),
        }
    }
}

/// The response for a result head: status and media type from the service,
/// metadata headers, the body relayed as it comes.
fn result(
    head: ResultHead,
    frames: mpsc::Receiver<Message>,
    mode: Mode,
    meter: Option<Meter>,
) -> Response {
    let status = head
        .status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .filter(StatusCode::is_success)
        .unwrap_or(StatusCode::OK);
    let content_type = head.content_type.clone().unwrap_or_else(|| {
        match mode {
            Mode::Raw => "application/octet-stream",
            Mode::Json => "application/json",
            Mode::EventStream => "text/event-stream",
        }
        .into()
    });
    let sse = mode == Mode::EventStream || content_type.starts_with("text/event-stream");
    let mut response = Response::new(Body::from_stream(body_stream(frames, sse, true, meter)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&content_type) {
        headers.insert(CONTENT_TYPE, value);
    }
    for (name, value) in result_headers(&head) {
        headers.insert(name, value);
    }
    if sse {
        headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    }
    response
}

/// `200 text/event-stream` for a streamed call that waits: queue notices
/// as SSE comments, then the result's events.
fn waiting_stream(
    first: Message,
    frames: mpsc::Receiver<Message>,
    meter: Option<Meter>,
) -> Response {
    let first = notice(&first).unwrap_or_default();
    let rest = body_stream(frames, true, false, meter);
    let stream = futures_util::StreamExt::chain(
        futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(first))]),
        rest,
    );
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    response
}

/// An SSE comment for a queue notice.
fn notice(message: &Message) -> Option<String> {
    match message {
        Message::Queued(position) => Some(format!(": queued position={position}\n\n")),
        Message::Reserved(r) => Some(format!(
            ": reserved node={} loading={} expected_ms={}\n\n",
            r.node_id, r.service, r.expected_ms
        )),
        _ => None,
    }
}

/// The response body: `Data` chunks as they come; in SSE mode queue
/// notices before the result become comments and a failure an `error`
/// event; otherwise a failure after the head aborts the body (the client
/// sees a cut response). `Data` passes through `meter` when there is one;
/// the result's end ends it.
fn body_stream(
    frames: mpsc::Receiver<Message>,
    sse: bool,
    started: bool,
    meter: Option<Meter>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures_util::stream::unfold(
        (frames, started, false, meter),
        move |(mut frames, mut started, done, mut meter)| async move {
            if done {
                return None;
            }
            loop {
                // A result of known length ends with the channel, a
                // streamed one with `End`: either ends the meter.
                let Some(frame) = frames.recv().await else {
                    let rest = meter.take().and_then(Meter::end)?;
                    return Some((Ok(rest), (frames, started, true, None)));
                };
                let item = match frame {
                    Message::Data(chunk) => match meter.as_mut() {
                        None => Ok(chunk),
                        Some(meter) => match meter.chunk(chunk) {
                            Some(bytes) => Ok(bytes),
                            None => continue,
                        },
                    },
                    Message::Result(_) => {
                        started = true;
                        continue;
                    }
                    notice_frame @ (Message::Queued(_) | Message::Reserved(_)) => {
                        match notice(&notice_frame) {
                            Some(text) if sse && !started => Ok(Bytes::from(text)),
                            _ => continue,
                        }
                    }
                    Message::End(_) => {
                        let rest = meter.take().and_then(Meter::end)?;
                        return Some((Ok(rest), (frames, started, true, None)));
                    }
                    Message::Error(error) if sse => {
                        let body = error.body.as_deref().map_or_else(
                            || http_error(&error, None).body().to_string(),
                            str::to_string,
                        );
                        let event = format!("data: {body}\n\n");
                        return Some((Ok(Bytes::from(event)), (frames, started, true, None)));
                    }
                    Message::Error(error) => {
                        let cut =
                            std::io::Error::other(format!("{}: {}", error.kind, error.message));
                        return Some((Err(cut), (frames, started, true, None)));
                    }
                    _ => continue,
                };
                return Some((item, (frames, started, false, meter)));
            }
        },
    )
}

impl IntoResponse for crate::calls::Refused {
    fn into_response(self) -> Response {
        let retry_after = self.retry_after.map(|d| d.as_secs_f64().ceil() as u64);
        error_response(&self.error, retry_after)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    async fn parts(response: Response) -> (StatusCode, HeaderMapView, String) {
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let view = HeaderMapView {
            node: header("x-switchyard-node"),
            request_id: header("x-request-id"),
            content_type: header("content-type"),
        };
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, view, String::from_utf8(body.to_vec()).unwrap())
    }

    #[derive(Debug, PartialEq)]
    struct HeaderMapView {
        node: Option<String>,
        request_id: Option<String>,
        content_type: Option<String>,
    }

    #[tokio::test]
    async fn a_services_json_error_passes_through_with_its_status() {
        let body = r#"{"error":{"message":"messages is required","type":"invalid_request_error"}}"#;
        let error = CallError {
            status: Some(400),
            body: Some(body.into()),
            node_id: Some("node-a".into()),
            request_id: Some("req-1".into()),
            ..CallError::new(ErrorKind::BadRequest, "http status 400 Bad Request: ...")
        };
        let (status, headers, text) = parts(error_response(&error, None)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(text, body, "the service's own body, unchanged");
        assert_eq!(
            headers,
            HeaderMapView {
                node: Some("node-a".into()),
                request_id: Some("req-1".into()),
                content_type: Some("application/json".into()),
            }
        );
    }

    #[tokio::test]
    async fn other_errors_take_the_gateways_shape_and_name_the_node() {
        let error = CallError {
            status: Some(502),
            node_id: Some("node-b".into()),
            ..CallError::new(ErrorKind::ServiceFailed, "http status 502: no JSON")
        };
        let (status, headers, text) = parts(error_response(&error, None)).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(headers.node.as_deref(), Some("node-b"));
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["error"]["code"], "service_failed");
        assert_eq!(json["error"]["message"], "http status 502: no JSON");
        let (_, headers, _) = parts(fail(ErrorKind::Timeout, "late")).await;
        assert_eq!(headers.node, None, "a call that reached no node names none");
    }
}
