//! The pool's configuration, backoff and connect errors, without a gateway.
//! Its behaviour against real gateways (sharing, growth, the stream cap,
//! failover, healing after a restart, a lost call not sent twice) is tested
//! end to end in `e2e/tests/e2e/pool.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use transport::TlsFiles;

use super::*;
use crate::Client;

/// A CA and server certificate in a temporary folder (a CA file to trust).
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
}

fn config(ca: &Path, gateways: &[String]) -> ClientConfig {
    ClientConfig::new("unused", ca)
        .with_gateways(gateways.iter().cloned())
        .with_connect_timeout(Duration::from_millis(500))
}

/// A UDP port nothing listens on (bound, then released).
fn dead_address() -> String {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = socket.local_addr().expect("addr");
    drop(socket);
    addr.to_string()
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
    assert_eq!(config.pool.pool_size, 4);
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

fn addresses_of(order: &[Arc<Gateway>]) -> Vec<&str> {
    order.iter().map(|g| g.address()).collect()
}

#[test]
fn a_cluster_client_starts_each_call_at_the_next_gateway() {
    let certs = Certs::new();
    let gateways = ["a:1".to_string(), "b:2".into(), "c:3".into()];
    let pool = Pool::new(&config(&certs.ca(), &gateways).with_cluster(true)).unwrap();
    let firsts: Vec<String> = (0..6)
        .map(|_| pool.order(None)[0].address().to_string())
        .collect();
    assert_eq!(firsts, ["a:1", "b:2", "c:3", "a:1", "b:2", "c:3"]);
    // The gateway a call just failed on is tried last.
    let b = Arc::clone(&pool.gateways()[1]);
    for _ in 0..3 {
        let order = pool.order(Some(&b));
        assert_eq!(order.len(), 3);
        assert_eq!(order[2].address(), "b:2");
    }

    // Without the cluster flag every call tries the gateways in order.
    let ordered = Pool::new(&config(&certs.ca(), &gateways)).unwrap();
    for _ in 0..3 {
        assert_eq!(addresses_of(&ordered.order(None)), ["a:1", "b:2", "c:3"]);
    }
}

#[test]
fn a_new_member_list_keeps_the_state_of_the_gateways_it_still_names() {
    let certs = Certs::new();
    let gateways = ["a:1".to_string(), "b:2".into()];
    let pool = Pool::new(&config(&certs.ca(), &gateways).with_cluster(true)).unwrap();
    let b = Arc::clone(&pool.gateways()[1]);
    pool.mark_down(&b, &mut b.lock(), "test failure".into(), false);

    assert!(!pool.set_addresses(&["a:1".to_string(), "b:2".into()]));
    assert!(!pool.set_addresses(&[]), "an empty list changes nothing");
    assert_eq!(pool.gateway_count(), 2);

    assert!(pool.set_addresses(&["b:2".to_string(), "c:3".into()]));
    let now = pool.gateways();
    assert_eq!(addresses_of(&now), ["b:2", "c:3"]);
    assert!(Arc::ptr_eq(&now[0], &b), "b keeps its state");
    let stats = pool.stats();
    assert!(stats.gateways[0].down, "{stats:?}");
    assert!(!stats.gateways[1].down, "{stats:?}");
    assert!(!pool.has_connection());
}
