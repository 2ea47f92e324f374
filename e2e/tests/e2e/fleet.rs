//! End to end: real QUIC on loopback, real agent processes, the real compiled
//! round-robin plugin.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::common::{Fleet, TOKEN, service};
use bytes::Bytes;
use client::ErrorKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_spread_across_two_agents_by_the_wasm_round_robin() {
    let mut fleet = Fleet::start(|_| {}).await;
    assert!(
        fleet
            .gateway
            .policy_names()
            .contains(&"round-robin".to_string())
    );
    fleet.spawn_agent("node-a", TOKEN, &service("echo", "echo", ""));
    fleet.spawn_agent("node-b", TOKEN, &service("echo", "echo", ""));
    fleet.wait_nodes(2).await;
    let client = fleet.client().await;

    let mut served = Vec::new();
    for i in 0..20 {
        let payload = format!("call {i}");
        let r = client
            .call("echo", payload.clone())
            .await
            .expect("call succeeds");
        assert_eq!(r.data, Bytes::from(payload));
        assert_eq!(
            r.meta.policy, "round-robin",
            "the wasm policy picked, not the fallback"
        );
        assert!(r.meta.timings.total_ms >= r.meta.timings.node_ms);
        served.push(r.meta.node_id);
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for node in &served {
        *counts.entry(node).or_default() += 1;
    }
    assert_eq!(counts.get("node-a"), Some(&10), "{served:?}");
    assert_eq!(counts.get("node-b"), Some(&10), "{served:?}");
    assert!(
        served.windows(2).all(|w| w[0] != w[1]),
        "alternates: {served:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_leaves_the_registry_and_calls_go_to_the_survivor() {
    let mut fleet = Fleet::start(|_| {}).await;
    let services = format!(
        "{}{}",
        service("sleep", "sleep", "max_concurrent = 4"),
        service("echo", "echo", "")
    );
    let a = fleet.spawn_agent_process("node-a", TOKEN, &services);
    fleet.spawn_agent("node-b", TOKEN, &services);
    fleet.wait_nodes(2).await;
    let client = std::sync::Arc::new(fleet.client().await);

    // Two slow calls: round-robin puts one on each node.
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .call("sleep", "3000")
                    .timeout(Duration::from_secs(10))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let killed_at = Instant::now();
    fleet.agent(a).kill();

    let mut outcomes = Vec::new();
    for call in calls {
        outcomes.push(call.await.unwrap());
    }
    let lost: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert_eq!(
        lost.len(),
        1,
        "exactly the call on the killed node fails: {outcomes:?}"
    );
    assert_eq!(lost[0].kind(), Some(ErrorKind::NodeLost), "{}", lost[0]);
    assert!(!lost[0].retry_safe(), "it may have run");
    let ok = outcomes.iter().find_map(|o| o.as_ref().ok()).unwrap();
    assert_eq!(ok.meta.node_id, "node-b");

    fleet.wait_nodes(1).await;
    assert!(
        killed_at.elapsed() < Duration::from_secs(5),
        "dropped after missed stats, took {:?}",
        killed_at.elapsed()
    );
    for _ in 0..6 {
        let r = client.call("echo", "x").await.expect("survivor serves");
        assert_eq!(r.meta.node_id, "node-b");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_agent_token_is_refused() {
    let mut fleet = Fleet::start(|_| {}).await;
    let bad = fleet.spawn_agent_process("intruder", "not-the-token", &service("echo", "echo", ""));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = fleet.agent(bad).child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "agent should give up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success(), "a refused agent exits non-zero");
    let log = fleet.agent(bad).log_text();
    assert!(log.contains("wrong agent token"), "log says why: {log}");
    assert_eq!(fleet.gateway.registry().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_service_oversized_payload_and_failing_command_give_clear_errors() {
    let mut fleet = Fleet::start(|c| c.max_payload_bytes = 4096).await;
    fleet.spawn_agent(
        "node-a",
        TOKEN,
        &format!(
            "{}{}",
            service(
                "fails",
                "command",
                r#"command = ["sh", "-c", "echo boom >&2; exit 3"]"#
            ),
            service("echo", "echo", "")
        ),
    );
    fleet.wait_nodes(1).await;
    let client = fleet.client().await;

    let e = client.call("nope", "x").await.unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::UnknownService), "{e}");
    assert!(e.to_string().contains("nope"), "{e}");

    let e = client.call("echo", vec![0u8; 10_000]).await.unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::PayloadTooLarge), "{e}");
    assert!(e.to_string().contains("4096"), "{e}");

    let e = client.call("fails", "in").await.unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::ServiceFailed), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("boom") && text.contains('3'),
        "stderr and exit code: {text}"
    );

    // The gateway is still healthy.
    let ok = client.call("echo", vec![1u8; 4096]).await.unwrap();
    assert_eq!(ok.data.len(), 4096);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_the_command() {
    let mut fleet = Fleet::start(|_| {}).await;
    let pid_file = fleet.dir.path().join("pid");
    // `sleep` is a grandchild of the agent: only a process-group kill stops it.
    let script = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
    fleet.spawn_agent(
        "node-a",
        TOKEN,
        &service(
            "slow",
            "command",
            &format!("command = [\"sh\", \"-c\", {script:?}]"),
        ),
    );
    fleet.wait_nodes(1).await;
    let client = fleet.client().await;

    let start = Instant::now();
    let e = client
        .call("slow", "")
        .timeout(Duration::from_millis(700))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Timeout), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );

    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Dead = gone, or a zombie waiting for whoever inherited it to reap it.
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().to_string())
            })
            .is_some_and(|rest| !rest.starts_with('Z'))
    };
    let gone_by = Instant::now() + Duration::from_secs(5);
    while alive() && Instant::now() < gone_by {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(), "the command's child (pid {pid}) was killed too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_report_their_stats() {
    let mut fleet = Fleet::start(|_| {}).await;
    fleet.spawn_agent(
        "node-a",
        TOKEN,
        &service("sum-up", "sum-up", "max_concurrent = 2"),
    );
    fleet.wait_nodes(1).await;
    let client = fleet.client().await;
    let r = client.call("sum-up", "100").await.unwrap();
    assert_eq!(r.data, Bytes::from("5050"));

    // The caller has its answer before the gateway books the call as
    // finished: wait for both the stats and the count.
    let start = Instant::now();
    let node = loop {
        let nodes = client.nodes().await.unwrap();
        assert_eq!(nodes.len(), 1);
        if nodes[0].stats.is_some() && nodes[0].calls_total > 0 {
            break nodes.into_iter().next().unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "stats arrive every 200 ms and the call is counted: {:?}",
            nodes[0]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(node.spec.id, "node-a");
    let stats = node.stats.unwrap();
    assert!(stats.mem_total_mib > 0 && stats.mem_used_mib <= stats.mem_total_mib);
    assert!((0.0..=100.0).contains(&stats.cpu_pct));
    assert!(stats.gpus.is_empty(), "no NVML on CI machines");
    assert_eq!(node.services[0].name, "sum-up");
    assert_eq!(node.services[0].max_concurrent, 2);
    assert_eq!(node.calls_total, 1);
}

/// Outlier ejection: a node whose command fails every call is ejected from
/// the service after 5 failures in a row; every later call goes to the
/// healthy node and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_fails_every_call_is_ejected_after_five() {
    let mut fleet = Fleet::start(|_| {}).await;
    fleet.spawn_agent(
        "node-bad",
        TOKEN,
        &service("flaky", "command", r#"command = ["sh", "-c", "exit 1"]"#),
    );
    fleet.spawn_agent(
        "node-good",
        TOKEN,
        &service("flaky", "command", r#"command = ["cat"]"#),
    );
    fleet.wait_nodes(2).await;
    let client = fleet.client().await;
    let mut failures = 0;
    let mut served_after = Vec::new();
    for i in 0..30 {
        match client.call("flaky", "x").await {
            Ok(r) if failures >= 5 => served_after.push(r.meta.node_id),
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.kind(), Some(ErrorKind::ServiceFailed), "call {i}: {e}");
                failures += 1;
            }
        }
    }
    assert_eq!(failures, 5, "ejected after its fifth failure in a row");
    assert!(!served_after.is_empty());
    assert!(
        served_after.iter().all(|n| n == "node-good"),
        "{served_after:?}"
    );
    let metrics = gateway::telemetry::render();
    assert!(
        metrics.contains(r#"outlier_ejections_total{node="node-bad",service="flaky"} 1"#),
        "{metrics}"
    );
}
