//! The OpenAI-compatible routes: `POST /v1/chat/completions`,
//! `/v1/completions` and `/v1/embeddings` (`GET /v1/models` is
//! [`super::models`]).
//!
//! The JSON body (read once, as [`crate::openai::Request`]) names the
//! service in its `model` (or a `[models]` alias of it); its prompt's
//! prefix hashes go with the call; the body goes to the service unchanged, with the endpoint, so an
//! agent's `openai` service posts it to its model server's same route. With
//! `"stream": true` the answer is `text/event-stream`, relayed event by
//! event as the model server writes it.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use protocol::ErrorKind;

use super::answer::{self, Mode, fail};
use super::headers::{self, BadHeader};
use super::usage;
use crate::Shared;

/// `POST /v1/chat/completions`.
pub(super) async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    call(shared, &headers, body, "/chat/completions").await
}

/// `POST /v1/completions`.
pub(super) async fn completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    call(shared, &headers, body, "/completions").await
}

/// `POST /v1/embeddings`.
pub(super) async fn embeddings(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    call(shared, &headers, body, "/embeddings").await
}

/// A request body, or the error answer for one axum refused (413 past the
/// payload limit), boxed (a `Response` is large).
pub(super) fn read_body(
    shared: &Shared,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, Box<Response>> {
    body.map_err(|rejection| {
        Box::new(if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            fail(
                ErrorKind::PayloadTooLarge,
                format!(
                    "the body exceeds the maximum of {} bytes",
                    shared.config.max_payload_bytes
                ),
            )
        } else {
            fail(ErrorKind::BadRequest, rejection.body_text())
        })
    })
}

async fn call(
    shared: Arc<Shared>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    endpoint: &'static str,
) -> Response {
    let arrived = Instant::now();
    let body = match read_body(&shared, body) {
        Ok(body) => body,
        Err(response) => return *response,
    };
    let request = match crate::openai::Request::parse(&body) {
        Ok(request) => request,
        Err(e) => {
            return fail(
                ErrorKind::BadRequest,
                format!("the body is not an OpenAI request: {e}"),
            );
        }
    };
    let Some(model) = request.model.as_deref().filter(|m| !m.is_empty()) else {
        return fail(ErrorKind::BadRequest, "the body names no `model`");
    };
    let service = shared.config.service_for_model(model).to_string();
    let mut head = match headers::call_head(&shared.config, headers, &service, body.len() as u64) {
        Ok(head) => head,
        Err(BadHeader(message)) => return fail(ErrorKind::BadRequest, message),
    };
    head.endpoint = Some(endpoint.into());
    let streamed = request.stream.unwrap_or(false) && endpoint != "/embeddings";
    let mode = if streamed {
        Mode::EventStream
    } else {
        Mode::Json
    };
    // The body is parsed once: its prompt's hashes go with the call.
    let prefix = crate::calls::prefix_of(&shared.config.prefix, &head, Some(&request));
    // Token accounting: a stream is asked for its usage when the caller did
    // not ask, and the usage chunk is then taken out of the answer.
    let mut body = body;
    let mut strip = false;
    if streamed
        && endpoint != "/embeddings"
        && let Some(asked) = usage::ask_for_usage(&body, request.stream_options.as_ref())
    {
        body = asked;
        strip = true;
    }
    let tenant = crate::calls::authenticate(&shared, head.api_key.as_deref())
        .map(|t| t.name().to_string())
        .unwrap_or_default();
    let meter = usage::Meter::new(&service, &tenant, arrived, streamed, strip);
    let request = crate::calls::Request {
        head,
        payload: body,
        arrived,
        prefix: Some(prefix),
    };
    match crate::calls::spawn(shared, request) {
        Ok(frames) => answer::respond_metered(frames, mode, Some(meter)).await,
        Err(refused) => refused.into_response(),
    }
}
