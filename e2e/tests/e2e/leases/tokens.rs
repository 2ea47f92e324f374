//! Direct calls with tokens that must not work: altered claims, a wrong
//! signature, an unknown key, no token, a token for another node or
//! service, a replayed one and an expired one. Each is refused with its
//! typed error and nothing runs; the one good call runs once.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use protocol::{ErrorKind, LeaseClaims};

use super::{recording, runs, runs_file};
use crate::common::direct::{Wire, WireError, call_head, lease_request};
use crate::common::{Fleet, service};

/// `claims` with `token`'s signature: claims altered after signing.
fn with_signature_of(claims: &LeaseClaims, token: &str) -> String {
    let body = claims.sign(&[0u8; 32]);
    let body = body.split_once('.').unwrap().0;
    let mac = token.split_once('.').unwrap().1;
    format!("{body}.{mac}")
}

/// Asserts `result` is the typed refusal `kind` whose message contains
/// `words`.
fn assert_refused<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, WireError>,
    kind: ErrorKind,
    words: &str,
) {
    let error = match result {
        Ok(answer) => panic!("{what}: served, expected {kind:?}: {answer:?}"),
        Err(e) => e.refused(),
    };
    eprintln!("{what}: {:?} {:?}", error.kind, error.message);
    assert_eq!(error.kind, kind, "{what}: {}", error.message);
    assert!(
        error.message.contains(words),
        "{what}: {:?} does not say {words:?}",
        error.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_replayed_and_misdirected_tokens_are_refused_and_nothing_runs() {
    let mut fleet = Fleet::start(|_| {}).await;
    let mut direct = Vec::new();
    for id in ["node-a", "node-b"] {
        let rec = recording(&runs_file(&fleet, id), "max_concurrent = 4");
        let services = service("rec", "command", &rec) + &service("echo", "echo", "");
        direct.push((id, fleet.spawn_direct_agent(id, &services)));
    }
    fleet.wait_nodes(2).await;
    let gateway = Wire::gateway(&fleet).await;
    let grant = gateway
        .lease(lease_request("rec", 1, 30_000), &mut Vec::new())
        .await
        .expect("lease granted");
    eprintln!(
        "granted {} on {} at {}",
        grant.lease_id, grant.node_id, grant.direct
    );
    let (mine, theirs) = if direct[0].0 == grant.node_id {
        (direct[0].1, direct[1])
    } else {
        (direct[1].1, direct[0])
    };
    assert_eq!(
        grant.direct,
        mine.to_string(),
        "the node's advertised address"
    );
    let node = Wire::direct(&fleet, mine).await;
    let claims = LeaseClaims::peek(&grant.token).unwrap();
    assert_eq!(claims.node_id, grant.node_id);
    assert_eq!(claims.service, "rec");
    assert_eq!(claims.max_calls, 1);

    // Altered claims under the gateway's signature: more calls, another
    // service.
    let more = LeaseClaims {
        max_calls: 100,
        ..claims.clone()
    };
    let token = with_signature_of(&more, &grant.token);
    let r = node.call(call_head("rec", Some(&token)), b"x").await;
    assert_refused("altered max_calls", r, ErrorKind::Unauthorized, "signature");
    let echo = LeaseClaims {
        service: "echo".into(),
        ..claims.clone()
    };
    let token = with_signature_of(&echo, &grant.token);
    let r = node.call(call_head("echo", Some(&token)), b"x").await;
    assert_refused("altered service", r, ErrorKind::Unauthorized, "signature");

    // The claims as granted, signed with a key of our own under the
    // gateway's key id; and under a key id nobody knows.
    let token = claims.sign(&[7u8; 32]);
    let r = node.call(call_head("rec", Some(&token)), b"x").await;
    assert_refused("wrong signature", r, ErrorKind::Unauthorized, "signature");
    let unknown = LeaseClaims {
        key_id: claims.key_id.wrapping_add(1),
        ..claims.clone()
    };
    let r = node
        .call(call_head("rec", Some(&unknown.sign(&[7u8; 32]))), b"x")
        .await;
    assert_refused("unknown key", r, ErrorKind::Unauthorized, "key");

    // No token, and one that is not a token at all.
    let r = node.call(call_head("rec", None), b"x").await;
    assert_refused("no token", r, ErrorKind::Unauthorized, "token");
    let garbage = URL_SAFE_NO_PAD.encode(b"not claims") + "." + &URL_SAFE_NO_PAD.encode([1u8; 32]);
    let r = node.call(call_head("rec", Some(&garbage)), b"x").await;
    assert_refused("malformed token", r, ErrorKind::Unauthorized, "malformed");

    // The real token at the other node's port, and for another service.
    let other = Wire::direct(&fleet, theirs.1).await;
    let r = other.call(call_head("rec", Some(&grant.token)), b"x").await;
    assert_refused("wrong node", r, ErrorKind::Unauthorized, &grant.node_id);
    let r = node.call(call_head("echo", Some(&grant.token)), b"x").await;
    assert_refused("wrong service", r, ErrorKind::Unauthorized, "rec");
    assert_eq!(
        runs(&runs_file(&fleet, "node-a")),
        0,
        "nothing ran on node-a"
    );
    assert_eq!(
        runs(&runs_file(&fleet, "node-b")),
        0,
        "nothing ran on node-b"
    );

    // The token as granted: served once, by the node it names.
    let answer = node
        .call(call_head("rec", Some(&grant.token)), b"hello")
        .await
        .expect("the granted token's call is served");
    assert_eq!(answer.data(), b"hello");
    assert_eq!(answer.head.node_id, grant.node_id);
    assert_eq!(runs(&runs_file(&fleet, &grant.node_id)), 1);

    // Replayed: the lease served its one call.
    let r = node
        .call(call_head("rec", Some(&grant.token)), b"again")
        .await;
    assert_refused("replayed", r, ErrorKind::LeaseEnded, "lease");

    // Expired: a 300 ms lease called after 600 ms.
    let short = gateway
        .lease(lease_request("rec", 1, 300), &mut Vec::new())
        .await
        .expect("a short lease granted");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let port = if short.node_id == grant.node_id {
        mine
    } else {
        theirs.1
    };
    let node = Wire::direct(&fleet, port).await;
    let r = node
        .call(call_head("rec", Some(&short.token)), b"late")
        .await;
    assert_refused("expired", r, ErrorKind::LeaseEnded, "expired");

    let total = runs(&runs_file(&fleet, "node-a")) + runs(&runs_file(&fleet, "node-b"));
    assert_eq!(total, 1, "only the granted call ran");
    // The nodes' calls through the gateway are unaffected.
    let client = fleet.client().await;
    let r = client.call("rec", "proxied").await.expect("a proxied call");
    assert_eq!(&r.data[..], b"proxied");
}
