#![allow(clippy::unwrap_used, clippy::expect_used)]

use protocol::CallHead;

use super::*;

fn request(service: &str) -> LeaseRequest {
    LeaseRequest {
        head: CallHead::new(service, 0, 0),
        max_calls: 0,
        idle_ms: 0,
        ttl_ms: 0,
    }
}

#[test]
fn terms_default_and_cut() {
    let config = LeasesConfig::default();
    let t = terms(&config, &request("echo"), 30_000, 60_000).expect("valid");
    assert_eq!(
        t,
        Terms {
            max_calls: 1,
            ttl_ms: 30_000,
            idle_ms: 0,
            timeout_ms: 30_000
        }
    );
    let mut asked = request("echo");
    asked.max_calls = 10;
    asked.ttl_ms = u32::MAX;
    asked.idle_ms = 500;
    asked.head.timeout_ms = u32::MAX;
    let t = terms(&config, &asked, 30_000, 60_000).expect("valid");
    assert_eq!((t.max_calls, t.ttl_ms, t.idle_ms), (10, 600_000, 500));
    assert_eq!(t.timeout_ms, 60_000, "the wait is cut to max_timeout_ms");
}

#[test]
fn bad_requests_are_refused_with_a_reason() {
    let config = LeasesConfig::default();
    let refused = |r: &LeaseRequest, c: &LeasesConfig| {
        let e = terms(c, r, 30_000, 60_000).expect_err("refused");
        assert_eq!(e.kind, ErrorKind::BadRequest, "{}", e.message);
        e.message
    };
    let mut many = request("echo");
    many.max_calls = 1001;
    assert!(refused(&many, &config).contains("max_calls"));
    let mut payload = request("echo");
    payload.head.payload_len = 5;
    assert!(refused(&payload, &config).contains("payload"));
    let mut token = request("echo");
    token.head.lease = Some("a.b".into());
    assert!(refused(&token, &config).contains("token"));
    assert!(refused(&request(""), &config).contains("service"));
    let off = LeasesConfig {
        enabled: false,
        ..LeasesConfig::default()
    };
    assert!(refused(&request("echo"), &off).contains("disabled"));
}

#[test]
fn release_errors_map_to_call_errors() {
    let token = ReleaseError::Token("lease token signature does not match".into());
    assert_eq!(token.to_call_error().kind, ErrorKind::Unauthorized);
    let unknown = ReleaseError::Unknown("ab12".into());
    let e = unknown.to_call_error();
    assert_eq!(e.kind, ErrorKind::BadRequest);
    assert_eq!(e.message, "no lease ab12 on this gateway");
}
