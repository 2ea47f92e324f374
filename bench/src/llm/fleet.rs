//! The `llm` section's fleet: N toy model processes (each with its own
//! simulated KV cache), the release gateway and N agents, each agent with an
//! `openai` service in front of its own toy model.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::Settings;
use crate::fleet::{Ports, TOKEN, http_get, wait_nodes};
use crate::procs::{Proc, free_port, wait_tcp};

/// The chat service (the OpenAI `model`).
pub const SERVICE: &str = "chat";

/// The toy model program in `bin_dir`: `switchyard-toy-model`, else the
/// end-to-end package's `switchyard-e2e-toy-model`; it must know
/// `--kv-cache-tokens`.
///
/// # Errors
/// Neither is there, or the one there predates the KV cache.
pub fn toy_binary(bin_dir: &Path) -> Result<PathBuf> {
    for name in ["switchyard-toy-model", "switchyard-e2e-toy-model"] {
        let path = bin_dir.join(name);
        if !path.exists() {
            continue;
        }
        let help = Command::new(&path)
            .arg("--help")
            .output()
            .with_context(|| format!("{} --help", path.display()))?;
        if String::from_utf8_lossy(&help.stdout).contains("--kv-cache-tokens") {
            return Ok(path);
        }
        bail!(
            "{} has no --kv-cache-tokens: rebuild it (cargo build --release -p switchyard-toy-model)",
            path.display()
        );
    }
    bail!(
        "no switchyard-toy-model in {}: cargo build --release -p switchyard-toy-model",
        bin_dir.display()
    )
}

/// Whether the program at `path` holds the bytes `needle` (a config key
/// the build knows, e.g. `metrics_url`); false when it cannot be read.
pub fn agent_knows(path: &Path, needle: &[u8]) -> bool {
    fs::read(path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
}

/// `gateway.toml`: one thread, the service's policy `policy`.
pub fn render_gateway(policy: &str, ports: Ports, data_dir: &Path, plugins_dir: &Path) -> String {
    format!(
        "listen = \"127.0.0.1:{q}\"\nadmin_listen = \"127.0.0.1:{a}\"\ndata_dir = \"{d}\"\n\
         plugins_dir = \"{p}\"\ndefault_policy = \"{policy}\"\nagent_token = \"{TOKEN}\"\n\
         shutdown_grace_s = 0\nworker_threads = 1\n\n[http]\nlisten = \"127.0.0.1:{h}\"\n\n\
         [services.\"{SERVICE}\"]\npolicy = \"{policy}\"\n",
        q = ports.quic,
        a = ports.admin,
        h = ports.http,
        d = data_dir.display(),
        p = plugins_dir.display(),
    )
}

/// `agent.toml` of agent `index`: the `openai` service in front of the toy
/// model on `toy_port` (scraping its `/metrics` when `metrics_url`).
pub fn render_agent(
    settings: &Settings,
    index: usize,
    quic: u16,
    ca: &Path,
    toy_port: u16,
    metrics_url: bool,
) -> String {
    let mut s = format!(
        "gateway = \"127.0.0.1:{quic}\"\nca = \"{ca}\"\ntoken = \"{TOKEN}\"\nnode_id = \"llm-{index}\"\n\
         shutdown_grace_s = 0\nstats_interval_ms = 250\n\n[[services]]\nname = \"{SERVICE}\"\nkind = \"openai\"\n\
         base_url = \"http://127.0.0.1:{toy_port}/v1\"\nmax_concurrent = {mc}\n",
        ca = ca.display(),
        mc = settings.max_concurrent,
    );
    if metrics_url {
        let _ = writeln!(s, "metrics_url = \"http://127.0.0.1:{toy_port}/metrics\"");
    }
    s
}

/// A policy's fleet: toy models, gateway, agents (killed when dropped).
#[derive(Debug)]
pub struct LlmFleet {
    /// The toy models and their ports.
    pub toys: Vec<(Proc, u16)>,
    /// The gateway.
    pub gateway: Proc,
    /// The agents.
    pub agents: Vec<Proc>,
    /// The gateway's ports.
    pub ports: Ports,
}

impl LlmFleet {
    /// Starts `settings.nodes` toy models, the gateway with `policy` for the
    /// service, then the agents, and waits until every agent is registered.
    ///
    /// # Errors
    /// A program fails to start or the agents do not register within 30 s.
    pub fn start(
        settings: &Settings,
        policy: &str,
        bin_dir: &Path,
        toy: &Path,
        plugins_dir: &Path,
        dir: &Path,
        metrics_url: bool,
    ) -> Result<Self> {
        fs::create_dir_all(dir)?;
        let toys = start_toys(settings, toy, dir)?;
        let ports = Ports {
            quic: free_port()?,
            admin: free_port()?,
            http: free_port()?,
        };
        let data = dir.join("data");
        let conf = dir.join("gateway.toml");
        fs::write(&conf, render_gateway(policy, ports, &data, plugins_dir))?;
        let gateway = Proc::gateway("gateway", bin_dir, &conf, dir, ports.admin)?;
        let ca = data.join("ca.pem");
        let mut agents = Vec::new();
        for (i, (_, toy_port)) in toys.iter().enumerate() {
            let conf = dir.join(format!("agent-{i}.toml"));
            let text = render_agent(settings, i, ports.quic, &ca, *toy_port, metrics_url);
            fs::write(&conf, text)?;
            let c = conf.display().to_string();
            agents.push(Proc::spawn(
                &format!("agent-{i}"),
                &bin_dir.join("node-agent"),
                &["--config", &c],
                &dir.join(format!("agent-{i}.log")),
            )?);
        }
        wait_nodes(ports.admin, settings.nodes, Duration::from_secs(30))
            .with_context(|| format!("agents: see {}", dir.display()))?;
        wait_tcp(ports.http, Duration::from_secs(10)).context("HTTP ingress")?;
        Ok(Self {
            toys,
            gateway,
            agents,
            ports,
        })
    }

    /// The gateway's pid.
    pub fn gateway_pid(&self) -> u32 {
        self.gateway.pid()
    }

    /// The agents' pids.
    pub fn agent_pids(&self) -> Vec<u32> {
        self.agents.iter().map(Proc::pid).collect()
    }

    /// Σ `vllm:prefix_cache_hits_total` and Σ `vllm:prefix_cache_queries_total`
    /// over the toy models, tokens.
    ///
    /// # Errors
    /// A toy model's `/metrics` cannot be read or lacks them.
    pub fn kv_counters(&self) -> Result<(f64, f64)> {
        kv_counters(self.toys.iter().map(|(_, port)| *port))
    }
}

/// Starts `settings.nodes` toy models on free ports in `dir` (logs
/// `toy-I.log`) and waits until each accepts connections.
///
/// # Errors
/// One does not start or does not listen within 30 s.
pub fn start_toys(settings: &Settings, toy: &Path, dir: &Path) -> Result<Vec<(Proc, u16)>> {
    let mut toys = Vec::new();
    for i in 0..settings.nodes {
        let port = free_port()?;
        let args = [
            "--port".to_string(),
            port.to_string(),
            "--name".into(),
            SERVICE.into(),
            "--load-ms".into(),
            "0".into(),
            "--tokens-per-s".into(),
            settings.tokens_per_s.to_string(),
            "--kv-cache-tokens".into(),
            settings.kv_cache_tokens.to_string(),
            "--prefill-us-per-token".into(),
            settings.prefill_us_per_token.to_string(),
            "--max-running".into(),
            settings.max_running.to_string(),
            "--ignore-stdin".into(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = dir.join(format!("toy-{i}.log"));
        toys.push((Proc::spawn(&format!("toy-{i}"), toy, &args, &log)?, port));
    }
    for (toy, port) in &mut toys {
        wait_tcp(*port, Duration::from_secs(30)).context("toy model: see toy-N.log")?;
        toy.check_alive()?;
    }
    Ok(toys)
}

/// Σ `vllm:prefix_cache_hits_total` and Σ `vllm:prefix_cache_queries_total`
/// over the toy models on `ports`, tokens.
///
/// # Errors
/// A toy model's `/metrics` cannot be read or lacks them.
pub fn kv_counters(ports: impl IntoIterator<Item = u16>) -> Result<(f64, f64)> {
    let mut sum = (0.0, 0.0);
    for port in ports {
        let text = http_get(port, "/metrics")?;
        let get = |name: &str| {
            sample(&text, name).with_context(|| format!("no {name} at :{port}/metrics"))
        };
        sum.0 += get("vllm:prefix_cache_hits_total")?;
        sum.1 += get("vllm:prefix_cache_queries_total")?;
    }
    Ok(sum)
}

/// The value of the first sample of metric `name` in Prometheus' text format.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            return None;
        }
        line.rsplit(' ').next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_by_their_exact_name() {
        let text = "# TYPE vllm:prefix_cache_hits counter\n\
                    vllm:prefix_cache_hits_total{model_name=\"chat\"} 42\n\
                    vllm:prefix_cache_hits_total_other 7\nplain 3.5\n";
        assert_eq!(sample(text, "vllm:prefix_cache_hits_total"), Some(42.0));
        assert_eq!(sample(text, "plain"), Some(3.5));
        assert_eq!(sample(text, "vllm:prefix_cache_queries_total"), None);
    }

    #[test]
    fn the_configs_parse_and_name_the_policy_and_the_toy() {
        let ports = Ports {
            quic: 1,
            admin: 2,
            http: 3,
        };
        let g: toml::Value = toml::from_str(&render_gateway(
            "cache-aware",
            ports,
            Path::new("/d"),
            Path::new("/p"),
        ))
        .expect("valid toml");
        assert_eq!(
            g["services"][SERVICE]["policy"].as_str(),
            Some("cache-aware")
        );
        assert_eq!(g["http"]["listen"].as_str(), Some("127.0.0.1:3"));
        let s = Settings::new(true);
        let a: toml::Value =
            toml::from_str(&render_agent(&s, 2, 1, Path::new("/ca.pem"), 9000, true))
                .expect("valid toml");
        let svc = &a["services"][0];
        assert_eq!(svc["kind"].as_str(), Some("openai"));
        assert_eq!(svc["base_url"].as_str(), Some("http://127.0.0.1:9000/v1"));
        assert_eq!(
            svc["metrics_url"].as_str(),
            Some("http://127.0.0.1:9000/metrics")
        );
        let plain: toml::Value =
            toml::from_str(&render_agent(&s, 2, 1, Path::new("/ca.pem"), 9000, false))
                .expect("valid toml");
        assert!(plain["services"][0].get("metrics_url").is_none());
    }

    #[test]
    fn a_program_is_searched_for_a_config_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("prog");
        fs::write(&path, b"\0\x01 metrics_url \x02").expect("write");
        assert!(agent_knows(&path, b"metrics_url"));
        assert!(!agent_knows(&path, b"base_url"));
        assert!(!agent_knows(&dir.path().join("none"), b"x"));
    }
}
