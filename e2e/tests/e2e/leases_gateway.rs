//! The gateway's side of leases with a real agent: the admin API lists
//! the active leases (never their tokens) and each node's direct address,
//! and the lease series count
//! them; a call that brings a lease token to the gateway is refused (the
//! token goes to the node's direct port); a release the gateway cannot
//! match is refused; and a node that registered no direct port is never
//! leased.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use protocol::ErrorKind;
use serde_json::Value;

use crate::common::direct::{Wire, call_head, lease_request};
use crate::common::{Fleet, TOKEN, eventually, metric, service};

/// The service of the first test: metrics are the test process's, so
/// its series are its own.
const SERVICE: &str = "leased-echo";
/// Its label on the lease series.
const SERVICE_LABEL: &str = "service=\"leased-echo\"";

/// `GET` of an admin path, as text.
async fn admin(fleet: &Fleet, path: &str) -> String {
    let url = format!("http://{}{path}", fleet.gateway.admin_addr().unwrap());
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_lists_counts_and_releases_its_leases_and_refuses_tokens_on_calls() {
    let mut fleet = Fleet::start(|_| {}).await;
    fleet.spawn_direct_agent("node-a", &service(SERVICE, "echo", "max_concurrent = 2"));
    fleet.wait_nodes(1).await;
    let gateway = Wire::gateway(&fleet).await;
    let grant = gateway
        .lease(lease_request(SERVICE, 1, 30_000), &mut Vec::new())
        .await
        .expect("lease granted");

    let listed = admin(&fleet, "/api/leases").await;
    assert!(!listed.contains(&grant.token), "no token listed: {listed}");
    let leases: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(leases.as_array().map(Vec::len), Some(1), "{leases}");
    assert_eq!(leases[0]["lease_id"], grant.lease_id.as_str());
    assert_eq!(leases[0]["node_id"], "node-a");
    assert_eq!(leases[0]["service"], SERVICE);
    assert_eq!(leases[0]["expires_unix_ms"], grant.expires_unix_ms);
    // The node's direct address, as the grant gave it, in the node list.
    let nodes: Value = serde_json::from_str(&admin(&fleet, "/api/nodes").await).unwrap();
    assert_eq!(nodes[0]["direct"], grant.direct.as_str(), "{nodes}");
    assert_eq!(
        metric(&fleet, "leases_granted_total", &[SERVICE_LABEL]).await,
        1.0
    );
    assert_eq!(metric(&fleet, "leases_active", &[SERVICE_LABEL]).await, 1.0);

    // The token is for the node's direct port, not for the gateway.
    let refused = gateway
        .call(call_head(SERVICE, Some(&grant.token)), b"via the gateway")
        .await
        .expect_err("a call with a lease token at the gateway")
        .refused();
    assert_eq!(refused.kind, ErrorKind::BadRequest, "{}", refused.message);
    assert!(
        refused.message.contains("direct port"),
        "{}",
        refused.message
    );

    // A token the gateway did not sign releases nothing.
    let forged = gateway
        .release("e30.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .await
        .expect_err("a forged token")
        .refused();
    assert_eq!(forged.kind, ErrorKind::Unauthorized, "{}", forged.message);

    gateway.release(&grant.token).await.expect("released");
    assert_eq!(admin(&fleet, "/api/leases").await.trim(), "[]");
    eventually(Duration::from_secs(10), || {
        let in_flight = fleet
            .gateway
            .registry()
            .get("node-a")
            .map_or(0, |n| n.in_flight(SERVICE));
        (in_flight == 0)
            .then_some(())
            .ok_or(format!("the slot is still held ({in_flight})"))
    })
    .await;
    assert_eq!(
        metric(
            &fleet,
            "leases_ended_total",
            &[SERVICE_LABEL, "reason=\"released\""]
        )
        .await,
        1.0
    );
    assert_eq!(metric(&fleet, "leases_active", &[SERVICE_LABEL]).await, 0.0);
    let again = gateway
        .release(&grant.token)
        .await
        .expect_err("released already")
        .refused();
    assert_eq!(again.kind, ErrorKind::BadRequest, "{}", again.message);
    assert!(again.message.contains("no lease"), "{}", again.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_direct_port_is_never_leased() {
    let mut fleet = Fleet::start(|_| {}).await;
    fleet.spawn_agent(
        "plain",
        TOKEN,
        &service("echo", "echo", "max_concurrent = 4"),
    );
    fleet.wait_nodes(1).await;
    let gateway = Wire::gateway(&fleet).await;
    let mut alone = lease_request("echo", 1, 30_000);
    alone.head.timeout_ms = 2_000;
    let refused = gateway
        .lease(alone, &mut Vec::new())
        .await
        .expect_err("no node can be leased")
        .refused();
    assert_eq!(
        refused.kind,
        ErrorKind::NoNodeAvailable,
        "refused at once: {}",
        refused.message
    );
    assert!(refused.message.contains("direct"), "{}", refused.message);

    fleet.spawn_direct_agent("direct", &service("echo", "echo", "max_concurrent = 4"));
    fleet.wait_nodes(2).await;
    for _ in 0..4 {
        let grant = gateway
            .lease(lease_request("echo", 1, 30_000), &mut Vec::new())
            .await
            .expect("lease granted");
        assert_eq!(grant.node_id, "direct");
        gateway.release(&grant.token).await.expect("released");
    }
}
