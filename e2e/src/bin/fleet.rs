//! `switchyard-e2e-fleet`: N real node agents in one process, for the scale
//! benchmark.
//!
//! ```text
//! switchyard-e2e-fleet --gateway 127.0.0.1:4433 --ca ca.pem --token T --agents 1000 \
//!     [--prefix node] [--stats-interval-ms 1000] [--stats-heartbeat-ms MS] [--service echo]
//!     [--max-concurrent 64]
//! ```
//!
//! Each agent is `node_agent::run` with an `AgentConfig` of its own (node id
//! `PREFIX-0000`, `PREFIX-0001`, ...; one built-in `echo` service named
//! `--service`), all on one multi-thread tokio runtime. Once every agent is
//! registered (the gateway's node list, through the SDK, holds them all)
//! the program prints `ready N` on stdout; it runs until SIGTERM, Ctrl-C
//! or its stdin closes (`--keep-stdin` ignores stdin), then drains every
//! agent (at most `--grace-s`) and exits.
//!
//! The gateway must admit that many agents from one address: `[agents]
//! max_agents_per_ip` (default 64), `max_agents` (1024) and `[quic]
//! max_connections_per_ip` (256), `max_connections` (1024) at least N
//! (plus the clients). A refused registration is not retried: that agent
//! stops and the count never reaches N (`--ready-timeout-s`).
//!
//! Each agent keeps its own stats collector (sysinfo, and NVML where a
//! driver is present), sampled every `--stats-interval-ms` on the blocking
//! pool: the agent offers no shared or cheaper one, so N agents read
//! `/proc` N times per interval.

use std::io::{IsTerminal as _, Read as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use node_agent::{AgentConfig, ServiceConfig, ServiceKind};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Runs N node agents in one process against a gateway.
#[derive(Debug, Parser)]
#[command(name = "switchyard-e2e-fleet", about)]
struct Args {
    /// The gateway's QUIC address.
    #[arg(long)]
    gateway: String,
    /// The CA file that signed the gateway's certificate.
    #[arg(long)]
    ca: PathBuf,
    /// The gateway's agent token.
    #[arg(long)]
    token: String,
    /// Agents to run.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Node ids are PREFIX-0000, PREFIX-0001, ...
    #[arg(long, default_value = "node")]
    prefix: String,
    /// Each agent's stats period, ms.
    #[arg(long, default_value_t = 1000)]
    stats_interval_ms: u32,
    /// Each agent's stats heartbeat, ms (default: the agent's, twice the
    /// period; equal to it, every sample is sent).
    #[arg(long)]
    stats_heartbeat_ms: Option<u32>,
    /// Name of the echo service every agent hosts.
    #[arg(long, default_value = "echo")]
    service: String,
    /// Calls of the service one agent runs at once.
    #[arg(long, default_value_t = 64)]
    max_concurrent: u32,
    /// Agents started per second (0: all at once).
    #[arg(long, default_value_t = 0)]
    start_per_s: u32,
    /// Give up waiting for every agent to register after this long, s (then
    /// print `ready K` with the K registered).
    #[arg(long, default_value_t = 120)]
    ready_timeout_s: u64,
    /// At shutdown, how long agents may take to drain, s.
    #[arg(long, default_value_t = 5)]
    grace_s: u32,
    /// Keep running when stdin closes (stop on SIGTERM or Ctrl-C only).
    #[arg(long)]
    keep_stdin: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

/// The configuration of agent number `index`.
fn agent_config(args: &Args, index: usize) -> AgentConfig {
    let mut service = ServiceConfig::new(args.service.clone(), ServiceKind::Echo);
    service.max_concurrent = args.max_concurrent;
    let mut config = AgentConfig::new(
        args.gateway.clone(),
        args.ca.clone(),
        args.token.clone(),
        node_id(&args.prefix, index),
        vec![service],
    );
    config.stats_interval_ms = args.stats_interval_ms;
    config.stats_heartbeat_ms = args.stats_heartbeat_ms;
    config.shutdown_grace_s = args.grace_s;
    config
}

fn node_id(prefix: &str, index: usize) -> String {
    format!("{prefix}-{index:04}")
}

async fn run(args: Args) -> anyhow::Result<()> {
    let (stop, stopping) = watch::channel(false);
    let started = Instant::now();
    let mut agents = JoinSet::new();
    let gap = match args.start_per_s {
        0 => Duration::ZERO,
        n => Duration::from_secs(1) / n,
    };
    for index in 0..args.agents {
        let config = agent_config(&args, index);
        let mut stopping = stopping.clone();
        agents.spawn(async move {
            let id = config.node_id.clone();
            let stopped = async move {
                let _ = stopping.wait_for(|stop| *stop).await;
            };
            if let Err(e) = node_agent::run(config, stopped).await {
                eprintln!("agent {id} stopped: {e}");
            }
        });
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
    }
    eprintln!(
        "started {} agents in {:.1} s; waiting for them to register",
        args.agents,
        started.elapsed().as_secs_f64()
    );
    let stop_asked = stop_signal(args.keep_stdin);
    tokio::pin!(stop_asked);
    let registered = tokio::select! {
        n = wait_registered(&args) => n?,
        () = &mut stop_asked => {
            return shut_down(&stop, agents, args.grace_s).await;
        }
    };
    eprintln!(
        "{registered} agents registered after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!("ready {registered}");
    stop_asked.await;
    shut_down(&stop, agents, args.grace_s).await
}

/// Polls the gateway's node list until it holds every agent of this fleet
/// (or the ready timeout passed); returns how many it holds.
async fn wait_registered(args: &Args) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(args.ready_timeout_s);
    // The gateway may be too busy with N handshakes to answer at first:
    // try again until the ready timeout.
    let client = loop {
        let config = client::ClientConfig::new(args.gateway.clone(), args.ca.clone());
        match client::Client::connect(config).await {
            Ok(client) => break client,
            Err(e) if Instant::now() < deadline => {
                eprintln!("connecting to the gateway to count its nodes: {e}; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(e).context("connecting to the gateway to count its nodes");
            }
        }
    };
    let prefix = format!("{}-", args.prefix);
    let mut last = 0;
    loop {
        match client.nodes().await {
            Ok(nodes) => {
                last = nodes
                    .iter()
                    .filter(|n| n.spec.id.starts_with(&prefix))
                    .count();
            }
            Err(e) => eprintln!("listing nodes failed: {e}"),
        }
        if last >= args.agents {
            break;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "only {last} of {} agents registered after {} s",
                args.agents, args.ready_timeout_s
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    client.close().await;
    Ok(last)
}

/// SIGTERM, Ctrl-C, or stdin's end (unless `keep_stdin`).
async fn stop_signal(keep_stdin: bool) {
    let stdin_closed = async {
        if keep_stdin {
            return std::future::pending().await;
        }
        // Reads until EOF on a thread of its own (never joined: the process
        // ends with it).
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut sink = [0u8; 1024];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            let _ = tx.send(());
        });
        let _ = rx.await;
    };
    tokio::select! {
        () = transport::signals::shutdown() => {}
        () = stdin_closed => eprintln!("stdin closed: shutting down"),
    }
}

/// Tells every agent to drain and waits for them (grace plus a margin).
async fn shut_down(
    stop: &watch::Sender<bool>,
    mut agents: JoinSet<()>,
    grace_s: u32,
) -> anyhow::Result<()> {
    let _ = stop.send(true);
    let limit = Duration::from_secs(u64::from(grace_s) + 5);
    let all = async { while agents.join_next().await.is_some() {} };
    if tokio::time::timeout(limit, all).await.is_err() {
        eprintln!(
            "{} agents still running after {limit:?}; exiting",
            agents.len()
        );
    }
    Ok(())
}
