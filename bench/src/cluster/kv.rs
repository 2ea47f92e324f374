//! The `cluster` section's KV-cache figure: section 7's cache-aware chat
//! (the same settings, schedule and toy models) through one gateway, and
//! spread round-robin over three gateways of one cluster whose agents
//! register with every member. The hit rate through three over the hit
//! rate through one is the figure of merit.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use super::fleet::{Gateways, Membership};
use crate::llm::Settings;
use crate::llm::chat::{self, Target, TurnResult};
use crate::llm::fleet::{
    LlmFleet, SERVICE, agent_knows, kv_counters, render_agent, render_gateway, start_toys,
    toy_binary,
};
use crate::procs::wait_tcp;

/// The policy the chat service is routed by.
pub const POLICY: &str = "cache-aware";

/// The fleet size the KV figure compares.
pub const GATEWAYS: usize = 3;

fn chat_url(http: u16) -> String {
    format!("http://127.0.0.1:{http}/v1/chat/completions")
}

/// Runs the chat on `urls` and returns section 7's figures (the KV hit
/// rate among them) from the turns and the toy models' counter deltas.
async fn run_chat(
    settings: &Settings,
    urls: Vec<String>,
    toy_ports: &[u16],
) -> Result<BTreeMap<String, f64>> {
    let schedule = chat::schedule(&settings.shape, settings.rate_per_s(), settings.seed);
    let before = kv_counters(toy_ports.iter().copied())?;
    let target = Target {
        urls,
        model: SERVICE.into(),
        timeout_ms: 60_000,
    };
    let (turns, wall) = chat::run(target, settings.shape, schedule).await?;
    let after = kv_counters(toy_ports.iter().copied())?;
    if let Some(e) = turns.iter().find_map(|t: &TurnResult| t.error.as_ref()) {
        println!("[cluster kv] first error: {e}");
    }
    Ok(crate::llm::figures(
        &turns,
        after.0 - before.0,
        after.1 - before.1,
        wall.as_secs_f64(),
    ))
}

/// The chat through section 7's one-gateway fleet with [`POLICY`].
///
/// # Errors
/// The fleet does not start or the chat cannot run.
pub async fn one_gateway(
    settings: &Settings,
    bin_dir: &Path,
    plugins_dir: &Path,
    dir: &Path,
) -> Result<BTreeMap<String, f64>> {
    let toy = toy_binary(bin_dir)?;
    let metrics_url = agent_knows(&bin_dir.join("node-agent"), b"metrics_url");
    let f = LlmFleet::start(
        settings,
        POLICY,
        bin_dir,
        &toy,
        plugins_dir,
        dir,
        metrics_url,
    )?;
    let toy_ports: Vec<u16> = f.toys.iter().map(|(_, p)| *p).collect();
    run_chat(settings, vec![chat_url(f.ports.http)], &toy_ports).await
}

/// The chat spread round-robin over [`GATEWAYS`] gateways of one cluster,
/// agent `i` given gateway `i % GATEWAYS`'s address.
///
/// # Errors
/// The fleet does not start, the agents do not register with every
/// gateway within 20 s, or the chat cannot run.
pub async fn three_gateways(
    settings: &Settings,
    bin_dir: &Path,
    plugins_dir: &Path,
    dir: &Path,
    membership: Membership,
) -> Result<BTreeMap<String, f64>> {
    let toy = toy_binary(bin_dir)?;
    let metrics_url = agent_knows(&bin_dir.join("node-agent"), b"metrics_url");
    std::fs::create_dir_all(dir)?;
    let toys = start_toys(settings, &toy, dir)?;
    let mut g = Gateways::start(GATEWAYS, bin_dir, dir, Some(membership), |ports, data| {
        render_gateway(POLICY, ports, data, plugins_dir)
    })?;
    for (i, (_, toy_port)) in toys.iter().enumerate() {
        let quic = g.members[i % GATEWAYS].ports.quic;
        let text = render_agent(settings, i, quic, &g.ca, *toy_port, metrics_url);
        g.spawn_agent(i, dir, &text)?;
    }
    g.wait_nodes_everywhere(settings.nodes, Duration::from_secs(20))
        .context("agents registered with every gateway")?;
    let mut urls = Vec::new();
    for m in &g.members {
        wait_tcp(m.ports.http, Duration::from_secs(10)).context("HTTP ingress")?;
        urls.push(chat_url(m.ports.http));
    }
    let toy_ports: Vec<u16> = toys.iter().map(|(_, p)| *p).collect();
    run_chat(settings, urls, &toy_ports).await
}
