//! The `node-agent` program (`node-agent --config agent.toml`): its command
//! line, logging and signals, around [`run`](crate::run). The binary's
//! `main` is [`main`], so that other binaries (the end-to-end suite's agent)
//! are the same program.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// The Switchyard node agent: registers this node's services with the
/// gateway, reports stats and runs dispatched calls.
#[derive(Debug, Parser)]
#[command(name = "node-agent", version, about)]
struct Args {
    /// The agent's TOML configuration.
    #[arg(
        long,
        env = "SWITCHYARD_AGENT_CONFIG",
        required_unless_present = "print_example_config"
    )]
    config: Option<PathBuf>,
    /// Prints a commented example configuration and exits.
    #[arg(long)]
    print_example_config: bool,
}

/// The agent program: parses the command line, logs to stderr (`RUST_LOG`,
/// default `info`) and runs the agent until Ctrl-C or SIGTERM; the exit
/// status says whether it stopped cleanly.
pub fn main() -> ExitCode {
    let args = Args::parse();
    if args.print_example_config {
        print!("{}", crate::EXAMPLE_CONFIG);
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match agent(args.config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", transport::report::one_line(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn agent(config: Option<PathBuf>) -> anyhow::Result<()> {
    let path = config.context("--config is required")?;
    let config = crate::AgentConfig::load(&path)?;
    let runtime = transport::runtime::build(config.worker_threads)
        .context("cannot start the async runtime")?;
    runtime.block_on(crate::run(config, transport::signals::shutdown()))?;
    Ok(())
}
