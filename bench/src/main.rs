//! `switchyard-bench-suite` (`make bench`): Switchyard side by side with
//! HAProxy and nginx on the same machine in the same run, systems measured
//! interleaved (A/B/A/B), medians of 5; then the gateway's overhead, each
//! policy's cost, the cache, the scale curve (2 to 5000 agents, if the fleet program is built), idle
//! CPU, multi-turn chat TTFT per LLM routing policy (`llm`), a real
//! embedding model direct vs through the gateway (`embeddings`), and
//! several gateways on etcd serving one fleet (`cluster`), and look-aside
//! calls (leases, then straight to the node) beside proxied ones and
//! HAProxy (`lookaside`), and the Python package's client beside the Rust
//! SDK (`python`). Writes
//! `bench/results/<section>.json` and `bench/results/README.md`. `--quick`:
//! a ~1 minute smoke run.
//! `switchyard-bench-suite echo-server` is the stand-alone echo server the
//! suite runs as its own process for section 2 (see [`echo`]).

mod cluster;
mod echo;
mod embeddings;
mod fleet;
mod goals;
mod jobs;
mod llm;
mod lookaside;
mod peers;
mod procs;
mod python;
mod report;
mod routers;
mod scale;
mod scenarios;
mod sections;
mod threads;
mod tree;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use crate::fleet::{BUILTIN, Fleet, FleetSpec};
use crate::peers::Certs;
use crate::scenarios::Timing;
use crate::sections::Setup;

/// Every section, in order.
const SECTIONS: [&str; 15] = [
    "peers",
    "overhead",
    "policies",
    "cache",
    "scale",
    "idle",
    "llm",
    "jobs",
    "threads",
    "routers",
    "embeddings",
    "cluster",
    "lookaside",
    "python",
    "tree",
];

#[derive(Parser, Debug)]
#[command(about = "Switchyard beside HAProxy and nginx, and its own costs (make bench)")]
#[command(args_conflicts_with_subcommands = true)]
struct Args {
    /// Without one, the suite runs.
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Smoke run (~1 min): 2 reps of 0.5 s after 0.2 s of warm-up.
    #[arg(long)]
    quick: bool,
    /// Repetitions, medians over them (default 5; 2 with --quick).
    #[arg(long)]
    reps: Option<usize>,
    /// Measured window of each run, s (default 2.5; 0.5 with --quick).
    #[arg(long)]
    seconds: Option<f64>,
    /// Unrecorded warm-up before each run, s (default 0.5; 0.2 with --quick).
    #[arg(long)]
    warm_up: Option<f64>,
    /// Sections to run, comma-separated (default all): peers, overhead,
    /// policies, cache, scale, idle, llm, jobs, threads, routers, embeddings,
    /// cluster, lookaside, python, tree.
    #[arg(long, value_delimiter = ',')]
    sections: Vec<String>,
    /// Agent counts of the scale section, comma-separated (default
    /// 2,100,1000,5000; 2,100 with --quick).
    #[arg(long, value_delimiter = ',')]
    scale_agents: Vec<usize>,
    /// The scale section also runs each count of at least 1 000 agents with
    /// `max_candidates` set to this (the policy offered a random sample of
    /// that many free nodes); 0 skips those rows.
    #[arg(long, default_value_t = scale::SAMPLE)]
    scale_max_candidates: usize,
    /// Folder of the release `gateway` and `node-agent`.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Policy plugins folder.
    #[arg(long, default_value = "plugins/dist")]
    plugins: PathBuf,
    /// Where the JSON and README.md go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// The virtualenv holding the `routers` section's peers (`smg`,
    /// `vllm-router`, `envoy`): `make bench-venv`.
    #[arg(long, default_value = "bench/.venv")]
    peers_venv: PathBuf,
}

/// The programs besides the suite in this binary.
#[derive(Subcommand, Debug)]
enum Mode {
    /// A stand-alone QUIC echo server speaking the gateway's client
    /// protocol, on one thread (section 2's `sdk-direct-echo`).
    EchoServer(echo::ServerArgs),
}

fn plugin_names(dir: &std::path::Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("plugins folder {} (make plugins)", dir.display()))?
        .filter_map(|e| {
            let path = e.ok()?.path();
            (path.extension()? == "wasm").then(|| path.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    names.sort();
    Ok(names)
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() -> Result<()> {
    let args = Args::parse();
    match &args.mode {
        Some(Mode::EchoServer(server)) => echo::run(server),
        None => tokio::runtime::Runtime::new()?.block_on(suite(args)),
    }
}

/// Runs the suite's sections and writes the results.
async fn suite(args: Args) -> Result<()> {
    let timing = Timing {
        reps: args.reps.unwrap_or(if args.quick { 2 } else { 5 }),
        duration_s: args.seconds.unwrap_or(if args.quick { 0.5 } else { 2.5 }),
        warm_up_s: args.warm_up.unwrap_or(if args.quick { 0.2 } else { 0.5 }),
    };
    let wanted: Vec<String> = if args.sections.is_empty() {
        SECTIONS.iter().map(|s| s.to_string()).collect()
    } else {
        args.sections.clone()
    };
    if let Some(bad) = wanted.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
        bail!("unknown section {bad}; sections: {}", SECTIONS.join(", "));
    }
    peers::check_installed()?;
    for bin in ["gateway", "node-agent"] {
        if !args.bin_dir.join(bin).exists() {
            bail!(
                "{} missing: cargo build --release first",
                args.bin_dir.join(bin).display()
            );
        }
    }
    let bin_dir = std::fs::canonicalize(&args.bin_dir)?;
    let plugins_dir = std::fs::canonicalize(&args.plugins)?;
    let mut policies = plugin_names(&plugins_dir)?;
    policies.push(BUILTIN.to_string());

    let tmp = tempfile::Builder::new()
        .prefix("switchyard-bench-")
        .tempdir()?;
    let certs = Certs::generate(tmp.path())?;
    let (_backends_proc, backends) = peers::start_backends(tmp.path())?;
    let nginx = peers::start_nginx_proxy(tmp.path(), &backends, &certs)?;
    let haproxy = peers::start_haproxy(tmp.path(), &backends, &certs)?;
    let spec = FleetSpec {
        bin_dir: bin_dir.clone(),
        plugins_dir: plugins_dir.clone(),
        policies: policies.clone(),
        backends: backends.clone(),
        gateway_threads: Some(1),
    };
    let fleet = Fleet::start(&spec, tmp.path())?;
    println!(
        "backends {backends:?}, nginx {}/{}, haproxy {}/{}, gateway quic {} http {}; scratch {}",
        nginx.plain,
        nginx.tls,
        haproxy.plain,
        haproxy.tls,
        fleet.ports.quic,
        fleet.ports.http,
        tmp.path().display()
    );
    let setup = Setup {
        backends: &backends,
        nginx: &nginx,
        haproxy: &haproxy,
        certs: &certs,
        fleet: &fleet,
        policies: &policies,
        bin_dir: &bin_dir,
        plugins_dir: &plugins_dir,
        scratch: tmp.path(),
    };
    let scale_agents = match (args.scale_agents.is_empty(), args.quick) {
        (false, _) => args.scale_agents.clone(),
        (true, true) => vec![2, 100],
        (true, false) => vec![2, 100, 1000, 5000],
    };
    let load_before = loadavg();
    let started = std::time::Instant::now();
    let mut done = Vec::new();
    for section in &wanted {
        let result = match section.as_str() {
            "peers" => sections::peers(&setup, &timing).await?,
            "overhead" => sections::overhead(&setup, &timing).await?,
            "policies" => sections::policies(&setup, &timing).await?,
            "cache" => sections::cache(&setup, &timing).await?,
            "scale" => {
                scale::section(&setup, &timing, &scale_agents, args.scale_max_candidates).await
            }
            "llm" => llm::section(&setup, &timing, args.quick).await?,
            "jobs" => jobs::section(&setup, &timing, args.quick).await?,
            "threads" => threads::section(&setup, &timing).await?,
            "routers" => routers::section(&setup, &timing, &args.peers_venv).await?,
            "embeddings" => embeddings::section(&setup, &timing).await?,
            "python" => python::section(&setup, &timing)?,
            "cluster" => cluster::section(&setup, &timing, args.quick).await,
            "tree" => tree::section(&setup, &timing).await,
            "lookaside" => {
                done.extend(lookaside::section(&setup, &timing).await);
                continue;
            }
            _ => sections::idle(&setup, &timing).await,
        };
        done.push(result);
    }
    let header = format!(
        "# Benchmarks: `make bench`\n\nOne run of `switchyard-bench-suite` ({} reps of {} s after {} s of warm-up, systems interleaved, medians; {} cores, CLK_TCK {}; took {:.0} s; load average before {load_before}, after {}). The machine is shared: other work ran beside it, which the interleaving spreads over every system alike. Regenerate with `make bench` (about 32 minutes) or `make bench BENCH_ARGS=--quick`.",
        timing.reps,
        timing.duration_s,
        timing.warm_up_s,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        procs::clock_ticks(),
        started.elapsed().as_secs_f64(),
        loadavg()
    );
    let goals = goals::goals(&done);
    let header = format!("{header}\n\n{}", goals::render(&goals));
    report::write_all(&args.out, &header, &done)?;
    for g in &goals {
        println!(
            "[target] {}: {} — this run {}{}",
            g.what,
            g.target,
            g.figure.as_deref().unwrap_or("not measured"),
            match g.met {
                Some(true) => " (met)",
                Some(false) => " (not met)",
                None => "",
            }
        );
    }
    println!("results in {}", args.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_suite_parses_its_flags_and_echo_server_its_own() {
        let suite = Args::try_parse_from(["suite", "--quick", "--sections", "overhead,idle"])
            .expect("suite flags");
        assert!(suite.mode.is_none() && suite.quick);
        assert_eq!(suite.sections, ["overhead", "idle"]);
        let echo = Args::try_parse_from(["suite", "echo-server", "--dir", "/d"]).expect("echo");
        let Some(Mode::EchoServer(server)) = echo.mode else {
            panic!("not the echo server: {echo:?}");
        };
        assert_eq!(server.listen.to_string(), "127.0.0.1:0");
        assert_eq!(server.dir, PathBuf::from("/d"));
        assert!(
            Args::try_parse_from(["suite", "echo-server"]).is_err(),
            "--dir"
        );
        assert!(Args::try_parse_from(["suite", "--quick", "echo-server", "--dir", "/d"]).is_err());
    }
}
