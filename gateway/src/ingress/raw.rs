//! `POST /v1/call/{service}`: any service over plain HTTP. The raw body is
//! the payload, the raw result is the response body (streamed as the node
//! writes it, with the service's media type), options come as
//! `x-switchyard-*` headers and the result's metadata goes back as
//! headers (see [`super::headers`]).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use protocol::ErrorKind;

use super::answer::{self, Mode, fail};
use super::headers::{self, BadHeader};
use super::openai::read_body;
use crate::Shared;

/// `POST /v1/call/{service}`.
pub(super) async fn call(
    State(shared): State<Arc<Shared>>,
    Path(service): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let arrived = Instant::now();
    let body = match read_body(&shared, body) {
        Ok(body) => body,
        Err(response) => return *response,
    };
    let head = match headers::call_head(&shared.config, &headers, &service, body.len() as u64) {
        Ok(head) => head,
        Err(BadHeader(message)) => return fail(ErrorKind::BadRequest, message),
    };
    let request = crate::calls::Request {
        head,
        payload: body,
        arrived,
        prefix: None,
    };
    match crate::calls::spawn(shared, request) {
        Ok(frames) => answer::respond(frames, Mode::Raw).await,
        Err(refused) => refused.into_response(),
    }
}
