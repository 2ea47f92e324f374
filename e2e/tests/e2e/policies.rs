//! Each shipped policy's behaviour through the gateway: real agents, real
//! compiled plugins, picks that show in which node served each call.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{Fleet, TOKEN, plugin_copies, service};
use client::{Call, ErrorKind};

/// The node that served `call`.
async fn served_by(call: Call<'_>) -> String {
    call.await.expect("call succeeds").meta.node_id
}

fn count<'a>(nodes: impl IntoIterator<Item = &'a String>) -> HashMap<&'a str, usize> {
    let mut counts = HashMap::new();
    for n in nodes {
        *counts.entry(n.as_str()).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_avoids_the_busy_node() {
    let mut fleet = Fleet::start(|c| {
        c.plugins_dir = plugin_copies(
            c.data_dir.parent().unwrap(),
            &["round-robin", "least-request", "resource-aware"],
        );
    })
    .await;
    let sleep = service("sleep", "sleep", "max_concurrent = 8");
    fleet.spawn_agent_with("node-a", TOKEN, "labels = { busy = \"yes\" }", &sleep);
    fleet.spawn_agent_with("node-b", TOKEN, "labels = { busy = \"no\" }", &sleep);
    fleet.wait_nodes(2).await;
    let client = Arc::new(fleet.client().await);

    // Make node-a busy: three long calls pinned there by a label requirement.
    let long: Vec<_> = (0..3)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .call("sleep", "2500")
                    .policy("resource-aware")
                    .hint("label:busy", "yes")
                    .timeout(Duration::from_secs(20))
                    .await
            })
        })
        .collect();
    let start = Instant::now();
    loop {
        let a = fleet
            .gateway
            .registry()
            .all()
            .into_iter()
            .find(|n| n.spec.id == "node-a")
            .unwrap();
        if a.in_flight("sleep") == 3 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "long calls never reached node-a"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut served = Vec::new();
    for _ in 0..10 {
        served.push(served_by(client.call("sleep", "20").policy("least-request")).await);
    }
    assert!(
        served.iter().all(|n| n == "node-b"),
        "least-request avoided the busy node: {served:?}"
    );
    for call in long {
        assert_eq!(call.await.unwrap().unwrap().meta.node_id, "node-a");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_avoids_a_node_made_slow() {
    let mut fleet = Fleet::start(|c| {
        c.plugins_dir = plugin_copies(c.data_dir.parent().unwrap(), &["round-robin", "latency"]);
    })
    .await;
    let slow = service(
        "work",
        "command",
        r#"command = ["sh", "-c", "sleep 0.2; cat"]"#,
    );
    let fast = service("work", "command", r#"command = ["cat"]"#);
    // node-a alone first, so the policy has measured it as slow.
    fleet.spawn_agent("node-a", TOKEN, &slow);
    fleet.wait_nodes(1).await;
    let client = fleet.client().await;
    for i in 0..2 {
        let node = served_by(client.call("work", format!("warm {i}")).policy("latency")).await;
        assert_eq!(node, "node-a");
    }
    fleet.spawn_agent("node-b", TOKEN, &fast);
    fleet.wait_nodes(2).await;

    let mut served = Vec::new();
    for i in 0..12 {
        served.push(served_by(client.call("work", format!("job {i}")).policy("latency")).await);
    }
    assert!(
        served.iter().all(|n| n == "node-b"),
        "latency policy avoids the node it measured slow: {served:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_picks_the_cheap_node_and_honours_max_cost() {
    let mut fleet = Fleet::start(|c| {
        c.plugins_dir = plugin_copies(c.data_dir.parent().unwrap(), &["round-robin", "cost"]);
    })
    .await;
    let echo = service("echo", "echo", "");
    fleet.spawn_agent_with("node-a", TOKEN, "cost_per_hour = 12.0", &echo);
    fleet.spawn_agent_with("node-b", TOKEN, "cost_per_hour = 1.5", &echo);
    fleet.wait_nodes(2).await;
    let client = fleet.client().await;

    for _ in 0..6 {
        assert_eq!(
            served_by(client.call("echo", "x").policy("cost")).await,
            "node-b"
        );
    }
    // A budget only node-b meets still routes there.
    let call = client
        .call("echo", "x")
        .policy("cost")
        .hint("max_cost", "0.01");
    assert_eq!(served_by(call).await, "node-b");

    let e = client
        .call("echo", "x")
        .policy("cost")
        .hint("max_cost", "0.0000000001")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Rejected), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("max_cost") && text.contains("node-b"),
        "names the budget and the cheapest node: {text}"
    );

    let e = client
        .call("echo", "x")
        .policy("cost")
        .hint("max_cost", "cheap")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("bad hint max_cost"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_aware_honours_requirements() {
    let mut fleet = Fleet::start(|c| {
        c.plugins_dir = plugin_copies(
            c.data_dir.parent().unwrap(),
            &["round-robin", "resource-aware"],
        );
    })
    .await;
    let echo = service("echo", "echo", "");
    fleet.spawn_agent_with(
        "node-a",
        TOKEN,
        "region = \"us-east\"\nlabels = { tier = \"gold\" }",
        &echo,
    );
    fleet.spawn_agent_with(
        "node-b",
        TOKEN,
        "region = \"eu-west\"\nlabels = { tier = \"basic\" }",
        &echo,
    );
    fleet.wait_nodes(2).await;
    let client = fleet.client().await;

    for _ in 0..4 {
        let call = client
            .call("echo", "x")
            .policy("resource-aware")
            .hint("region", "eu-west");
        assert_eq!(served_by(call).await, "node-b");
        let call = client
            .call("echo", "x")
            .policy("resource-aware")
            .hint("require", "label:tier=gold");
        assert_eq!(served_by(call).await, "node-a");
    }
    let e = client
        .call("echo", "x")
        .policy("resource-aware")
        .hint("require", "gpu_mem_mib>=16000")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Rejected), "{e}");
    assert!(
        e.to_string().contains("no node meets gpu_mem_mib>=16000"),
        "{e}"
    );

    let e = client
        .call("echo", "x")
        .policy("resource-aware")
        .hint("require", "flops>9")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("unknown metric"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_converges_to_the_fast_node_and_notices_recovery() {
    let mut fleet = Fleet::start(|c| {
        c.plugins_dir = plugin_copies(c.data_dir.parent().unwrap(), &["round-robin", "adaptive"]);
    })
    .await;
    let dir = fleet.dir.path().to_path_buf();
    let flag = |node: &str| dir.join(format!("slow-{node}"));
    let work = |node: &str| {
        let script = format!(
            "if [ -e {} ]; then sleep 0.08; fi; cat",
            flag(node).display()
        );
        service(
            "work",
            "command",
            &format!("command = [\"sh\", \"-c\", {script:?}]"),
        )
    };
    let (a, b) = (work("a"), work("b"));
    std::fs::write(flag("a"), "").unwrap();
    fleet.spawn_agent("node-a", TOKEN, &a);
    fleet.spawn_agent("node-b", TOKEN, &b);
    fleet.wait_nodes(2).await;
    let client = fleet.client().await;

    let mut phase1 = Vec::new();
    for i in 0..60 {
        phase1.push(served_by(client.call("work", format!("{i}")).policy("adaptive")).await);
    }
    let last = count(&phase1[40..]);
    assert!(
        last.get("node-b").copied().unwrap_or(0) >= 16,
        "converged to node-b: {last:?}"
    );

    // node-a recovers, node-b slows down.
    std::fs::remove_file(flag("a")).unwrap();
    std::fs::write(flag("b"), "").unwrap();
    let mut phase2 = Vec::new();
    for i in 0..90 {
        phase2.push(served_by(client.call("work", format!("{i}")).policy("adaptive")).await);
    }
    let last = count(&phase2[70..]);
    assert!(
        last.get("node-a").copied().unwrap_or(0) >= 16,
        "noticed node-a recovered: {last:?}"
    );
}
