//! Unit tests of tenants: configuration, keys, limits, with the clock passed
//! in.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use super::*;
use crate::GatewayConfig;
use crate::config::check_anonymous;

const KEY_A: &str = "sk-a-0123456789";
const KEY_B: &str = "sk-b-9876543210";

fn tenant(name: &str, key: &str) -> TenantConfig {
    TenantConfig {
        api_keys: vec![key.into()],
        ..TenantConfig::new(name)
    }
}

fn one(config: TenantConfig) -> Arc<Tenant> {
    let key = config.api_keys[0].clone();
    let tenants = Tenants::new(&[config]).expect("valid");
    tenants.authenticate(Some(&key)).expect("its key")
}

fn invalid(toml: &str) -> String {
    match GatewayConfig::from_toml_str(toml) {
        Err(ConfigError::Invalid(message)) => message,
        other => panic!("{toml}: expected invalid, got {other:?}"),
    }
}

#[test]
fn tenants_parse_from_toml_with_defaults() {
    let config = GatewayConfig::from_toml_str(
        r#"
        allow_anonymous = true
        [[tenants]]
        name = "team-a"
        api_keys = ["sk-a"]
        calls_per_s = 2.5
        max_in_flight = 4
        max_priority = 3
        services = ["llama-*", "echo"]
        [[tenants]]
        name = "team-b"
        api_keys = ["sk-b"]
        "#,
    )
    .expect("parse");
    assert!(config.allow_anonymous);
    assert_eq!(config.tenants.len(), 2);
    let a = &config.tenants[0];
    assert_eq!(a.calls_per_s, Some(2.5));
    assert_eq!(a.effective_burst(), Some(3), "ceil(calls_per_s)");
    assert_eq!(a.max_in_flight, Some(4));
    assert_eq!(a.services, ["llama-*", "echo"]);
    let b = &config.tenants[1];
    assert_eq!(b, &tenant("team-b", "sk-b"));
    assert_eq!(b.services, ["*"], "every service by default");
    assert_eq!(b.effective_burst(), None, "no rate, no bucket");
    let defaults = GatewayConfig::default();
    assert!(defaults.tenants.is_empty() && !defaults.allow_anonymous);
    assert!(matches!(
        GatewayConfig::from_toml_str("[[tenants]]\nname = \"a\"\napi_keys = [\"k\"]\nkeys = []"),
        Err(ConfigError::Parse(_))
    ));
}

#[test]
fn default_burst_is_at_least_one() {
    let with = |rate: f64, burst: Option<u32>| TenantConfig {
        calls_per_s: Some(rate),
        burst,
        ..TenantConfig::new("t")
    };
    assert_eq!(with(0.2, None).effective_burst(), Some(1));
    assert_eq!(with(10.0, None).effective_burst(), Some(10));
    assert_eq!(with(10.0, Some(25)).effective_burst(), Some(25));
}

#[test]
fn bad_tenants_are_refused_naming_the_tenant() {
    let base = "[[tenants]]\nname = \"t\"\napi_keys = [\"k\"]\n";
    for (extra, expected) in [
        ("calls_per_s = 0.0", "calls_per_s must be finite and > 0"),
        ("calls_per_s = -1.0", "calls_per_s must be finite and > 0"),
        ("calls_per_s = inf", "calls_per_s must be finite and > 0"),
        ("calls_per_s = nan", "calls_per_s must be finite and > 0"),
        ("calls_per_s = 1.0\nburst = 0", "burst must be > 0"),
        ("burst = 3", "burst needs calls_per_s"),
        ("max_in_flight = 0", "max_in_flight must be > 0"),
        ("services = []", "services must not be empty"),
        ("services = [\"llama-[\"]", "bad pattern \"llama-[\""),
    ] {
        let message = invalid(&format!("{base}{extra}"));
        assert!(message.starts_with("tenant \"t\": "), "{message}");
        assert!(message.contains(expected), "{extra}: {message}");
    }
    assert!(invalid("[[tenants]]\nname = \"\"\napi_keys = [\"k\"]").contains("non-empty name"));
    assert!(invalid("[[tenants]]\nname = \"anonymous\"\napi_keys = [\"k\"]").contains("reserved"));
    assert!(invalid("[[tenants]]\nname = \"t\"").contains("at least one key"));
    assert!(invalid("[[tenants]]\nname = \"t\"\napi_keys = [\"\"]").contains("empty strings"));
    assert!(
        invalid(&format!(
            "{base}[[tenants]]\nname = \"t\"\napi_keys = [\"j\"]"
        ))
        .contains("used by two")
    );
    let shared = invalid(&format!(
        "{base}[[tenants]]\nname = \"u\"\napi_keys = [\"k\"]"
    ));
    assert_eq!(shared, "tenant \"u\": shares an api key with tenant \"t\"");
}

#[test]
fn debug_output_never_shows_keys() {
    let config = GatewayConfig {
        tenants: vec![tenant("team-a", KEY_A), tenant("team-b", KEY_B)],
        ..GatewayConfig::default()
    };
    let tenants = Tenants::new(&config.tenants).expect("valid");
    let a = tenants.authenticate(Some(KEY_A)).expect("known");
    for text in [
        format!("{config:?}"),
        format!("{tenants:?}"),
        format!("{a:?}"),
        format!("{:?}", a.admit("svc", 0, Instant::now())),
    ] {
        assert!(!text.contains("sk-"), "{text}");
    }
    assert!(format!("{:?}", config.tenants[0]).contains("<1 keys>"));
    assert!(format!("{tenants:?}").contains("team-b"));
}

#[test]
fn without_tenants_everyone_is_anonymous() {
    let tenants = Tenants::new(&[]).expect("valid");
    assert!(tenants.is_empty());
    for key in [None, Some(""), Some("anything")] {
        let t = tenants.authenticate(key).expect("anonymous");
        assert_eq!(&**t.name(), ANONYMOUS);
        let admitted = t
            .admit("any-service", i32::MAX, Instant::now())
            .expect("no limits");
        assert_eq!(admitted.priority, i32::MAX);
    }
}

#[test]
fn keys_find_their_tenant_and_anything_else_is_unauthorized() {
    let tenants = Tenants::new(&[
        TenantConfig {
            api_keys: vec![KEY_A.into(), "sk-a-second".into()],
            ..TenantConfig::new("team-a")
        },
        tenant("team-b", KEY_B),
    ])
    .expect("valid");
    assert_eq!(tenants.iter().count(), 2);
    let name = |key| tenants.authenticate(key).map(|t| t.name().to_string());
    assert_eq!(name(Some(KEY_A)).as_deref(), Ok("team-a"));
    assert_eq!(name(Some("sk-a-second")).as_deref(), Ok("team-a"));
    assert_eq!(name(Some(KEY_B)).as_deref(), Ok("team-b"));
    for key in [
        None,
        Some(""),
        Some("sk-a-012345678"),
        Some("SK-A-0123456789"),
    ] {
        assert_eq!(name(key), Err(TenantError::Unauthorized), "{key:?}");
    }
    let a1 = tenants.authenticate(Some(KEY_A)).expect("known");
    let a2 = tenants.authenticate(Some("sk-a-second")).expect("known");
    assert!(Arc::ptr_eq(&a1, &a2), "one tenant, one set of limits");
}

#[test]
fn key_files_are_read_skipping_blank_lines_and_comments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a.keys");
    std::fs::write(
        &file,
        "# team a\n\n  sk-file-1  \nsk-file-2\n   # old: sk-gone\n",
    )
    .expect("write");
    let tenants = Tenants::new(&[TenantConfig {
        api_key_files: vec![file.clone()],
        ..TenantConfig::new("team-a")
    }])
    .expect("valid");
    assert!(tenants.authenticate(Some("sk-file-1")).is_ok());
    assert!(tenants.authenticate(Some("sk-file-2")).is_ok());
    for key in ["sk-gone", "# team a", "", "  sk-file-1  "] {
        assert!(tenants.authenticate(Some(key)).is_err(), "{key:?}");
    }

    let empty = dir.path().join("empty.keys");
    std::fs::write(&empty, "# nothing yet\n\n").expect("write");
    let err = Tenants::new(&[TenantConfig {
        api_key_files: vec![empty],
        ..TenantConfig::new("team-c")
    }])
    .expect_err("no key");
    assert_eq!(
        err.to_string(),
        "invalid configuration: tenant \"team-c\": no api key (its api_key_files hold none)"
    );

    let shared = Tenants::new(&[
        tenant("team-b", "sk-file-2"),
        TenantConfig {
            api_key_files: vec![file],
            ..TenantConfig::new("team-a")
        },
    ])
    .expect_err("shared key");
    assert!(!shared.to_string().contains("sk-"), "{shared}");
    assert!(shared.to_string().contains("team-b"), "{shared}");

    let missing = Tenants::new(&[TenantConfig {
        api_key_files: vec![dir.path().join("missing.keys")],
        ..TenantConfig::new("team-d")
    }]);
    assert!(matches!(missing, Err(ConfigError::Read { .. })));
}

#[test]
fn services_outside_the_patterns_are_forbidden() {
    let t = one(TenantConfig {
        services: vec!["llama-*".into(), "echo".into()],
        ..tenant("team-a", KEY_A)
    });
    let now = Instant::now();
    for service in ["llama-7b", "llama-", "echo"] {
        assert!(t.admit(service, 0, now).is_ok(), "{service}");
    }
    for service in ["llama", "echo2", "mistral", ""] {
        let err = t.admit(service, 0, now).expect_err(service);
        assert_eq!(
            err,
            TenantError::Forbidden {
                tenant: "team-a".into(),
                service: service.into()
            }
        );
        assert_eq!(err.kind(), ErrorKind::Forbidden);
    }
    assert_eq!(t.in_flight(), 0, "refused calls hold no place");
}

#[test]
fn priorities_are_lowered_to_max_priority() {
    let t = one(TenantConfig {
        max_priority: Some(2),
        ..tenant("team-a", KEY_A)
    });
    let now = Instant::now();
    let priority = |p| t.admit("svc", p, now).map(|a| a.priority);
    assert_eq!(priority(10), Ok(2));
    assert_eq!(priority(2), Ok(2));
    assert_eq!(priority(-5), Ok(-5));
}

#[test]
fn in_flight_is_capped_and_permits_give_places_back() {
    let t = one(TenantConfig {
        max_in_flight: Some(2),
        ..tenant("team-a", KEY_A)
    });
    let now = Instant::now();
    let first = t.admit("svc", 0, now).expect("1st");
    let second = t.admit("svc", 0, now).expect("2nd");
    assert_eq!(t.in_flight(), 2);
    let err = t.admit("svc", 0, now).expect_err("3rd");
    assert_eq!(err, TenantError::TooManyInFlight { max: 2 });
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert_eq!(err.retry_after(), None);
    drop(first);
    assert_eq!(t.in_flight(), 1);
    let third = t.admit("svc", 0, now).expect("a place freed");
    drop((second, third));
    assert_eq!(t.in_flight(), 0);
}

#[test]
fn the_bucket_lets_a_burst_through_then_refills_at_the_rate() {
    // 2 calls/s, burst 3: a token every 500 ms.
    let t = one(TenantConfig {
        calls_per_s: Some(2.0),
        burst: Some(3),
        ..tenant("team-a", KEY_A)
    });
    let t0 = Instant::now();
    let ms = |n| t0 + Duration::from_millis(n);
    for _ in 0..3 {
        drop(t.admit("svc", 0, t0).expect("burst"));
    }
    let err = t.admit("svc", 0, t0).expect_err("bucket empty");
    assert_eq!(err.retry_after(), Some(Duration::from_millis(500)));
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert_eq!(err.to_string(), "rate limited: retry in 500 ms");
    assert_eq!(
        t.admit("svc", 0, ms(200))
            .map(drop)
            .expect_err("not yet")
            .retry_after(),
        Some(Duration::from_millis(300))
    );
    drop(t.admit("svc", 0, ms(500)).expect("one token back"));
    assert!(t.admit("svc", 0, ms(500)).is_err());
    // Idle for long: the bucket is full again, but never holds more than 3.
    let later = ms(60_000);
    for _ in 0..3 {
        drop(t.admit("svc", 0, later).expect("full again"));
    }
    assert!(t.admit("svc", 0, later).is_err(), "capped at burst");
}

#[test]
fn fractional_rates_and_the_default_burst() {
    // 0.5 calls/s, default burst 1: one call every 2 s.
    let t = one(TenantConfig {
        calls_per_s: Some(0.5),
        ..tenant("team-a", KEY_A)
    });
    let t0 = Instant::now();
    drop(t.admit("svc", 0, t0).expect("first"));
    let err = t
        .admit("svc", 0, t0 + Duration::from_secs(1))
        .expect_err("too soon");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
    drop(
        t.admit("svc", 0, t0 + Duration::from_secs(2))
            .expect("2 s later"),
    );
}

#[test]
fn refused_calls_take_no_token_and_no_place() {
    let t = one(TenantConfig {
        calls_per_s: Some(1.0),
        burst: Some(1),
        max_in_flight: Some(1),
        services: vec!["svc".into()],
        ..tenant("team-a", KEY_A)
    });
    let t0 = Instant::now();
    assert!(matches!(
        t.admit("other", 0, t0),
        Err(TenantError::Forbidden { .. })
    ));
    let held = t.admit("svc", 0, t0).expect("the token");
    // In flight is checked before the bucket: this refusal takes no token.
    let later = t0 + Duration::from_secs(5);
    assert_eq!(
        t.admit("svc", 0, later).map(drop),
        Err(TenantError::TooManyInFlight { max: 1 })
    );
    drop(held);
    drop(
        t.admit("svc", 0, later)
            .expect("the bucket refilled meanwhile"),
    );
    // A rate refusal gives its in-flight place back.
    assert!(matches!(
        t.admit("svc", 0, later),
        Err(TenantError::RateLimited { .. })
    ));
    assert_eq!(t.in_flight(), 0);
}

#[test]
fn extreme_rates_do_not_overflow() {
    let tiny = one(TenantConfig {
        calls_per_s: Some(f64::MIN_POSITIVE),
        burst: Some(u32::MAX),
        ..tenant("team-a", KEY_A)
    });
    let now = Instant::now();
    drop(tiny.admit("svc", 0, now).expect("a full bucket"));
    for _ in 0..3 {
        // Spans are capped at 100 years; nothing overflows.
        let _ = tiny.admit("svc", 0, now);
    }
    let huge = one(TenantConfig {
        calls_per_s: Some(f64::MAX),
        ..tenant("team-b", KEY_B)
    });
    for _ in 0..1000 {
        drop(huge.admit("svc", 0, now).expect("no limit to speak of"));
    }
}

#[test]
fn errors_map_to_protocol_kinds() {
    assert_eq!(TenantError::Unauthorized.kind(), ErrorKind::Unauthorized);
    assert_eq!(TenantError::Unauthorized.retry_after(), None);
    let limited = TenantError::RateLimited {
        retry_after: Duration::from_millis(1500),
    };
    let call: CallError = limited.clone().into();
    assert_eq!(call.kind, ErrorKind::RateLimited);
    assert_eq!(call.message, "rate limited: retry in 1500 ms");
    assert_eq!(
        CallError::from(TenantError::Unauthorized).message,
        "missing or unknown api key"
    );
}

#[test]
fn anonymous_access_is_refused_on_public_addresses() {
    let addr = |s: &str| s.parse::<SocketAddr>().expect("address");
    let mut config = GatewayConfig::default();
    for ok in [
        "127.0.0.1:4433",
        "127.1.2.3:1",
        "[::1]:4433",
        "[::ffff:127.0.0.1]:80",
    ] {
        assert!(check_anonymous(&config, &[addr(ok)]).is_ok(), "{ok}");
    }
    let err = check_anonymous(&config, &[addr("127.0.0.1:8080"), addr("0.0.0.0:4433")])
        .expect_err("public");
    assert!(matches!(err, ConfigError::Refused(_)));
    assert_eq!(
        err.to_string(),
        "refusing to start: no [[tenants]] are configured and 0.0.0.0:4433 is not a loopback \
         address; add [[tenants]] with api keys, or set allow_anonymous = true"
    );
    for public in ["[::]:4433", "10.0.0.5:4433", "[::ffff:10.0.0.5]:1"] {
        assert!(
            check_anonymous(&config, &[addr(public)]).is_err(),
            "{public}"
        );
    }
    config.allow_anonymous = true;
    assert!(check_anonymous(&config, &[addr("0.0.0.0:4433")]).is_ok());
    config.allow_anonymous = false;
    config.tenants = vec![tenant("team-a", KEY_A)];
    assert!(check_anonymous(&config, &[addr("0.0.0.0:4433")]).is_ok());
}
