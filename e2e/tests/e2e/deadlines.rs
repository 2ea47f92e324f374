//! Deadlines hold end to end: 1000 concurrent calls from one shared
//! `Client`, each with a 5 s timeout, against a fleet with 4 slots, all end
//! (with a result or a typed error) within 5 s + 500 ms as the caller
//! measures them: the SDK's wait for a stream, the gateway's queue and the
//! node's run all count against the one timeout. And a pool at its stream
//! cap opens another connection before a call waits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use client::{Client, ClientConfig, ClientError, ErrorKind};
use tokio::task::JoinSet;

use crate::common::{Fleet, TOKEN, eventually, service};

/// The calls' timeout.
const TIMEOUT: Duration = Duration::from_secs(5);
/// How late a call may end, client-measured: the calls that time out
/// together are cancelled one after another (about 120 ms for 1000 on a
/// quiet 2-core machine, up to 300 ms beside the other tests); a wait
/// outside the timeout would overshoot by seconds.
const OVERSHOOT: Duration = Duration::from_millis(500);
/// Calls, all at once, from one client.
const CALLS: usize = 1000;

/// How one call ended.
struct Ended {
    elapsed: Duration,
    result: Result<String, ClientError>,
}

/// A fleet of one node with 4 `sleep` slots.
async fn four_slots() -> Fleet {
    let mut fleet = Fleet::start(|_| {}).await;
    fleet.spawn_agent(
        "node-a",
        TOKEN,
        &service("sleep", "sleep", "max_concurrent = 4"),
    );
    fleet.wait_nodes(1).await;
    fleet
}

/// Makes `calls` sleep calls of 2 s at once on `client`, each with
/// `timeout`, and returns how each ended.
async fn flood(client: &Client, calls: usize, timeout: Duration) -> Vec<Ended> {
    let mut tasks = JoinSet::new();
    let events = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..calls {
        let client = client.clone();
        let events = events.clone();
        tasks.spawn(async move {
            let start = Instant::now();
            let result = client
                .call("sleep", "2000")
                .timeout(timeout)
                .on_event(|_| {
                    events.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                })
                .await
                .map(|r| r.meta.node_id);
            Ended {
                elapsed: start.elapsed(),
                result,
            }
        });
    }
    let mut ended = Vec::with_capacity(calls);
    while let Some(done) = tasks.join_next().await {
        ended.push(done.expect("call task"));
    }
    println!(
        "queue events told to the callers: {}",
        events.load(std::sync::atomic::Ordering::Relaxed)
    );
    ended
}

/// Checks that every call ended within `timeout` + [`OVERSHOOT`], typed,
/// and prints the figures.
fn check(label: &str, ended: &[Ended], timeout: Duration) {
    let calls = ended.len();
    let mut overshoot: Vec<Duration> = ended
        .iter()
        .map(|e| e.elapsed.saturating_sub(timeout))
        .collect();
    overshoot.sort();
    let p50 = overshoot[calls / 2];
    let p99 = overshoot[(calls * 99).div_ceil(100) - 1];
    let max = overshoot[calls - 1];
    let ok = ended.iter().filter(|e| e.result.is_ok()).count();
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for e in ended {
        if let Err(error) = &e.result {
            let kind = error.kind();
            assert!(kind.is_some(), "an untyped error: {error:?}");
            let name = match error {
                ClientError::Timeout { sent, .. } => format!("client timeout (sent: {sent})"),
                other => format!("{:?}", other.kind()),
            };
            *kinds.entry(name).or_default() += 1;
        }
    }
    println!(
        "{label}: {calls} calls with a {} ms timeout: {ok} ok, errors {kinds:?}; \
         overshoot past the timeout p50 {} ms, p99 {} ms, max {} ms (bound {} ms)",
        timeout.as_millis(),
        p50.as_millis(),
        p99.as_millis(),
        max.as_millis(),
        OVERSHOOT.as_millis()
    );
    assert!(
        max <= OVERSHOOT,
        "{label}: a call ended {} ms past its timeout",
        max.as_millis()
    );
    assert!(
        ok >= 4,
        "{label}: the first wave of 4 calls of 2 s succeeds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_calls_from_one_client_end_within_their_timeout() {
    let fleet = four_slots().await;
    // The default pool: 4 connections × 256 streams, so no call waits for
    // a stream; the queue and the node's run are bounded by the timeout.
    let client = fleet.client().await;
    let ended = flood(&client, CALLS, TIMEOUT).await;
    check("default pool", &ended, TIMEOUT);
    let stats = client.pool_stats();
    assert!(
        stats.connections() > 1,
        "the pool grew past one connection: {stats:?}"
    );
    // The calls cut at their deadline stopped the node's work.
    let node = fleet.gateway.registry().all().pop().expect("the node");
    eventually(Duration::from_secs(10), || match node.in_flight("sleep") {
        0 => Ok(()),
        n => Err(format!("{n} calls still running on the node")),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wait_for_a_stream_counts_against_the_timeout() {
    let fleet = four_slots().await;
    // One connection of 16 streams and 100 calls: 84 wait for a stream,
    // inside their timeout (before the fix they waited outside it). Kept
    // small so that it loads the machine less than the test above.
    let client = Client::connect(
        ClientConfig::new(fleet.addr.clone(), fleet.ca())
            .with_pool_size(1)
            .with_max_streams_per_connection(16),
    )
    .await
    .expect("client connects");
    let timeout = Duration::from_secs(3);
    let ended = flood(&client, 100, timeout).await;
    check("one connection of 16 streams", &ended, timeout);
    let unsent = ended
        .iter()
        .filter(|e| matches!(e.result, Err(ClientError::Timeout { sent: false, .. })))
        .count();
    assert!(
        unsent > 0,
        "calls that waited for a stream timed out unsent"
    );
    for e in &ended {
        if let Err(error @ ClientError::Timeout { sent: false, .. }) = &e.result {
            assert!(error.retry_safe(), "{error}");
            assert_eq!(error.kind(), Some(ErrorKind::Timeout));
            assert_eq!(error.side(), client::Side::Client);
        }
    }
}
