//! An agent with a direct port: it advertises the port when it registers,
//! takes the gateway's lease keys on the control stream, holds a lease
//! from a gateway's stream, serves the lease's direct call, and ends its
//! leases (`draining`) at shutdown.

use protocol::{CallHead, LeaseClaims, LeaseEndReason, LeaseHold, LeaseKey, LeaseKeys};

use super::*;
use crate::config::DirectConfig;

/// One direct call of `service` with `token`; the answer's first frame
/// and the payload of a whole result.
async fn direct_call(
    connection: &quinn::Connection,
    service: &str,
    token: &str,
    payload: &[u8],
) -> (Message, Bytes) {
    let mut head = CallHead::new(service, payload.len() as u64, 5000);
    head.lease = Some(token.to_owned());
    let (mut send, mut recv) = transport::open_bi(connection, Codec::default())
        .await
        .expect("open");
    send.send_with_payload(&Message::Call(head), &Bytes::copy_from_slice(payload))
        .await
        .expect("send");
    let _ = send.finish();
    let first = recv.expect("answer").await.expect("answer");
    let body = match &first {
        Message::Result(head) => recv
            .recv_payload(head.payload_len.expect("whole"), 1 << 20)
            .await
            .expect("payload"),
        _ => Bytes::new(),
    };
    (first, body)
}

#[tokio::test]
async fn an_agent_with_a_direct_port_holds_leases_and_serves_direct_calls() {
    let gateway = Gateway::start();
    let files = TlsFiles::in_dir(gateway.dir.path());
    let issued = transport::identity::issue_direct_cert(
        &files,
        "n1",
        &["127.0.0.1".into()],
        &gateway.dir.path().join("direct"),
    )
    .expect("direct certificate");
    let mut config = gateway.config(vec![ServiceConfig::new("echo", ServiceKind::Echo)]);
    config.direct = Some(DirectConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        issued.cert,
        issued.key,
    ));
    let (stop, agent) = spawn_agent(config);
    let mut reg = gateway.accept().await;
    let direct: SocketAddr = reg
        .register
        .direct
        .as_deref()
        .expect("the direct port is advertised")
        .parse()
        .expect("the address bound");
    assert_ne!(direct.port(), 0);
    reg.accept().await;
    let key = [3u8; 32];
    reg.send
        .send(&Message::LeaseKeys(LeaseKeys {
            keys: vec![LeaseKey {
                id: 9,
                key: key.to_vec(),
            }],
        }))
        .await
        .expect("keys");

    // The gateway holds a lease of two calls on a stream of its own.
    let hold = LeaseHold {
        lease_id: "abc".into(),
        service: "echo".into(),
        tenant: "anonymous".into(),
        max_calls: 2,
        idle_ms: 0,
        ttl_ms: 30_000,
        policy: "pick-first".into(),
        max_payload: 0,
    };
    let (mut hold_send, mut hold_recv) = transport::open_bi(&reg.connection, Codec::default())
        .await
        .expect("open");
    hold_send
        .send(&Message::Hold(hold.clone()))
        .await
        .expect("hold");
    let answer = tokio::time::timeout(WAIT, hold_recv.expect("ack"))
        .await
        .expect("in time")
        .expect("ack");
    assert_eq!(answer, Message::Ack("held".into()));
    let mut held = false;
    for _ in 0..50 {
        if reg.next_stats().await.in_flight == [("echo".to_string(), 1)] {
            held = true;
            break;
        }
    }
    assert!(held, "the lease's slot shows in the node's stats");

    let token = LeaseClaims {
        lease_id: hold.lease_id.clone(),
        key_id: 9,
        node_id: "n1".into(),
        service: "echo".into(),
        tenant: "anonymous".into(),
        expires_unix_ms: crate::leases::unix_ms() + 30_000,
        max_calls: 2,
    }
    .sign(&key);
    let client_ep = transport::client_endpoint(&gateway.ca, direct, &EndpointConfig::default())
        .expect("client");
    let client = client_ep
        .connect(direct, "127.0.0.1")
        .expect("dial")
        .await
        .expect("the direct port's certificate verifies against the CA");
    // The keys travel on the control stream: a call that beats them is
    // refused as unauthorized, and uses nothing of the lease.
    let mut answer = None;
    for _ in 0..50 {
        let (first, body) = direct_call(&client, "echo", &token, b"direct").await;
        match first {
            Message::Error(e) if e.kind == ErrorKind::Unauthorized => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => {
                answer = Some((other, body));
                break;
            }
        }
    }
    let (first, body) = answer.expect("answered");
    let Message::Result(head) = first else {
        panic!("{first:?}")
    };
    assert_eq!(
        (head.node_id.as_str(), head.policy.as_str()),
        ("n1", "pick-first")
    );
    assert_eq!(body, Bytes::from_static(b"direct"));

    // Shutdown ends the lease, which says so on the hold stream.
    stop.send(()).expect("agent alive");
    let end = tokio::time::timeout(WAIT, hold_recv.expect("lease end"))
        .await
        .expect("in time")
        .expect("frame");
    let Message::LeaseEnded(end) = end else {
        panic!("{end:?}")
    };
    assert_eq!((end.calls, end.reason), (1, LeaseEndReason::Draining));
    tokio::time::timeout(WAIT, agent)
        .await
        .expect("agent stops")
        .expect("join")
        .expect("clean stop");
}
