//! Section 5's setup: a gateway of its own holding `N` agent connections
//! (the fleet program `switchyard-e2e-fleet`, N agents in one process
//! sending stats every second), its CPU and memory at idle and under load,
//! and the policy's pick time over the metrics.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use client::{CallOptions, Client, ClientConfig};
use loadgen::QuicTarget;

use crate::fleet::{LEAST, Ports, TOKEN, http_get, wait_nodes};
use crate::procs::{Proc, cpu_seconds, free_port, rss_mib};
use crate::report::{Section, col};
use crate::scenarios::{AnyTarget, IN_FLIGHT, Step, SystemResult, Timing, interleaved};
use crate::sections::{Setup, payload, system};

/// The service every fleet agent hosts (a built-in echo).
pub const SERVICE: &str = "scale-echo";

/// The default `--scale-max-candidates`: the sample a policy is offered in
/// the bounded rows.
pub const SAMPLE: usize = 16;

/// `gateway.toml` admitting `agents` agents from loopback, its policies
/// offered at most `max_candidates` candidates (0: every free node).
pub fn render_gateway(
    ports: Ports,
    data_dir: &Path,
    plugins_dir: &Path,
    agents: usize,
    max_candidates: usize,
) -> String {
    let limit = agents + 64;
    format!(
        "listen = \"127.0.0.1:{q}\"\nadmin_listen = \"127.0.0.1:{a}\"\ndata_dir = \"{d}\"\n\
         plugins_dir = \"{p}\"\ndefault_policy = \"{LEAST}\"\nagent_token = \"{TOKEN}\"\n\
         shutdown_grace_s = 0\nmax_candidates = {max_candidates}\n\n[http]\nenabled = false\n\n\
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
        max_candidates: usize,
    ) -> Result<Self> {
        let dir = dir.join(format!("scale-{agents}-{max_candidates}"));
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        let ports = Ports {
            quic: free_port()?,
            admin: free_port()?,
            http: 0,
        };
        let data = dir.join("data");
        let conf = dir.join("gateway.toml");
        fs::write(
            &conf,
            render_gateway(ports, &data, plugins_dir, agents, max_candidates),
        )?;
        let gateway = Proc::gateway("scale gateway", bin_dir, &conf, &dir, ports.admin)?;
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
            fleet.check_alive().with_context(|| {
                let why: Vec<&str> = text
                    .lines()
                    .skip_while(|l| !l.contains("panicked") && !l.contains("rror"))
                    .take(3)
                    .collect();
                format!("fleet log: {why:?}")
            })?;
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

/// Section 5: for each count in `counts`, a gateway of its own holding
/// that many agent connections (the fleet program, if it was built): CPU
/// and memory per node at idle and under load, the policy's pick time over
/// that many candidates. One row per count: the curve, not one point.
/// Each count of at least 1 000 runs again with `max_candidates` `sample`
/// (0: not), under load only.
pub async fn section(s: &Setup<'_>, timing: &Timing, counts: &[usize], sample: usize) -> Section {
    let program = s.bin_dir.join("switchyard-e2e-fleet");
    let list = counts
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let mut section = Section {
        id: "scale".into(),
        title: format!("5. Scale: {list} agents on one gateway"),
        timing: *timing,
        clk_tck: crate::procs::clock_ticks(),
        notes: Vec::new(),
        systems: Vec::new(),
        columns: vec![
            col("agents", "agents", 0),
            col("idle gateway CPU %", "idle.gateway_cpu_pct", 2),
            col(
                "idle CPU µs/s per node",
                "idle.gateway_cpu_us_per_s_per_node",
                2,
            ),
            col("idle RSS MiB", "idle.gateway_rss_mib", 1),
            col("RSS KiB per node", "idle.gateway_rss_kib_per_node", 1),
            col("agents' process CPU %", "idle.fleet_cpu_pct", 1),
            col("max calls/s", "max.calls_per_s", 0),
            col("gateway CPU µs/call", "max.cpu_us_per_call_proxy", 1),
            col(
                "gateway CPU µs/call at 1 000/s",
                "fixed.cpu_us_per_call_proxy",
                1,
            ),
            col("max p50 µs", "max.p50_us", 0),
            col("max p99 µs", "max.p99_us", 0),
            col("1 in flight p50 µs", "one.p50_us", 0),
            col("pick µs (mean)", "pick_us_mean", 1),
            col("RSS after load MiB", "load.gateway_rss_mib", 1),
        ],
    };
    if !program.exists() {
        section.notes.push(format!(
            "Not measured: the fleet program `switchyard-e2e-fleet` is not in `{}` (`cargo build --release -p switchyard-e2e --bins`).",
            s.bin_dir.display()
        ));
        return section;
    }
    let runs = counts.iter().flat_map(|&agents| {
        let bounded = (sample > 0 && agents >= 1000 && agents > sample).then_some((agents, sample));
        std::iter::once((agents, 0)).chain(bounded)
    });
    for (agents, bound) in runs {
        // One more try when the fleet program fails to start.
        let mut measured = scale_measured(s, timing, agents, bound, &program).await;
        if let Err(e) = &measured {
            println!("[scale] {agents} agents: {e:#}; trying once more");
            measured = scale_measured(s, timing, agents, bound, &program).await;
        }
        let name = row_name(agents, bound);
        match measured {
            Ok((notes, mut result)) => {
                if section.notes.is_empty() {
                    section.notes = notes;
                }
                result.name = name;
                result.medians.insert("agents".into(), agents as f64);
                section.systems.push(result);
            }
            Err(e) => section.notes.push(format!("{name} not measured: {e:#}")),
        }
    }
    section
}

/// The row of `agents` agents with policies offered `bound` candidates
/// (0: all): `scale 1000`, `scale 1000, sample 16`.
pub fn row_name(agents: usize, bound: usize) -> String {
    if bound == 0 {
        format!("scale {agents}")
    } else {
        format!("scale {agents}, sample {bound}")
    }
}

async fn scale_measured(
    s: &Setup<'_>,
    timing: &Timing,
    agents: usize,
    bound: usize,
    program: &Path,
) -> Result<(Vec<String>, SystemResult)> {
    let fleet = ScaleFleet::start(s.bin_dir, program, s.plugins_dir, s.scratch, agents, bound)?;
    println!(
        "[scale] {agents} agents registered in {:.1} s (gateway admin port {}, RSS before them {:.1} MiB)",
        fleet.ready_s, fleet.ports.admin, fleet.rss_before_mib
    );
    let (gw, fl) = (fleet.gateway.pid(), fleet.agents.pid());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let window = timing.duration_s.max(2.0);
    let mut idle = Vec::new();
    // A bounded row changes the calls, not the idle fleet: no idle windows.
    let idle_reps = if bound == 0 { timing.reps } else { 0 };
    for _ in 0..idle_reps {
        let (g0, f0) = (cpu_seconds(&[gw]), cpu_seconds(&[fl]));
        tokio::time::sleep(Duration::from_secs_f64(window)).await;
        let (g1, f1) = (cpu_seconds(&[gw]), cpu_seconds(&[fl]));
        let rss = rss_mib(&[gw]);
        let mut m = BTreeMap::new();
        m.insert(
            "idle.gateway_cpu_pct".to_string(),
            (g1 - g0) / window * 100.0,
        );
        m.insert(
            "idle.gateway_cpu_us_per_s_per_node".to_string(),
            (g1 - g0) / window * 1e6 / agents as f64,
        );
        m.insert("idle.gateway_rss_mib".to_string(), rss);
        m.insert(
            "idle.gateway_rss_kib_per_node".to_string(),
            (rss - fleet.rss_before_mib) * 1024.0 / agents as f64,
        );
        m.insert("idle.fleet_cpu_pct".to_string(), (f1 - f0) / window * 100.0);
        println!("[scale idle] {m:?}");
        idle.push(m);
    }
    let config = ClientConfig::new(format!("127.0.0.1:{}", fleet.ports.quic), &fleet.ca);
    let client = Client::connect(config).await.context("SDK connect")?;
    let target = Arc::new(AnyTarget::Quic(QuicTarget::new(
        client,
        SERVICE.to_string(),
        payload(),
        CallOptions::default(),
    )));
    let sys = system(
        "scale",
        "SDK → gateway → one of N agents → echo",
        target,
        vec![gw],
        vec![gw, fl],
    );
    let picks0 = fleet.pick_totals();
    let mut results = interleaved(
        "scale",
        &[sys],
        &[Step::Max, Step::One, Step::Fixed],
        timing,
    )
    .await;
    let picks1 = fleet.pick_totals();
    let mut result = results.remove(0);
    result.path = if bound == 0 {
        format!("SDK → gateway → one of {agents} agents (`{LEAST}`) → echo")
    } else {
        format!(
            "SDK → gateway → one of {agents} agents (`{LEAST}` over a random {bound}, `max_candidates`) → echo"
        )
    };
    result.medians.extend(crate::scenarios::medians(&idle));
    result
        .medians
        .insert("load.gateway_rss_mib".into(), rss_mib(&[gw]));
    if let (Some((s0, c0)), Some((s1, c1))) = (picks0, picks1)
        && c1 > c0
    {
        result
            .medians
            .insert("pick_us_mean".into(), (s1 - s0) / (c1 - c0) * 1e6);
    }
    let notes = vec![format!(
        "For each count N, a gateway of its own (`[agents]`/`[quic]` limits raised to admit N agents from loopback, policy `{LEAST}`) and `switchyard-e2e-fleet --agents N`: N node agents in one process, each registering an `echo` service `{SERVICE}` and reporting stats (`stats_interval_ms` default). Idle: {reps} windows of {window} s. Per node: the gateway's idle CPU ÷ N, and its RSS growth from before the agents came ÷ N. Pick time: the mean of `policy_pick_duration_seconds` over the load runs (N candidates each pick). `max` is a closed loop of {IN_FLIGHT} callers, where two nodes' calls share packets and ACKs; `at 1 000/s` an open loop (Poisson) at {rate} calls/s for every row, the same offered load. A row `scale N, sample K` is the same fleet with `max_candidates = K`: each pick sees a uniform random sample of K free nodes; it has no idle windows. `agents' process CPU %` is the fleet program's own (its N stats collectors), not the gateway's.",
        reps = timing.reps,
        rate = crate::scenarios::FIXED_RATE,
    )];
    Ok((notes, result))
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
            16,
        ))
        .expect("toml");
        assert_eq!(v["max_candidates"].as_integer(), Some(16));
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
