//! Section 5's setup: a gateway of its own holding `N` agent connections
//! (the fleet program `switchyard-e2e-fleet`, N agents in one process
//! sending stats every second), its CPU and memory at idle and under load,
//! and the policy's pick time over the metrics.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::fleet::{LEAST, Ports, TOKEN, http_get, wait_nodes};
use crate::procs::{Proc, free_port, wait_tcp};

/// The service every fleet agent hosts (a built-in echo).
pub const SERVICE: &str = "scale-echo";

/// `gateway.toml` admitting `agents` agents from loopback.
pub fn render_gateway(ports: Ports, data_dir: &Path, plugins_dir: &Path, agents: usize) -> String {
    let limit = agents + 64;
    format!(
        "listen = \"127.0.0.1:{q}\"\nadmin_listen = \"127.0.0.1:{a}\"\ndata_dir = \"{d}\"\n\
         plugins_dir = \"{p}\"\ndefault_policy = \"{LEAST}\"\nagent_token = \"{TOKEN}\"\n\
         shutdown_grace_s = 0\n\n[http]\nenabled = false\n\n\
         [agents]\nmax_agents = {limit}\nmax_agents_per_ip = {limit}\n\n\
         [quic]\nmax_connections = {limit}\nmax_connections_per_ip = {limit}\nmax_pending_handshakes = {limit}\n",
        q = ports.quic,
        a = ports.admin,
        d = data_dir.display(),
        p = plugins_dir.display(),
    )
}

/// A gateway and the fleet program's agents.
#[derive(Debug)]
pub struct ScaleFleet {
    /// The gateway.
    pub gateway: Proc,
    /// The process of all the agents.
    pub agents: Proc,
    /// The gateway's ports.
    pub ports: Ports,
    /// The gateway's CA.
    pub ca: std::path::PathBuf,
    /// How long until every agent was registered, s.
    pub ready_s: f64,
    /// The gateway's RSS before any agent came, MiB.
    pub rss_before_mib: f64,
}

impl ScaleFleet {
    /// Starts the gateway, then `program` with `agents` agents, and waits for
    /// its `ready N` line and the gateway to list them.
    ///
    /// # Errors
    /// A program fails to start or the agents do not all register in time.
    pub fn start(
        bin_dir: &Path,
        program: &Path,
        plugins_dir: &Path,
        dir: &Path,
        agents: usize,
    ) -> Result<Self> {
        let dir = dir.join("scale");
        fs::create_dir_all(&dir)?;
        let ports = Ports {
            quic: free_port()?,
            admin: free_port()?,
            http: 0,
        };
        let data = dir.join("data");
        let conf = dir.join("gateway.toml");
        fs::write(&conf, render_gateway(ports, &data, plugins_dir, agents))?;
        let c = conf.display().to_string();
        let mut gateway = Proc::spawn(
            "scale gateway",
            &bin_dir.join("gateway"),
            &["--config", &c],
            &dir.join("gateway.log"),
        )?;
        wait_tcp(ports.admin, Duration::from_secs(30))
            .context("scale gateway: see its gateway.log")?;
        gateway.check_alive()?;
        let ca = data.join("ca.pem");
        std::thread::sleep(Duration::from_millis(500));
        let rss_before_mib = crate::procs::rss_mib(&[gateway.pid()]);
        let quic = format!("127.0.0.1:{}", ports.quic);
        let (ca_s, n) = (ca.display().to_string(), agents.to_string());
        let log = dir.join("fleet.log");
        let start = Instant::now();
        let mut fleet = Proc::spawn(
            "fleet",
            program,
            &[
                "--gateway",
                &quic,
                "--ca",
                &ca_s,
                "--token",
                TOKEN,
                "--agents",
                &n,
                "--service",
                SERVICE,
                "--keep-stdin",
            ],
            &log,
        )?;
        let want = format!("ready {agents}");
        loop {
            let text = fs::read_to_string(&log).unwrap_or_default();
            if text.lines().any(|l| l.trim() == want) {
                break;
            }
            if let Some(line) = text.lines().find(|l| l.starts_with("ready ")) {
                bail!("fleet program: {line} of {agents}; see {}", log.display());
            }
            fleet.check_alive()?;
            if start.elapsed() > Duration::from_secs(180) {
                bail!("fleet program not ready after 180 s; see {}", log.display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        wait_nodes(ports.admin, agents, Duration::from_secs(30))?;
        Ok(Self {
            gateway,
            agents: fleet,
            ports,
            ca,
            ready_s: start.elapsed().as_secs_f64(),
            rss_before_mib,
        })
    }

    /// Sum and count of `policy_pick_duration_seconds` in `/metrics`.
    pub fn pick_totals(&self) -> Option<(f64, f64)> {
        Some(pick_totals(&http_get(self.ports.admin, "/metrics").ok()?))
    }
}

/// Sum (s) and count of every `policy_pick_duration_seconds` series in a
/// Prometheus text exposition (0 and 0 before the first pick).
pub fn pick_totals(metrics: &str) -> (f64, f64) {
    let total = |suffix: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(&format!("policy_pick_duration_seconds{suffix}")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    (total("_sum"), total("_count"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_gateway_admits_every_agent_from_loopback() {
        let ports = Ports {
            quic: 1,
            admin: 2,
            http: 0,
        };
        let v: toml::Value = toml::from_str(&render_gateway(
            ports,
            Path::new("/d"),
            Path::new("/p"),
            1000,
        ))
        .expect("toml");
        assert_eq!(v["agents"]["max_agents_per_ip"].as_integer(), Some(1064));
        assert_eq!(v["quic"]["max_connections_per_ip"].as_integer(), Some(1064));
        assert_eq!(v["http"]["enabled"].as_bool(), Some(false));
    }

    #[test]
    fn pick_totals_add_every_series() {
        let text = "# TYPE policy_pick_duration_seconds histogram\n\
                    policy_pick_duration_seconds_bucket{policy=\"a\",le=\"0.001\"} 3\n\
                    policy_pick_duration_seconds_sum{policy=\"a\"} 0.002\n\
                    policy_pick_duration_seconds_count{policy=\"a\"} 4\n\
                    policy_pick_duration_seconds_sum{policy=\"b\"} 0.001\n\
                    policy_pick_duration_seconds_count{policy=\"b\"} 1\n";
        assert_eq!(pick_totals(text), (0.003, 5.0));
        assert_eq!(pick_totals(""), (0.0, 0.0));
    }
}
