//! A tree of gateways, as real processes: a root, child gateways that dial
//! it through `[parent]`, a grandchild under one of them, and real agents
//! at the leaves.
//!
//! ```text
//!              root
//!             /    \
//!        site-a    site-b
//!        /    \        \
//!   node-a   site-a1   node-b
//!               |
//!            node-a1
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod faults;
mod rebalance;
mod routing;
mod waves;

use std::time::{Duration, Instant};

use client::Client;

use crate::chaos::{GatewayProcess, Process, agent_process};
use crate::common::{TOKEN, service};

/// Stats period of the child gateways and agents, ms: a killed child
/// leaves its parent's fleet within three of them.
const STATS_MS: u32 = 200;

/// The `[parent]` table of a gateway under `parent`.
fn parent_table(parent: &GatewayProcess) -> String {
    parent_table_every(parent, STATS_MS)
}

/// The `[parent]` table of a gateway under `parent` sending stats every
/// `stats_ms`.
fn parent_table_every(parent: &GatewayProcess, stats_ms: u32) -> String {
    format!(
        "[parent]\naddress = \"{}\"\nca = {:?}\ntoken = {TOKEN:?}\nstats_interval_ms = {stats_ms}\n\
         reconnect_ms = 50\nreconnect_max_ms = 500\n",
        parent.addr, parent.ca
    )
}

/// The three-level tree of the module's picture, every leaf node hosting
/// `echo`, `work` (sleeps the payload's ms; two at once) and `ticks` (a
/// command that writes two lines 300 ms apart).
struct Tree {
    dir: tempfile::TempDir,
    root: GatewayProcess,
    site_a: GatewayProcess,
    site_a1: GatewayProcess,
    site_b: GatewayProcess,
    agents: Vec<Process>,
}

/// The leaf nodes' services.
fn leaf_services() -> String {
    let ticks = r#"command = ["sh", "-c", "echo one; sleep 0.3; echo two"]"#;
    format!(
        "{}{}{}",
        service("echo", "echo", "max_concurrent = 4"),
        service("work", "sleep", "max_concurrent = 2"),
        service("ticks", "command", &format!("{ticks}\nmax_concurrent = 1"))
    )
}

impl Tree {
    /// Starts the tree; `root_tables` and `site_a_tables` go into those
    /// gateways' configs. Waits until the root sees both sites with every
    /// leaf's capacity.
    async fn start(root_tables: &str, site_a_tables: &str) -> Self {
        Self::start_every(root_tables, site_a_tables, STATS_MS).await
    }

    /// As [`Self::start`], the child gateways sending stats every
    /// `stats_ms` (a stopped one stays in its parent's fleet three of
    /// them).
    async fn start_every(root_tables: &str, site_a_tables: &str, stats_ms: u32) -> Self {
        let parent_table = |p: &GatewayProcess| parent_table_every(p, stats_ms);
        let dir = tempfile::tempdir().unwrap();
        let root = GatewayProcess::start(dir.path(), "root", root_tables, None).await;
        let site_a = GatewayProcess::start(
            dir.path(),
            "site-a",
            &format!("{}{site_a_tables}", parent_table(&root)),
            Some(&root),
        )
        .await;
        let site_a1 =
            GatewayProcess::start(dir.path(), "site-a1", &parent_table(&site_a), Some(&root)).await;
        let site_b =
            GatewayProcess::start(dir.path(), "site-b", &parent_table(&root), Some(&root)).await;
        let services = leaf_services();
        let agents = [
            ("node-a", &site_a),
            ("node-a1", &site_a1),
            ("node-b", &site_b),
        ]
        .into_iter()
        .map(|(id, gw)| agent_process(dir.path(), id, gw.addr, &gw.ca, STATS_MS, &services))
        .collect();
        let tree = Self {
            dir,
            root,
            site_a,
            site_a1,
            site_b,
            agents,
        };
        let client = tree.root.client(1).await;
        // site-a hosts echo on node-a and, through site-a1, node-a1.
        tree.wait_capacity(&client, &[("site-a", "echo", 8), ("site-b", "echo", 4)])
            .await;
        tree
    }

    /// Waits until `client`'s gateway lists each `(node, service,
    /// max_concurrent)`.
    async fn wait_capacity(&self, client: &Client, want: &[(&str, &str, u32)]) {
        let start = Instant::now();
        loop {
            let nodes = client.nodes().await.unwrap_or_default();
            let have = |(id, svc, max): &(&str, &str, u32)| {
                nodes.iter().any(|n| {
                    n.spec.id == *id
                        && n.spec.gateway
                        && n.spec
                            .services
                            .iter()
                            .any(|s| s.name == *svc && s.max_concurrent == *max)
                })
            };
            if want.iter().all(have) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the root never saw {want:?}; it has {:?}\n{}",
                nodes
                    .iter()
                    .map(|n| (&n.spec.id, &n.spec.services))
                    .collect::<Vec<_>>(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The gateways' log tails, for a failure message.
    fn logs(&self) -> String {
        [&self.root, &self.site_a, &self.site_a1, &self.site_b]
            .iter()
            .map(|g| {
                let text = g.process.log_text();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!(
                    "--- {} ---\n{}",
                    g.process.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}
