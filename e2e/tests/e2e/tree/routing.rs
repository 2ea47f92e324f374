//! Calls entered at the root reach every leaf through the tree, carry the
//! caller's tenant down, stream back up, and name their path; a child's
//! fleet that changes reaches the root; a loop is refused.

use std::collections::BTreeMap;
use std::time::Duration;

use client::{Client, ClientConfig};
use futures_util::StreamExt;

use super::{STATS_MS, Tree, parent_table};
use crate::chaos::{GatewayProcess, agent_process};
use crate::common::service;

const ROOT_TENANTS: &str = "[[tenants]]\nname = \"team-a\"\napi_keys = [\"sk-root\"]\n";
/// site-a knows team-a by another key: the root's callers never show it.
const SITE_A_TENANTS: &str = "[[tenants]]\nname = \"team-a\"\napi_keys = [\"sk-site-a\"]\n";

async fn client_with_key(gateway: &GatewayProcess, key: &str) -> Client {
    let mut config = ClientConfig::new(gateway.addr.to_string(), gateway.ca.clone());
    config.api_key = Some(key.into());
    Client::connect(config).await.expect("client connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_entered_at_the_root_reach_every_leaf_and_name_their_path() {
    let tree = Tree::start(ROOT_TENANTS, SITE_A_TENANTS).await;
    let client = client_with_key(&tree.root, "sk-root").await;
    let mut paths: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0..40 {
        let payload = format!("hello-{i}");
        let result = client
            .call("echo", payload.clone())
            .await
            .unwrap_or_else(|e| panic!("call {i}: {e}\n{}", tree.logs()));
        assert_eq!(&result.data[..], payload.as_bytes());
        paths.insert(result.meta.node_id.clone(), result.meta.via.clone());
    }
    let want: BTreeMap<String, Vec<String>> = [
        ("node-a", vec!["site-a"]),
        ("node-a1", vec!["site-a", "site-a1"]),
        ("node-b", vec!["site-b"]),
    ]
    .into_iter()
    .map(|(n, via)| (n.to_string(), via.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(paths, want, "every leaf, each by its path");

    // "Why this node" names each level's decision.
    let mut explained = None;
    for _ in 0..10 {
        let result = client.call("echo", "why").explain().await.expect("call");
        if result.meta.via.first().map(String::as_str) == Some("site-a") {
            explained = result.meta.explain;
            break;
        }
    }
    let explained = explained.expect("a call through site-a");
    assert!(explained.contains("site-a: "), "{explained}");

    // A streamed result comes up chunk by chunk through every level.
    for _ in 0..3 {
        let mut stream = client
            .call("ticks", Vec::new())
            .stream()
            .await
            .expect("stream");
        assert_eq!(stream.meta.payload_len, None, "a command's result streams");
        let mut chunks = Vec::new();
        while let Some(chunk) = stream.next().await {
            chunks.push(chunk.expect("chunk"));
        }
        let text: String = chunks
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        assert_eq!(text, "one\ntwo\n", "via {:?}", stream.meta.via);
        assert!(chunks.len() >= 2, "two writes, two chunks: {chunks:?}");
    }

    // site-a counted the calls as team-a, the tenant the root admitted,
    // though no caller showed site-a's key; its own callers still need it.
    let metrics = reqwest::get(format!("http://{}/metrics", tree.site_a.admin))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("calls_total{") && l.contains("tenant=\"team-a\"")),
        "site-a counts team-a's calls:\n{metrics}"
    );
    let stranger = client_with_key(&tree.site_a, "sk-root").await;
    let refused = stranger
        .call("echo", "x")
        .await
        .expect_err("the root's key");
    assert_eq!(
        refused.kind(),
        Some(protocol::ErrorKind::Unauthorized),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_joins_a_child_fleet_reaches_the_root() {
    let mut tree = Tree::start("", "").await;
    let client = tree.root.client(1).await;
    let late = service("late", "echo", "max_concurrent = 3");
    let agent = agent_process(
        tree.dir.path(),
        "node-b2",
        tree.site_b.addr,
        &tree.site_b.ca,
        STATS_MS,
        &late,
    );
    tree.agents.push(agent);
    tree.wait_capacity(&client, &[("site-b", "late", 3), ("site-b", "echo", 4)])
        .await;
    let result = client
        .call("late", "in time")
        .await
        .expect("late is served");
    assert_eq!(result.meta.node_id, "node-b2");
    assert_eq!(result.meta.via, ["site-b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_cannot_become_its_own_ancestor() {
    let tree = Tree::start("", "").await;
    // A gateway claiming the root's id under site-a1 would close a loop.
    let other = tempfile::tempdir().unwrap();
    let impostor = GatewayProcess::start(
        other.path(),
        "root",
        &parent_table(&tree.site_a1),
        Some(&tree.root),
    )
    .await;
    let refused = async {
        loop {
            if impostor.process.log_text().contains("a loop") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), refused)
        .await
        .unwrap_or_else(|_| panic!("no refusal logged:\n{}", impostor.process.log_text()));
    let nodes = tree.site_a1.client(1).await.nodes().await.expect("nodes");
    let ids: Vec<_> = nodes.iter().map(|n| n.spec.id.as_str()).collect();
    assert_eq!(ids, ["node-a1"], "the impostor is not site-a1's node");
}
