//! Direct connections against a real QUIC server endpoint (the transport
//! crate's, with a certificate from a CA in a temporary folder): one
//! connection per node address, the certificate checked against the
//! address's host, and dials bounded by their timeout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};

use transport::{EndpointConfig, TlsFiles};

use super::*;
use crate::ClientConfig;

/// A QUIC server on loopback with a certificate naming `names`, counting
/// the connections it accepts (and keeping them open).
struct Server {
    _dir: tempfile::TempDir,
    ca: std::path::PathBuf,
    port: u16,
    accepted: Arc<AtomicUsize>,
    _endpoint: quinn::Endpoint,
}

impl Server {
    fn start(names: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = TlsFiles::in_dir(dir.path());
        let names: Vec<String> = names.iter().map(|n| (*n).to_string()).collect();
        files.create_if_missing(&names).expect("certificates");
        let endpoint = transport::server_endpoint(
            "127.0.0.1:0".parse().expect("addr"),
            &files,
            &EndpointConfig::default(),
        )
        .expect("server endpoint");
        let port = endpoint.local_addr().expect("addr").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (count, server) = (Arc::clone(&accepted), endpoint.clone());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some(incoming) = server.accept().await {
                if let Ok(connection) = incoming.await {
                    count.fetch_add(1, Ordering::SeqCst);
                    held.push(connection);
                }
            }
        });
        Self {
            ca: files.ca,
            _dir: dir,
            port,
            accepted,
            _endpoint: endpoint,
        }
    }

    /// Connections accepted, once `want` were or after 5 s.
    async fn accepted(&self, want: usize) -> usize {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let now = self.accepted.load(Ordering::SeqCst);
            if now >= want || Instant::now() > until {
                // Give a wrong extra connection time to show up too.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return self.accepted.load(Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn pool(&self) -> Pool {
        Pool::new(&ClientConfig::new("unused:1", &self.ca)).expect("pool")
    }
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

#[tokio::test]
async fn calls_to_one_node_share_one_connection() {
    let server = Server::start(&["localhost", "127.0.0.1"]);
    let pool = server.pool();
    let direct = DirectPool::default();
    let address = format!("127.0.0.1:{}", server.port);
    let codec = Codec::default();
    for _ in 0..3 {
        direct
            .open(&pool, codec, &address, Duration::from_secs(5), far())
            .await
            .expect("a stream");
    }
    assert_eq!(server.accepted(1).await, 1);
    // The DNS name of the same node is another address: its own connection,
    // checked against that name.
    let by_name = format!("localhost:{}", server.port);
    direct
        .open(&pool, codec, &by_name, Duration::from_secs(5), far())
        .await
        .expect("a stream by name");
    assert_eq!(server.accepted(2).await, 2);
    direct.close();
    // After a close, the next call dials again.
    direct
        .open(&pool, codec, &address, Duration::from_secs(5), far())
        .await
        .expect("a stream after close");
    assert_eq!(server.accepted(3).await, 3);
}

#[tokio::test]
async fn a_certificate_without_the_host_is_unreachable() {
    let server = Server::start(&["localhost"]);
    let pool = server.pool();
    let address = format!("127.0.0.1:{}", server.port);
    let error = DirectPool::default()
        .open(
            &pool,
            Codec::default(),
            &address,
            Duration::from_secs(5),
            far(),
        )
        .await
        .expect_err("the certificate does not name 127.0.0.1");
    let DirectError::Unreachable(error) = error else {
        panic!("not unreachable: {error:?}");
    };
    assert!(error.contains(&address), "{error}");
}

#[tokio::test]
async fn a_closed_port_is_unreachable_within_the_dial_timeout_then_at_once() {
    let server = Server::start(&["127.0.0.1"]);
    let pool = server.pool();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let dead = socket.local_addr().expect("addr").to_string();
    drop(socket);
    let direct = DirectPool::default();
    let codec = Codec::default();
    let unreachable = |error: DirectError| match error {
        DirectError::Unreachable(error) => error,
        other => panic!("not unreachable: {other:?}"),
    };

    // The call's deadline bounds the dial; a dial it cut short does not
    // mark the node down.
    let started = Instant::now();
    let soon = started + Duration::from_millis(200);
    let error = direct
        .open(&pool, codec, &dead, Duration::from_secs(30), soon)
        .await
        .expect_err("nothing listens");
    let text = unreachable(error);
    assert!(text.contains("no answer within"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // A dial that used its whole timeout marks the address down ...
    let error = direct
        .open(&pool, codec, &dead, Duration::from_millis(300), far())
        .await
        .expect_err("nothing listens");
    let first = unreachable(error);
    assert!(first.contains("no answer within 300 ms"), "{first}");
    assert!(first.contains(&dead), "{first}");
    // ... so the next call fails at once, saying why.
    let started = Instant::now();
    let error = direct
        .open(&pool, codec, &dead, Duration::from_secs(30), far())
        .await
        .expect_err("down");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let again = unreachable(error);
    assert!(again.contains("no answer within 300 ms"), "{again}");
}

#[test]
fn the_server_name_is_the_host_of_the_direct_address() {
    assert_eq!(host_of("10.0.0.5:7443").expect("ip"), "10.0.0.5");
    assert_eq!(
        host_of("node-a.example:7443").expect("dns"),
        "node-a.example"
    );
    assert_eq!(host_of("[::1]:7443").expect("v6"), "::1");
    for bad in ["", "10.0.0.5", "host:", ":7443", "host:port", "[::1]"] {
        assert!(host_of(bad).is_none(), "{bad}");
    }
}
