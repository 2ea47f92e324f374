//! The `x-switchyard-*` request headers that carry a call's options, the
//! response headers that carry its metadata, and the API key.
//!
//! | request header | call option |
//! |---|---|
//! | `authorization: Bearer KEY` | the tenant's API key |
//! | `x-switchyard-hint: key=value` (repeatable) | a policy hint |
//! | `x-switchyard-policy: NAME` | the hint `policy=NAME` |
//! | `x-switchyard-priority: N` | queue priority (higher first) |
//! | `x-switchyard-realtime: true` | never queue |
//! | `x-switchyard-timeout-ms: N` | the call's timeout, ms |
//! | `x-switchyard-no-cache: true` | skip the result cache |
//! | `x-switchyard-max-age-s: N` | accept cached results at most N s old |
//! | `traceparent` (W3C trace context) | the caller's trace and span |
//!
//! Every answer carries `x-request-id`: the caller's when it is 1 to 128
//! bytes of visible ASCII, else a new one (`crate::calls::request_id`).
//!
//! Response headers: `x-switchyard-node`, `-policy`, `-queue-ms`,
//! `-node-ms` (to the first byte), `-cache` (`miss`, `hit` or `coalesced`),
//! `-cache-age-ms` and `-attempts` (nodes the call was sent to: more than 1
//! when an idempotent call was retried, 0 from the cache).

use std::str::FromStr;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use protocol::{CallHead, ResultHead};

use crate::GatewayConfig;

/// A bad `x-switchyard-*` header, in words (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BadHeader(pub(super) String);

/// A call of `service` with `payload_len` bytes, with the options the
/// headers set.
///
/// # Errors
/// [`BadHeader`] for a header that does not parse.
pub(super) fn call_head(
    config: &GatewayConfig,
    headers: &HeaderMap,
    service: &str,
    payload_len: u64,
) -> Result<CallHead, BadHeader> {
    let timeout_ms = parsed(headers, "x-switchyard-timeout-ms")?
        .unwrap_or(config.http.timeout_ms)
        .min(config.max_timeout_ms);
    let mut head = CallHead::new(service, payload_len, timeout_ms);
    for value in headers.get_all("x-switchyard-hint") {
        let text = value
            .to_str()
            .map_err(|_| BadHeader("x-switchyard-hint is not text".into()))?;
        let Some((key, value)) = text.split_once('=') else {
            return Err(BadHeader(format!(
                "x-switchyard-hint {text:.64} is not key=value"
            )));
        };
        head.hints
            .push((key.trim().to_string(), value.trim().to_string()));
    }
    if let Some(policy) = text(headers, "x-switchyard-policy")? {
        head.hints.push(("policy".into(), policy));
    }
    head.priority = parsed(headers, "x-switchyard-priority")?.unwrap_or(0);
    head.realtime = flag(headers, "x-switchyard-realtime")?;
    head.no_cache = flag(headers, "x-switchyard-no-cache")?;
    head.max_age_s = parsed(headers, "x-switchyard-max-age-s")?;
    if flag(headers, "x-switchyard-explain")? {
        head.hints.push(("explain".into(), "1".into()));
    }
    head.api_key = crate::tenants::api_key(headers);
    head.request_id = crate::calls::request_id::of_headers(headers);
    head.traceparent = traceparent(headers);
    Ok(head)
}

/// The caller's `traceparent` when it fits a call head (at most
/// `MAX_TRACEPARENT_LEN` bytes of visible ASCII); a header that does not is
/// ignored, as the W3C says: the call starts a new trace.
fn traceparent(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("traceparent")?.to_str().ok()?.trim();
    (value.len() <= protocol::limits::MAX_TRACEPARENT_LEN
        && value.bytes().all(|b| b.is_ascii_graphic()))
    .then(|| value.to_string())
}

fn text(headers: &HeaderMap, name: &str) -> Result<Option<String>, BadHeader> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map(|s| s.trim().to_string())
                .map_err(|_| BadHeader(format!("{name} is not text")))
        })
        .transpose()
}

fn parsed<T: FromStr>(headers: &HeaderMap, name: &str) -> Result<Option<T>, BadHeader> {
    text(headers, name)?
        .map(|v| {
            v.parse()
                .map_err(|_| BadHeader(format!("{name}: {v:.32} is not a valid number")))
        })
        .transpose()
}

fn flag(headers: &HeaderMap, name: &str) -> Result<bool, BadHeader> {
    match text(headers, name)?.as_deref() {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(false),
        Some(v) => Err(BadHeader(format!("{name}: {v:.32} is not true or false"))),
    }
}

/// The `x-switchyard-*` response headers for a result.
pub(super) fn result_headers(head: &ResultHead) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    let mut put = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            out.push((HeaderName::from_static(name), value));
        }
    };
    put("x-switchyard-node", head.node_id.clone());
    put("x-switchyard-policy", head.policy.clone());
    put(
        "x-switchyard-queue-ms",
        format!("{:.3}", head.timings.queue_ms),
    );
    put(
        "x-switchyard-node-ms",
        format!("{:.3}", head.timings.node_ms),
    );
    put("x-switchyard-attempts", head.timings.attempts.to_string());
    match head.cache {
        Some(cache) => {
            let how = if cache.coalesced { "coalesced" } else { "hit" };
            put("x-switchyard-cache", how.into());
            put("x-switchyard-cache-age-ms", cache.age_ms.to_string());
        }
        None => put("x-switchyard-cache", "miss".into()),
    }
    if let Some(explain) = &head.explain {
        // A header value is visible ASCII: anything else becomes `?`.
        let ascii = explain
            .chars()
            .map(|c| {
                if c == ' ' || c.is_ascii_graphic() {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        put("x-switchyard-explain", ascii);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("value"));
        }
        map
    }

    #[test]
    fn every_option_header_is_read() {
        let config = GatewayConfig::default();
        let map = headers(&[
            ("authorization", "Bearer sk-1"),
            ("x-switchyard-hint", "max_cost=0.5"),
            ("x-switchyard-hint", "region = eu"),
            ("x-switchyard-policy", "latency"),
            ("x-switchyard-priority", "-3"),
            ("x-switchyard-realtime", "true"),
            ("x-switchyard-timeout-ms", "1500"),
            ("x-switchyard-no-cache", "1"),
            ("x-switchyard-max-age-s", "60"),
            ("x-switchyard-explain", "1"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        ]);
        let head = call_head(&config, &map, "svc", 3).expect("head");
        assert_eq!(
            head.hints,
            [
                ("max_cost".to_string(), "0.5".to_string()),
                ("region".to_string(), "eu".to_string()),
                ("policy".to_string(), "latency".to_string()),
                ("explain".to_string(), "1".to_string())
            ]
        );
        assert_eq!(head.priority, -3);
        assert!(head.realtime && head.no_cache);
        assert_eq!(head.timeout_ms, 1500);
        assert_eq!(head.max_age_s, Some(60));
        assert_eq!(head.api_key.as_deref(), Some("sk-1"));
        assert_eq!(head.payload_len, 3);
        assert_eq!(
            head.traceparent.as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
    }

    #[test]
    fn a_traceparent_too_long_to_carry_is_ignored_not_refused() {
        let config = GatewayConfig::default();
        let long = "0".repeat(protocol::limits::MAX_TRACEPARENT_LEN + 1);
        let head = call_head(&config, &headers(&[("traceparent", &long)]), "svc", 0)
            .expect("a bad trace context is no bad request");
        assert_eq!(head.traceparent, None);
        head.validate().expect("a valid head");
    }

    #[test]
    fn defaults_and_bad_values() {
        let config = GatewayConfig::default();
        let head = call_head(&config, &HeaderMap::new(), "svc", 0).expect("head");
        assert_eq!(head.timeout_ms, config.http.timeout_ms);
        assert_eq!(head.api_key, None);
        for bad in [
            ("x-switchyard-priority", "high"),
            ("x-switchyard-realtime", "yes please"),
            ("x-switchyard-hint", "no-equals-sign"),
        ] {
            assert!(
                call_head(&config, &headers(&[bad]), "svc", 0).is_err(),
                "{bad:?}"
            );
        }
        assert_eq!(
            crate::tenants::api_key(&headers(&[("authorization", "Basic abc")])),
            None
        );
        assert_eq!(
            crate::tenants::api_key(&headers(&[("authorization", "bearer k")])),
            Some("k".into())
        );
    }
}
