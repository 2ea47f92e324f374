//! Switchyard's side: the release `gateway` and two `node-agent` programs
//! started as processes on loopback, fresh ports, a temp data dir. Each
//! agent's `http` service posts to one of the two backends, its `openai`
//! service `chat` to the same backend's `/v1/chat/completions`; `echo` and one
//! `echo-POLICY` service per plugin (that service's policy) are built-ins;
//! `cached` is an idempotent `http` service with a result cache.

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::procs::{Proc, free_port};

/// The agents' shared token (loopback only).
pub const TOKEN: &str = "switchyard-bench-token";
/// The policy of the `http`, `echo` and `cached` services: least
/// connections, as the peers'.
pub const LEAST: &str = "least-request";
/// The policy name no plugin provides: services given it are ranked by the
/// gateway's built-in round-robin.
pub const BUILTIN: &str = "builtin-round-robin";

/// What the fleet is made of.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// Folder of `gateway` and `node-agent`.
    pub bin_dir: PathBuf,
    /// The policy plugins (`*.wasm`).
    pub plugins_dir: PathBuf,
    /// The plugins' names (file stems), one `echo-NAME` service each.
    pub policies: Vec<String>,
    /// The backends' ports: agent i posts to `backends[i]`.
    pub backends: Vec<u16>,
    /// The gateway's `worker_threads`: `Some(1)` one thread, as HAProxy's
    /// `nbthread 1` and nginx's one worker; `None` leaves the key out (the
    /// gateway's default).
    pub gateway_threads: Option<usize>,
}

/// The gateway's ports.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// QUIC.
    pub quic: u16,
    /// Admin HTTP.
    pub admin: u16,
    /// HTTP ingress (plain).
    pub http: u16,
}

/// `gateway.toml`: the gateway on `spec.gateway_threads` threads.
pub fn render_gateway(spec: &FleetSpec, ports: Ports, data_dir: &Path) -> String {
    let threads = spec
        .gateway_threads
        .map(|n| format!("worker_threads = {n}\n"))
        .unwrap_or_default();
    let mut s = format!(
        "listen = \"127.0.0.1:{q}\"\nadmin_listen = \"127.0.0.1:{a}\"\ndata_dir = \"{d}\"\n\
         plugins_dir = \"{p}\"\ndefault_policy = \"{BUILTIN}\"\nagent_token = \"{TOKEN}\"\n\
         shutdown_grace_s = 0\n{threads}\n[http]\nlisten = \"127.0.0.1:{h}\"\n\n",
        q = ports.quic,
        a = ports.admin,
        h = ports.http,
        d = data_dir.display(),
        p = spec.plugins_dir.display(),
    );
    for service in ["http", "echo", "chat"] {
        let _ = writeln!(s, "[services.\"{service}\"]\npolicy = \"{LEAST}\"\n");
    }
    let _ = writeln!(
        s,
        "[services.\"cached\"]\npolicy = \"{LEAST}\"\nidempotent = true\ncache_ttl_s = 3600\n"
    );
    for p in &spec.policies {
        let _ = writeln!(s, "[services.\"echo-{p}\"]\npolicy = \"{p}\"\n");
    }
    s
}

/// `agent.toml` of agent `index`, its `http` services posting to `backend`.
pub fn render_agent(spec: &FleetSpec, index: usize, quic: u16, ca: &Path, backend: u16) -> String {
    let mut s = format!(
        "gateway = \"127.0.0.1:{quic}\"\nca = \"{ca}\"\ntoken = \"{TOKEN}\"\nnode_id = \"agent-{index}\"\n\
         shutdown_grace_s = 0\n\n",
        ca = ca.display()
    );
    for name in ["http", "cached"] {
        let _ = writeln!(
            s,
            "[[services]]\nname = \"{name}\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{backend}/\"\nmax_concurrent = 64\n"
        );
    }
    let _ = writeln!(
        s,
        "[[services]]\nname = \"chat\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:{backend}/v1\"\nmax_concurrent = 64\n"
    );
    let echoes = std::iter::once("echo".to_string())
        .chain(spec.policies.iter().map(|p| format!("echo-{p}")));
    for name in echoes {
        let _ = writeln!(
            s,
            "[[services]]\nname = \"{name}\"\nkind = \"echo\"\nmax_concurrent = 64\n"
        );
    }
    s
}

/// A running gateway and its agents.
#[derive(Debug)]
pub struct Fleet {
    /// The gateway's process.
    pub gateway: Proc,
    /// The agents' processes.
    pub agents: Vec<Proc>,
    /// The gateway's ports.
    pub ports: Ports,
    /// The gateway's CA (clients trust it).
    pub ca: PathBuf,
}

impl Fleet {
    /// Starts the gateway, then one agent per backend, and waits until every
    /// agent is registered.
    ///
    /// # Errors
    /// A program is missing, fails to start, or the agents do not register
    /// within 30 s.
    pub fn start(spec: &FleetSpec, dir: &Path) -> Result<Self> {
        let dir = dir.join("switchyard");
        fs::create_dir_all(&dir)?;
        let ports = Ports {
            quic: free_port()?,
            admin: free_port()?,
            http: free_port()?,
        };
        let data = dir.join("data");
        let conf = dir.join("gateway.toml");
        fs::write(&conf, render_gateway(spec, ports, &data))?;
        let gateway = Proc::gateway("gateway", &spec.bin_dir, &conf, &dir, ports.admin)?;
        let ca = data.join("ca.pem");
        let mut agents = Vec::new();
        for (i, backend) in spec.backends.iter().enumerate() {
            let conf = dir.join(format!("agent-{i}.toml"));
            fs::write(&conf, render_agent(spec, i, ports.quic, &ca, *backend))?;
            let c = conf.display().to_string();
            agents.push(Proc::spawn(
                &format!("agent-{i}"),
                &spec.bin_dir.join("node-agent"),
                &["--config", &c],
                &dir.join(format!("agent-{i}.log")),
            )?);
        }
        let fleet = Self {
            gateway,
            agents,
            ports,
            ca,
        };
        wait_nodes(
            fleet.ports.admin,
            spec.backends.len(),
            Duration::from_secs(30),
        )?;
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

    /// The agents' pids.
    pub fn agent_pids(&self) -> Vec<u32> {
        self.agents.iter().map(Proc::pid).collect()
    }

    /// The policy that served one call of `service` through the HTTP
    /// ingress (its `x-switchyard-policy` header), to check the config.
    pub fn served_policy(&self, service: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.ports.http)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "POST /v1/call/{service} HTTP/1.0\r\nHost: 127.0.0.1\r\ncontent-length: 2\r\n\r\nhi"
        )
        .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        header(&text, "x-switchyard-policy")
    }
}

/// Waits until the gateway with admin port `admin` lists `n` nodes.
///
/// # Errors
/// Fewer are registered after `within`.
pub fn wait_nodes(admin: u16, n: usize, within: Duration) -> Result<()> {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < within {
        if let Ok(body) = http_get(admin, "/api/nodes") {
            if let Ok(serde_json::Value::Array(nodes)) = serde_json::from_str(&body)
                && nodes.len() >= n
            {
                return Ok(());
            }
            last = body;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    last.truncate(500);
    bail!("{n} agents not registered after {within:?}; /api/nodes: {last}")
}

/// A plain HTTP/1.0 GET on loopback: the body.
///
/// # Errors
/// Connection or read failure, or no header/body split.
pub fn http_get(port: u16, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (_, body) = text.split_once("\r\n\r\n").context("no HTTP body")?;
    Ok(body.to_string())
}

/// The value of header `name` (any case) in an HTTP response's text.
pub fn header(response: &str, name: &str) -> Option<String> {
    let head = response.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_is_found_in_any_case_and_only_in_the_head() {
        let r = "HTTP/1.1 200 OK\r\nX-Switchyard-Policy: random\r\n\r\nx-switchyard-node: no";
        assert_eq!(header(r, "x-switchyard-policy").as_deref(), Some("random"));
        assert_eq!(header(r, "x-switchyard-node"), None);
    }

    fn spec() -> FleetSpec {
        FleetSpec {
            bin_dir: "/b".into(),
            plugins_dir: "/p".into(),
            policies: vec!["random".into(), "least-request".into()],
            backends: vec![7001, 7002],
            gateway_threads: Some(1),
        }
    }

    #[test]
    fn the_gateway_config_parses_and_names_each_policy() {
        let ports = Ports {
            quic: 1,
            admin: 2,
            http: 3,
        };
        let text = render_gateway(&spec(), ports, Path::new("/d"));
        let v: toml::Value = toml::from_str(&text).expect("valid toml");
        assert_eq!(v["listen"].as_str(), Some("127.0.0.1:1"));
        assert_eq!(v["http"]["listen"].as_str(), Some("127.0.0.1:3"));
        assert_eq!(
            v["services"]["echo-random"]["policy"].as_str(),
            Some("random")
        );
        assert_eq!(
            v["services"]["cached"]["cache_ttl_s"].as_integer(),
            Some(3600)
        );
        assert_eq!(v["default_policy"].as_str(), Some(BUILTIN));
        assert_eq!(v["worker_threads"].as_integer(), Some(1));
        let default = FleetSpec {
            gateway_threads: None,
            ..spec()
        };
        let text = render_gateway(&default, ports, Path::new("/d"));
        let v: toml::Value = toml::from_str(&text).expect("valid toml");
        assert!(v.get("worker_threads").is_none(), "{text}");
    }

    #[test]
    fn each_agent_posts_to_its_own_backend() {
        let text = render_agent(&spec(), 1, 4433, Path::new("/d/ca.pem"), 7002);
        let v: toml::Value = toml::from_str(&text).expect("valid toml");
        let services = v["services"].as_array().expect("services");
        let names: Vec<&str> = services.iter().filter_map(|s| s["name"].as_str()).collect();
        assert_eq!(
            names,
            [
                "http",
                "cached",
                "chat",
                "echo",
                "echo-random",
                "echo-least-request"
            ]
        );
        assert_eq!(services[0]["url"].as_str(), Some("http://127.0.0.1:7002/"));
        assert_eq!(v["node_id"].as_str(), Some("agent-1"));
    }
}
