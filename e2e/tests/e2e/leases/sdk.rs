//! Leases through the SDK: a lease waits in the queue reporting its
//! position, is granted, and its direct calls are served (whole and
//! streamed) by the node it names; look-aside calls fall back to the
//! proxied path when the node's direct port cannot be reached, releasing
//! their lease.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{CallEvent, Mode};
use futures_util::StreamExt;

use super::{metric, wait_in_flight, wait_metric, wait_queued};
use crate::common::direct::free_loopback;
use crate::common::{Fleet, TOKEN, service};

/// A command that writes a line, then another 600 ms later, then a third.
const TICKS: &str =
    r#"command = ["sh", "-c", "echo one; sleep 0.6; echo two; sleep 0.6; echo three"]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_waits_with_its_position_then_calls_the_node_directly() {
    let mut fleet = Fleet::start(|_| {}).await;
    let services =
        service("sleep", "sleep", "max_concurrent = 1") + &service("ticks", "command", TICKS);
    let port = fleet.spawn_direct_agent("node-a", &services);
    fleet.wait_nodes(1).await;
    let client = Arc::new(fleet.client().await);

    // A running call holds the only slot: the lease waits in the queue.
    let running = {
        let client = client.clone();
        tokio::spawn(async move { client.call("sleep", "3000").await })
    };
    wait_in_flight(&fleet, "node-a", "sleep", 1).await;
    let positions = Arc::new(Mutex::new(Vec::new()));
    let leasing = {
        let (client, seen) = (client.clone(), positions.clone());
        tokio::spawn(async move {
            client
                .lease("sleep")
                .on_event(move |e| {
                    if let CallEvent::Queued { position } = e {
                        seen.lock().unwrap().push(position);
                    }
                })
                .await
        })
    };
    wait_queued(&fleet, "sleep", 1).await;
    running.await.unwrap().expect("the running call ends");
    let lease = leasing.await.unwrap().expect("the lease is granted");
    assert_eq!(
        *positions.lock().unwrap(),
        vec![1],
        "its place in the queue"
    );
    assert_eq!(lease.node_id(), "node-a");
    assert_eq!(lease.direct(), port.to_string());
    assert!(lease.grant().queue_ms > 0.0, "{:?}", lease.grant());
    wait_in_flight(&fleet, "node-a", "sleep", 1).await;

    let result = lease.call("10").await.expect("the direct call");
    assert_eq!(result.meta.node_id, "node-a");
    assert_eq!(result.meta.policy, lease.grant().policy);
    assert_eq!(result.meta.timings.attempts, 1);
    // Its one call used, the lease ends and frees the slot.
    wait_in_flight(&fleet, "node-a", "sleep", 0).await;

    // A streamed direct call: lines arrive as the command writes them.
    let lease = client.lease("ticks").await.expect("a lease on ticks");
    let started = Instant::now();
    let mut stream = lease.call(Vec::new()).stream().await.expect("stream");
    assert_eq!(stream.meta.node_id, "node-a");
    let mut chunks = Vec::new();
    let mut first_at = None;
    while let Some(chunk) = stream.next().await {
        chunks.push(chunk.expect("chunk"));
        first_at.get_or_insert_with(|| started.elapsed());
    }
    let total = started.elapsed();
    let first_at = first_at.expect("a chunk");
    let text: String = chunks
        .iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    assert_eq!(text, "one\ntwo\nthree\n");
    assert!(chunks.len() >= 3, "one chunk per line: {chunks:?}");
    assert!(
        first_at < total / 2,
        "the first line came at {first_at:?}, before half of {total:?}"
    );
    wait_in_flight(&fleet, "node-a", "ticks", 0).await;

    // Released unused: the slot is free again and the token serves nothing.
    let lease = client.lease("sleep").await.expect("a third lease");
    wait_in_flight(&fleet, "node-a", "sleep", 1).await;
    lease.release().await.expect("released");
    wait_in_flight(&fleet, "node-a", "sleep", 0).await;
    let ended = lease
        .call("10")
        .await
        .expect_err("a released lease serves nothing");
    assert_eq!(ended.kind(), Some(client::ErrorKind::LeaseEnded), "{ended}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_aside_falls_back_to_proxying_when_the_direct_port_is_closed() {
    let mut fleet = Fleet::start(|_| {}).await;
    // node-a advertises a direct address where nothing listens.
    let mut port = fleet.direct_port("node-a");
    port.advertise = free_loopback().to_string();
    fleet.spawn_agent(
        "node-a",
        TOKEN,
        &(port.table() + &service("fallback-echo", "echo", "max_concurrent = 1")),
    );
    fleet.wait_nodes(1).await;
    let client = fleet.client().await;

    for i in 0..3 {
        let payload = format!("fallback {i}");
        let r = client
            .call("fallback-echo", payload.clone())
            .mode(Mode::LookAside)
            .timeout(Duration::from_secs(20))
            .await
            .expect("a look-aside call falls back to the proxied path");
        assert_eq!(&r.data[..], payload.as_bytes());
        assert_eq!(r.meta.node_id, "node-a");
        // The lease was released: the node's only slot is free again.
        wait_in_flight(&fleet, "node-a", "fallback-echo", 0).await;
    }
    let label = "service=\"fallback-echo\"";
    let granted = metric(&fleet, "leases_granted_total", &[label]).await;
    eprintln!("fallback: {granted} leases granted");
    assert!(granted >= 1.0, "the look-aside calls leased");
    // Each lease of a fallback is released.
    let released = [label, "reason=\"released\""];
    wait_metric(&fleet, "leases_ended_total", &released, granted).await;

    // A node whose direct port works is called directly.
    let port = fleet.spawn_direct_agent("node-b", &service("aside-direct", "echo", ""));
    fleet.wait_nodes(2).await;
    let r = client
        .call("aside-direct", "straight")
        .look_aside()
        .await
        .expect("a look-aside call");
    assert_eq!(&r.data[..], b"straight");
    assert_eq!(r.meta.node_id, "node-b");
    let _ = port;
    wait_in_flight(&fleet, "node-b", "aside-direct", 0).await;
    // The lease served its one call on the node: it ended used.
    let label = "service=\"aside-direct\"";
    wait_metric(
        &fleet,
        "leases_ended_total",
        &[label, "reason=\"used\""],
        1.0,
    )
    .await;
}
