//! The agent against a minimal in-test gateway speaking the real protocol
//! over real QUIC.

use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use protocol::{
    CallError, Codec, DispatchHead, ErrorKind, Message, NodeStats, Register, Registered, ReplyHead,
};
use tokio::sync::oneshot;
use transport::{EndpointConfig, FramedRecv, FramedSend, TlsFiles};

use super::*;
use crate::config::{ReconnectConfig, ServiceConfig};
use crate::services::ServiceKind;

const WAIT: Duration = Duration::from_secs(10);

mod cluster;
mod leases;
mod swap;

struct Gateway {
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    ca: PathBuf,
    dir: std::sync::Arc<tempfile::TempDir>,
}

struct Registration {
    connection: quinn::Connection,
    send: FramedSend,
    recv: FramedRecv,
    register: Register,
}

impl Gateway {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = TlsFiles::in_dir(dir.path());
        files
            .create_if_missing(&["localhost".into(), "127.0.0.1".into()])
            .expect("certificates");
        let listen: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let endpoint =
            transport::server_endpoint(listen, &files, &EndpointConfig::default()).expect("server");
        let addr = endpoint.local_addr().expect("local addr");
        Self {
            endpoint,
            addr,
            ca: files.ca,
            dir: std::sync::Arc::new(dir),
        }
    }

    /// Another gateway with this one's certificates (a cluster's members
    /// share a CA).
    fn beside(&self) -> Self {
        let files = TlsFiles::in_dir(self.dir.path());
        let listen: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let endpoint =
            transport::server_endpoint(listen, &files, &EndpointConfig::default()).expect("server");
        Self {
            addr: endpoint.local_addr().expect("local addr"),
            endpoint,
            ca: files.ca,
            dir: std::sync::Arc::clone(&self.dir),
        }
    }

    fn config(&self, services: Vec<ServiceConfig>) -> AgentConfig {
        let mut config = AgentConfig::new(self.addr.to_string(), &self.ca, "tok", "n1", services);
        config.stats_interval_ms = 100;
        config.max_payload_bytes = 1024 * 1024;
        config.reconnect = ReconnectConfig {
            initial_ms: 20,
            max_ms: 100,
        };
        config
    }

    /// Accepts the next agent connection and reads its `Register`.
    async fn accept(&self) -> Registration {
        let incoming = tokio::time::timeout(WAIT, self.endpoint.accept())
            .await
            .expect("an agent dials in time")
            .expect("endpoint open");
        let connection = incoming.await.expect("handshake");
        let (send, recv) = connection.accept_bi().await.expect("control stream");
        let send = FramedSend::new(send, Codec::default());
        let mut recv = FramedRecv::new(recv, Codec::default());
        let Message::Register(register) = recv.expect("register").await.expect("register") else {
            panic!("first frame is not Register");
        };
        Registration {
            connection,
            send,
            recv,
            register,
        }
    }
}

impl Registration {
    async fn accept(&mut self) {
        let registered = Registered {
            node_key: 7,
            gateway_version: "test".into(),
            ancestry: Vec::new(),
            takes_respec: false,
            takes_heartbeat: false,
        };
        self.send
            .send(&Message::Registered(registered))
            .await
            .expect("send registered");
    }

    async fn next_stats(&mut self) -> NodeStats {
        match tokio::time::timeout(WAIT, self.recv.recv()).await {
            Ok(Ok(Some(Message::Stats(stats)))) => stats,
            other => panic!("expected stats, got {other:?}"),
        }
    }

    async fn call(
        &self,
        service: &str,
        payload: &[u8],
        timeout_ms: u32,
    ) -> Result<(ReplyHead, Bytes), CallError> {
        call(&self.connection, service, payload, timeout_ms).await
    }
}

/// Dispatches one call the way the gateway does.
async fn call(
    connection: &quinn::Connection,
    service: &str,
    payload: &[u8],
    timeout_ms: u32,
) -> Result<(ReplyHead, Bytes), CallError> {
    let (mut send, mut recv) = transport::open_bi(connection, Codec::default())
        .await
        .expect("open call stream");
    let head = DispatchHead {
        call_id: 1,
        service: service.into(),
        payload_len: payload.len() as u64,
        timeout_ms,
        endpoint: None,
        log: false,
        traceparent: None,
        request_id: Some("req-test".into()),
        prefix_hashes: Vec::new(),
        job: false,
        hints: Vec::new(),
        priority: 0,
        tenant: None,
    };
    send.send(&Message::Dispatch(head)).await.expect("dispatch");
    // The agent may refuse before reading the payload (and stop the stream).
    let _ = send.send_payload(&Bytes::copy_from_slice(payload)).await;
    let _ = send.finish();
    match recv.expect("answer").await.expect("answer") {
        Message::Reply(head) => {
            let body = match head.payload_len {
                Some(len) => recv.recv_payload(len, u64::MAX).await.expect("payload"),
                None => {
                    // Streamed: chunks until End (or the service's Error).
                    let mut body = Vec::new();
                    loop {
                        match recv.expect("a chunk").await.expect("a chunk") {
                            Message::Data(chunk) => body.extend_from_slice(&chunk),
                            Message::End(trailer) => {
                                assert_eq!(trailer.len, body.len() as u64);
                                break;
                            }
                            Message::Error(e) => return Err(e),
                            other => panic!("unexpected frame in a result: {other:?}"),
                        }
                    }
                    Bytes::from(body)
                }
            };
            assert!(recv.recv().await.expect("end").is_none(), "stream finished");
            Ok((head, body))
        }
        Message::Error(e) => Err(e),
        other => panic!("unexpected answer {other:?}"),
    }
}

fn spawn_agent(
    config: AgentConfig,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), AgentError>>,
) {
    let (stop, stopped) = oneshot::channel::<()>();
    let agent = tokio::spawn(run(config, async {
        let _ = stopped.await;
    }));
    (stop, agent)
}

#[tokio::test]
async fn registers_reports_stats_serves_calls_and_shuts_down() {
    let gateway = Gateway::start();
    let mut sleep = ServiceConfig::new("sleep", ServiceKind::Sleep);
    sleep.max_concurrent = 1;
    let config = gateway.config(vec![ServiceConfig::new("echo", ServiceKind::Echo), sleep]);
    let (stop, agent) = spawn_agent(config);

    let mut reg = gateway.accept().await;
    assert_eq!(reg.register.token, "tok");
    assert_eq!(reg.register.node.id, "n1");
    assert_eq!(reg.register.node.stats_interval_ms, 100);
    let names: Vec<_> = reg
        .register
        .node
        .services
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["echo", "sleep"]);
    reg.register.node.validate().expect("a valid spec");
    reg.accept().await;

    let stats = reg.next_stats().await;
    assert!(stats.mem_total_mib > 0);
    assert_eq!(
        stats.in_flight,
        [("echo".to_string(), 0), ("sleep".to_string(), 0)]
    );

    let (head, body) = reg.call("echo", b"hello", 5000).await.expect("echo");
    assert_eq!(body, Bytes::from_static(b"hello"));
    assert_eq!(
        head.payload_len,
        Some(5),
        "a built-in's result has a known length"
    );
    assert!(head.exec_ms >= 0.0);

    let big = vec![7u8; 600 * 1024];
    let (_, body) = reg.call("echo", &big, 5000).await.expect("chunked echo");
    assert_eq!(body.len(), big.len());

    let err = reg.call("nope", b"", 5000).await.expect_err("unknown");
    assert_eq!(err.kind, ErrorKind::UnknownService);
    let err = reg
        .call("echo", &vec![0u8; 2 * 1024 * 1024], 5000)
        .await
        .expect_err("too large");
    assert_eq!(err.kind, ErrorKind::PayloadTooLarge);
    let err = reg.call("sleep", b"2000", 100).await.expect_err("timeout");
    assert_eq!(err.kind, ErrorKind::Timeout);

    // A running call shows in stats and takes the only slot.
    let slow = {
        let connection = reg.connection.clone();
        tokio::spawn(async move { call(&connection, "sleep", b"1500", 5000).await })
    };
    // Let the call start (this runtime is single-threaded).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut seen_busy = false;
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        // Stats queue up while the test works: read until one shows the call.
        let stats = reg.next_stats().await;
        if stats.in_flight.contains(&("sleep".to_string(), 1)) {
            seen_busy = true;
            break;
        }
    }
    assert!(seen_busy, "in-flight call never showed in stats");
    let err = reg.call("sleep", b"1", 5000).await.expect_err("slot taken");
    assert_eq!(err.kind, ErrorKind::NoNodeAvailable);
    assert!(err.not_run, "a full service never ran the call: {err:?}");
    let (_, body) = slow.await.expect("join").expect("slow call");
    assert_eq!(body, Bytes::from_static(b"slept 1500 ms"));

    // A malformed call stream gets BadRequest.
    let (mut send, mut recv) = transport::open_bi(&reg.connection, Codec::default())
        .await
        .expect("open");
    send.send(&Message::ListNodes).await.expect("send");
    let _ = send.finish();
    match recv.expect("answer").await.expect("answer") {
        Message::Error(e) => assert_eq!(e.kind, ErrorKind::BadRequest),
        other => panic!("unexpected {other:?}"),
    }

    stop.send(()).expect("agent alive");
    let closed = tokio::time::timeout(WAIT, reg.connection.closed())
        .await
        .expect("closed");
    match closed {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, protocol::codes::close::NORMAL.into());
            assert_eq!(&close.reason[..], b"agent shutting down");
        }
        other => panic!("unexpected close {other:?}"),
    }
    let result = tokio::time::timeout(WAIT, agent)
        .await
        .expect("stops")
        .expect("join");
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn refused_registration_is_an_error_not_a_retry() {
    let gateway = Gateway::start();
    let (_stop, agent) =
        spawn_agent(gateway.config(vec![ServiceConfig::new("echo", ServiceKind::Echo)]));
    let mut reg = gateway.accept().await;
    reg.send
        .send(&Message::Refused("wrong token".into()))
        .await
        .expect("send refused");
    let result = tokio::time::timeout(WAIT, agent)
        .await
        .expect("returns")
        .expect("join");
    match result {
        Err(AgentError::Refused(reason)) => assert_eq!(reason, "wrong token"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn reconnects_after_the_gateway_drops_it() {
    let gateway = Gateway::start();
    let (stop, agent) =
        spawn_agent(gateway.config(vec![ServiceConfig::new("echo", ServiceKind::Echo)]));
    let mut first = gateway.accept().await;
    first.accept().await;
    first.next_stats().await;
    first.connection.close(
        protocol::codes::close::SHUTDOWN.into(),
        b"gateway restarting",
    );
    let mut second = gateway.accept().await;
    second.accept().await;
    second.next_stats().await;
    let (_, body) = second.call("echo", b"again", 5000).await.expect("echo");
    assert_eq!(body, Bytes::from_static(b"again"));
    stop.send(()).expect("alive");
    assert!(
        tokio::time::timeout(WAIT, agent)
            .await
            .expect("stops")
            .expect("join")
            .is_ok()
    );
}

#[tokio::test]
async fn keeps_retrying_an_absent_gateway_until_shutdown() {
    let gateway = Gateway::start();
    let mut config = gateway.config(vec![ServiceConfig::new("echo", ServiceKind::Echo)]);
    // Nothing listens on this port.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    config.gateway = socket.local_addr().expect("addr").to_string();
    drop(socket);
    let (stop, agent) = spawn_agent(config);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!agent.is_finished(), "still retrying");
    stop.send(()).expect("alive");
    assert!(
        tokio::time::timeout(WAIT, agent)
            .await
            .expect("stops")
            .expect("join")
            .is_ok()
    );
}

#[tokio::test]
async fn a_bad_ca_file_fails_fast() {
    let gateway = Gateway::start();
    let mut config = gateway.config(vec![ServiceConfig::new("echo", ServiceKind::Echo)]);
    config.ca = "/nonexistent/ca.pem".into();
    let result = run(config, std::future::pending()).await;
    assert!(matches!(result, Err(AgentError::Tls(_))), "{result:?}");
    let mut config = gateway.config(vec![]);
    config.ca = gateway.ca.clone();
    let result = run(config, std::future::pending()).await;
    assert!(matches!(result, Err(AgentError::Config(_))), "{result:?}");
}

#[tokio::test]
async fn the_gateway_can_open_no_more_call_streams_than_the_slots_allow() {
    let gateway = Gateway::start();
    let mut sleep = ServiceConfig::new("sleep", ServiceKind::Sleep);
    sleep.max_concurrent = 1;
    let mut echo = ServiceConfig::new("echo", ServiceKind::Echo);
    echo.max_concurrent = 2;
    let config = gateway.config(vec![echo, sleep]);
    let limit = config.max_call_streams();
    // 3 slots, plus a quarter of that (0), plus the margin.
    assert_eq!(limit, 3 + crate::config::CALL_STREAM_MARGIN);
    let (stop, agent) = spawn_agent(config);
    let mut reg = gateway.accept().await;
    reg.accept().await;

    // QUIC enforces the agent's limit on the opener: the first `limit`
    // streams open at once (nothing needs to be sent), the next waits for
    // one of them to close.
    let mut open = Vec::new();
    for n in 0..limit {
        let stream = tokio::time::timeout(WAIT, reg.connection.open_bi())
            .await
            .unwrap_or_else(|_| panic!("stream {n} of {limit} did not open"))
            .expect("open");
        open.push(stream);
    }
    let over = tokio::time::timeout(Duration::from_millis(300), reg.connection.open_bi()).await;
    assert!(over.is_err(), "stream {} opened past the limit", limit + 1);

    // Calls that end make room again (here ones the agent refuses). QUIC
    // hands freed streams back in batches of more than an eighth of the
    // limit: end three.
    assert_eq!(limit / 8 + 1, 3);
    for _ in 0..3 {
        let (send, recv) = open.pop().expect("a stream");
        let (mut send, mut recv) = (
            FramedSend::new(send, Codec::default()),
            FramedRecv::new(recv, Codec::default()),
        );
        send.send(&Message::ListNodes).await.expect("send");
        send.finish().expect("finish");
        match recv.expect("an answer").await.expect("answer") {
            Message::Error(e) => assert_eq!(e.kind, ErrorKind::BadRequest),
            other => panic!("unexpected {other:?}"),
        }
        assert!(recv.recv().await.expect("end").is_none());
    }
    tokio::time::timeout(WAIT, reg.connection.open_bi())
        .await
        .expect("room after a stream closed")
        .expect("open");

    stop.send(()).expect("agent alive");
    let _ = tokio::time::timeout(WAIT, agent).await;
}

/// Log lines written to memory, for a test to read.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut lines) = self.0.lock() {
            lines.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn a_calls_log_lines_carry_its_request_id() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    // This runtime is single-threaded: the agent's tasks log here.
    let _guard = tracing::subscriber::set_default(subscriber);
    let gateway = Gateway::start();
    let (stop, _agent) =
        spawn_agent(gateway.config(vec![ServiceConfig::new("echo", ServiceKind::Echo)]));
    let mut reg = gateway.accept().await;
    reg.accept().await;
    reg.call("echo", b"hi", 5000).await.expect("echo");
    let _ = stop.send(());
    let text = String::from_utf8_lossy(&captured.0.lock().expect("lines")).into_owned();
    for event in ["call dispatched", "call done"] {
        assert!(
            text.lines()
                .any(|l| l.contains(event) && l.contains("request_id=req-test")),
            "{event} names the request id:\n{text}"
        );
    }
}
