//! Leases against real QUIC on loopback: an in-test gateway connection
//! whose hold streams the lease table serves, and a client of the direct
//! port (direct calls). The session tests cover holds reaching the table
//! through a gateway session's call streams.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use protocol::{
    CallError, CallHead, Codec, ErrorKind, LeaseClaims, LeaseDrop, LeaseEnd, LeaseEndReason,
    LeaseHold, LeaseKey, LeaseKeys, Message, ResultHead,
};
use transport::{EndpointConfig, FramedRecv, FramedSend, TlsFiles};

use super::direct::{DirectCalls, DirectServer};
use super::{Leases, unix_ms};
use crate::config::{DirectConfig, ServiceConfig};
use crate::services::{ServiceKind, Services};

const NODE: &str = "node-a";
const KEY: [u8; 32] = [7; 32];
const KEY_ID: u64 = 42;
const WAIT: Duration = Duration::from_secs(10);

/// An agent with a direct port, a gateway connection to it and a client
/// connection to its direct port.
struct Node {
    _dir: tempfile::TempDir,
    services: Services,
    leases: Leases,
    direct: Option<DirectServer>,
    /// The gateway's side of its connection with the agent.
    gateway: quinn::Connection,
    /// A client's connection to the direct port.
    client: quinn::Connection,
    _endpoints: Vec<quinn::Endpoint>,
}

/// What a direct call came to.
#[derive(Debug)]
enum Answer {
    Ok(ResultHead, Vec<u8>),
    Err(CallError),
}

impl Answer {
    fn ok(self) -> (ResultHead, Vec<u8>) {
        match self {
            Self::Ok(head, data) => (head, data),
            Self::Err(e) => panic!("call failed: {e:?}"),
        }
    }

    fn err(self) -> CallError {
        match self {
            Self::Err(e) => e,
            Self::Ok(head, _) => panic!("call succeeded: {head:?}"),
        }
    }
}

fn services() -> Vec<ServiceConfig> {
    let mut echo = ServiceConfig::new("echo", ServiceKind::Echo);
    echo.max_concurrent = 1;
    vec![
        echo,
        ServiceConfig::new("sleep", ServiceKind::Sleep),
        ServiceConfig::new(
            "lines",
            ServiceKind::command(["sh", "-c", "echo one; sleep 0.05; echo two"]),
        ),
    ]
}

impl Node {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = TlsFiles::in_dir(dir.path());
        files
            .create_if_missing(&["localhost".into(), "127.0.0.1".into()])
            .expect("certificates");
        let issued = transport::identity::issue_direct_cert(
            &files,
            NODE,
            &["127.0.0.1".into()],
            &dir.path().join("direct"),
        )
        .expect("direct certificate");
        let services = Services::new(&services()).expect("services");
        let leases = Leases::new(NODE);
        let config = DirectConfig::new(
            "127.0.0.1:0".parse().expect("addr"),
            issued.cert,
            issued.key,
        );
        let direct = DirectServer::start(
            &config,
            &files.ca,
            protocol::WireVersion::LATEST,
            DirectCalls {
                max_payload: 1 << 20,
                tracer: otel::Tracer::start(&otel::TracingConfig::default(), "test")
                    .expect("tracer"),
                leases: leases.clone(),
            },
        )
        .expect("direct port");
        let direct_addr: SocketAddr = direct.advertised.parse().expect("bound address");
        leases
            .keys()
            .set(
                1,
                &LeaseKeys {
                    keys: vec![LeaseKey {
                        id: KEY_ID,
                        key: KEY.to_vec(),
                    }],
                },
            )
            .expect("keys");
        // The gateway's connection with the agent: the agent serves the
        // streams the gateway opens, as its session does.
        let listen: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let gateway_ep =
            transport::server_endpoint(listen, &files, &EndpointConfig::default()).expect("server");
        let gateway_addr = gateway_ep.local_addr().expect("addr");
        let agent_ep =
            transport::client_endpoint(&files.ca, gateway_addr, &EndpointConfig::default())
                .expect("client");
        let connecting = agent_ep.connect(gateway_addr, "localhost").expect("dial");
        let (agent, gateway) = tokio::join!(connecting, async {
            gateway_ep.accept().await.expect("incoming").await
        });
        let (agent, gateway) = (agent.expect("agent side"), gateway.expect("gateway side"));
        // The agent's side: a stream whose first frame is `Hold` goes to
        // the lease table, as the dispatcher routes it.
        let (serving, table) = (services.clone(), leases.clone());
        tokio::spawn(async move {
            let codec = transport::codec_for(&agent, Codec::default());
            while let Ok((send, recv)) = agent.accept_bi().await {
                let (services, leases) = (serving.clone(), table.clone());
                tokio::spawn(async move {
                    let send = FramedSend::new(send, codec);
                    let mut recv = FramedRecv::new(recv, codec);
                    if let Ok(Some(Message::Hold(hold))) = recv.recv().await {
                        leases
                            .hold(&services, &services.tally(), send, recv, hold)
                            .await;
                    }
                });
            }
        });
        let client_ep =
            transport::client_endpoint(&files.ca, direct_addr, &EndpointConfig::default())
                .expect("client");
        let client = client_ep
            .connect(direct_addr, "127.0.0.1")
            .expect("dial")
            .await
            .expect("direct handshake");
        Self {
            _dir: dir,
            services,
            leases,
            direct: Some(direct),
            gateway,
            client,
            _endpoints: vec![gateway_ep, agent_ep, client_ep],
        }
    }

    fn leases(&self) -> &Leases {
        &self.leases
    }

    fn in_flight(&self, service: &str) -> u32 {
        self.services
            .in_flight()
            .into_iter()
            .find(|(s, _)| s == service)
            .map_or(0, |(_, n)| n)
    }

    /// Opens a hold stream for `hold`; returns it and the agent's answer.
    async fn hold(&self, hold: LeaseHold) -> (FramedSend, FramedRecv, Message) {
        let (mut send, mut recv) = transport::open_bi(&self.gateway, Codec::default())
            .await
            .expect("open");
        send.send(&Message::Hold(hold)).await.expect("send hold");
        let answer = tokio::time::timeout(WAIT, recv.expect("the hold's answer"))
            .await
            .expect("in time")
            .expect("an answer");
        (send, recv, answer)
    }

    /// Holds a lease that must be granted; returns its stream and token.
    async fn grant(&self, hold: LeaseHold) -> (FramedSend, FramedRecv, String) {
        let token = token(&hold, NODE, &KEY);
        let (send, recv, answer) = self.hold(hold).await;
        assert_eq!(answer, Message::Ack("held".into()));
        (send, recv, token)
    }

    /// One direct call of `service` with `token` and `payload`.
    async fn call(&self, service: &str, token: Option<&str>, payload: &[u8]) -> Answer {
        let mut head = CallHead::new(service, payload.len() as u64, 10_000);
        head.lease = token.map(str::to_owned);
        head.request_id = Some("req-1".into());
        let (mut send, mut recv) = transport::open_bi(&self.client, Codec::default())
            .await
            .expect("open");
        send.send_with_payload(&Message::Call(head), &Bytes::copy_from_slice(payload))
            .await
            .expect("send call");
        let _ = send.finish();
        let read = async {
            match recv.expect("the answer").await.expect("answer") {
                Message::Result(head) => {
                    let data = match head.payload_len {
                        Some(n) => recv
                            .recv_payload(n, 1 << 20)
                            .await
                            .expect("payload")
                            .to_vec(),
                        None => {
                            let mut data = Vec::new();
                            loop {
                                match recv.expect("a chunk").await.expect("chunk") {
                                    Message::Data(chunk) => data.extend_from_slice(&chunk),
                                    Message::End(trailer) => {
                                        assert_eq!(trailer.len, data.len() as u64);
                                        break;
                                    }
                                    other => panic!("unexpected {other:?}"),
                                }
                            }
                            data
                        }
                    };
                    Answer::Ok(head, data)
                }
                Message::Error(e) => Answer::Err(e),
                other => panic!("unexpected {other:?}"),
            }
        };
        tokio::time::timeout(WAIT, read)
            .await
            .expect("answered in time")
    }
}

fn lease(id: &str, service: &str, max_calls: u32) -> LeaseHold {
    LeaseHold {
        lease_id: id.into(),
        service: service.into(),
        tenant: "anonymous".into(),
        max_calls,
        idle_ms: 0,
        ttl_ms: 30_000,
        policy: "least-request".into(),
        max_payload: 0,
    }
}

fn claims(hold: &LeaseHold, node: &str) -> LeaseClaims {
    LeaseClaims {
        lease_id: hold.lease_id.clone(),
        key_id: KEY_ID,
        node_id: node.into(),
        service: hold.service.clone(),
        tenant: hold.tenant.clone(),
        expires_unix_ms: unix_ms() + u64::from(hold.ttl_ms),
        max_calls: hold.max_calls,
    }
}

fn token(hold: &LeaseHold, node: &str, key: &[u8; 32]) -> String {
    claims(hold, node).sign(key)
}

/// The `LeaseEnded` the hold stream ends with.
async fn ended(recv: &mut FramedRecv) -> LeaseEnd {
    match tokio::time::timeout(WAIT, recv.expect("lease end"))
        .await
        .expect("in time")
        .expect("frame")
    {
        Message::LeaseEnded(end) => end,
        other => panic!("expected LeaseEnded, got {other:?}"),
    }
}

#[tokio::test]
async fn a_lease_serves_its_direct_call_then_ends_used() {
    let node = Node::start().await;
    let (_send, mut recv, token) = node.grant(lease("l1", "echo", 1)).await;
    assert_eq!(node.in_flight("echo"), 1, "the lease holds a slot");
    let (head, data) = node.call("echo", Some(&token), b"hello").await.ok();
    assert_eq!(data, b"hello");
    assert_eq!(head.node_id, NODE);
    assert_eq!(head.policy, "least-request");
    assert_eq!(head.timings.attempts, 1);
    assert_eq!(head.request_id.as_deref(), Some("req-1"));
    assert!(head.cache.is_none());
    let end = ended(&mut recv).await;
    assert_eq!((end.calls, end.reason), (1, LeaseEndReason::Used));
    assert_eq!(node.in_flight("echo"), 0, "the slot is free");
    assert_eq!(node.leases().active(), 0);
    // A replay of the token is refused, with why.
    let e = node.call("echo", Some(&token), b"again").await.err();
    assert_eq!(e.kind, ErrorKind::LeaseEnded);
    assert!(e.message.contains("used its 1 calls"), "{}", e.message);
}

#[tokio::test]
async fn a_streamed_result_streams_on_a_direct_call() {
    let node = Node::start().await;
    let (_send, _recv, token) = node.grant(lease("s1", "lines", 1)).await;
    let (head, data) = node.call("lines", Some(&token), b"").await.ok();
    assert_eq!(head.payload_len, None, "streamed");
    assert_eq!(data, b"one\ntwo\n");
}

#[tokio::test]
async fn forged_and_misdirected_tokens_are_refused() {
    let node = Node::start().await;
    let hold = lease("l2", "echo", 1);
    let (_send, _recv, good) = node.grant(hold.clone()).await;
    let unauthorized = |e: CallError, why: &str| {
        assert_eq!(e.kind, ErrorKind::Unauthorized, "{e:?}");
        assert!(e.message.contains(why), "{why}: {}", e.message);
    };
    unauthorized(
        node.call("echo", None, b"x").await.err(),
        "needs a lease token",
    );
    unauthorized(
        node.call("echo", Some("garbage"), b"x").await.err(),
        "malformed",
    );
    // Signed with another key under the same id: forged.
    unauthorized(
        node.call("echo", Some(&token(&hold, NODE, &[9; 32])), b"x")
            .await
            .err(),
        "signature",
    );
    let mut unknown = claims(&hold, NODE);
    unknown.key_id = 5;
    unauthorized(
        node.call("echo", Some(&unknown.sign(&KEY)), b"x")
            .await
            .err(),
        "unknown key",
    );
    unauthorized(
        node.call("echo", Some(&token(&hold, "node-b", &KEY)), b"x")
            .await
            .err(),
        "for node node-b",
    );
    unauthorized(
        node.call("sleep", Some(&good), b"1").await.err(),
        "for service echo",
    );
    let mut tenant = claims(&hold, NODE);
    tenant.tenant = "other".into();
    unauthorized(
        node.call("echo", Some(&tenant.sign(&KEY)), b"x")
            .await
            .err(),
        "does not match",
    );
    let never = token(&lease("nope", "echo", 1), NODE, &KEY);
    let e = node.call("echo", Some(&never), b"x").await.err();
    assert_eq!(e.kind, ErrorKind::LeaseEnded);
    assert!(e.message.contains("no such lease"), "{}", e.message);
    let mut expired = claims(&hold, NODE);
    expired.expires_unix_ms = unix_ms() - 1;
    let e = node
        .call("echo", Some(&expired.sign(&KEY)), b"x")
        .await
        .err();
    assert_eq!(e.kind, ErrorKind::LeaseEnded);
    assert!(e.message.contains("expired"), "{}", e.message);
    // None of those used the lease's one call.
    let (_, data) = node.call("echo", Some(&good), b"ok").await.ok();
    assert_eq!(data, b"ok");
}

#[tokio::test]
async fn a_lease_runs_one_call_at_a_time_and_bounds_payloads() {
    let node = Node::start().await;
    let (_send, _recv, token) = node.grant(lease("l3", "sleep", 3)).await;
    let slow = node.call("sleep", Some(&token), b"400");
    let busy = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        node.call("sleep", Some(&token), b"1").await
    };
    let (slow, busy) = tokio::join!(slow, busy);
    assert_eq!(slow.ok().1, b"slept 400 ms");
    let e = busy.err();
    assert_eq!(e.kind, ErrorKind::Occupied);
    assert!(e.message.contains("busy"), "{}", e.message);
    let mut small = lease("l4", "echo", 1);
    small.max_payload = 4;
    let (_s, _r, token) = node.grant(small).await;
    let e = node.call("echo", Some(&token), b"too long").await.err();
    assert_eq!(e.kind, ErrorKind::PayloadTooLarge);
    let (_, data) = node.call("echo", Some(&token), b"fits").await.ok();
    assert_eq!(data, b"fits");
}

#[tokio::test]
async fn a_session_lease_serves_max_calls_then_frees_its_slot() {
    let node = Node::start().await;
    let (_send, mut recv, token) = node.grant(lease("l5", "echo", 3)).await;
    for i in 0..3u8 {
        let (_, data) = node.call("echo", Some(&token), &[i]).await.ok();
        assert_eq!(data, [i]);
    }
    let end = ended(&mut recv).await;
    assert_eq!((end.calls, end.reason), (3, LeaseEndReason::Used));
    assert!(end.busy_ms >= 0.0);
    let e = node.call("echo", Some(&token), b"4").await.err();
    assert!(e.message.contains("used its 3 calls"), "{}", e.message);
    // The slot is free: another lease of the one-slot service is held.
    node.grant(lease("l6", "echo", 1)).await;
}

#[tokio::test]
async fn unused_and_idle_leases_end_and_free_their_slots() {
    let node = Node::start().await;
    let mut short = lease("t1", "sleep", 1);
    short.ttl_ms = 300;
    let (_s1, mut expiring, token) = node.grant(short).await;
    let mut idle = lease("t2", "sleep", 5);
    idle.idle_ms = 200;
    let (_s2, mut idling, idle_token) = node.grant(idle).await;
    node.call("sleep", Some(&idle_token), b"1").await.ok();
    let end = ended(&mut idling).await;
    assert_eq!((end.calls, end.reason), (1, LeaseEndReason::Idle));
    let e = node.call("sleep", Some(&idle_token), b"1").await.err();
    assert!(e.message.contains("idle"), "{}", e.message);
    let end = ended(&mut expiring).await;
    assert_eq!((end.calls, end.reason), (0, LeaseEndReason::Expired));
    let e = node.call("sleep", Some(&token), b"1").await.err();
    assert_eq!(e.kind, ErrorKind::LeaseEnded);
    assert!(e.message.contains("expired"), "{}", e.message);
    assert_eq!(node.in_flight("sleep"), 0);
}

#[tokio::test]
async fn the_gateway_resetting_its_half_releases_the_lease() {
    let node = Node::start().await;
    let (mut send, mut recv, token) = node.grant(lease("r1", "echo", 2)).await;
    send.reset(protocol::codes::reset::CANCELLED);
    let end = ended(&mut recv).await;
    assert_eq!((end.calls, end.reason), (0, LeaseEndReason::Released));
    let e = node.call("echo", Some(&token), b"x").await.err();
    assert_eq!(e.kind, ErrorKind::LeaseEnded);
    assert!(e.message.contains("released"), "{}", e.message);
    assert_eq!(node.in_flight("echo"), 0);
}

#[tokio::test]
async fn a_lease_outlives_its_gateway_connection() {
    let node = Node::start().await;
    let (_send, _recv, token) = node.grant(lease("g1", "echo", 1)).await;
    node.gateway.close(0u32.into(), b"gateway gone");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(node.in_flight("echo"), 1, "the node still holds it");
    let (_, data) = node.call("echo", Some(&token), b"still").await.ok();
    assert_eq!(data, b"still");
}

#[tokio::test]
async fn holds_are_refused_when_full_duplicate_or_draining() {
    let node = Node::start().await;
    node.grant(lease("f1", "echo", 1)).await;
    let (_, _, answer) = node.hold(lease("f2", "echo", 1)).await;
    let Message::Error(e) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(e.kind, ErrorKind::NoNodeAvailable);
    assert!(e.not_run, "the gateway picks again");
    let (_, _, answer) = node.hold(lease("f1", "sleep", 1)).await;
    assert!(matches!(answer, Message::Error(e) if e.kind == ErrorKind::BadRequest));
    let (_, _, answer) = node.hold(lease("f3", "nope", 1)).await;
    assert!(matches!(answer, Message::Error(e) if e.kind == ErrorKind::UnknownService));
    // Drain: every lease ends, no new one is held.
    let (_send, mut recv, _) = node.grant(lease("d1", "sleep", 1)).await;
    node.leases().drain();
    let end = ended(&mut recv).await;
    assert_eq!(end.reason, LeaseEndReason::Draining);
    let (_, _, answer) = node.hold(lease("d2", "sleep", 1)).await;
    assert!(
        matches!(answer, Message::Error(e) if e.kind == ErrorKind::NoNodeAvailable && e.not_run)
    );
    tokio::time::timeout(WAIT, node.leases().ended())
        .await
        .expect("every lease ended");
}

#[tokio::test]
async fn a_node_without_a_direct_port_refuses_holds() {
    let mut node = Node::start().await;
    node.direct.take().expect("direct").stop().await;
    let (_, _, answer) = node.hold(lease("x1", "echo", 1)).await;
    let Message::Error(e) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(e.kind, ErrorKind::BadRequest);
    assert!(e.message.contains("no [direct] port"), "{}", e.message);
}

#[tokio::test]
async fn ended_leases_are_remembered_until_their_expiry_only() {
    let services = Services::new(&services()).expect("services");
    let leases = Leases::new(NODE);
    leases.set_direct_open(true);
    let mut hold = lease("m1", "sleep", 1);
    hold.ttl_ms = 200;
    let owner = services.tally();
    let slot = services.acquire("sleep").expect("slot");
    let lease = leases.insert(hold.clone(), slot, &owner).expect("insert");
    lease.end(LeaseEndReason::Released);
    leases.forget(&lease, LeaseEndReason::Released);
    let err = leases.find(&claims(&hold, NODE)).err().expect("ended");
    assert!(err.message.contains("released"), "{}", err.message);
    // The same id is not held twice.
    let again = leases.insert(
        hold.clone(),
        services.acquire("sleep").expect("slot"),
        &owner,
    );
    assert!(again.is_err());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Past its expiry the next end forgets it.
    let other = leases
        .insert(
            lease_with_id("m2"),
            services.acquire("sleep").expect("slot"),
            &owner,
        )
        .expect("insert");
    leases.forget(&other, LeaseEndReason::Used);
    assert!(!leases.table().ended.contains_key("m1"));
    assert!(leases.table().ended.contains_key("m2"));
}

fn lease_with_id(id: &str) -> LeaseHold {
    lease(id, "sleep", 1)
}

#[tokio::test]
async fn a_frame_that_is_not_a_call_is_a_bad_request() {
    let node = Node::start().await;
    let (mut send, mut recv) = transport::open_bi(&node.client, Codec::default())
        .await
        .expect("open");
    send.send(&Message::ListNodes).await.expect("send");
    let _ = send.finish();
    match recv.expect("answer").await.expect("answer") {
        Message::Error(e) => {
            assert_eq!(e.kind, ErrorKind::BadRequest);
            assert!(e.message.contains("expected a call head"), "{}", e.message);
        }
        other => panic!("unexpected {other:?}"),
    }
    // The connection still serves calls.
    let (_send, _recv, token) = node.grant(lease("b1", "echo", 1)).await;
    let (_, data) = node.call("echo", Some(&token), b"fine").await.ok();
    assert_eq!(data, b"fine");
}

/// The next frame a control-stream hold wrote, within a second.
async fn next_frame(frames: &mut tokio::sync::mpsc::Receiver<Message>) -> Message {
    tokio::time::timeout(Duration::from_secs(1), frames.recv())
        .await
        .expect("a frame in time")
        .expect("the writer is open")
}

#[tokio::test]
async fn holds_on_the_control_stream_are_answered_there_and_end_there_with_their_id() {
    let services = Services::new(&services()).expect("services");
    let leases = Leases::new(NODE);
    leases.set_direct_open(true);
    let owner = services.tally();
    let other = services.tally();
    let (out, mut frames) = tokio::sync::mpsc::channel(8);
    leases
        .hold_on_control(&services, &owner, &out, lease("c1", "echo", 1))
        .await;
    match next_frame(&mut frames).await {
        Message::Held(held) => {
            assert_eq!(held.lease_id, "c1");
            assert!(held.error.is_none(), "{:?}", held.error);
        }
        other => panic!("unexpected {other:?}"),
    }
    // The slot counts as the owner's: another session sees it among the
    // others' calls.
    let echo = |counts: Vec<(String, u32)>| {
        counts
            .into_iter()
            .find(|(s, _)| s == "echo")
            .map(|(_, n)| n)
    };
    assert_eq!(echo(services.others(&other)), Some(1));
    assert_eq!(echo(services.others(&owner)), Some(0));
    // `echo` takes one call at a time: a second hold is refused as not run.
    leases
        .hold_on_control(&services, &other, &out, lease("c2", "echo", 1))
        .await;
    match next_frame(&mut frames).await {
        Message::Held(held) => {
            assert_eq!(held.lease_id, "c2");
            let e = held.error.expect("refused");
            assert!(e.not_run, "{e:?}");
        }
        other => panic!("unexpected {other:?}"),
    }
    // Another gateway cannot drop it; its own can, and the end names it.
    let drop = LeaseDrop {
        lease_id: "c1".into(),
    };
    leases.drop_lease(&other, &drop);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), frames.recv())
            .await
            .is_err(),
        "a drop from another session is ignored"
    );
    leases.drop_lease(&owner, &drop);
    match next_frame(&mut frames).await {
        Message::LeaseEnded(end) => {
            assert_eq!(end.lease_id.as_deref(), Some("c1"));
            assert_eq!(end.reason, LeaseEndReason::Released);
            assert_eq!(end.calls, 0);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(echo(services.in_flight()), Some(0));
}

#[tokio::test]
async fn ended_leases_past_the_cap_are_forgotten_oldest_first() {
    let services = Services::new(&services()).expect("services");
    let leases = Leases::new(NODE);
    leases.set_direct_open(true);
    let owner = services.tally();
    for i in 0..super::MAX_ENDED + 2 {
        let id = format!("e{i}");
        let slot = services.acquire("sleep").expect("slot");
        let lease = leases
            .insert(lease_with_id(&id), slot, &owner)
            .expect("insert");
        leases.forget(&lease, LeaseEndReason::Used);
    }
    let table = leases.table();
    assert_eq!(table.ended.len(), super::MAX_ENDED);
    assert_eq!(table.ended_order.len(), super::MAX_ENDED);
    assert!(!table.ended.contains_key("e0") && !table.ended.contains_key("e1"));
    assert!(
        table
            .ended
            .contains_key(&format!("e{}", super::MAX_ENDED + 1))
    );
}
