//! A lease holds a slot of its node like a call in flight: an unused one
//! until it expires (a proxied call waiting meanwhile gets the slot then),
//! a session until it has served its `max_calls`; and the service's
//! `max_concurrent` holds with leases and proxied calls mixed; a session
//! lease idle past its idle timeout ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use client::ErrorKind;

use super::{runs, wait_in_flight, wait_queued};
use crate::common::direct::{Wire, call_head, lease_request};
use crate::common::{Fleet, service};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_lease_frees_its_slot_at_expiry() {
    let mut fleet = Fleet::start(|_| {}).await;
    let port = fleet.spawn_direct_agent("node-a", &service("sleep", "sleep", "max_concurrent = 1"));
    fleet.wait_nodes(1).await;
    let gateway = Wire::gateway(&fleet).await;
    let grant = gateway
        .lease(lease_request("sleep", 1, 4000), &mut Vec::new())
        .await
        .expect("lease granted");
    let granted = Instant::now();
    wait_in_flight(&fleet, "node-a", "sleep", 1).await;

    // A proxied call waits in the queue while the lease holds the slot.
    let client = Arc::new(fleet.client().await);
    let call = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .call("sleep", "10")
                .timeout(Duration::from_secs(20))
                .await
        })
    };
    wait_queued(&fleet, "sleep", 1).await;
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(granted.elapsed())).await;
    // Well before the lease's 4 s (a loaded machine may have taken longer
    // to get here: then this look is skipped).
    if granted.elapsed() < Duration::from_secs(3) {
        assert!(
            !call.is_finished(),
            "the call waits while the lease holds the slot"
        );
        wait_queued(&fleet, "sleep", 1).await;
    }

    // The lease expires unused: the call gets the slot.
    let result = call.await.unwrap();
    let result = result.expect("the waiting call runs once the lease expires");
    assert_eq!(result.meta.node_id, "node-a");
    eprintln!(
        "the waiting call ran after {:.0} ms in the queue",
        result.meta.timings.queue_ms
    );
    wait_in_flight(&fleet, "node-a", "sleep", 0).await;
    let node = Wire::direct(&fleet, port).await;
    let late = node
        .call(call_head("sleep", Some(&grant.token)), b"1")
        .await
        .expect_err("an expired lease serves nothing")
        .refused();
    assert_eq!(late.kind, ErrorKind::LeaseEnded, "{}", late.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_lease_serves_max_calls_then_frees_the_slot() {
    let mut fleet = Fleet::start(|_| {}).await;
    let runs_at = super::runs_file(&fleet, "node-a");
    let rec = super::recording(&runs_at, "max_concurrent = 1");
    let port = fleet.spawn_direct_agent("node-a", &service("rec", "command", &rec));
    fleet.wait_nodes(1).await;
    let client = fleet.client().await;
    let gateway = Wire::gateway(&fleet).await;
    let grant = gateway
        .lease(lease_request("rec", 3, 30_000), &mut Vec::new())
        .await
        .expect("session lease granted");
    assert_eq!(grant.max_calls, 3);
    wait_in_flight(&fleet, "node-a", "rec", 1).await;

    let node = Wire::direct(&fleet, port).await;
    for i in 0..3 {
        let payload = format!("call {i}");
        let answer = node
            .call(call_head("rec", Some(&grant.token)), payload.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("session call {i}: {e:?}"));
        assert_eq!(answer.data(), payload.as_bytes());
        if i < 2 {
            // The session still holds the node's only slot.
            let busy = client
                .call("rec", "proxied")
                .realtime(true)
                .await
                .expect_err("a realtime call finds the slot held");
            assert_eq!(busy.kind(), Some(ErrorKind::Occupied), "{busy}");
        }
    }
    let fourth = node
        .call(call_head("rec", Some(&grant.token)), b"call 3")
        .await
        .expect_err("a 4th call on a 3-call lease")
        .refused();
    assert_eq!(fourth.kind, ErrorKind::LeaseEnded, "{}", fourth.message);
    assert_eq!(runs(&runs_at), 3, "the session ran its 3 calls, no more");

    // The slot is free again: a realtime proxied call runs at once.
    wait_in_flight(&fleet, "node-a", "rec", 0).await;
    let r = client
        .call("rec", "proxied")
        .realtime(true)
        .await
        .expect("the freed slot serves a realtime call");
    assert_eq!(&r.data[..], b"proxied");
    assert_eq!(runs(&runs_at), 4);
}

/// Most `+` lines minus `-` lines seen at any point of `log`.
fn most_at_once(log: &str) -> i32 {
    let (mut now, mut most) = (0, 0);
    for line in log.lines() {
        now += if line.trim() == "+" { 1 } else { -1 };
        most = most.max(now);
    }
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_holds_with_leases_and_proxied_calls_mixed() {
    let mut fleet = Fleet::start(|_| {}).await;
    let log = fleet.dir.path().join("conc.log");
    let script = format!(
        "command = [\"sh\", \"-c\", \"echo + >> {0}; sleep 0.15; echo - >> {0}; cat\"]\nmax_concurrent = 2",
        log.display()
    );
    let port = fleet.spawn_direct_agent("node-a", &service("conc", "command", &script));
    fleet.wait_nodes(1).await;
    let client = Arc::new(fleet.client().await);

    // The gateway's count of the node's slots taken, sampled throughout.
    let done = Arc::new(AtomicBool::new(false));
    let most_seen = Arc::new(AtomicU32::new(0));
    let sampler = {
        let (gateway, done, most_seen) = (fleet.gateway.clone(), done.clone(), most_seen.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Some(node) = gateway.registry().get("node-a") {
                    most_seen.fetch_max(node.in_flight("conc"), Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut tasks = Vec::new();
    for t in 0..3 {
        let (fleet_addr, ca) = (fleet.addr.clone(), fleet.ca());
        tasks.push(tokio::spawn(async move {
            let gateway = Wire::connect(fleet_addr.parse().unwrap(), &ca, "localhost")
                .await
                .unwrap();
            let node = Wire::connect(port, &ca, "127.0.0.1").await.unwrap();
            for l in 0..3 {
                let grant = gateway
                    .lease(lease_request("conc", 2, 30_000), &mut Vec::new())
                    .await
                    .unwrap_or_else(|e| panic!("lease {t}.{l}: {e:?}"));
                for c in 0..2 {
                    let payload = format!("lease {t}.{l} call {c}");
                    let answer = node
                        .call(call_head("conc", Some(&grant.token)), payload.as_bytes())
                        .await
                        .unwrap_or_else(|e| panic!("{payload}: {e:?}"));
                    assert_eq!(answer.data(), payload.as_bytes());
                }
            }
        }));
    }
    for t in 0..4 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for c in 0..3 {
                let payload = format!("proxied {t}.{c}");
                let r = client
                    .call("conc", payload.clone())
                    .timeout(Duration::from_secs(30))
                    .await
                    .unwrap_or_else(|e| panic!("{payload}: {e}"));
                assert_eq!(&r.data[..], payload.as_bytes());
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    let running = most_at_once(&log);
    let taken = most_seen.load(Ordering::Relaxed);
    eprintln!(
        "{} runs; most running at once on the node {running}, most slots the gateway saw taken {taken}",
        log.lines().count() / 2
    );
    assert_eq!(
        log.lines().count(),
        2 * (3 * 3 * 2 + 4 * 3),
        "every call ran once"
    );
    assert!(
        running <= 2,
        "{running} calls ran at once with max_concurrent 2"
    );
    assert!(
        taken <= 2,
        "{taken} slots taken at once with max_concurrent 2"
    );
    assert_eq!(taken, 2, "the calls and leases did compete for both slots");
    wait_in_flight(&fleet, "node-a", "conc", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_lease_ends_after_its_idle_timeout() {
    let mut fleet = Fleet::start(|_| {}).await;
    let port = fleet.spawn_direct_agent("node-a", &service("echo", "echo", "max_concurrent = 1"));
    fleet.wait_nodes(1).await;
    let gateway = Wire::gateway(&fleet).await;
    let node = Wire::direct(&fleet, port).await;
    let request = protocol::LeaseRequest {
        idle_ms: 1000,
        ..lease_request("echo", 5, 30_000)
    };
    let grant = gateway
        .lease(request, &mut Vec::new())
        .await
        .expect("lease granted");
    assert_eq!(grant.idle_ms, 1000);
    let answer = node
        .call(call_head("echo", Some(&grant.token)), b"busy")
        .await
        .expect("a call within the idle timeout");
    assert_eq!(answer.data(), b"busy");
    // No call for more than 1 s: the lease ends and frees the slot.
    wait_in_flight(&fleet, "node-a", "echo", 0).await;
    let idle = node
        .call(call_head("echo", Some(&grant.token)), b"late")
        .await
        .expect_err("an idled lease serves nothing")
        .refused();
    assert_eq!(idle.kind, ErrorKind::LeaseEnded, "{}", idle.message);
    assert!(idle.message.contains("idle"), "{}", idle.message);
}
