//! The pool against fake gateways speaking the real protocol over real QUIC
//! on loopback: they count connections, calls and streams in flight, and can
//! close their connections or stop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex as StdMutex;
use std::sync::atomic::AtomicUsize;

use bytes::Bytes;
use protocol::{Message, ResultHead, Timings};
use tokio::task::JoinSet;
use transport::TlsFiles;

use super::*;
use crate::CallOptions;

/// Generous bound for things that take milliseconds.
const WAIT: Duration = Duration::from_secs(10);

/// What a fake gateway saw.
#[derive(Debug, Default)]
struct Seen {
    /// Connections accepted.
    connections: AtomicUsize,
    /// Call heads read.
    calls: AtomicUsize,
    /// Most calls in flight at once on one connection.
    max_in_flight: AtomicUsize,
    /// Open connections, to close them from the server side.
    open: StdMutex<Vec<quinn::Connection>>,
}

/// A gateway stand-in: answers `Call` with its payload after sleeping the
/// milliseconds the service name gives (`sleep-300`), `ListNodes` with no
/// nodes. The result's node id is the fake's name.
struct Fake {
    name: &'static str,
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

/// Certificates shared by every fake of a test (so one CA file trusts all).
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        TlsFiles::in_dir(dir.path())
            .create_if_missing(&["localhost".into(), "127.0.0.1".into()])
            .expect("certificates");
        Self { dir }
    }

    fn ca(&self) -> PathBuf {
        TlsFiles::in_dir(self.dir.path()).ca
    }

    fn files(&self) -> TlsFiles {
        TlsFiles::in_dir(self.dir.path())
    }
}

impl Fake {
    fn start(name: &'static str, certs: &Certs) -> Self {
        Self::start_on(name, certs, "127.0.0.1:0".parse().expect("addr"))
            .expect("fake gateway binds")
    }

    fn start_on(name: &'static str, certs: &Certs, listen: SocketAddr) -> Option<Self> {
        let endpoint =
            transport::server_endpoint(listen, &certs.files(), &EndpointConfig::default()).ok()?;
        let addr = endpoint.local_addr().expect("local addr");
        let seen = Arc::new(Seen::default());
        let task = tokio::spawn(serve(name, endpoint.clone(), seen.clone()));
        Some(Self {
            name,
            endpoint,
            addr,
            seen,
            task,
        })
    }

    /// Binds `addr` again once the old socket is gone.
    async fn restart_on(name: &'static str, certs: &Certs, addr: SocketAddr) -> Self {
        let start = Instant::now();
        loop {
            if let Some(fake) = Self::start_on(name, certs, addr) {
                return fake;
            }
            assert!(start.elapsed() < WAIT, "cannot bind {addr} again");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn address(&self) -> String {
        self.addr.to_string()
    }

    fn connections(&self) -> usize {
        self.seen.connections.load(Ordering::SeqCst)
    }

    fn calls(&self) -> usize {
        self.seen.calls.load(Ordering::SeqCst)
    }

    fn max_in_flight(&self) -> usize {
        self.seen.max_in_flight.load(Ordering::SeqCst)
    }

    /// Closes every connection from the server side (the endpoint stays).
    fn close_connections(&self) {
        for connection in self.seen.open.lock().expect("lock").drain(..) {
            connection.close(9u32.into(), b"fake gateway closed it");
        }
    }

    /// Stops: closes the connections and the endpoint and frees the port.
    async fn stop(self) {
        self.close_connections();
        self.endpoint.close(5u32.into(), b"fake gateway stopping");
        self.task.abort();
        let _ = self.task.await;
        self.endpoint.wait_idle().await;
    }
}

async fn serve(name: &'static str, endpoint: quinn::Endpoint, seen: Arc<Seen>) {
    while let Some(incoming) = endpoint.accept().await {
        let Ok(connection) = incoming.await else {
            continue;
        };
        seen.connections.fetch_add(1, Ordering::SeqCst);
        seen.open.lock().expect("lock").push(connection.clone());
        tokio::spawn(serve_connection(name, connection, seen.clone()));
    }
}

async fn serve_connection(name: &'static str, connection: quinn::Connection, seen: Arc<Seen>) {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut calls = JoinSet::new();
    while let Ok((send, recv)) = connection.accept_bi().await {
        let codec = Codec::default();
        let (send, recv) = (FramedSend::new(send, codec), FramedRecv::new(recv, codec));
        calls.spawn(serve_stream(
            name,
            send,
            recv,
            seen.clone(),
            in_flight.clone(),
        ));
    }
}

async fn serve_stream(
    name: &'static str,
    mut send: FramedSend,
    mut recv: FramedRecv,
    seen: Arc<Seen>,
    in_flight: Arc<AtomicUsize>,
) {
    match recv.expect("a request").await {
        Ok(Message::Call(head)) => {
            seen.calls.fetch_add(1, Ordering::SeqCst);
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
            let payload = recv
                .recv_payload(head.payload_len, u64::MAX)
                .await
                .unwrap_or_default();
            let ms = head
                .service
                .strip_prefix("sleep-")
                .and_then(|ms| ms.parse().ok())
                .unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let result = ResultHead {
                payload_len: payload.len() as u64,
                node_id: name.into(),
                policy: "fake".into(),
                timings: Timings::default(),
                cache: None,
            };
            in_flight.fetch_sub(1, Ordering::SeqCst);
            if send.send(&Message::Result(result)).await.is_ok()
                && send.send_payload(&payload).await.is_ok()
            {
                let _ = send.finish();
                send.stopped().await;
            }
        }
        Ok(Message::ListNodes) => {
            let answered = send.send(&Message::Nodes(Vec::new())).await;
            if answered.is_ok() {
                let _ = send.finish();
                send.stopped().await;
            }
        }
        _ => {}
    }
}

fn config(ca: &Path, gateways: &[String]) -> ClientConfig {
    ClientConfig::new("unused", ca)
        .with_gateways(gateways.iter().cloned())
        .with_connect_timeout(Duration::from_millis(500))
}

async fn call(client: &Client, service: &str, payload: &str) -> Result<String, ClientError> {
    let result = client
        .call(service, payload.to_string(), CallOptions::default())
        .await?;
    assert_eq!(result.data, Bytes::from(payload.to_string()));
    Ok(result.node_id)
}

/// A UDP port nothing listens on (bound, then released).
fn dead_address() -> String {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = socket.local_addr().expect("addr");
    drop(socket);
    addr.to_string()
}

/// Polls `check` until it holds, for at most [`WAIT`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < WAIT, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn client_is_send_sync_and_clone() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<Client>();
}

#[test]
fn config_defaults_and_builders() {
    let config = ClientConfig::new("a:1", "ca.pem");
    assert_eq!(config.pool, PoolConfig::default());
    assert_eq!(config.pool.pool_size, 1);
    assert_eq!(config.pool.max_streams_per_connection, 256);
    assert_eq!(config.gateways().collect::<Vec<_>>(), ["a:1"]);

    let config = config
        .with_gateways(["b:2", "c:3", "d:4"])
        .with_pool_size(3)
        .with_max_streams_per_connection(8)
        .with_connect_timeout(Duration::from_millis(250));
    assert_eq!(config.gateway, "b:2");
    assert_eq!(config.fallback_gateways, ["c:3", "d:4"]);
    assert_eq!(config.gateways().collect::<Vec<_>>(), ["b:2", "c:3", "d:4"]);
    assert_eq!(config.pool.pool_size, 3);
    assert_eq!(config.pool.max_streams_per_connection, 8);
    assert_eq!(config.pool.connect_timeout, Duration::from_millis(250));

    let unchanged = config.clone().with_gateways(Vec::<String>::new());
    assert_eq!(unchanged, config);
}

#[test]
fn backoff_doubles_up_to_its_maximum() {
    let config = PoolConfig::default();
    let got: Vec<u64> = (1..=8).map(|n| backoff(&config, n).as_secs()).collect();
    assert_eq!(got, [1, 2, 4, 8, 16, 30, 30, 30]);
    assert_eq!(backoff(&config, u32::MAX), config.max_down_backoff);
}

#[tokio::test]
async fn unusable_configurations_are_refused_before_any_network() {
    let certs = Certs::new();
    let refused = |config: ClientConfig| async move {
        match Client::connect(config).await {
            Err(ClientError::Config(message)) => message,
            other => panic!("expected a configuration error, got {other:?}"),
        }
    };
    let base = ClientConfig::new("127.0.0.1:9", certs.ca());
    assert!(
        refused(base.clone().with_pool_size(0))
            .await
            .contains("pool_size")
    );
    assert!(
        refused(base.clone().with_max_streams_per_connection(0))
            .await
            .contains("max_streams_per_connection")
    );
    assert!(
        refused(base.clone().with_gateways(["127.0.0.1:9", " "]))
            .await
            .contains("empty gateway address")
    );
    let mut missing_ca = base.clone();
    missing_ca.ca = certs.dir.path().join("nope.pem");
    refused(missing_ca).await;
    // No port: resolution fails at once, without a DNS query.
    let unresolvable = base.with_gateways(["no-port-here"]);
    assert!(refused(unresolvable).await.contains("no-port-here"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_from_many_tasks_and_threads_share_one_connection() {
    let certs = Certs::new();
    let fake = Fake::start("a", &certs);
    let client = Client::connect(config(&certs.ca(), &[fake.address()]))
        .await
        .expect("connects");

    let mut tasks = JoinSet::new();
    for i in 0..40 {
        let client = client.clone();
        tasks.spawn(async move { call(&client, "sleep-20", &format!("task {i}")).await });
    }
    // Other OS threads, each with a runtime of its own.
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async {
                    for i in 0..5 {
                        call(&client, "echo", &format!("thread {t} call {i}"))
                            .await
                            .expect("call from a thread");
                    }
                });
            })
        })
        .collect();
    while let Some(done) = tasks.join_next().await {
        assert_eq!(done.expect("task").expect("call"), "a");
    }
    for thread in threads {
        thread.join().expect("thread");
    }
    client.nodes().await.expect("nodes");

    assert_eq!(fake.calls(), 50);
    assert_eq!(fake.connections(), 1, "every call shared one connection");
    let stats = client.pool_stats();
    assert_eq!(stats.connections(), 1, "{stats:?}");
    assert_eq!(stats.streams_in_use(), 0, "{stats:?}");
    assert_eq!(stats.gateways[0].connects, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_grows_to_its_size_under_load_and_no_further() {
    let certs = Certs::new();
    let fake = Fake::start("a", &certs);
    let client = Client::connect(config(&certs.ca(), &[fake.address()]).with_pool_size(3))
        .await
        .expect("connects");
    assert_eq!(
        client.pool_stats().connections(),
        1,
        "one connection to start"
    );

    // Overlapping slow calls: each finds the least-loaded connection busy
    // and grows the pool (in the background) until it is full.
    let mut tasks = JoinSet::new();
    let start = Instant::now();
    while client.pool_stats().connections() < 3 {
        assert!(start.elapsed() < WAIT, "{:?}", client.pool_stats());
        let client = client.clone();
        tasks.spawn(async move { call(&client, "sleep-200", "x").await });
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..20 {
        let client = client.clone();
        tasks.spawn(async move { call(&client, "sleep-100", "y").await });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task").expect("call");
    }
    let stats = client.pool_stats();
    assert_eq!(stats.connections(), 3, "{stats:?}");
    assert_eq!(stats.gateways[0].connects, 3, "{stats:?}");
    assert_eq!(fake.connections(), 3, "never more than pool_size");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_cap_bounds_the_calls_in_flight_per_connection() {
    let certs = Certs::new();
    let fake = Fake::start("a", &certs);
    let client =
        Client::connect(config(&certs.ca(), &[fake.address()]).with_max_streams_per_connection(2))
            .await
            .expect("connects");

    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..6 {
        let client = client.clone();
        tasks.spawn(async move { call(&client, "sleep-300", &i.to_string()).await });
    }
    let mut most = 0;
    while !tasks.is_empty() {
        most = most.max(client.pool_stats().streams_in_use());
        if let Ok(Some(done)) =
            tokio::time::timeout(Duration::from_millis(5), tasks.join_next()).await
        {
            done.expect("task").expect("call");
        }
    }
    assert_eq!(fake.calls(), 6);
    assert_eq!(fake.max_in_flight(), 2, "the gateway saw at most 2 at once");
    assert!(most <= 2, "the pool counted {most} streams in use");
    // Three waves of two: no faster than 3 × 300 ms.
    assert!(start.elapsed() >= Duration::from_millis(900));
    assert_eq!(fake.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_over_to_the_next_gateway_when_the_first_is_dead() {
    let certs = Certs::new();
    let fake = Fake::start("b", &certs);
    let stopped = Fake::start("stopped", &certs);
    let stopped_address = stopped.address();
    stopped.stop().await;
    let gateways = [dead_address(), stopped_address, fake.address()];
    let client = Client::connect(config(&certs.ca(), &gateways))
        .await
        .expect("connects through the third address");
    for i in 0..10 {
        assert_eq!(
            call(&client, "echo", &i.to_string()).await.expect("call"),
            "b"
        );
    }
    let stats = client.pool_stats();
    for dead in &stats.gateways[..2] {
        assert_eq!(dead.connections, 0, "{stats:?}");
        assert!(dead.failed_connects >= 1, "{stats:?}");
        assert!(dead.last_error.is_some(), "{stats:?}");
    }
    assert_eq!(stats.gateways[2].connections, 1, "{stats:?}");
    assert_eq!(fake.connections(), 1);
    assert_eq!(fake.calls(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reachable_gateway_is_a_retry_safe_connect_error_naming_each() {
    let certs = Certs::new();
    let gateways = [dead_address(), dead_address()];
    let config = config(&certs.ca(), &gateways).with_connect_timeout(Duration::from_millis(200));
    let error = Client::connect(config).await.expect_err("nothing answers");
    assert!(matches!(error, ClientError::Connect(_)), "{error:?}");
    assert!(error.retry_safe());
    let text = error.to_string();
    assert!(
        text.contains(&gateways[0]) && text.contains(&gateways[1]),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_gateway_closed_is_replaced_on_the_next_call() {
    let certs = Certs::new();
    let fake = Fake::start("a", &certs);
    let client = Client::connect(config(&certs.ca(), &[fake.address()]))
        .await
        .expect("connects");
    call(&client, "echo", "before").await.expect("first call");

    fake.close_connections();
    eventually("the client sees the loss", || {
        client.pool_stats().gateways[0].losses == 1
    })
    .await;
    // Its only gateway is down, so it is dialled anyway.
    assert_eq!(call(&client, "echo", "after").await.expect("healed"), "a");
    assert_eq!(fake.connections(), 2);
    assert_eq!(client.pool_stats().connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_flight_when_its_connection_dies_fails_and_is_not_sent_again() {
    let certs = Certs::new();
    let fake = Fake::start("a", &certs);
    let client = Client::connect(config(&certs.ca(), &[fake.address()]))
        .await
        .expect("connects");
    let slow = {
        let client = client.clone();
        tokio::spawn(async move { call(&client, "sleep-5000", "once").await })
    };
    eventually("the gateway has the call", || fake.calls() == 1).await;
    fake.close_connections();
    let error = tokio::time::timeout(WAIT, slow)
        .await
        .expect("fails promptly")
        .expect("task")
        .expect_err("the connection died under the call");
    assert!(matches!(error, ClientError::Io(_)), "{error:?}");
    assert!(!error.retry_safe(), "it may have run");
    assert_eq!(call(&client, "echo", "next").await.expect("next call"), "a");
    assert_eq!(fake.calls(), 2, "the lost call was not sent again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_go_back_to_the_first_gateway_once_it_returns() {
    let certs = Certs::new();
    let first = Fake::start("first", &certs);
    let second = Fake::start("second", &certs);
    let addr = first.addr;
    let mut config = config(&certs.ca(), &[first.address(), second.address()]);
    config.pool.down_backoff = Duration::from_millis(100);
    config.pool.max_down_backoff = Duration::from_millis(200);
    let client = Client::connect(config).await.expect("connects");
    assert_eq!(call(&client, "echo", "1").await.expect("call"), "first");

    first.stop().await;
    eventually("the client sees the loss", || {
        client.pool_stats().gateways[0].losses == 1
    })
    .await;
    assert_eq!(call(&client, "echo", "2").await.expect("call"), "second");

    let first = Fake::restart_on("first", &certs, addr).await;
    // After the backoff a background dial reconnects the first gateway;
    // calls keep succeeding meanwhile and then prefer it again.
    let start = Instant::now();
    loop {
        let served = call(&client, "echo", "3").await.expect("call");
        if served == "first" {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "never went back: {:?}",
            client.pool_stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(first.connections(), 1);
    assert_eq!(second.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ends_every_connection_and_a_later_call_reconnects() {
    let certs = Certs::new();
    let fake = Fake::start("a", &certs);
    let client = Client::connect(config(&certs.ca(), &[fake.address()]))
        .await
        .expect("connects");
    let clone = client.clone();
    client.close().await;
    let stats = clone.pool_stats();
    assert_eq!(stats.connections(), 0);
    assert_eq!(stats.gateways[0].losses, 0, "a close is not a loss");
    assert!(!stats.gateways[0].down);
    assert_eq!(
        call(&clone, "echo", "again").await.expect("reconnects"),
        "a"
    );
    assert_eq!(fake.connections(), 2);
    assert_eq!(fake.name, "a");
}
