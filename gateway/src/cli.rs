//! The `gateway` program: its command line, logging and signals, around
//! [`run`](crate::run). The binary's `main` is [`main`], so that other
//! binaries (the end-to-end suite's gateway, which its chaos scenarios kill)
//! are the same program.
//!
//! - `gateway [--config gateway.toml]`: runs a gateway until Ctrl-C or
//!   SIGTERM (a graceful shutdown: see `shutdown_grace_s`);
//! - `gateway [--config gateway.toml] cert issue --node ID --out DIR
//!   [--direct NAME[,NAME]]`: issues an agent's client certificate from the
//!   gateway's CA, and with `--direct` its direct port's server certificate
//!   for those names;
//! - `gateway --print-example-config`: prints a commented `gateway.toml`.
//!
//! A gateway whose `plugins_dir` is the default (`plugins/dist`, relative
//! to the working directory) and finds no policy there looks beside its
//! program too ([`plugin_dirs`]), and says where it looked when it finds
//! none.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
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
    /// Prints a commented example configuration and exits.
    #[arg(long)]
    print_example_config: bool,
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
        /// Also issues the server certificate of the node's direct port
        /// (`direct-cert.pem`, `direct-key.pem`) for these DNS names or IP
        /// addresses (what clients dial), comma-separated.
        #[arg(long, value_delimiter = ',')]
        direct: Vec<String>,
    },
}

/// A commented example `gateway.toml`, as `--print-example-config` prints
/// it: every key it sets holds its default value.
pub const EXAMPLE_CONFIG: &str = include_str!("example-gateway.toml");

/// The gateway program: parses the command line, logs to stderr
/// (`RUST_LOG`, default `info`) and runs the gateway until Ctrl-C or
/// SIGTERM, or issues a certificate; the exit status says whether it
/// stopped cleanly.
pub fn main() -> ExitCode {
    let args = Args::parse();
    if args.print_example_config {
        print!("{EXAMPLE_CONFIG}");
        return ExitCode::SUCCESS;
    }
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
            eprintln!("error: {}", transport::report::one_line(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn gateway(args: Args) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => crate::GatewayConfig::load(path)?,
        None => crate::GatewayConfig::default(),
    };
    if let Some(Command::Cert {
        action: CertAction::Issue { node, out, direct },
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
        if !direct.is_empty() {
            let issued = crate::certs::issue_direct(&config, node, direct, out)?;
            println!(
                "direct port certificate for node {node} ({}): {}",
                direct.join(", "),
                issued.cert.display()
            );
            println!("its key (keep it secret): {}", issued.key.display());
            println!(
                "in the agent's config: [direct] cert = {:?}, key = {:?}",
                issued.cert, issued.key
            );
        }
        return Ok(());
    }
    find_plugins(&mut config);
    let runtime = transport::runtime::build(config.worker_threads)
        .context("cannot start the async runtime")?;
    runtime.block_on(crate::run(config, transport::signals::shutdown()))?;
    Ok(())
}

/// The default `plugins_dir`, relative to the working directory.
const DEFAULT_PLUGINS_DIR: &str = "plugins/dist";

/// Where a gateway with the default `plugins_dir` looks for policies, in
/// order: `plugins/dist` in the working directory, then beside the program
/// `exe`: `plugins/` in its folder, `../share/switchyard/plugins` (an
/// installed layout) and `../../plugins/dist` (a program built in the
/// repository's `target/` folder).
pub fn plugin_dirs(exe: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from(DEFAULT_PLUGINS_DIR)];
    if let Some(bin) = exe.and_then(Path::parent) {
        dirs.push(bin.join("plugins"));
        dirs.push(bin.join("../share/switchyard/plugins"));
        dirs.push(bin.join("../../plugins/dist"));
    }
    dirs
}

/// Whether `dir` holds at least one `*.wasm` file.
fn has_plugins(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "wasm"))
    })
}

/// The first of `dirs` that holds a policy, if any.
fn first_with_plugins(dirs: &[PathBuf]) -> Option<&PathBuf> {
    dirs.iter().find(|dir| has_plugins(dir))
}

/// Points a default `plugins_dir` at the first of [`plugin_dirs`] that
/// holds a policy; with none, leaves it and warns where it looked.
fn find_plugins(config: &mut crate::GatewayConfig) {
    if config.plugins_dir != Path::new(DEFAULT_PLUGINS_DIR) {
        return;
    }
    let exe = std::env::current_exe().ok();
    let dirs = plugin_dirs(exe.as_deref());
    match first_with_plugins(&dirs) {
        Some(dir) => {
            if *dir != config.plugins_dir {
                let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
                tracing::info!(dir = %dir.display(), "policies found beside the program");
                config.plugins_dir = dir;
            }
        }
        None => {
            let looked = dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            tracing::warn!(
                "no policy plugin (*.wasm) in {looked}: picks use the built-in round-robin; \
                 set plugins_dir in gateway.toml (`make plugins` builds them into plugins/dist)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_and_states_the_defaults() {
        let example = crate::GatewayConfig::from_toml_str(EXAMPLE_CONFIG).expect("parses");
        let default = crate::GatewayConfig::default();
        assert_eq!(example.listen, default.listen);
        assert_eq!(example.admin_listen, default.admin_listen);
        assert_eq!(example.http.listen, default.http.listen);
        assert_eq!(example.http.timeout_ms, default.http.timeout_ms);
        assert_eq!(example.http.cors_origins, default.http.cors_origins);
        assert_eq!(example.metrics, default.metrics);
        assert_eq!(example.default_policy, default.default_policy);
        assert_eq!(example.pick_deadline_ms, default.pick_deadline_ms);
        assert_eq!(example.max_payload_bytes, default.max_payload_bytes);
        assert_eq!(example.max_timeout_ms, default.max_timeout_ms);
        assert_eq!(example.shutdown_grace_s, default.shutdown_grace_s);
        assert_eq!(example.queue, default.queue);
        assert_eq!(example.retry, default.retry);
        assert_eq!(example.leases, default.leases);
        assert!(example.services.contains_key("sha256"));
    }

    #[test]
    fn the_example_config_is_printed() {
        let args = Args::try_parse_from(["gateway", "--print-example-config"]).expect("parses");
        assert!(args.print_example_config && args.config.is_none());
    }

    #[test]
    fn cert_issue_with_direct_writes_the_direct_port_certificate_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("gateway.toml");
        std::fs::write(
            &config,
            format!("data_dir = {:?}\n", dir.path().join("data")),
        )
        .expect("write");
        let out = dir.path().join("node-a");
        let args = Args::try_parse_from([
            "gateway".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "cert".as_ref(),
            "issue".as_ref(),
            "--node".as_ref(),
            "node-a".as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
            "--direct".as_ref(),
            "127.0.0.1,node-a.example".as_ref(),
        ] as [&std::ffi::OsStr; 11])
        .expect("parses");
        gateway(args).expect("issued");
        for file in [
            "client-cert.pem",
            "client-key.pem",
            "direct-cert.pem",
            "direct-key.pem",
        ] {
            assert!(out.join(file).is_file(), "{file}");
        }
        let chain = transport::tls::load_certs(&out.join("direct-cert.pem")).expect("chain");
        assert_eq!(
            transport::identity::node_id_of(&chain[0]).expect("cn"),
            "node-a"
        );
    }

    #[test]
    fn policies_are_looked_for_beside_the_program() {
        let dirs = plugin_dirs(Some(Path::new("/opt/switchyard/bin/gateway")));
        assert_eq!(
            dirs,
            [
                PathBuf::from("plugins/dist"),
                PathBuf::from("/opt/switchyard/bin/plugins"),
                PathBuf::from("/opt/switchyard/bin/../share/switchyard/plugins"),
                PathBuf::from("/opt/switchyard/bin/../../plugins/dist"),
            ]
        );
        assert_eq!(plugin_dirs(None), [PathBuf::from("plugins/dist")]);
    }

    #[test]
    fn the_first_folder_holding_a_policy_wins() {
        let root = tempfile::tempdir().expect("tempdir");
        let empty = root.path().join("empty");
        let other = root.path().join("other");
        let with = root.path().join("with");
        for dir in [&empty, &other, &with] {
            std::fs::create_dir(dir).expect("mkdir");
        }
        std::fs::write(other.join("notes.txt"), "x").expect("write");
        std::fs::write(with.join("round-robin.wasm"), "x").expect("write");
        let missing = root.path().join("missing");
        let dirs = [missing.clone(), empty.clone(), other.clone(), with.clone()];
        assert_eq!(first_with_plugins(&dirs), Some(&with));
        assert_eq!(first_with_plugins(&[missing, empty, other]), None);
    }
}
