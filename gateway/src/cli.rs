//! The `gateway` program: its command line, logging and signals, around
//! [`run`](crate::run). The binary's `main` is [`main`], so that other
//! binaries (the end-to-end suite's gateway, which its chaos scenarios kill)
//! are the same program.
//!
//! - `gateway [--config gateway.toml]`: runs a gateway until Ctrl-C or
//!   SIGTERM (a graceful shutdown: see `shutdown_grace_s`);
//! - `gateway [--config gateway.toml] cert issue --node ID --out DIR`:
//!   issues an agent's client certificate from the gateway's CA.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// The Switchyard QUIC gateway.
#[derive(Parser)]
#[command(name = "gateway", version, about)]
struct Args {
    /// Configuration file (TOML); without one the embedded defaults apply
    /// (listen on 127.0.0.1:4433, data in ~/.local/share/switchyard).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Certificates for agents (mTLS).
    Cert {
        #[command(subcommand)]
        action: CertAction,
    },
}

#[derive(clap::Subcommand)]
enum CertAction {
    /// Issues a client certificate for a node from the gateway's CA
    /// (`client-cert.pem`, `client-key.pem` in DIR); the node's agent names
    /// them as `client_cert` and `client_key`.
    Issue {
        /// The node id the certificate carries (its common name).
        #[arg(long)]
        node: String,
        /// Folder to write the certificate and key to.
        #[arg(long)]
        out: PathBuf,
    },
}

/// The gateway program: parses the command line, logs to stderr
/// (`RUST_LOG`, default `info`) and runs the gateway until Ctrl-C or
/// SIGTERM, or issues a certificate; the exit status says whether it
/// stopped cleanly.
pub fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match gateway(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn gateway(args: Args) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => crate::GatewayConfig::load(path)?,
        None => crate::GatewayConfig::default(),
    };
    if let Some(Command::Cert {
        action: CertAction::Issue { node, out },
    }) = &args.command
    {
        let issued = crate::certs::issue(&config, node, out)?;
        println!(
            "client certificate for node {node}: {}",
            issued.cert.display()
        );
        println!("its key (keep it secret): {}", issued.key.display());
        println!(
            "in the agent's config: client_cert = {:?}, client_key = {:?}",
            issued.cert, issued.key
        );
        return Ok(());
    }
    let runtime = transport::runtime::build(config.worker_threads)
        .context("cannot start the async runtime")?;
    runtime.block_on(crate::run(config, transport::signals::shutdown()))?;
    Ok(())
}
