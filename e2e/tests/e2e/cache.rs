//! The gateway's result cache with real agents: hits that no node serves,
//! TTLs, `no_cache` and `max_age`, errors never cached, single flight,
//! purge and stats through the SDK.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::{Call, CallResult, Client, ClientError, ErrorKind};
use gateway::GatewayConfig;
use gateway::config::ServiceConfig;

use crate::common::{ADMIN, Fleet, TOKEN, service};

/// Caches `name` for `ttl_s` with these key hints.
fn cache(config: &mut GatewayConfig, name: &str, ttl_s: u32, key_hints: &[&str]) {
    config.services.insert(
        name.into(),
        ServiceConfig {
            cache_ttl_s: Some(ttl_s),
            cache_key_hints: key_hints.iter().map(|h| (*h).to_string()).collect(),
            ..ServiceConfig::default()
        },
    );
}

/// One node hosting `services_toml`, and a client.
async fn fleet(
    tweak: impl FnOnce(&mut GatewayConfig),
    services_toml: &str,
) -> (Fleet, Arc<Client>) {
    let mut fleet = Fleet::start(tweak).await;
    fleet.spawn_agent("node-a", TOKEN, services_toml);
    fleet.wait_nodes(1).await;
    let client = Arc::new(fleet.client().await);
    (fleet, client)
}

/// Calls the node served successfully so far.
fn node_calls(fleet: &Fleet) -> u64 {
    fleet
        .gateway
        .registry()
        .all()
        .iter()
        .map(|n| n.calls_total())
        .sum()
}

/// `call`'s whole result; panics when it fails.
async fn ok(call: Call<'_>) -> CallResult {
    call.await.expect("call succeeds")
}

fn age_ms(result: &CallResult) -> u64 {
    let cache = result.meta.cache.expect("a cache hit");
    assert!(!cache.coalesced, "a stored entry");
    cache.age_ms
}

/// A `command` service printing a new number each run (the time in ns).
fn fresh_service(name: &str) -> String {
    service(
        name,
        "command",
        r#"command = ["sh", "-c", "cat >/dev/null; date +%s%N"]"#,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_call_is_a_hit_with_an_age_and_no_node_call() {
    let (fleet, client) = fleet(
        |c| cache(c, "echo", 300, &["model"]),
        &service("echo", "echo", "max_concurrent = 4"),
    )
    .await;

    let first = ok(client.call("echo", "hello").hint("model", "a")).await;
    assert_eq!(
        (first.data.as_ref(), first.meta.cache),
        (&b"hello"[..], None)
    );
    assert_eq!(node_calls(&fleet), 1);
    tokio::time::sleep(Duration::from_millis(60)).await;

    // Same payload and key hint; other routing hints do not matter.
    let again = ok(client
        .call("echo", "hello")
        .hint("model", "a")
        .policy("round-robin")
        .hint("max_cost", "1"))
    .await;
    assert_eq!(again.data, first.data);
    assert_eq!(again.meta.node_id, "node-a");
    let age = age_ms(&again);
    assert!((60..5000).contains(&age), "age {age} ms");
    assert_eq!(again.meta.timings.node_ms, 0.0);
    assert_eq!(node_calls(&fleet), 1, "the hit took no node call");

    // Another payload, or another value of a key hint, misses.
    assert!(
        ok(client.call("echo", "other").hint("model", "a"))
            .await
            .meta
            .cache
            .is_none()
    );
    assert!(
        ok(client.call("echo", "hello").hint("model", "b"))
            .await
            .meta
            .cache
            .is_none()
    );
    assert_eq!(node_calls(&fleet), 3);

    // A large payload (hashed off the call's task) and result (sent in
    // chunks from the cache).
    let big: Vec<u8> = (0..300 * 1024).map(|i| (i % 251) as u8).collect();
    let first = ok(client.call("echo", big.clone()).hint("model", "a")).await;
    let again = ok(client.call("echo", big.clone()).hint("model", "a")).await;
    assert_eq!(
        (first.meta.cache.is_none(), again.meta.cache.is_some()),
        (true, true)
    );
    assert_eq!(
        (first.data.as_ref(), again.data.as_ref()),
        (&big[..], &big[..])
    );
    assert_eq!(node_calls(&fleet), 4);

    let stats = client.cache_stats().await.unwrap();
    assert_eq!(stats.max_bytes, 256 * 1024 * 1024);
    let echo = &stats.services[0];
    let counts = (echo.ttl_s, echo.entries, echo.hits, echo.misses);
    assert_eq!((echo.service.as_str(), counts), ("echo", (300, 4, 2, 4)));
    assert!(
        echo.bytes > 300 * 1024 && stats.total_bytes == echo.bytes,
        "{stats:?}"
    );
    assert!((echo.hit_ratio() - 2.0 / 6.0).abs() < 1e-9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_expire_after_the_service_ttl() {
    let (fleet, client) = fleet(|c| cache(c, "echo", 1, &[]), &service("echo", "echo", "")).await;
    assert!(ok(client.call("echo", "x")).await.meta.cache.is_none());
    assert!(ok(client.call("echo", "x")).await.meta.cache.is_some());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        ok(client.call("echo", "x")).await.meta.cache.is_none(),
        "expired"
    );
    assert_eq!(node_calls(&fleet), 2);
    assert!(ok(client.call("echo", "x")).await.meta.cache.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cache_refreshes_the_entry_and_max_age_refuses_older_ones() {
    let (fleet, client) = fleet(|c| cache(c, "now", 300, &[]), &fresh_service("now")).await;
    let first = ok(client.call("now", "x")).await;
    assert!(first.meta.cache.is_none());

    let fresh = ok(client.call("now", "x").no_cache(true)).await;
    assert!(fresh.meta.cache.is_none(), "no_cache skips the read");
    assert_ne!(fresh.data, first.data, "it ran again");
    let hit = ok(client.call("now", "x")).await;
    assert_eq!(hit.data, fresh.data, "and replaced the entry");
    assert_eq!(node_calls(&fleet), 2);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let hit = ok(client.call("now", "x").max_age(Duration::from_secs(5))).await;
    assert!(age_ms(&hit) >= 1100);
    let newer = ok(client.call("now", "x").max_age(Duration::from_secs(1))).await;
    assert!(newer.meta.cache.is_none(), "older than max_age: a miss");
    assert_ne!(newer.data, fresh.data);
    let hit = ok(client.call("now", "x").max_age(Duration::from_secs(1))).await;
    assert_eq!(hit.data, newer.data);
    assert!(age_ms(&hit) < 1000);
    assert_eq!(node_calls(&fleet), 3);
}

/// A `command` service that logs each run to `runs`, sleeps, and fails.
fn failing_service(name: &str, runs: &std::path::Path) -> String {
    service(
        name,
        "command",
        &format!(
            r#"command = ["sh", "-c", "cat >/dev/null; echo run >> {}; sleep 0.5; echo broken >&2; exit 3"]
max_concurrent = 8"#,
            runs.display()
        ),
    )
}

fn runs(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_call_is_never_cached_and_its_followers_share_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs");
    let (_fleet, client) = fleet(
        |c| cache(c, "flaky", 300, &[]),
        &failing_service("flaky", &log),
    )
    .await;

    for n in 1..=2 {
        let err = client
            .call("flaky", "x")
            .await
            .expect_err("the service fails");
        assert_eq!(err.kind(), Some(ErrorKind::ServiceFailed), "{err}");
        assert_eq!(runs(&log), n, "the error was not cached");
    }

    // 8 identical calls at once: one run, and each gets its error.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.call("flaky", "x").await })
        })
        .collect();
    for task in tasks {
        let err = task.await.unwrap().expect_err("shared failure");
        assert_eq!(err.kind(), Some(ErrorKind::ServiceFailed), "{err}");
        assert!(err.to_string().contains("broken"), "{err}");
    }
    assert_eq!(runs(&log), 3, "one run for the 8 calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_identical_calls_make_one_node_call() {
    let (fleet, client) = fleet(
        |c| cache(c, "sleep", 300, &[]),
        &service("sleep", "sleep", "max_concurrent = 8"),
    )
    .await;
    let start = Instant::now();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.call("sleep", "300").await })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap().expect("call succeeds"));
    }
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(node_calls(&fleet), 1, "exactly one node call");
    let data: Vec<Bytes> = results.iter().map(|r| r.data.clone()).collect();
    assert!(data.iter().all(|d| *d == data[0]), "identical results");
    let led = results.iter().filter(|r| r.meta.cache.is_none()).count();
    let followed = results
        .iter()
        .filter(|r| r.meta.cache.is_some_and(|c| c.coalesced))
        .count();
    // Calls arrive within the 300 ms of the first one's run, so they wait
    // for it; one that a slow machine delays past it finds the stored entry.
    assert_eq!(led, 1);
    assert!(followed >= 1);
    let stats = client.cache_stats().await.unwrap();
    let sleep = &stats.services[0];
    assert_eq!((sleep.misses, sleep.coalesced + sleep.hits), (1, 9));

    // A leader that times out does not fail the calls that wait for it: the
    // next one runs the call itself.
    let short = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .call("sleep", "400")
                .timeout(Duration::from_millis(150))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let patient = ok(client.call("sleep", "400")).await;
    let err: ClientError = short.await.unwrap().expect_err("the leader times out");
    assert_eq!(err.kind(), Some(ErrorKind::Timeout), "{err}");
    assert!(patient.meta.cache.is_none(), "it led the second attempt");
    assert_eq!(node_calls(&fleet), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_one_service_or_all_and_stats() {
    let services = format!(
        "{}{}",
        service("echo", "echo", ""),
        service("sum-up", "sum-up", "")
    );
    let (fleet, client) = fleet(
        |c| {
            cache(c, "echo", 300, &[]);
            cache(c, "sum-up", 60, &[]);
        },
        &services,
    )
    .await;
    for _ in 0..2 {
        ok(client.call("echo", "x")).await;
        ok(client.call("sum-up", "1000")).await;
    }
    let entries = |stats: &client::CacheStatsView| -> Vec<(String, u64, u64, u64)> {
        stats
            .services
            .iter()
            .map(|s| (s.service.clone(), s.entries, s.hits, s.misses))
            .collect()
    };
    let stats = client.cache_stats().await.unwrap();
    assert_eq!(
        entries(&stats),
        [("echo".into(), 1, 1, 1), ("sum-up".into(), 1, 1, 1)]
    );
    assert_eq!(stats.entries, 2);
    assert_eq!(fleet.gateway.cache_stats(), stats);

    let err = client
        .purge_cache("wrong", None)
        .await
        .expect_err("needs the admin token");
    assert_eq!(err.kind(), Some(ErrorKind::Unauthorized), "{err}");

    let ack = client.purge_cache(ADMIN, Some("echo")).await.unwrap();
    assert!(ack.contains("purged 1 cached results"), "{ack}");
    let stats = client.cache_stats().await.unwrap();
    assert_eq!(stats.services[0].entries, 0);
    assert_eq!(stats.services[1].entries, 1);
    assert!(ok(client.call("echo", "x")).await.meta.cache.is_none());
    assert!(ok(client.call("sum-up", "1000")).await.meta.cache.is_some());

    client.purge_cache(ADMIN, None).await.unwrap();
    let stats = client.cache_stats().await.unwrap();
    assert_eq!((stats.entries, stats.total_bytes), (0, 0));
    assert!(ok(client.call("sum-up", "1000")).await.meta.cache.is_none());
    assert_eq!(node_calls(&fleet), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_cache_ttl_is_never_cached() {
    let (fleet, client) = fleet(
        |c| cache(c, "other", 300, &[]),
        &service("echo", "echo", ""),
    )
    .await;
    for _ in 0..3 {
        let r = ok(client.call("echo", "same")).await;
        assert!(r.meta.cache.is_none());
    }
    assert_eq!(node_calls(&fleet), 3);
    let stats = client.cache_stats().await.unwrap();
    assert_eq!(stats.services.len(), 1, "only the configured service");
    assert_eq!(stats.entries, 0);
}
