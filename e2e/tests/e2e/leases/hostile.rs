//! The reliability suite's hostile QUIC client against an agent's direct
//! port: connections past its cap, garbage and frames that are not calls,
//! streams that declare 16 MiB and stall. The agent (a real process)
//! survives with its memory bounded, and its calls through the gateway
//! and direct calls with a good token keep working.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use protocol::{Codec, FrameHeader, FrameKind, Message};
use transport::{FramedRecv, FramedSend};

use crate::common::direct::{Wire, call_head, lease_request};
use crate::common::{Fleet, TOKEN, service};

/// Resident memory of process `pid`, MiB (`VmRSS`).
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

/// A lease on `echo` and one direct call with it.
async fn leased_echo(fleet: &Fleet, gateway: &Wire, port: SocketAddr, payload: &str) {
    let grant = gateway
        .lease(lease_request("echo", 1, 30_000), &mut Vec::new())
        .await
        .expect("lease granted");
    let node = Wire::direct(fleet, port).await;
    let answer = node
        .call(call_head("echo", Some(&grant.token)), payload.as_bytes())
        .await
        .expect("a direct call with a good token");
    assert_eq!(answer.data(), payload.as_bytes());
    node.close();
}

/// Connects to the direct port, retrying while the agent still counts
/// connections just closed against its cap.
async fn connect_again(fleet: &Fleet, port: SocketAddr) -> Wire {
    for _ in 0..100 {
        if let Ok(wire) = Wire::connect(port, &fleet.ca(), "127.0.0.1").await {
            return wire;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the direct port never took a connection again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_quic_client_at_the_direct_port_leaves_the_agent_serving() {
    let mut fleet = Fleet::start(|_| {}).await;
    let mut port = fleet.direct_port("node-a");
    port.extra = "max_connections = 8".into();
    let index = fleet.spawn_agent_process(
        "node-a",
        TOKEN,
        &(port.table() + &service("echo", "echo", "max_concurrent = 64")),
    );
    let port = port.listen;
    fleet.wait_nodes(1).await;
    let pid = fleet.agent(index).child.id();
    let client = fleet.client().await;
    let gateway = Wire::gateway(&fleet).await;
    client.call("echo", "warm").await.expect("a proxied call");
    leased_echo(&fleet, &gateway, port, "warm").await;
    let before = rss_mib(pid);

    // Connections past `max_connections` are refused (at the handshake,
    // or closed right after it).
    let mut open = Vec::new();
    for _ in 0..16 {
        if let Ok(wire) = Wire::connect(port, &fleet.ca(), "127.0.0.1").await {
            open.push(wire);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let alive = open
        .iter()
        .filter(|w| w.connection.close_reason().is_none())
        .count();
    eprintln!("16 connections tried with a cap of 8: {alive} open");
    assert!(alive <= 8, "{alive} connections past a cap of 8");
    assert!(alive >= 7, "the cap's places are taken: {alive}");
    client
        .call("echo", "capped")
        .await
        .expect("gateway calls while capped");
    drop(open);

    // Garbage, and frames that are not calls: each stream ends (a typed
    // error, or closed), none hangs.
    let wire = connect_again(&fleet, port).await;
    for i in 0..20u8 {
        let (mut send, recv) = wire.connection.open_bi().await.unwrap();
        let junk: Vec<u8> = (0..64u8)
            .map(|b| b.wrapping_mul(31).wrapping_add(i))
            .collect();
        let _ = send.write_all(&junk).await;
        let _ = send.finish();
        let mut recv = FramedRecv::new(recv, Codec::default());
        match tokio::time::timeout(Duration::from_secs(10), recv.recv()).await {
            Ok(Ok(Some(Message::Error(e)))) if i == 0 => {
                eprintln!("garbage: {:?} {}", e.kind, e.message)
            }
            Ok(Ok(Some(Message::Error(_)) | None) | Err(_)) => {}
            Ok(Ok(Some(other))) => panic!("garbage stream {i} answered {other:?}"),
            Err(_) => panic!("garbage stream {i} hangs"),
        }
    }
    let not_calls = [
        Message::ListNodes,
        Message::Lease(lease_request("echo", 1, 1000)),
        Message::Data(Bytes::from_static(b"data first")),
    ];
    for message in not_calls {
        let (send, recv) = wire.connection.open_bi().await.unwrap();
        let codec = transport::codec_for(&wire.connection, Codec::default());
        let mut send = FramedSend::new(send, codec);
        let _ = send.send(&message).await;
        let _ = send.finish();
        let mut recv = FramedRecv::new(recv, codec);
        match tokio::time::timeout(Duration::from_secs(10), recv.recv()).await {
            Ok(Ok(Some(Message::Error(e)))) => eprintln!("{message:?}: {:?} {}", e.kind, e.message),
            Ok(Ok(None) | Err(_)) => eprintln!("{message:?}: stream closed"),
            Ok(Ok(Some(other))) => panic!("{message:?} answered {other:?}"),
            Err(_) => panic!("{message:?} hangs"),
        }
    }
    drop(wire);

    // 4 connections × 256 streams declaring 16 MiB each (a frame header,
    // or a call head's payload) with 8 KiB sent, then stalling: 16 GiB
    // declared.
    let chunk = Bytes::from(vec![0u8; 8 * 1024]);
    let mut writers = Vec::new();
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let wire = connect_again(&fleet, port).await;
        let codec = transport::codec_for(&wire.connection, Codec::default());
        for s in 0..256u32 {
            let Ok((send, recv)) = wire.connection.open_bi().await else {
                break;
            };
            let chunk = chunk.clone();
            writers.push(tokio::spawn(async move {
                let _recv = recv;
                if s % 2 == 0 {
                    let mut send = send;
                    let header = FrameHeader {
                        version: protocol::WireVersion::LATEST,
                        kind: FrameKind::Call,
                        len: protocol::DEFAULT_MAX_FRAME_LEN,
                    };
                    let _ = send.write_all(&header.to_bytes()).await;
                    let _ = send.write_all(&chunk).await;
                } else {
                    let mut framed = FramedSend::new(send, codec);
                    let mut head = call_head("echo", Some("not.a-token"));
                    head.payload_len = 16 * 1024 * 1024;
                    let _ = framed.send(&Message::Call(head)).await;
                    let _ = framed.send_payload(&chunk).await;
                }
                std::future::pending::<()>().await;
            }));
        }
        stalled.push(wire);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 0..20 {
        let payload = format!("during {i}");
        let r = client
            .call("echo", payload.clone())
            .await
            .expect("gateway calls keep working");
        assert_eq!(&r.data[..], payload.as_bytes());
    }
    let grown = rss_mib(pid) - before;
    eprintln!(
        "direct port: 4 connections x 256 stalled streams (16 MiB declared each): agent RSS grew {grown:.1} MiB"
    );
    assert!(grown < 4.0 * 64.0 + 64.0, "agent RSS grew {grown:.1} MiB");
    for w in &writers {
        w.abort();
    }
    drop(stalled);

    // The agent lives on, and serves both ways.
    assert!(
        fleet.agent(index).child.try_wait().unwrap().is_none(),
        "the agent is alive: {}",
        fleet.agent(index).log_text()
    );
    for i in 0..5 {
        let payload = format!("after {i}");
        let r = client.call("echo", payload.clone()).await.expect("proxied");
        assert_eq!(&r.data[..], payload.as_bytes());
    }
    let _ = connect_again(&fleet, port).await;
    leased_echo(&fleet, &gateway, port, "after").await;
}
