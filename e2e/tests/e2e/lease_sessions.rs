//! Leases through the SDK as a session: a lease of several calls serves
//! them on one node one at a time, then ends with a typed error for the
//! next; a released lease frees its slot and refuses its token; services
//! named in the client's configuration are called look-aside.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use client::{ClientConfig, ErrorKind};

use crate::common::{Fleet, service};
use crate::leases::wait_in_flight;

/// The value of the gateway's `/metrics` sample `series`, 0 if absent.
async fn sample(fleet: &Fleet, series: &str) -> f64 {
    let url = format!("http://{}/metrics", fleet.gateway.admin_addr().unwrap());
    reqwest::get(url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_lease_serves_its_calls_one_at_a_time_then_ends() {
    let mut fleet = Fleet::start(|_| {}).await;
    let services = service("sess-echo", "echo", "max_concurrent = 1")
        + &service("sess-sleep", "sleep", "max_concurrent = 1");
    fleet.spawn_direct_agent("node-a", &services);
    fleet.wait_nodes(1).await;
    let client = fleet.client().await;

    // Three calls on one lease, then it is used up and its slot free.
    let lease = client
        .lease("sess-echo")
        .max_calls(3)
        .await
        .expect("a lease of 3 calls");
    assert_eq!(lease.grant().max_calls, 3);
    for i in 0..3 {
        let payload = format!("call {i}");
        let r = lease.call(payload.clone()).await.expect("a direct call");
        assert_eq!(&r.data[..], payload.as_bytes());
        assert_eq!(r.meta.node_id, "node-a");
    }
    wait_in_flight(&fleet, "node-a", "sess-echo", 0).await;
    let ended = lease.call("a fourth").await.expect_err("used up");
    assert_eq!(ended.kind(), Some(ErrorKind::LeaseEnded), "{ended}");
    assert!(ended.retry_safe(), "{ended}");

    // A lease runs one call at a time (it holds one slot): a second call
    // of a clone while the first runs is refused, unrun.
    let lease = client
        .lease("sess-sleep")
        .max_calls(5)
        .idle(Duration::from_secs(20))
        .await
        .expect("a session lease");
    let running = {
        let lease = lease.clone();
        tokio::spawn(async move { lease.call("800").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy = lease.call("10").await.expect_err("busy");
    assert_eq!(busy.kind(), Some(ErrorKind::Occupied), "{busy}");
    running.await.unwrap().expect("the running call ends well");
    wait_in_flight(&fleet, "node-a", "sess-sleep", 1).await;

    // Released: the slot frees and the token is refused.
    lease.release().await.expect("released");
    wait_in_flight(&fleet, "node-a", "sess-sleep", 0).await;
    let after = lease.call("10").await.expect_err("released");
    assert_eq!(after.kind(), Some(ErrorKind::LeaseEnded), "{after}");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_in_the_client_config_are_called_look_aside() {
    let mut fleet = Fleet::start(|_| {}).await;
    let services = service("cfg-aside", "echo", "") + &service("cfg-proxied", "echo", "");
    fleet.spawn_direct_agent("node-a", &services);
    fleet.wait_nodes(1).await;
    let mut config = ClientConfig::new(fleet.addr.clone(), fleet.ca());
    config.look_aside = vec!["cfg-aside".into()];
    let client = client::Client::connect(config).await.expect("client");

    for i in 0..3 {
        let payload = format!("aside {i}");
        let r = client
            .call("cfg-aside", payload.clone())
            .await
            .expect("call");
        assert_eq!(&r.data[..], payload.as_bytes());
        assert_eq!(r.meta.node_id, "node-a");
        let r = client
            .call("cfg-proxied", payload.clone())
            .await
            .expect("call");
        assert_eq!(&r.data[..], payload.as_bytes());
    }
    // One lease per look-aside call, none for the proxied service.
    assert_eq!(
        sample(&fleet, "leases_granted_total{service=\"cfg-aside\"}").await,
        3.0
    );
    assert_eq!(
        sample(&fleet, "leases_granted_total{service=\"cfg-proxied\"}").await,
        0.0
    );
    wait_in_flight(&fleet, "node-a", "cfg-aside", 0).await;
    client.close().await;
}
