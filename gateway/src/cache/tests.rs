//! Unit tests of the result cache, with the clock passed in.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::config::ServiceConfig;
use protocol::{CallError, ErrorKind};

fn config(max_bytes: u64, services: &[(&str, u32, &[&str])]) -> GatewayConfig {
    let mut config = GatewayConfig::default();
    config.cache.max_bytes = max_bytes;
    for (name, ttl_s, hints) in services {
        config.services.insert(
            (*name).to_string(),
            ServiceConfig {
                cache_ttl_s: Some(*ttl_s),
                cache_key_hints: hints.iter().map(|h| (*h).to_string()).collect(),
                ..ServiceConfig::default()
            },
        );
    }
    config
}

fn cache(max_bytes: u64) -> Arc<ResultCache> {
    Arc::new(ResultCache::new(&config(
        max_bytes,
        &[("llm", 300, &["model", "temperature"]), ("echo", 10, &[])],
    )))
}

fn call(service: &str, hints: &[(&str, &str)]) -> CallHead {
    CallHead {
        hints: hints
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect(),
        ..CallHead::new(service, 0, 1000)
    }
}

fn key(cache: &ResultCache, service: &str, payload: &[u8]) -> Key {
    cache
        .key(&call(service, &[]), payload)
        .expect("cached service")
}

fn lead(cache: &Arc<ResultCache>, key: &Key, now: Instant) -> Leader {
    match cache.lookup(key, false, None, now) {
        Lookup::Lead(leader) => leader,
        Lookup::Hit(_) => panic!("expected a miss, got a hit"),
        Lookup::Follow(_) => panic!("expected a miss, got a flight to follow"),
    }
}

fn store(cache: &Arc<ResultCache>, key: &Key, data: &'static [u8], now: Instant) -> Arc<Entry> {
    lead(cache, key, now).complete(
        Bytes::from_static(data),
        "n1".into(),
        "rr".into(),
        None,
        None,
        now,
    )
}

fn is_hit(lookup: &Lookup) -> bool {
    matches!(lookup, Lookup::Hit(_))
}

fn service_stats(cache: &ResultCache, service: &str) -> ServiceCacheStats {
    cache
        .stats()
        .services
        .into_iter()
        .find(|s| s.service == service)
        .expect("listed")
}

#[test]
fn the_key_holds_the_service_payload_and_only_the_configured_hints() {
    let cache = cache(1 << 20);
    let llm = |hints: &[(&str, &str)], payload: &[u8]| cache.key(&call("llm", hints), payload);
    let base = llm(&[("model", "a"), ("temperature", "0")], b"hi").expect("cached");
    // Routing hints are not part of the key; their order neither.
    assert_eq!(
        llm(
            &[
                ("policy", "latency"),
                ("temperature", "0"),
                ("max_cost", "1"),
                ("model", "a")
            ],
            b"hi"
        ),
        Some(base.clone())
    );
    // A key hint's value, or its absence, is.
    assert_ne!(
        llm(&[("model", "b"), ("temperature", "0")], b"hi"),
        Some(base.clone())
    );
    assert_ne!(llm(&[("model", "a")], b"hi"), Some(base.clone()));
    assert_ne!(
        llm(&[("model", "a"), ("temperature", "")], b"hi"),
        llm(&[("model", "a")], b"hi")
    );
    // So is the payload, and the service.
    assert_ne!(
        llm(&[("model", "a"), ("temperature", "0")], b"hj"),
        Some(base)
    );
    assert_ne!(key(&cache, "echo", b"hi"), key(&cache, "llm", b"hi"));
    // For a service without cache_ttl_s no key: it is never cached.
    assert_eq!(cache.key(&call("other", &[]), b"hi"), None);
    // Hints of a service without key hints never matter.
    assert_eq!(
        cache.key(&call("echo", &[("model", "x")]), b"hi"),
        Some(key(&cache, "echo", b"hi"))
    );
}

#[test]
fn a_stored_result_is_a_hit_until_its_ttl_and_within_max_age() {
    let cache = cache(1 << 20);
    let t0 = Instant::now();
    let k = key(&cache, "echo", b"x");
    let entry = store(&cache, &k, b"result", t0);
    assert_eq!(entry.data, Bytes::from_static(b"result"));

    let at = |s: u64, max_age: Option<u64>| {
        cache.lookup(
            &k,
            false,
            max_age.map(Duration::from_secs),
            t0 + Duration::from_secs(s),
        )
    };
    match at(4, None) {
        Lookup::Hit(e) => {
            assert_eq!(e.data, Bytes::from_static(b"result"));
            assert_eq!(e.age(t0 + Duration::from_secs(4)), Duration::from_secs(4));
            assert_eq!((e.node_id.as_str(), e.policy.as_str()), ("n1", "rr"));
        }
        _ => panic!("expected a hit"),
    }
    assert!(is_hit(&at(4, Some(4))), "as old as allowed");
    assert!(!is_hit(&at(4, Some(3))), "older than max_age");
    assert!(!is_hit(&at(10, None)), "the echo TTL is 10 s");
    let stats = service_stats(&cache, "echo");
    assert_eq!((stats.hits, stats.misses), (2, 3));
}

#[test]
fn no_cache_skips_the_read_and_refreshes_the_entry() {
    let cache = cache(1 << 20);
    let t0 = Instant::now();
    let k = key(&cache, "echo", b"x");
    store(&cache, &k, b"old", t0);
    let t1 = t0 + Duration::from_secs(1);
    let Lookup::Lead(leader) = cache.lookup(&k, true, None, t1) else {
        panic!("no_cache never hits");
    };
    leader.complete(
        Bytes::from_static(b"new"),
        "n2".into(),
        "rr".into(),
        None,
        None,
        t1,
    );
    match cache.lookup(&k, false, None, t1) {
        Lookup::Hit(e) => assert_eq!((e.data.as_ref(), e.age(t1)), (&b"new"[..], Duration::ZERO)),
        _ => panic!("expected the fresh entry"),
    }
    let stats = service_stats(&cache, "echo");
    assert_eq!((stats.entries, stats.misses, stats.hits), (1, 2, 1));
}

#[tokio::test]
async fn identical_calls_follow_the_one_in_flight() {
    let cache = cache(1 << 20);
    let now = Instant::now();
    let k = key(&cache, "echo", b"x");
    let leader = lead(&cache, &k, now);
    let followers: Vec<_> = (0..3)
        .map(|_| match cache.lookup(&k, false, None, now) {
            Lookup::Follow(f) => tokio::spawn(f.wait()),
            _ => panic!("expected to follow"),
        })
        .collect();
    // A no_cache call does not follow, nor take the flight over.
    let Lookup::Lead(solo) = cache.lookup(&k, true, None, now) else {
        panic!("no_cache runs itself");
    };
    assert!(solo.flight.is_none());
    drop(solo);
    assert!(matches!(
        cache.lookup(&k, false, None, now),
        Lookup::Follow(_)
    ));

    leader.complete(
        Bytes::from_static(b"r"),
        "n1".into(),
        "rr".into(),
        None,
        None,
        now,
    );
    for follower in followers {
        match follower.await.unwrap() {
            Followed::Done(e) => assert_eq!(e.data, Bytes::from_static(b"r")),
            _ => panic!("followers get the leader's result"),
        }
    }
    assert!(is_hit(&cache.lookup(&k, false, None, now)));
    let stats = service_stats(&cache, "echo");
    assert_eq!((stats.misses, stats.coalesced, stats.hits), (2, 3, 1));
}

#[tokio::test]
async fn followers_share_a_service_failure_and_retry_after_other_failures() {
    let cache = cache(1 << 20);
    let now = Instant::now();
    let k = key(&cache, "echo", b"x");
    let follow = |cache: &Arc<ResultCache>| match cache.lookup(&k, false, None, now) {
        Lookup::Follow(f) => tokio::spawn(f.wait()),
        _ => panic!("expected to follow"),
    };
    let failure = |kind| CallError::new(kind, "boom");

    let leader = lead(&cache, &k, now);
    let follower = follow(&cache);
    leader.fail(&failure(ErrorKind::ServiceFailed));
    match follower.await.unwrap() {
        Followed::Failed(e) => assert_eq!(e, failure(ErrorKind::ServiceFailed)),
        _ => panic!("the same error"),
    }
    // Errors are never stored: the next call runs again.
    let leader = lead(&cache, &k, now);

    let follower = follow(&cache);
    leader.fail(&failure(ErrorKind::Timeout));
    assert!(matches!(follower.await.unwrap(), Followed::Retry));

    // A leader that goes away (its client left, its task ended) too.
    let leader = lead(&cache, &k, now);
    let follower = follow(&cache);
    drop(leader);
    assert!(matches!(follower.await.unwrap(), Followed::Retry));
    drop(lead(&cache, &k, now));
    assert_eq!(service_stats(&cache, "echo").entries, 0);
}

#[test]
fn the_byte_bound_evicts_and_the_books_follow() {
    let max = 8 * 1024;
    let cache = cache(max);
    let now = Instant::now();
    let payload = vec![7u8; 1000];
    for i in 0..40u32 {
        let k = key(&cache, "llm", &i.to_le_bytes());
        let data = Bytes::from(payload.clone());
        lead(&cache, &k, now).complete(data, "n1".into(), "rr".into(), None, None, now);
        let _ = cache.lookup(&k, false, None, now);
    }
    let stats = cache.stats();
    let llm = &stats.services[1];
    assert_eq!(llm.service, "llm");
    assert!(stats.total_bytes <= max, "{stats:?}");
    assert!(llm.evictions > 0, "{stats:?}");
    assert_eq!(llm.entries + llm.evictions, 40, "{stats:?}");
    assert_eq!(stats.total_bytes, cache.store.weighted_size(), "{stats:?}");
    assert_eq!(stats.entries, cache.store.entry_count(), "{stats:?}");
    assert_eq!(llm.bytes, llm.entries * (1000 + 2 + 2 + ENTRY_OVERHEAD));

    // A result heavier than the whole cache is handed out but not stored.
    let k = key(&cache, "echo", b"big");
    let big = Bytes::from(vec![0u8; 9000]);
    let entry = lead(&cache, &k, now).complete(big, "n1".into(), "rr".into(), None, None, now);
    assert_eq!(entry.data.len(), 9000);
    assert!(!is_hit(&cache.lookup(&k, false, None, now)));
}

#[test]
fn purge_drops_one_service_or_all() {
    let cache = cache(1 << 20);
    let now = Instant::now();
    for payload in [&b"a"[..], b"b"] {
        store(&cache, &key(&cache, "echo", payload), b"r", now);
        store(&cache, &key(&cache, "llm", payload), b"r", now);
    }
    let weight = 1 + 2 + 2 + ENTRY_OVERHEAD;
    assert_eq!(cache.purge(Some("echo")), (2, 2 * weight));
    assert_eq!(cache.purge(Some("echo")), (0, 0));
    let stats = cache.stats();
    assert_eq!((stats.entries, stats.total_bytes), (2, 2 * weight));
    assert!(is_hit(&cache.lookup(
        &key(&cache, "llm", b"a"),
        false,
        None,
        now
    )));
    assert!(!is_hit(&cache.lookup(
        &key(&cache, "echo", b"a"),
        false,
        None,
        now
    )));
    assert_eq!(cache.purge(None), (2, 2 * weight));
    let stats = cache.stats();
    assert_eq!((stats.entries, stats.total_bytes), (0, 0));
    assert_eq!(stats.services.len(), 2, "services stay listed");
}
