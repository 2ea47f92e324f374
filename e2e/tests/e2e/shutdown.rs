//! Graceful shutdown. A gateway told to stop (SIGTERM) finishes its calls in
//! flight, answers new ones `shutting down` (retry-safe), then closes with
//! the shutdown code; an SDK with a fallback gateway moves there at once.
//! An agent on SIGTERM tells the gateway it drains, gets no new call,
//! finishes those it runs, then exits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use client::{Client, ClientConfig, ErrorKind};
use gateway::GatewayConfig;
use tokio::task::JoinSet;

use crate::common::{Fleet, TOKEN, eventually, service};

/// Generous bound for what takes milliseconds.
const WAIT: Duration = Duration::from_secs(20);
/// How long the calls in flight during a shutdown run, ms.
const SLOW_MS: &str = "1500";

fn sleep_and_echo() -> String {
    format!(
        "{}{}",
        service("sleep", "sleep", "max_concurrent = 8"),
        service("echo", "echo", "max_concurrent = 8")
    )
}

/// Starts `n` slow calls on `client`; each returns the node that served it.
fn slow_calls(client: &Client, n: usize) -> JoinSet<Result<String, client::ClientError>> {
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let client = client.clone();
        tasks.spawn(async move { client.call("sleep", SLOW_MS).await.map(|r| r.meta.node_id) });
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_shutting_down_finishes_its_calls_and_clients_fail_over_at_once() {
    // Both gateways keep their certificates in one folder, so one CA file
    // trusts both.
    let shared = tempfile::tempdir().unwrap();
    let tweak = |config: &mut GatewayConfig| {
        config.data_dir = shared.path().to_path_buf();
        config.plugin_cache = false;
        config.shutdown_grace_s = 30;
    };
    let mut first = Fleet::start(tweak).await;
    let mut second = Fleet::start(tweak).await;
    first.spawn_agent("node-first", TOKEN, &sleep_and_echo());
    second.spawn_agent("node-second", TOKEN, &sleep_and_echo());
    first.wait_nodes(1).await;
    second.wait_nodes(1).await;
    let both = Client::connect(
        ClientConfig::new("unused", first.ca())
            .with_gateways([first.addr.clone(), second.addr.clone()]),
    )
    .await
    .expect("connects");
    let only_first = Client::connect(ClientConfig::new(first.addr.clone(), first.ca()))
        .await
        .expect("connects");

    let mut in_flight = slow_calls(&both, 3);
    let node = first.gateway.registry().get("node-first").expect("node");
    eventually(WAIT, || match node.in_flight("sleep") {
        3 => Ok(()),
        n => Err(format!("{n} of 3 calls running")),
    })
    .await;

    first.shut_down_gateway();
    // While it drains, a new call there is refused, retry-safe.
    let start = Instant::now();
    let refused = loop {
        match only_first.call("echo", "late").await {
            Err(e) if e.kind() == Some(ErrorKind::ShuttingDown) => break e,
            Ok(r) => {
                assert!(start.elapsed() < WAIT, "still served after the stop: {r:?}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("expected `shutting down`, got {e:?}"),
        }
    };
    assert!(refused.retry_safe(), "{refused}");
    // The client with a fallback moves there at once, even while the
    // first gateway's connection is still open.
    let start = Instant::now();
    let moved = both
        .call("echo", "moved")
        .await
        .expect("served by the fallback");
    let failover = start.elapsed();
    assert_eq!(moved.meta.node_id, "node-second");
    println!(
        "failover to the second gateway while the first drains: {} ms (idle timeout 10 s)",
        failover.as_millis()
    );
    assert!(failover < Duration::from_secs(5), "{failover:?}");

    // The calls in flight at the stop finish on the first gateway.
    while let Some(done) = in_flight.join_next().await {
        assert_eq!(done.unwrap().expect("call finishes"), "node-first");
    }
    // Its connections were retired at the `shutting down` answer; the
    // gateway then closes them, and the next calls go to the second one.
    eventually(WAIT, || {
        let stats = both.pool_stats();
        let first = &stats.gateways[0];
        if first.connections == 0
            && first
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("shutting down"))
        {
            Ok(())
        } else {
            Err(format!("{stats:?}"))
        }
    })
    .await;
    let start = Instant::now();
    let after = both.call("echo", "after").await.expect("served");
    assert_eq!(after.meta.node_id, "node-second");
    println!(
        "a call after the first gateway closed: {} ms",
        start.elapsed().as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_without_calls_in_flight_closes_at_once() {
    let mut fleet = Fleet::start(|config| config.shutdown_grace_s = 30).await;
    fleet.spawn_agent("node-a", TOKEN, &sleep_and_echo());
    fleet.wait_nodes(1).await;
    let client = fleet.client().await;
    client.call("echo", "x").await.expect("served");
    let start = Instant::now();
    fleet.shut_down_gateway();
    eventually(WAIT, || {
        let stats = client.pool_stats();
        // The close code says "shutting down", not a plain loss.
        if stats.gateways[0].losses >= 1
            && stats.gateways[0]
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("shutting down"))
        {
            Ok(())
        } else {
            Err(format!("{stats:?}"))
        }
    })
    .await;
    let closed = start.elapsed();
    println!(
        "an idle gateway closed {} ms after the stop",
        closed.as_millis()
    );
    assert!(
        closed < Duration::from_secs(10),
        "no wait for the grace: {closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_sigterm_finishes_its_calls_and_gets_no_new_ones() {
    let mut fleet = Fleet::start(|_| {}).await;
    let index = fleet.spawn_agent_process("node-a", TOKEN, &sleep_and_echo());
    fleet.wait_nodes(1).await;
    let client = fleet.client().await;
    let mut in_flight = slow_calls(&client, 3);
    let node_a = fleet.gateway.registry().get("node-a").expect("node-a");
    eventually(WAIT, || match node_a.in_flight("sleep") {
        3 => Ok(()),
        n => Err(format!("{n} of 3 calls running")),
    })
    .await;
    fleet.spawn_agent("node-b", TOKEN, &sleep_and_echo());
    fleet.wait_nodes(2).await;

    let pid = fleet.agent(index).child.id();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    eventually(WAIT, || {
        if node_a.is_draining() {
            Ok(())
        } else {
            Err("node-a not draining yet".into())
        }
    })
    .await;
    // New calls go to node-b only.
    for i in 0..10 {
        let r = client
            .call("echo", format!("new {i}"))
            .await
            .expect("served");
        assert_eq!(r.meta.node_id, "node-b");
    }
    // node-a's calls finish.
    while let Some(done) = in_flight.join_next().await {
        assert_eq!(done.unwrap().expect("call finishes"), "node-a");
    }
    // Then it exits cleanly.
    let agent = fleet.agent(index);
    let start = Instant::now();
    let exit = loop {
        if let Some(exit) = agent.child.try_wait().expect("wait") {
            break exit;
        }
        assert!(start.elapsed() < WAIT, "the agent did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit:?}\n{}", agent.log_text());
    let log = agent.log_text();
    assert!(log.contains("drained"), "{log}");
    fleet.wait_nodes(1).await;
}
