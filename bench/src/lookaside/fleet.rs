//! The `lookaside` section's fleet: the release gateway (one thread, leases
//! on) and two agents, each with a direct port (`[direct]` on a loopback
//! port, its certificate issued from the gateway's CA) and three services:
//! `http` posting to one of the static backends, the built-in `echo`, and
//! `stream`, an `openai` service in front of one toy model that streams
//! its tokens as fast as it can.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use transport::TlsFiles;

use crate::fleet::{LEAST, Ports, TOKEN, wait_nodes};
use crate::procs::{Proc, free_port, wait_tcp};

/// The most calls a lease may ask for (`[leases] max_calls`): enough for
/// the long-held leases of the `direct` row.
pub const MAX_LEASE_CALLS: u32 = 1_000_000;
/// The longest lease (`[leases] max_ttl_ms`), ms.
pub const MAX_TTL_MS: u64 = 600_000;
/// The largest payload the gateway and the agents take, bytes (32 MiB:
/// room for the 16 MiB payloads).
pub const MAX_PAYLOAD: u64 = 32 * 1024 * 1024;
/// Each service's `max_concurrent` on each agent: room for every lease
/// the section holds at once.
pub const MAX_CONCURRENT: u32 = 256;

/// `gateway.toml`: one thread (as HAProxy's `nbthread 1`), the services'
/// policy least-request, leases allowed up to [`MAX_LEASE_CALLS`] calls.
pub fn render_gateway(ports: Ports, data_dir: &Path, plugins_dir: &Path) -> String {
    let mut s = format!(
        "listen = \"127.0.0.1:{q}\"\nadmin_listen = \"127.0.0.1:{a}\"\ndata_dir = \"{d}\"\n\
         plugins_dir = \"{p}\"\ndefault_policy = \"{LEAST}\"\nagent_token = \"{TOKEN}\"\n\
         shutdown_grace_s = 0\nworker_threads = 1\nmax_payload_bytes = {MAX_PAYLOAD}\n\n\
         [http]\nlisten = \"127.0.0.1:{h}\"\n\n\
         [leases]\nmax_calls = {MAX_LEASE_CALLS}\nmax_ttl_ms = {MAX_TTL_MS}\n\n",
        q = ports.quic,
        a = ports.admin,
        h = ports.http,
        d = data_dir.display(),
        p = plugins_dir.display(),
    );
    for service in ["http", "echo", "stream"] {
        let _ = writeln!(s, "[services.\"{service}\"]\npolicy = \"{LEAST}\"\n");
    }
    s
}

/// Where agent `index` takes direct calls and with what certificate.
#[derive(Debug, Clone)]
pub struct Direct {
    /// The loopback UDP port.
    pub port: u16,
    /// The certificate chain (PEM), signed by the gateway's CA.
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
}

/// `agent.toml` of agent `index`: its direct port, `http` posting to
/// `backend`, `echo`, and `stream` in front of the toy model on `toy`.
pub fn render_agent(
    index: usize,
    quic: u16,
    ca: &Path,
    direct: &Direct,
    backend: u16,
    toy: u16,
) -> String {
    let mut s = format!(
        "gateway = \"127.0.0.1:{quic}\"\nca = {ca:?}\ntoken = \"{TOKEN}\"\nnode_id = \"agent-{index}\"\n\
         shutdown_grace_s = 0\nmax_payload_bytes = {MAX_PAYLOAD}\n\n\
         [direct]\nlisten = \"127.0.0.1:{port}\"\ncert = {cert:?}\nkey = {key:?}\n\n",
        ca = ca.display().to_string(),
        port = direct.port,
        cert = direct.cert.display().to_string(),
        key = direct.key.display().to_string(),
    );
    let _ = writeln!(
        s,
        "[[services]]\nname = \"http\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{backend}/\"\nmax_concurrent = {MAX_CONCURRENT}\n"
    );
    let _ = writeln!(
        s,
        "[[services]]\nname = \"echo\"\nkind = \"echo\"\nmax_concurrent = {MAX_CONCURRENT}\n"
    );
    let _ = writeln!(
        s,
        "[[services]]\nname = \"stream\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:{toy}/v1\"\nmax_concurrent = {MAX_CONCURRENT}\n"
    );
    s
}

/// The section's processes (killed when dropped).
#[derive(Debug)]
pub struct LookAsideFleet {
    /// The gateway.
    pub gateway: Proc,
    /// The agents.
    pub agents: Vec<Proc>,
    /// The toy model behind the `stream` services (held so that it is
    /// killed with the fleet).
    _toy: Proc,
    /// The gateway's ports.
    pub ports: Ports,
    /// The gateway's CA (clients trust it, for the gateway and the direct
    /// ports alike).
    pub ca: PathBuf,
}

impl LookAsideFleet {
    /// Starts the toy model, the gateway, then one agent per backend with
    /// its direct port, and waits until every agent is registered.
    ///
    /// # Errors
    /// A program fails to start, a certificate cannot be issued, or the
    /// agents do not register within 30 s.
    pub fn start(
        bin_dir: &Path,
        plugins_dir: &Path,
        toy: &Path,
        backends: &[u16],
        dir: &Path,
    ) -> Result<Self> {
        fs::create_dir_all(dir)?;
        let toy_port = free_port()?;
        let args = [
            "--port".to_string(),
            toy_port.to_string(),
            "--name".into(),
            "toy".into(),
            "--load-ms".into(),
            "0".into(),
            "--tokens-per-s".into(),
            "1000000".into(),
            "--ignore-stdin".into(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut toy = Proc::spawn("toy", toy, &args, &dir.join("toy.log"))?;
        wait_tcp(toy_port, Duration::from_secs(30)).context("toy model: see toy.log")?;
        toy.check_alive()?;
        let ports = Ports {
            quic: free_port()?,
            admin: free_port()?,
            http: free_port()?,
        };
        let data = dir.join("data");
        let conf = dir.join("gateway.toml");
        fs::write(&conf, render_gateway(ports, &data, plugins_dir))?;
        let gateway = Proc::gateway("gateway", bin_dir, &conf, dir, ports.admin)?;
        let files = TlsFiles::in_dir(&data);
        let mut agents = Vec::new();
        for (i, backend) in backends.iter().enumerate() {
            let node = format!("agent-{i}");
            let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
            let issued = transport::identity::issue_direct_cert(
                &files,
                &node,
                &names,
                &dir.join(format!("{node}-direct")),
            )
            .with_context(|| format!("direct certificate of {node}"))?;
            let direct = Direct {
                port: free_port()?,
                cert: issued.cert,
                key: issued.key,
            };
            let conf = dir.join(format!("{node}.toml"));
            let text = render_agent(i, ports.quic, &files.ca, &direct, *backend, toy_port);
            fs::write(&conf, text)?;
            let c = conf.display().to_string();
            agents.push(Proc::spawn(
                &node,
                &bin_dir.join("node-agent"),
                &["--config", &c],
                &dir.join(format!("{node}.log")),
            )?);
        }
        let fleet = Self {
            gateway,
            agents,
            _toy: toy,
            ports,
            ca: files.ca,
        };
        wait_nodes(fleet.ports.admin, backends.len(), Duration::from_secs(30))
            .with_context(|| format!("see the logs in {}", dir.display()))?;
        Ok(fleet)
    }

    /// The gateway's pid.
    pub fn gateway_pid(&self) -> u32 {
        self.gateway.pid()
    }

    /// The gateway's and the agents' pids.
    pub fn all_pids(&self) -> Vec<u32> {
        std::iter::once(self.gateway.pid())
            .chain(self.agents.iter().map(Proc::pid))
            .collect()
    }

    /// `127.0.0.1:QUIC`.
    pub fn quic_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports.quic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_config_allows_long_leases_and_large_payloads() {
        let ports = Ports {
            quic: 1,
            admin: 2,
            http: 3,
        };
        let text = render_gateway(ports, Path::new("/d"), Path::new("/p"));
        let v: toml::Value = toml::from_str(&text).expect("valid toml");
        assert_eq!(v["worker_threads"].as_integer(), Some(1));
        assert_eq!(
            v["max_payload_bytes"].as_integer(),
            Some(MAX_PAYLOAD as i64)
        );
        assert_eq!(
            v["leases"]["max_calls"].as_integer(),
            Some(i64::from(MAX_LEASE_CALLS))
        );
        for service in ["http", "echo", "stream"] {
            assert_eq!(v["services"][service]["policy"].as_str(), Some(LEAST));
        }
    }

    #[test]
    fn each_agent_has_a_direct_port_and_its_own_backend() {
        let direct = Direct {
            port: 7443,
            cert: "/c/direct-cert.pem".into(),
            key: "/c/direct-key.pem".into(),
        };
        let text = render_agent(1, 4433, Path::new("/d/ca.pem"), &direct, 7002, 9000);
        let v: toml::Value = toml::from_str(&text).expect("valid toml");
        assert_eq!(v["direct"]["listen"].as_str(), Some("127.0.0.1:7443"));
        assert_eq!(v["direct"]["cert"].as_str(), Some("/c/direct-cert.pem"));
        assert_eq!(v["node_id"].as_str(), Some("agent-1"));
        let services = v["services"].as_array().expect("services");
        let names: Vec<&str> = services.iter().filter_map(|s| s["name"].as_str()).collect();
        assert_eq!(names, ["http", "echo", "stream"]);
        assert_eq!(services[0]["url"].as_str(), Some("http://127.0.0.1:7002/"));
        assert_eq!(
            services[2]["base_url"].as_str(),
            Some("http://127.0.0.1:9000/v1")
        );
    }
}
