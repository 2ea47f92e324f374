//! Queueing through the gateway with real agents: positions that count
//! down, realtime calls refused with `occupied`, a full queue `overloaded`,
//! timeouts in the queue, priorities, and clients that leave.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{CallEvent, CallResult, Client, ClientError, ErrorKind};
use gateway::config::ServiceConfig;
use tokio::task::JoinHandle;

use crate::common::{Fleet, TOKEN, eventually, service};

type Events = Arc<Mutex<Vec<u32>>>;

/// Starts a `sleep` call of `ms` that records its queue positions.
fn sleep_call(
    client: &Arc<Client>,
    ms: u32,
) -> (JoinHandle<Result<CallResult, ClientError>>, Events) {
    let events: Events = Arc::default();
    let seen = events.clone();
    let client = client.clone();
    let task = tokio::spawn(async move {
        client
            .call("sleep", ms.to_string())
            .on_event(move |e| {
                if let CallEvent::Queued { position } = e {
                    seen.lock().unwrap().push(position);
                }
            })
            .await
    });
    (task, events)
}

/// Waits until `n` calls wait in the `sleep` queue.
async fn wait_queued(fleet: &Fleet, n: u32) {
    eventually(Duration::from_secs(10), || {
        let length = fleet
            .gateway
            .queues()
            .iter()
            .find(|q| q.service == "sleep")
            .map_or(0, |q| q.length);
        (length == n)
            .then_some(())
            .ok_or(format!("expected {n} queued calls, have {length}"))
    })
    .await;
}

/// Waits until `n` `sleep` calls are in flight on the nodes.
async fn wait_in_flight(fleet: &Fleet, n: u32) {
    eventually(Duration::from_secs(10), || {
        let busy: u32 = fleet
            .gateway
            .registry()
            .all()
            .iter()
            .map(|node| node.in_flight("sleep"))
            .sum();
        (busy == n)
            .then_some(())
            .ok_or(format!("expected {n} calls in flight, have {busy}"))
    })
    .await;
}

/// Checks that the single node served exactly `n` calls (and no more arrive).
async fn assert_calls_served(fleet: &Fleet, n: u64) {
    let node = fleet.gateway.registry().all().remove(0);
    let start = Instant::now();
    while node.calls_total() < n && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(node.calls_total(), n, "calls the node served");
}

async fn one_node_fleet(tweak: impl FnOnce(&mut gateway::GatewayConfig)) -> (Fleet, Arc<Client>) {
    let mut fleet = Fleet::start(tweak).await;
    fleet.spawn_agent(
        "node-a",
        TOKEN,
        &service("sleep", "sleep", "max_concurrent = 1"),
    );
    fleet.wait_nodes(1).await;
    let client = Arc::new(fleet.client().await);
    (fleet, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_calls_on_two_nodes_three_wait_with_positions_counting_down() {
    let mut fleet = Fleet::start(|_| {}).await;
    let one = service("sleep", "sleep", "max_concurrent = 1");
    fleet.spawn_agent("node-a", TOKEN, &one);
    fleet.spawn_agent("node-b", TOKEN, &one);
    fleet.wait_nodes(2).await;
    let client = Arc::new(fleet.client().await);

    // Staggered so that each freed slot moves the queue one step at a time:
    // slots free at about 400, 700 and 1000 ms.
    let (first, e1) = sleep_call(&client, 400);
    wait_in_flight(&fleet, 1).await;
    let (second, e2) = sleep_call(&client, 1000);
    wait_in_flight(&fleet, 2).await;
    let mut queued = Vec::new();
    for n in 1..=3 {
        queued.push(sleep_call(&client, 300));
        wait_queued(&fleet, n).await;
    }
    for task in [first, second] {
        let r = task.await.unwrap().expect("running call succeeds");
        assert!(r.meta.timings.queue_ms < 300.0, "{:?}", r.meta.timings);
    }
    assert!(e1.lock().unwrap().is_empty() && e2.lock().unwrap().is_empty());
    let mut seen = Vec::new();
    for (task, events) in queued {
        let r = task.await.unwrap().expect("queued call succeeds");
        assert!(
            r.meta.timings.queue_ms >= 200.0,
            "it waited: {:?}",
            r.meta.timings
        );
        seen.push(events.lock().unwrap().clone());
    }
    assert_eq!(seen, [vec![1], vec![2, 1], vec![3, 2, 1]]);
    let view = fleet.gateway.queues();
    let sleep = view.iter().find(|q| q.service == "sleep").unwrap();
    assert_eq!((sleep.length, sleep.dispatched_total), (0, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_gets_occupied_and_a_full_queue_gets_overloaded() {
    let (fleet, client) = one_node_fleet(|c| {
        c.services.insert(
            "sleep".into(),
            ServiceConfig {
                queue_capacity: Some(2),
                ..ServiceConfig::default()
            },
        );
    })
    .await;
    let (busy, _) = sleep_call(&client, 1200);
    wait_in_flight(&fleet, 1).await;

    let start = Instant::now();
    let err = client
        .call("sleep", "10")
        .realtime(true)
        .await
        .expect_err("no free slot");
    assert_eq!(err.kind(), Some(ErrorKind::Occupied), "{err}");
    assert!(err.retry_safe());
    assert!(start.elapsed() < Duration::from_millis(500), "at once");

    let (a, ea) = sleep_call(&client, 10);
    wait_queued(&fleet, 1).await;
    let (b, eb) = sleep_call(&client, 10);
    wait_queued(&fleet, 2).await;
    let err = client.call("sleep", "10").await.expect_err("queue full");
    assert_eq!(err.kind(), Some(ErrorKind::Overloaded), "{err}");
    assert!(err.retry_safe());

    for task in [busy, a, b] {
        task.await.unwrap().expect("admitted calls succeed");
    }
    assert_eq!(ea.lock().unwrap().first(), Some(&1));
    assert_eq!(eb.lock().unwrap().first(), Some(&2));
    let view = fleet.gateway.queues();
    let sleep = view.iter().find(|q| q.service == "sleep").unwrap();
    assert_eq!(sleep.overloaded_total, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_call_times_out_cleanly_and_takes_no_slot() {
    let (fleet, client) = one_node_fleet(|_| {}).await;
    let (busy, _) = sleep_call(&client, 900);
    wait_in_flight(&fleet, 1).await;

    let start = Instant::now();
    let err = client
        .call("sleep", "10")
        .timeout(Duration::from_millis(250))
        .await
        .expect_err("times out in the queue");
    assert_eq!(err.kind(), Some(ErrorKind::Timeout), "{err}");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_millis(850),
        "{waited:?}"
    );
    wait_queued(&fleet, 0).await;
    busy.await.unwrap().expect("running call succeeds");
    wait_in_flight(&fleet, 0).await;

    assert_calls_served(&fleet, 1).await;
    let view = fleet.gateway.queues();
    let sleep = view.iter().find(|q| q.service == "sleep").unwrap();
    assert_eq!((sleep.abandoned_total, sleep.dispatched_total), (1, 0));
    let r = client.call("sleep", "1").await.expect("the slot is free");
    assert!(r.meta.timings.queue_ms < 200.0, "{:?}", r.meta.timings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_is_served_first_and_fifo_within_a_priority() {
    let (fleet, client) = one_node_fleet(|_| {}).await;
    let (busy, _) = sleep_call(&client, 500);
    wait_in_flight(&fleet, 1).await;

    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (n, (name, priority)) in [("a", 0), ("b", 0), ("c", 5), ("d", 1), ("e", -3)]
        .into_iter()
        .enumerate()
    {
        let (client, order) = (client.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            client
                .call("sleep", "20")
                .priority(priority)
                .await
                .expect("queued call succeeds");
            order.lock().unwrap().push(name);
        }));
        wait_queued(&fleet, u32::try_from(n).unwrap() + 1).await;
    }
    busy.await.unwrap().expect("running call succeeds");
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), ["c", "d", "a", "b", "e"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_the_queue_consumes_no_slot() {
    let (fleet, client) = one_node_fleet(|_| {}).await;
    let (busy, _) = sleep_call(&client, 700);
    wait_in_flight(&fleet, 1).await;

    let leaving = Arc::new(fleet.client().await);
    let (waiting, _) = sleep_call(&leaving, 10);
    wait_queued(&fleet, 1).await;
    leaving.close().await;
    let start = Instant::now();
    wait_queued(&fleet, 0).await;
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "left at once, not when the running call ended"
    );
    assert!(waiting.await.unwrap().is_err());

    busy.await.unwrap().expect("running call succeeds");
    wait_in_flight(&fleet, 0).await;
    assert_calls_served(&fleet, 1).await;
    let view = fleet.gateway.queues();
    let sleep = view.iter().find(|q| q.service == "sleep").unwrap();
    assert_eq!((sleep.abandoned_total, sleep.dispatched_total), (1, 0));
}
