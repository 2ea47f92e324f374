//! `switchyard-sim`: runs scenarios (`switchyard-sim SCENARIO.toml`) and the
//! reproductions of published results (`--reproduce`, what `make sim` runs).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use switchyard_sim::{Scenario, metrics, repro, run_all, runs_of};

/// Discrete-event simulator of a Switchyard fleet: the real scheduling core
/// and the real wasm policies over simulated nodes, in virtual time.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Scenario files to run (sim/scenarios/*.toml); one table each.
    scenarios: Vec<PathBuf>,
    /// Folder of the policies' .wasm files.
    #[arg(long, default_value = "plugins/dist")]
    plugins: PathBuf,
    /// Overrides the scenarios' seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Overrides the scenarios' duration, s.
    #[arg(long)]
    duration_s: Option<f64>,
    /// Runs at once (default: the machine's parallelism).
    #[arg(long)]
    jobs: Option<usize>,
    /// Overrides the scenarios' `[core] max_candidates`: the most
    /// candidates a policy is offered per pick (0: every free node).
    #[arg(long)]
    max_candidates: Option<usize>,
    /// Runs the reproductions of published results and prints measured
    /// against published figures, PASS or FAIL (exit 1 on any FAIL).
    #[arg(long)]
    reproduce: bool,
    /// With --reproduce: the shortened runs (the tests' length).
    #[arg(long)]
    short: bool,
    /// With --reproduce: only these reproductions (by number or name).
    #[arg(long)]
    only: Vec<String>,
    /// Prints the tree-of-gateways figures: the echo wave on 1 111
    /// gateways, rebalancing between two children (with --short: the
    /// tests' length).
    #[arg(long)]
    tree: bool,
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("switchyard-sim: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<bool> {
    let args = Args::parse();
    let jobs = args.jobs.unwrap_or_else(switchyard_sim::default_jobs);
    let mut all_ok = true;
    for path in &args.scenarios {
        let mut scenario =
            Scenario::load(path).with_context(|| format!("loading {}", path.display()))?;
        if let Some(seed) = args.seed {
            scenario.seed = seed;
        }
        if let Some(bound) = args.max_candidates {
            scenario.core.max_candidates = bound;
        }
        if let Some(d) = args.duration_s {
            scenario.duration_s = d;
            scenario.warmup_s = scenario.warmup_s.min(d / 2.0);
        }
        println!("== {} ({})", scenario.name, path.display());
        if !scenario.description.is_empty() {
            println!("{}", scenario.description.trim());
        }
        let reports = run_all(&runs_of(&scenario, &args.plugins), jobs)
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        print!("{}", metrics::table(&reports));
        if reports.iter().any(|r| r.ttft_calls > 0) {
            println!();
            print!("{}", metrics::ttft_table(&reports));
        }
        println!();
    }
    if args.tree {
        let scale = if args.short {
            repro::Scale::Short
        } else {
            repro::Scale::Full
        };
        print!("{}", switchyard_sim::tree::report(scale));
    }
    if args.reproduce {
        let scale = if args.short {
            repro::Scale::Short
        } else {
            repro::Scale::Full
        };
        all_ok &= repro::run_and_print(&args.plugins, scale, jobs, &args.only)?;
    } else if args.scenarios.is_empty() && !args.tree {
        anyhow::bail!("name a scenario file, --reproduce or --tree");
    }
    Ok(all_ok)
}
