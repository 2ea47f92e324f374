//! A fresh connection per call against the pooled SDK: calls/s, p50 and p99
//! of small `echo` calls through an in-process gateway to an in-process
//! agent (`make bench-pool`, i.e. `cargo bench -p switchyard-e2e --bench pool`).
//!
//! "fresh" is what a caller without a pool does: `Client::connect` (TLS
//! setup, UDP socket, QUIC handshake), one call, drop. "pooled" is one
//! shared `Client` (default pool: one connection, 256 streams). Each row
//! runs for a fixed time after a warm-up, with 1 and with 16 calls in
//! flight. Without `--bench` (`cargo test -p switchyard-e2e --bench pool`) it
//! only checks briefly that every mode works.
//!
//! The same run measures the result cache: a pooled client calling a
//! `sum-up` service (real CPU work on the node, N = 2 000 000) whose results
//! are not cached, against the same service with `cache_ttl_s` set, where
//! every call after the first is a hit.

mod common;

use std::time::{Duration, Instant};

use anyhow::Context;
use client::{Client, ClientConfig};
use gateway::GatewayConfig;
use node_agent::{ServiceConfig, ServiceKind};
use tokio::task::JoinSet;

/// Payload of each call, bytes.
const PAYLOAD: usize = 64;
/// Calls in flight at once, per row.
const CONCURRENCY: [usize; 2] = [1, 16];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Fresh,
    Pooled,
    Uncached,
    Cached,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Fresh => "fresh connection per call",
            Self::Pooled => "pooled client",
            Self::Uncached => "sum-up, not cached (node runs it)",
            Self::Cached => "sum-up, cached (hits)",
        }
    }
}

struct Row {
    mode: Mode,
    concurrency: usize,
    calls: usize,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn main() -> anyhow::Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let (warm_up, run_for) = if full {
        (Duration::from_millis(500), Duration::from_secs(3))
    } else {
        (Duration::from_millis(50), Duration::from_millis(200))
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(bench(warm_up, run_for))
}

async fn bench(warm_up: Duration, run_for: Duration) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("tempdir")?;
    let config = GatewayConfig {
        services: [(
            "sum-up-cached".to_string(),
            gateway::config::ServiceConfig {
                cache_ttl_s: Some(3600),
                ..Default::default()
            },
        )]
        .into_iter()
        .collect(),
        ..common::gateway_config(dir.path())?
    };

    let mut echo = ServiceConfig::new("echo", ServiceKind::Echo);
    echo.max_concurrent = 64;
    let mut sum = ServiceConfig::new("sum-up", ServiceKind::SumUp);
    sum.max_concurrent = 64;
    let mut sum_cached = ServiceConfig::new("sum-up-cached", ServiceKind::SumUp);
    sum_cached.max_concurrent = 64;
    let fleet = common::Fleet::start(config, vec![echo, sum, sum_cached]).await?;

    let config = ClientConfig::new(fleet.addr.clone(), fleet.ca.clone());
    let mut rows = Vec::new();
    for concurrency in CONCURRENCY {
        for mode in [Mode::Fresh, Mode::Pooled, Mode::Uncached, Mode::Cached] {
            measure(&config, mode, concurrency, warm_up).await?;
            rows.push(measure(&config, mode, concurrency, run_for).await?);
        }
    }
    print(&rows);

    fleet.stop().await
}

/// Runs `concurrency` callers for `run_for` and summarises their calls.
async fn measure(
    config: &ClientConfig,
    mode: Mode,
    concurrency: usize,
    run_for: Duration,
) -> anyhow::Result<Row> {
    let pooled = match mode {
        Mode::Fresh => None,
        _ => Some(Client::connect(config.clone()).await?),
    };
    let (service, payload) = match mode {
        Mode::Fresh | Mode::Pooled => ("echo", bytes::Bytes::from(vec![b'x'; PAYLOAD])),
        Mode::Uncached => ("sum-up", bytes::Bytes::from_static(b"2000000")),
        Mode::Cached => ("sum-up-cached", bytes::Bytes::from_static(b"2000000")),
    };
    let start = Instant::now();
    let until = start + run_for;
    let mut callers = JoinSet::new();
    for _ in 0..concurrency {
        let (config, pooled, payload) = (config.clone(), pooled.clone(), payload.clone());
        callers.spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < until {
                let began = Instant::now();
                let result = match &pooled {
                    Some(client) => client.call(service, payload.clone()).await,
                    None => {
                        let client = Client::connect(config.clone()).await?;
                        client.call(service, payload.clone()).await
                    }
                }?;
                latencies.push(began.elapsed());
                anyhow::ensure!(
                    service != "echo" || result.data == payload,
                    "echo answered other bytes"
                );
                anyhow::ensure!(!result.data.is_empty(), "an empty result");
            }
            Ok::<_, anyhow::Error>(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = callers.join_next().await {
        latencies.extend(done??);
    }
    let elapsed = start.elapsed();
    if let Some(client) = pooled {
        client.close().await;
    }
    latencies.sort_unstable();
    let percentile = |p: usize| {
        latencies
            .get((latencies.len() * p / 100).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(Row {
        mode,
        concurrency,
        calls: latencies.len(),
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(50),
        p99_ms: percentile(99),
    })
}

fn print(rows: &[Row]) {
    println!("| mode | in flight | calls | calls/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} |",
            r.mode.name(),
            r.concurrency,
            r.calls,
            r.per_second,
            r.p50_ms,
            r.p99_ms
        );
    }
    for concurrency in CONCURRENCY {
        let find = |mode| {
            rows.iter()
                .find(|r| r.mode == mode && r.concurrency == concurrency)
        };
        if let (Some(node), Some(hit)) = (find(Mode::Uncached), find(Mode::Cached)) {
            println!(
                "{concurrency} in flight: cached/uncached = {:.1}x calls/s, p50 {:.1}x lower, p99 {:.1}x lower",
                hit.per_second / node.per_second.max(f64::MIN_POSITIVE),
                node.p50_ms / hit.p50_ms.max(f64::MIN_POSITIVE),
                node.p99_ms / hit.p99_ms.max(f64::MIN_POSITIVE),
            );
        }
        if let (Some(fresh), Some(pooled)) = (find(Mode::Fresh), find(Mode::Pooled)) {
            println!(
                "{concurrency} in flight: pooled/fresh = {:.1}x calls/s, p50 {:.1}x lower, p99 {:.1}x lower",
                pooled.per_second / fresh.per_second.max(f64::MIN_POSITIVE),
                fresh.p50_ms / pooled.p50_ms.max(f64::MIN_POSITIVE),
                fresh.p99_ms / pooled.p99_ms.max(f64::MIN_POSITIVE),
            );
        }
    }
}
