//! CORS for browser pages (chat UIs) that call the ingress from another
//! origin (`[http] cors_origins`): the listed origins (or any, with `*`)
//! get `Access-Control-Allow-Origin`; preflight requests (`OPTIONS` with
//! `Access-Control-Request-Method`) are answered here with the methods,
//! the request headers the page asked for, and a 10 min `max-age`; every
//! response header (`x-switchyard-*`, `Retry-After`) is exposed. No
//! credentials mode: callers authenticate with `Authorization: Bearer`,
//! not cookies.

use std::time::Duration;

use axum::http::{HeaderValue, Method};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer, ExposeHeaders};

/// How long a browser may reuse a preflight's answer.
const MAX_AGE: Duration = Duration::from_secs(600);

/// The CORS layer for `origins` (`["*"]`: any origin); `None` when empty
/// (CORS off). Origins that are not valid header values are skipped
/// (`HttpConfig::validate` refuses them first).
pub(super) fn layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers(ExposeHeaders::any())
            .max_age(MAX_AGE),
    )
}
