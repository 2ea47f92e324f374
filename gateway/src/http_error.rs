//! The one JSON error shape of the gateway's HTTP ports, the ingress and
//! the admin port alike: OpenAI's
//!
//! ```json
//! {"error": {"message": "...", "type": "invalid_request_error", "code": "bad_request"}}
//! ```
//!
//! `type` follows from the status (as OpenAI's API names them), `code` is
//! the error's kind in snake case (`unknown_service`, `unauthorized`, ...,
//! or `model_not_found` for an unknown model), and a refusal that may be
//! retried later carries `Retry-After` in seconds.

use axum::Json;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer: its status, message, code and when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpError {
    status: StatusCode,
    message: String,
    code: Option<&'static str>,
    retry_after_s: Option<u64>,
}

impl HttpError {
    /// An error answered with `status`, saying `message`.
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            code: None,
            retry_after_s: None,
        }
    }

    /// With the machine-readable `code` (snake case).
    #[must_use]
    pub(crate) fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// With `Retry-After: seconds` (at least 1).
    #[must_use]
    pub(crate) fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds.max(1));
        self
    }

    /// The JSON body: `{"error": {"message", "type", "code"}}` (`code`
    /// only when set).
    pub(crate) fn body(&self) -> serde_json::Value {
        let mut error = json!({
            "message": self.message,
            "type": error_type(self.status),
        });
        if let Some(code) = self.code {
            error["code"] = code.into();
        }
        json!({ "error": error })
    }
}

/// 404 `not_found`: the answer to a route neither port serves, saying
/// `message`.
pub(crate) fn not_found(message: &str) -> HttpError {
    HttpError::new(StatusCode::NOT_FOUND, message).code("not_found")
}

/// The error `type` for a status, as OpenAI's API names them.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        409 => "conflict_error",
        429 => "rate_limit_error",
        400 | 410 | 413 => "invalid_request_error",
        _ => "server_error",
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after_s {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    async fn body(error: HttpError) -> (StatusCode, Option<String>, serde_json::Value) {
        let response = error.into_response();
        let status = response.status();
        let retry = response
            .headers()
            .get(RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, retry, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn every_error_has_one_shape() {
        let (status, retry, json) =
            body(HttpError::new(StatusCode::UNAUTHORIZED, "wrong token").code("unauthorized"))
                .await;
        assert_eq!(status, 401);
        assert_eq!(retry, None);
        assert_eq!(
            json,
            json!({"error": {"message": "wrong token", "type": "authentication_error", "code": "unauthorized"}})
        );
        let (status, retry, json) =
            body(HttpError::new(StatusCode::TOO_MANY_REQUESTS, "slow down").retry_after(0)).await;
        assert_eq!(status, 429);
        assert_eq!(retry.as_deref(), Some("1"), "at least one second");
        assert_eq!(
            json,
            json!({"error": {"message": "slow down", "type": "rate_limit_error"}})
        );
        for (status, kind) in [
            (StatusCode::BAD_REQUEST, "invalid_request_error"),
            (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error"),
            (StatusCode::GONE, "invalid_request_error"),
            (StatusCode::FORBIDDEN, "permission_error"),
            (StatusCode::NOT_FOUND, "not_found_error"),
            (StatusCode::CONFLICT, "conflict_error"),
            (StatusCode::BAD_GATEWAY, "server_error"),
        ] {
            assert_eq!(
                body(HttpError::new(status, "x")).await.2["error"]["type"],
                kind
            );
        }
    }
}
