//! `gateway [--config gateway.toml]`: runs a Switchyard gateway until Ctrl-C.
//! `gateway [--config gateway.toml] cert issue --node ID --out DIR`: issues
//! an agent's client certificate from the gateway's CA.

use std::path::PathBuf;

use clap::Parser;

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
    if let Some(Command::Cert {
        action: CertAction::Issue { node, out },
    }) = &args.command
    {
        let issued = switchyard_gateway::certs::issue(&config, node, out)?;
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
