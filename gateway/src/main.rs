//! `gateway [--config gateway.toml]`: runs a Switchyard gateway until Ctrl-C.

use std::path::PathBuf;

use clap::Parser;

/// The Switchyard QUIC gateway.
#[derive(Parser)]
#[command(name = "gateway", version, about)]
struct Args {
    /// Configuration file (TOML); without one the embedded defaults apply
    /// (listen on 127.0.0.1:4433, data in ~/.local/share/switchyard).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let config = match &args.config {
        Some(path) => switchyard_gateway::GatewayConfig::load(path)?,
        None => switchyard_gateway::GatewayConfig::default(),
    };
    let shutdown = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    switchyard_gateway::run(config, shutdown).await?;
    Ok(())
}
