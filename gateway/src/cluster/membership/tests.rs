//! Member values read from etcd and the retry backoff.

use super::*;

const DIR: &str = "/x/gateways/";

fn value(name: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "name": name, "quic": "127.0.0.1:1", "http": "", "admin": "127.0.0.1:2",
        "started_unix_ms": 5, "agents": 1, "calls_in_flight": 2,
    }))
    .expect("json")
}

#[test]
fn only_a_value_that_describes_its_key_is_a_member() {
    let info = parse_member(DIR, b"/x/gateways/gw-a", &value("gw-a")).expect("a member");
    assert_eq!(info.name, "gw-a");
    assert_eq!(info.admin, "127.0.0.1:2");
    assert_eq!(
        info.load,
        LoadSummary {
            agents: 1,
            calls_in_flight: 2
        }
    );
    assert!(
        parse_member(DIR, b"/x/gateways/gw-b", &value("gw-a")).is_none(),
        "another name"
    );
    assert!(
        parse_member(DIR, b"/y/gateways/gw-a", &value("gw-a")).is_none(),
        "another dir"
    );
    assert!(
        parse_member(DIR, b"/x/gateways/gw-a", b"{").is_none(),
        "not JSON"
    );
    assert!(
        parse_member(DIR, b"/x/gateways/", &value("")).is_none(),
        "an empty name"
    );
    assert!(
        parse_member(DIR, b"\xff", &value("gw-a")).is_none(),
        "not UTF-8"
    );
    let long = vec![b' '; MAX_VALUE_LEN + 1];
    assert!(
        parse_member(DIR, b"/x/gateways/gw-a", &long).is_none(),
        "too long"
    );
    let mut far = serde_json::from_slice::<serde_json::Value>(&value("gw-a")).expect("v");
    far["quic"] = "a".repeat(protocol::MAX_ADDR_LEN + 1).into();
    let far = serde_json::to_vec(&far).expect("json");
    assert!(
        parse_member(DIR, b"/x/gateways/gw-a", &far).is_none(),
        "a long address"
    );
}

#[test]
fn backoffs_are_jittered_between_half_and_all() {
    for _ in 0..100 {
        let d = jittered(MAX_BACKOFF);
        assert!(d >= MAX_BACKOFF / 2 && d <= MAX_BACKOFF, "{d:?}");
    }
}
