//! Bounded QUIC resources (README "QUIC limits"): peers that open many
//! streams and stall, floods of half-open handshakes, too many connections
//! from one address, garbage and idle connections. The gateway keeps
//! serving, its memory stays bounded, its accept policy refuses or retries.
//!
//! The gateway runs in this process: RSS figures are the process's (the
//! gateway, the agents and the attacking clients together), so the bounds
//! are on all of them, and are generous for a loaded 2-core machine.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::{CallHead, Codec, FrameHeader, FrameKind, Message};
use transport::{EndpointConfig, FramedSend};

use crate::common::{Fleet, TOKEN, metric, service};

/// Resident memory of this process, MiB (`/proc/self/statm`).
fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: f64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096.0 / (1024.0 * 1024.0)
}

/// A QUIC client endpoint (trusting the fleet's CA) whose socket is bound to
/// `ip` (any address of 127.0.0.0/8 is loopback on Linux).
fn endpoint_from(fleet: &Fleet, ip: [u8; 4]) -> quinn::Endpoint {
    let addr: SocketAddr = fleet.addr.parse().unwrap();
    let endpoint =
        transport::client_endpoint(&fleet.ca(), addr, &EndpointConfig::default()).unwrap();
    endpoint
        .rebind(UdpSocket::bind(SocketAddr::from((ip, 0))).unwrap())
        .unwrap();
    endpoint
}

async fn echo_ok(client: &client::Client) -> Duration {
    let start = Instant::now();
    let r = client
        .call("echo", "ping")
        .await
        .expect("an established client's call succeeds");
    assert_eq!(&r.data[..], b"ping");
    start.elapsed()
}

/// A call head declaring the largest payload the gateway accepts.
fn large_call() -> Message {
    Message::Call(CallHead {
        service: "echo".into(),
        payload_len: 16 * 1024 * 1024,
        timeout_ms: 120_000,
        hints: Vec::new(),
        priority: 0,
        realtime: false,
        no_cache: false,
        max_age_s: None,
        api_key: None,
        endpoint: None,
        log: false,
        traceparent: None,
        request_id: None,
        lease: None,
    })
}

/// 10 connections × 1024 streams, each declaring 16 MiB (a frame header or
/// a call head's payload) and sending 8 KiB of it, then stalling. Without
/// bounds that is 160 GiB declared; the gateway holds at most its read
/// budget and receive window per connection and keeps serving others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_streams_keep_memory_bounded() {
    let mut fleet = Fleet::start(|_| {}).await;
    fleet.spawn_agent("node-a", TOKEN, &service("echo", "echo", ""));
    fleet.wait_nodes(1).await;
    let client = fleet.client().await;
    for _ in 0..20 {
        echo_ok(&client).await;
    }
    let before = rss_mib();
    let addr: SocketAddr = fleet.addr.parse().unwrap();
    let chunk = Bytes::from(vec![0u8; 8 * 1024]);
    let mut writers = Vec::new();
    let mut connections = Vec::new();
    for c in 0..10u8 {
        let endpoint = endpoint_from(&fleet, [127, 0, 1, c + 1]);
        let connection = endpoint.connect(addr, "localhost").unwrap().await.unwrap();
        // The first stream makes the connection a client's.
        let (send, recv) = connection.open_bi().await.unwrap();
        let mut first = FramedSend::new(send, Codec::default());
        first.send(&Message::ListNodes).await.unwrap();
        first.finish().unwrap();
        let mut recv = transport::FramedRecv::new(recv, Codec::default());
        assert!(matches!(recv.recv().await, Ok(Some(Message::Nodes(_)))));
        for s in 0..1023u32 {
            let (send, recv) = connection.open_bi().await.unwrap();
            let chunk = chunk.clone();
            // Writes block once the gateway stops reading (its windows):
            // each stream writes in a task of its own, then stalls.
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
                    std::future::pending::<()>().await;
                } else {
                    let mut framed = FramedSend::new(send, Codec::default());
                    let _ = framed.send(&large_call()).await;
                    let _ = framed.send_payload(&chunk).await;
                    std::future::pending::<()>().await;
                }
            }));
        }
        connections.push((endpoint, connection));
    }
    // Let the gateway read what it will.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        slowest = slowest.max(echo_ok(&client).await);
    }
    let grown = rss_mib() - before;
    eprintln!(
        "10 connections x 1024 stalled streams (16 MiB declared, 8 KiB sent each): \
         process RSS grew {grown:.1} MiB; other client's slowest call {slowest:?}"
    );
    // README "QUIC limits": the gateway holds per connection at most the
    // read budget (16 MiB) + the receive and send windows (2 + 2 MiB) +
    // 1024 streams x ~4 KiB = 24 MiB, 240 MiB for 10; the attackers in this
    // process hold their send windows and stream state (~6 MiB each).
    let bound = 10.0 * (16.0 + 2.0 + 2.0 + 4.0) + 10.0 * 6.0 + 64.0;
    assert!(grown < bound, "RSS grew {grown:.1} MiB, bound {bound} MiB");
    for w in &writers {
        w.abort();
    }
    drop(connections);
}

/// Captures `n` QUIC Initial packets (each a new connection attempt with a
/// ClientHello for `localhost`) by dialing a plain UDP socket.
async fn capture_initials(fleet: &Fleet, n: usize) -> Vec<Vec<u8>> {
    let sink = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = sink.local_addr().unwrap();
    let endpoint =
        transport::client_endpoint(&fleet.ca(), sink_addr, &EndpointConfig::default()).unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut packets = Vec::new();
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 65536];
    while packets.len() < n {
        for _ in 0..50 {
            pending.push(endpoint.connect(sink_addr, "localhost").unwrap());
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let goal = (packets.len() + 50).min(n);
        while packets.len() < goal && Instant::now() < deadline {
            let Ok(Ok(len)) =
                tokio::time::timeout(Duration::from_millis(500), sink.recv(&mut buf)).await
            else {
                break;
            };
            // Long header: the destination connection id follows the
            // version; one packet per new id.
            let dcid_len = usize::from(buf[5]);
            if len > 6 + dcid_len && seen.insert(buf[6..6 + dcid_len].to_vec()) {
                packets.push(buf[..len].to_vec());
            }
        }
    }
    drop(pending);
    endpoint.close(0u32.into(), b"captured");
    packets.truncate(n);
    packets
}

fn p99(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[(samples.len() * 99 / 100).min(samples.len() - 1)]
}

/// 2000 half-open handshakes (real Initial packets from 20 addresses that
/// never answer): past `retry_above_pending` the gateway answers with
/// stateless retries, and an established client's p99 stays within 2× its
/// baseline (measured in the same run, interleaved).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_handshake_flood_leaves_clients_served() {
    let mut fleet = Fleet::start(|_| {}).await;
    fleet.spawn_agent("node-a", TOKEN, &service("echo", "echo", ""));
    fleet.wait_nodes(1).await;
    let client = fleet.client().await;
    let initials = capture_initials(&fleet, 2000).await;
    assert_eq!(initials.len(), 2000);
    let gateway: SocketAddr = fleet.addr.parse().unwrap();
    let senders: Vec<UdpSocket> = (0..20u8)
        .map(|i| UdpSocket::bind(SocketAddr::from(([127, 0, 2, i + 1], 0))).unwrap())
        .collect();
    for _ in 0..20 {
        echo_ok(&client).await;
    }
    // Baseline and flood phases alternate every 25 calls (so load from
    // elsewhere on the machine falls on both alike); the flood thread sends
    // only during flood phases, 2 Initials per ms, until all are sent.
    let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sending = {
        let flooding = flooding.clone();
        std::thread::spawn(move || {
            let mut sent = 0;
            while sent < initials.len() {
                if !flooding.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                for packet in &initials[sent..(sent + 2).min(initials.len())] {
                    let _ = senders[sent % senders.len()].send_to(packet, gateway);
                    sent += 1;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let (mut base, mut flood) = (Vec::new(), Vec::new());
    let mut rounds = 0;
    while rounds < 8 || !sending.is_finished() {
        flooding.store(false, std::sync::atomic::Ordering::Relaxed);
        for _ in 0..25 {
            base.push(echo_ok(&client).await);
        }
        flooding.store(true, std::sync::atomic::Ordering::Relaxed);
        for _ in 0..25 {
            flood.push(echo_ok(&client).await);
        }
        rounds += 1;
        assert!(rounds < 400, "the flood never finished");
    }
    sending.join().unwrap();
    let (base_p99, flood_p99) = (p99(&mut base), p99(&mut flood));
    let retries = metric(&fleet, "quic_retries_total", &[]).await;
    eprintln!(
        "2000 half-open handshakes from 20 addresses: established client p99 {flood_p99:?} \
         (baseline {base_p99:?}, {} calls each); stateless retries sent: {retries}",
        base.len()
    );
    assert!(retries > 0.0, "the flood was answered with retries");
    // A loaded CI machine (the p99 of 200 calls beside the other tests
    // moves by tens of ms): the baseline counts at least 10 ms, and the
    // flood may triple it; a flood that held the gateway would cost
    // seconds.
    let bound = 3 * base_p99.max(Duration::from_millis(10));
    assert!(
        flood_p99 <= bound,
        "p99 under flood {flood_p99:?} > 3 x baseline {base_p99:?} (at least 10 ms)"
    );
}

/// `[quic] max_connections_per_ip`: the N+1th connection from one address
/// is refused, other addresses are not, and a freed place is taken again.
/// `[agents] max_agents_per_ip`: a second agent from one address is refused
/// with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_limits_refuse_the_next_connection() {
    let mut fleet = Fleet::start(|config| {
        config.quic.max_connections_per_ip = 3;
        config.agents.max_agents_per_ip = 1;
    })
    .await;
    fleet.spawn_agent("node-a", TOKEN, &service("echo", "echo", ""));
    fleet.wait_nodes(1).await;
    let addr: SocketAddr = fleet.addr.parse().unwrap();
    let endpoint = endpoint_from(&fleet, [127, 0, 3, 1]);
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(endpoint.connect(addr, "localhost").unwrap().await.unwrap());
    }
    let refused = endpoint
        .connect(addr, "localhost")
        .unwrap()
        .await
        .expect_err("the 4th connection from one address is refused");
    eprintln!("4th connection from 127.0.3.1: {refused}");
    assert!(
        matches!(refused, quinn::ConnectionError::ConnectionClosed(_)),
        "{refused:?}"
    );
    let other = endpoint_from(&fleet, [127, 0, 3, 2]);
    other
        .connect(addr, "localhost")
        .unwrap()
        .await
        .expect("another address is served");
    open.pop().unwrap().close(0u32.into(), b"bye");
    let mut again = None;
    for _ in 0..50 {
        if let Ok(c) = endpoint.connect(addr, "localhost").unwrap().await {
            again = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "a freed place is taken again");

    // A second agent from 127.0.0.1 is one too many.
    let config = node_agent::AgentConfig::new(
        fleet.addr.clone(),
        fleet.ca(),
        TOKEN,
        "node-b",
        vec![echo_service()],
    );
    let refusal = tokio::time::timeout(
        Duration::from_secs(10),
        node_agent::run(config, std::future::pending()),
    )
    .await
    .expect("refused at once");
    let refusal = refusal.expect_err("refused").to_string();
    assert!(refusal.contains("max_agents_per_ip"), "{refusal}");
    assert_eq!(fleet.gateway.registry().len(), 1);
}

fn echo_service() -> node_agent::ServiceConfig {
    node_agent::ServiceConfig::new("echo", node_agent::ServiceKind::Echo)
}

/// The cases the gateway already handled, kept as regressions: garbage
/// bytes on 50 streams, 1000 stalled streams, 200 idle connections; it
/// serves on and its memory stays bounded. (Unknown frame version, a 4 GiB
/// length and a junk body: `malformed.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_stalls_and_idle_connections_leave_the_gateway_serving() {
    let mut fleet = Fleet::start(|_| {}).await;
    fleet.spawn_agent("node-a", TOKEN, &service("echo", "echo", ""));
    fleet.wait_nodes(1).await;
    let client = fleet.client().await;
    echo_ok(&client).await;
    let before = rss_mib();
    let addr: SocketAddr = fleet.addr.parse().unwrap();

    // Garbage on 50 streams of a client's connection: each gets a clear
    // error.
    let endpoint = endpoint_from(&fleet, [127, 0, 4, 1]);
    let garbage = endpoint.connect(addr, "localhost").unwrap().await.unwrap();
    let (send, recv) = garbage.open_bi().await.unwrap();
    let mut hello = FramedSend::new(send, Codec::default());
    hello.send(&Message::ListNodes).await.unwrap();
    let mut hello_recv = transport::FramedRecv::new(recv, Codec::default());
    assert!(matches!(
        hello_recv.recv().await,
        Ok(Some(Message::Nodes(_)))
    ));
    for i in 0..50u8 {
        let (mut send, recv) = garbage.open_bi().await.unwrap();
        let junk: Vec<u8> = (0..64u8)
            .map(|b| b.wrapping_mul(31).wrapping_add(i))
            .collect();
        send.write_all(&junk).await.unwrap();
        send.finish().unwrap();
        let mut recv = transport::FramedRecv::new(recv, Codec::default());
        match tokio::time::timeout(Duration::from_secs(10), recv.recv()).await {
            Ok(Ok(Some(Message::Error(e)))) => {
                assert_eq!(e.kind, client::ErrorKind::BadRequest, "{}", e.message)
            }
            other => panic!("stream {i}: expected a clear error, got {other:?}"),
        }
    }

    // 1000 stalled streams on one connection: half a frame header each.
    let stalled = endpoint.connect(addr, "localhost").unwrap().await.unwrap();
    let (send, recv) = stalled.open_bi().await.unwrap();
    let mut first = FramedSend::new(send, Codec::default());
    first.send(&Message::ListNodes).await.unwrap();
    let mut first_recv = transport::FramedRecv::new(recv, Codec::default());
    assert!(matches!(
        first_recv.recv().await,
        Ok(Some(Message::Nodes(_)))
    ));
    let mut streams = Vec::new();
    for _ in 0..1000 {
        let (mut send, recv) = stalled.open_bi().await.unwrap();
        send.write_all(&[protocol::VERSION, 5, 0]).await.unwrap();
        streams.push((send, recv));
    }

    // 200 idle connections from 4 addresses.
    let mut idle = Vec::new();
    for a in 0..4u8 {
        let endpoint = endpoint_from(&fleet, [127, 0, 4, 10 + a]);
        for _ in 0..50 {
            idle.push(endpoint.connect(addr, "localhost").unwrap().await.unwrap());
        }
        idle.push(endpoint.connect(addr, "localhost").unwrap().await.unwrap());
    }
    for _ in 0..20 {
        echo_ok(&client).await;
    }
    let grown = rss_mib() - before;
    eprintln!(
        "garbage on 50 streams, 1000 stalled streams, 204 idle connections: \
         process RSS grew {grown:.1} MiB; calls still served"
    );
    assert!(grown < 200.0, "RSS grew {grown:.1} MiB");
    drop((streams, idle));
}
