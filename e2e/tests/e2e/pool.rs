//! The SDK's connection pool against real gateways: sharing, failover to
//! the next gateway, healing after a gateway restart, the stream cap.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::{Client, ClientConfig};
use gateway::{Gateway, GatewayConfig};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::common::{ADMIN, Fleet, TOKEN, plugins_dir, service};

/// Generous bound for what takes milliseconds.
const WAIT: Duration = Duration::from_secs(20);

/// A UDP port nothing listens on (bound, then released).
fn dead_address() -> String {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    drop(socket);
    addr.to_string()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < WAIT, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn echo(client: &Client, text: &str) -> String {
    let result = client
        .call("echo", text.to_string())
        .await
        .expect("echo call");
    assert_eq!(result.data, Bytes::from(text.to_string()));
    result.meta.node_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_from_many_tasks_share_a_pool_of_its_size() {
    let mut fleet = Fleet::start(|_| {}).await;
    let services = format!(
        "{}{}",
        service("sleep", "sleep", "max_concurrent = 64"),
        service("echo", "echo", "max_concurrent = 64")
    );
    fleet.spawn_agent("node-a", TOKEN, &services);
    fleet.wait_nodes(1).await;
    // A cap of 4 streams: the pool grows in the background at 3 in flight.
    let client = Client::connect(
        ClientConfig::new(fleet.addr.clone(), fleet.ca())
            .with_pool_size(2)
            .with_max_streams_per_connection(4),
    )
    .await
    .expect("connects");
    assert_eq!(client.pool_stats().connections(), 1);

    // Overlapping slow calls find the one connection busy: the pool grows
    // to its size, then many tasks share it.
    let mut tasks = JoinSet::new();
    let start = Instant::now();
    while client.pool_stats().connections() < 2 {
        assert!(start.elapsed() < WAIT, "{:?}", client.pool_stats());
        let client = client.clone();
        tasks.spawn(async move { client.call("sleep", "200").await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 0..40 {
        let client = client.clone();
        tasks.spawn(async move { client.call("echo", format!("call {i}")).await.map(|_| ()) });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().expect("call succeeds");
    }
    let stats = client.pool_stats();
    assert_eq!(stats.gateways.len(), 1);
    assert_eq!(stats.gateways[0].connections, 2, "{stats:?}");
    assert_eq!(stats.gateways[0].connects, 2, "never more than pool_size");
    assert_eq!(stats.streams_in_use(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_go_to_the_second_gateway_when_the_first_address_is_dead() {
    let mut fleet = Fleet::start(|_| {}).await;
    fleet.spawn_agent("node-a", TOKEN, &service("echo", "echo", ""));
    fleet.wait_nodes(1).await;
    let config = ClientConfig::new("unused", fleet.ca())
        .with_gateways([dead_address(), fleet.addr.clone()])
        .with_connect_timeout(Duration::from_millis(500));
    let client = Client::connect(config)
        .await
        .expect("connects via the second");
    for i in 0..10 {
        assert_eq!(echo(&client, &format!("call {i}")).await, "node-a");
    }
    let stats = client.pool_stats();
    assert_eq!(stats.gateways[0].connections, 0, "{stats:?}");
    assert!(stats.gateways[0].failed_connects >= 1, "{stats:?}");
    assert_eq!(stats.gateways[1].connections, 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_over_when_the_first_gateway_stops() {
    // Both gateways keep their certificates in one folder, so one CA file
    // trusts both.
    let shared = tempfile::tempdir().unwrap();
    let tweak = |config: &mut GatewayConfig| {
        config.data_dir = shared.path().to_path_buf();
        config.plugin_cache = false;
    };
    let mut first = Fleet::start(tweak).await;
    let mut second = Fleet::start(tweak).await;
    first.spawn_agent("node-first", TOKEN, &service("echo", "echo", ""));
    second.spawn_agent("node-second", TOKEN, &service("echo", "echo", ""));
    first.wait_nodes(1).await;
    second.wait_nodes(1).await;
    let config = ClientConfig::new("unused", first.ca())
        .with_gateways([first.addr.clone(), second.addr.clone()]);
    let client = Client::connect(config).await.expect("connects");
    assert_eq!(echo(&client, "before").await, "node-first");

    drop(first);
    eventually("the client sees the first gateway go", || {
        client.pool_stats().gateways[0].losses == 1
    })
    .await;
    for i in 0..5 {
        assert_eq!(echo(&client, &format!("after {i}")).await, "node-second");
    }
    let stats = client.pool_stats();
    assert!(stats.gateways[0].down, "{stats:?}");
    assert_eq!(stats.gateways[1].connections, 1, "{stats:?}");
}

/// A gateway run by hand, so that it can be stopped and started again on
/// the same port.
struct Running {
    gateway: Gateway,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

fn gateway_config(data_dir: &Path, listen: SocketAddr) -> GatewayConfig {
    GatewayConfig {
        listen,
        admin_listen: "127.0.0.1:0".parse().expect("address"),
        http: gateway::config::HttpConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            ..Default::default()
        },
        data_dir: data_dir.to_path_buf(),
        plugins_dir: plugins_dir(),
        agent_token: Some(TOKEN.into()),
        admin_token: Some(ADMIN.into()),
        pick_deadline_ms: 250,
        seed: Some(7),
        // These tests stop a gateway under its calls: no drain.
        shutdown_grace_s: 0,
        ..GatewayConfig::default()
    }
}

impl Running {
    /// Binds `listen` (retrying while the previous socket is released).
    async fn start(data_dir: &Path, listen: SocketAddr) -> Self {
        let start = Instant::now();
        let gateway = loop {
            match Gateway::bind(gateway_config(data_dir, listen)).await {
                Ok(gateway) => break gateway,
                Err(e) => {
                    assert!(start.elapsed() < WAIT, "cannot bind {listen}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = gateway.clone();
        let task = tokio::spawn(async move {
            serving
                .serve(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            gateway,
            stop,
            task,
        }
    }

    async fn wait_nodes(&self, n: usize) {
        eventually("the agent registers", || self.gateway.registry().len() == n).await;
    }

    /// Closes every connection (clients see the close) and frees the port.
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

/// An agent running in this process, hosting `service`, reconnecting fast
/// (every 50..200 ms) when its gateway goes; send on the sender to stop it.
fn in_process_agent(
    gateway: SocketAddr,
    ca: &Path,
    id: &str,
    service: &str,
    kind: node_agent::ServiceKind,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), node_agent::AgentError>>,
) {
    let mut agent = node_agent::AgentConfig::new(
        gateway.to_string(),
        ca,
        TOKEN,
        id,
        vec![node_agent::ServiceConfig::new(service, kind)],
    );
    agent.stats_interval_ms = 200;
    agent.reconnect = node_agent::ReconnectConfig {
        initial_ms: 50,
        max_ms: 200,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(node_agent::run(agent, async {
        let _ = stopped.await;
    }));
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_restart_on_the_same_port_is_healed_on_the_next_call() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("gateway");
    let first = Running::start(&data_dir, "127.0.0.1:0".parse().unwrap()).await;
    let addr = first.gateway.local_addr().unwrap();
    let ca = first.gateway.ca_path().to_path_buf();

    // An in-process agent: it reconnects by itself when the gateway comes back.
    let (stop_agent, agent) =
        in_process_agent(addr, &ca, "node-r", "echo", node_agent::ServiceKind::Echo);
    first.wait_nodes(1).await;

    let client = Client::connect(ClientConfig::new(addr.to_string(), &ca))
        .await
        .expect("connects");
    assert_eq!(echo(&client, "before").await, "node-r");

    first.stop().await;
    eventually("the client sees the gateway go", || {
        client.pool_stats().gateways[0].losses == 1
    })
    .await;
    let second = Running::start(&data_dir, addr).await;
    second.wait_nodes(1).await;

    // No reconnect by hand: the next call dials the restarted gateway.
    assert_eq!(echo(&client, "after").await, "node-r");
    let stats = client.pool_stats();
    assert_eq!(stats.gateways[0].connects, 2, "{stats:?}");
    assert_eq!(stats.connections(), 1, "{stats:?}");

    let _ = stop_agent.send(());
    let _ = tokio::time::timeout(WAIT, agent).await;
    second.stop().await;
}

/// A fleet of one node with a `sleep` service of 8 slots, and a client of
/// `pool_size` connections with `streams` streams each.
async fn sleep_node_and_client(pool_size: usize, streams: u32) -> (Fleet, Client) {
    let mut fleet = Fleet::start(|_| {}).await;
    fleet.spawn_agent(
        "node-a",
        TOKEN,
        &service("sleep", "sleep", "max_concurrent = 8"),
    );
    fleet.wait_nodes(1).await;
    let client = Client::connect(
        ClientConfig::new(fleet.addr.clone(), fleet.ca())
            .with_pool_size(pool_size)
            .with_max_streams_per_connection(streams),
    )
    .await
    .expect("client connects");
    (fleet, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_cap_bounds_what_one_connection_has_in_flight() {
    let (fleet, client) = sleep_node_and_client(1, 2).await;

    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..6 {
        let client = client.clone();
        tasks.spawn(async move { client.call("sleep", "300").await });
    }
    let node = fleet.gateway.registry().all().pop().expect("the node");
    let (mut most_at_node, mut most_in_pool) = (0, 0);
    while !tasks.is_empty() {
        most_at_node = most_at_node.max(node.in_flight("sleep"));
        most_in_pool = most_in_pool.max(client.pool_stats().streams_in_use());
        if let Ok(Some(done)) =
            tokio::time::timeout(Duration::from_millis(5), tasks.join_next()).await
        {
            done.unwrap().expect("call succeeds");
        }
    }
    assert!(most_at_node <= 2, "the node ran {most_at_node} at once");
    assert!(most_in_pool <= 2, "the pool counted {most_in_pool}");
    assert!(
        most_at_node >= 1 && most_in_pool >= 1,
        "sampling saw the calls"
    );
    // Three waves of two calls of 300 ms.
    assert!(start.elapsed() >= Duration::from_millis(900));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_flight_when_its_gateway_goes_fails_and_is_not_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("gateway");
    let first = Running::start(&data_dir, "127.0.0.1:0".parse().unwrap()).await;
    let addr = first.gateway.local_addr().unwrap();
    let ca = first.gateway.ca_path().to_path_buf();
    let (stop_agent, agent) =
        in_process_agent(addr, &ca, "node-s", "sleep", node_agent::ServiceKind::Sleep);
    first.wait_nodes(1).await;
    let client = Client::connect(ClientConfig::new(addr.to_string(), &ca))
        .await
        .expect("connects");

    let slow = {
        let client = client.clone();
        tokio::spawn(async move { client.call("sleep", "5000").await })
    };
    eventually("the node runs the call", || {
        first
            .gateway
            .registry()
            .all()
            .iter()
            .any(|n| n.in_flight("sleep") == 1)
    })
    .await;
    first.stop().await;
    let error = tokio::time::timeout(WAIT, slow)
        .await
        .expect("fails promptly")
        .expect("task")
        .expect_err("the connection died under the call");
    assert!(!error.retry_safe(), "it may have run: {error:?}");

    let second = Running::start(&data_dir, addr).await;
    second.wait_nodes(1).await;
    let r = client
        .call("sleep", "1")
        .await
        .expect("the next call is served");
    assert_eq!(r.meta.node_id, "node-s");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let served: u64 = second
        .gateway
        .registry()
        .all()
        .iter()
        .map(|n| n.calls_total())
        .sum();
    assert_eq!(served, 1, "the lost call was not sent again");

    let _ = stop_agent.send(());
    let _ = tokio::time::timeout(WAIT, agent).await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_at_its_stream_cap_opens_another_connection() {
    let (fleet, client) = sleep_node_and_client(3, 2).await;
    assert_eq!(client.pool_stats().connections(), 1);
    let mut tasks = JoinSet::new();
    for _ in 0..6 {
        let client = client.clone();
        tasks.spawn(async move { client.call("sleep", "3000").await });
    }
    // Six calls over caps of two: three connections carry them all at once.
    let node = fleet.gateway.registry().all().pop().expect("the node");
    crate::common::eventually(Duration::from_secs(10), || {
        let stats = client.pool_stats();
        let running = node.in_flight("sleep");
        if running == 6 && stats.connections() == 3 {
            Ok(())
        } else {
            Err(format!("{running} calls running; pool {stats:?}"))
        }
    })
    .await;
    let stats = client.pool_stats();
    assert!(
        stats.gateways[0].streams_in_use.iter().all(|&n| n <= 2),
        "{stats:?}"
    );
    while let Some(done) = tasks.join_next().await {
        done.unwrap().expect("call succeeds");
    }
    assert_eq!(
        client.pool_stats().gateways[0].connects,
        3,
        "never more than pool_size"
    );
}
