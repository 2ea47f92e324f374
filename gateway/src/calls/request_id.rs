//! Request ids: every call has one, the caller's (HTTP `x-request-id`, a
//! QUIC call head's `request_id`) when it is 1 to
//! [`protocol::request_id::MAX_LEN`] bytes of visible ASCII, else one made
//! up here (32 hex digits from a random number). It goes back with every
//! answer (the `x-request-id` response header on both HTTP ports, the QUIC
//! result head and error), to the agent with the dispatch, into the
//! gateway's and the agent's log lines (the `call` span's `request_id`
//! field), "why this node" decisions, and a job's record.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// The request id header, `x-request-id`, on requests and answers.
pub(crate) const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The caller's request id when it is valid, else a new one.
pub(crate) fn of_caller(caller: Option<&str>) -> String {
    protocol::request_id::or_generate(caller, rand::random)
}

/// HTTP middleware for both ports: sets the request's `x-request-id` to
/// the caller's valid one or a new one (so handlers read it from the
/// request's headers), and puts it on the answer unless the handler set
/// one already.
pub(crate) async fn tag(mut request: Request, next: Next) -> Response {
    let caller = request.headers().get(&HEADER).and_then(|v| v.to_str().ok());
    let id = of_caller(caller);
    // Visible ASCII only, so always a header value.
    let value = HeaderValue::from_str(&id).ok();
    if let Some(value) = &value {
        request.headers_mut().insert(HEADER, value.clone());
    }
    let mut response = next.run(request).await;
    if let Some(value) = value {
        response.headers_mut().entry(HEADER).or_insert(value);
    }
    response
}

/// The request id a front end put on `headers` ([`tag`]).
pub(crate) fn of_headers(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get(&HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| protocol::request_id::is_valid(id))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt as _;

    use super::*;

    async fn answer(id: Option<&str>) -> (String, String) {
        let app = Router::new()
            .route(
                "/",
                get(|headers: axum::http::HeaderMap| async move {
                    of_headers(&headers).unwrap_or_default()
                }),
            )
            .layer(axum::middleware::from_fn(tag));
        let mut request = Request::builder().uri("/");
        if let Some(id) = id {
            request = request.header("x-request-id", id);
        }
        let response = app
            .oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("answer");
        let header = response.headers()[&HEADER]
            .to_str()
            .expect("ascii")
            .to_string();
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("body");
        (header, String::from_utf8(body.to_vec()).expect("utf-8"))
    }

    #[tokio::test]
    async fn a_valid_id_is_kept_and_others_are_replaced() {
        assert_eq!(
            answer(Some("req-42")).await,
            ("req-42".into(), "req-42".into())
        );
        let long = "x".repeat(protocol::request_id::MAX_LEN + 1);
        for bad in [None, Some(""), Some("two words"), Some(long.as_str())] {
            let (header, seen) = answer(bad).await;
            assert_eq!(header, seen, "{bad:?}: the handler sees the answer's id");
            assert_eq!(header.len(), 32, "{bad:?}: a new id");
            assert!(header.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert_ne!(answer(None).await.0, answer(None).await.0);
    }
}
