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

use axum::body::{Body, Bytes};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use protocol::{CallError, ErrorKind, Message, ResultHead};
use tokio::sync::mpsc;

use super::headers::result_headers;
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

/// [`http_error`] as a response.
pub(super) fn error_response(error: &CallError, retry_after_s: Option<u64>) -> Response {
    http_error(error, retry_after_s).into_response()
}

/// An error of `kind` saying `message`.
pub(super) fn fail(kind: ErrorKind, message: impl Into<String>) -> Response {
    error_response(
        &CallError {
            kind,
            message: message.into(),
        },
        None,
    )
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
pub(super) async fn respond(mut frames: mpsc::Receiver<Message>, mode: Mode) -> Response {
    loop {
        match frames.recv().await {
            Some(Message::Result(head)) => return result(head, frames, mode),
            Some(Message::Error(error)) => return error_response(&error, None),
            Some(notice @ (Message::Queued(_) | Message::Reserved(_))) => {
                if mode == Mode::EventStream {
                    return waiting_stream(notice, frames);
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
fn result(head: ResultHead, frames: mpsc::Receiver<Message>, mode: Mode) -> Response {
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
    let mut response = Response::new(Body::from_stream(body_stream(frames, sse, true)));
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
fn waiting_stream(first: Message, frames: mpsc::Receiver<Message>) -> Response {
    let first = notice(&first).unwrap_or_default();
    let rest = body_stream(frames, true, false);
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
/// sees a cut response).
fn body_stream(
    frames: mpsc::Receiver<Message>,
    sse: bool,
    started: bool,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures_util::stream::unfold(
        (frames, started, false),
        move |(mut frames, mut started, done)| async move {
            if done {
                return None;
            }
            loop {
                let item = match frames.recv().await? {
                    Message::Data(chunk) => Ok(chunk),
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
                    Message::End(_) => return None,
                    Message::Error(error) if sse => {
                        let event = format!("data: {}\n\n", http_error(&error, None).body());
                        return Some((Ok(Bytes::from(event)), (frames, started, true)));
                    }
                    Message::Error(error) => {
                        let cut =
                            std::io::Error::other(format!("{}: {}", error.kind, error.message));
                        return Some((Err(cut), (frames, started, true)));
                    }
                    _ => continue,
                };
                return Some((item, (frames, started, false)));
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
