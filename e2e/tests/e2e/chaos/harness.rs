//! What the chaos scenarios share: taking turns, hard time limits, timed
//! calls and their classification, figures, and real gateway and agent
//! processes to kill, stop and measure.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use client::{Client, ClientConfig, ClientError};

use switchyard_testkit::unassigned_port;

use crate::common::{ADMIN, TOKEN, plugins_dir};

/// Scenarios take turns: each measures the fleet it faults, not another
/// scenario's load.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long past its deadline a call may take before it counts as hung.
///
/// A gateway that dies cannot time its calls out, but the SDK ends a call
/// itself 25 ms past its timeout (`ClientError::Timeout { sent: true }`),
/// so a call on a dead gateway does not wait for QUIC's idle timeout (10
/// s): 1 s is slack for a loaded machine.
pub const GRACE: Duration = Duration::from_secs(1);

/// Runs `body` as scenario `name`: after the scenarios before it, within
/// `limit` (a hard timeout: past it the scenario fails).
pub async fn scenario(name: &str, limit: Duration, body: impl Future<Output = ()>) {
    let _turn = SERIAL.lock().await;
    eprintln!("chaos {name}: start (limit {limit:?})");
    let start = Instant::now();
    if tokio::time::timeout(limit, body).await.is_err() {
        panic!("chaos {name}: still running after its hard limit of {limit:?}");
    }
    eprintln!(
        "chaos {name}: done in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

/// How one call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A result, from the node named.
    Ok(String),
    /// A typed error: the gateway's kind (`node lost`, `timeout`,
    /// `overloaded`...), `connection lost` or `connect`.
    Typed(String),
    /// An error that is not typed (a protocol or configuration error): a bug.
    Untyped(String),
    /// Still running past its deadline plus [`GRACE`]: a bug.
    Hung,
}

/// One call: when it started (since the scenario's start), how long it
/// took, how it ended.
#[derive(Debug, Clone)]
pub struct Record {
    pub at: Duration,
    pub took: Duration,
    pub outcome: Outcome,
    /// Nodes that ran it (`Timings::attempts`), 0 when it failed.
    pub attempts: u32,
}

impl Record {
    pub fn ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok(_))
    }

    pub fn node(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Ok(node) => Some(node),
            _ => None,
        }
    }

    pub fn kind(&self) -> &str {
        match &self.outcome {
            Outcome::Ok(_) => "ok",
            Outcome::Typed(kind) => kind,
            Outcome::Untyped(_) => "untyped",
            Outcome::Hung => "hung",
        }
    }
}

/// The typed name of an SDK error, or `Untyped` for one that has none.
pub fn classify(e: &ClientError) -> Outcome {
    match (e, e.kind()) {
        (_, Some(kind)) => Outcome::Typed(kind.to_string()),
        (ClientError::Io(_) | ClientError::GatewayLost { .. }, None) => {
            Outcome::Typed("connection lost".into())
        }
        (ClientError::Connect(_), None) => Outcome::Typed("connect".into()),
        _ => Outcome::Untyped(e.to_string()),
    }
}

/// Makes one call with `timeout`, bounded by `timeout` + [`GRACE`];
/// `t0` is the scenario's start.
pub async fn timed_call(
    client: &Client,
    service: &str,
    payload: impl Into<bytes::Bytes>,
    timeout: Duration,
    t0: Instant,
) -> Record {
    let start = Instant::now();
    let call = client.call(service, payload).timeout(timeout);
    let (outcome, attempts) = match tokio::time::timeout(timeout + GRACE, call).await {
        Ok(Ok(result)) => (
            Outcome::Ok(result.meta.node_id),
            result.meta.timings.attempts,
        ),
        Ok(Err(e)) => (classify(&e), 0),
        Err(_) => (Outcome::Hung, 0),
    };
    Record {
        at: start.duration_since(t0),
        took: start.elapsed(),
        outcome,
        attempts,
    }
}

/// The `p`-th percentile (0..=100) of `values`, nearest rank; zero when
/// empty.
pub fn percentile(values: &[Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = values.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds with one decimal, for figures.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Prints `records`' figures under `label`: calls, results, failures by
/// kind, latency p50/p99 of results and of failures, the longest call.
pub fn print_figures(label: &str, records: &[Record]) {
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let mut nodes: BTreeMap<&str, usize> = BTreeMap::new();
    for r in records {
        *kinds.entry(r.kind()).or_default() += 1;
        if let Some(node) = r.node() {
            *nodes.entry(node).or_default() += 1;
        }
    }
    let ok: Vec<Duration> = records.iter().filter(|r| r.ok()).map(|r| r.took).collect();
    let failed: Vec<Duration> = records.iter().filter(|r| !r.ok()).map(|r| r.took).collect();
    let longest = records.iter().map(|r| r.took).max().unwrap_or_default();
    eprintln!(
        "chaos {label}: {} calls, {} served {nodes:?}, outcomes {kinds:?}; served p50 {} p99 {}; failed p50 {} p99 {}; longest {}",
        records.len(),
        ok.len(),
        ms(percentile(&ok, 50.0)),
        ms(percentile(&ok, 99.0)),
        ms(percentile(&failed, 50.0)),
        ms(percentile(&failed, 99.0)),
        ms(longest),
    );
}

/// Asserts that every call ended with a result or a typed error within its
/// bound (none hung, none untyped).
pub fn assert_all_ended_typed(label: &str, records: &[Record]) {
    let bad: Vec<&Record> = records
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Untyped(_) | Outcome::Hung))
        .collect();
    assert!(
        bad.is_empty(),
        "chaos {label}: {} of {} calls hung or failed untyped, e.g. {:?}",
        bad.len(),
        records.len(),
        &bad[..bad.len().min(5)]
    );
}

/// A real process the scenario kills, stops or measures; killed (SIGKILL)
/// when dropped.
pub struct Process {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// kill -9, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` (`STOP`, `CONT`...) with `kill(1)`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    /// Resident memory, KiB (`VmRSS` of `/proc/PID/status`).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts a real agent process `id` dialing `gateway` (trusting `ca`) with
/// stats every `stats_ms` and the `[[services]]` of `services`.
pub fn agent_process(
    dir: &Path,
    id: &str,
    gateway: SocketAddr,
    ca: &Path,
    stats_ms: u32,
    services: &str,
) -> Process {
    let config = dir.join(format!("{id}.toml"));
    std::fs::write(
        &config,
        format!(
            "gateway = \"{gateway}\"\nca = {ca:?}\ntoken = {TOKEN:?}\nnode_id = {id:?}\nstats_interval_ms = {stats_ms}\n\
             [reconnect]\ninitial_ms = 50\nmax_ms = 200\n{services}"
        ),
    )
    .unwrap();
    let log = dir.join(format!("{id}.log"));
    let child = crate::common::spawn_program(crate::common::AGENT_PROGRAM, &config, &log);
    Process {
        name: id.into(),
        child,
        log,
    }
}

/// A real gateway process (`switchyard-e2e-gateway`) on loopback ports of
/// its own.
pub struct GatewayProcess {
    pub process: Process,
    /// QUIC address, for clients and agents.
    pub addr: SocketAddr,
    /// Admin HTTP address (`/metrics`).
    pub admin: SocketAddr,
    /// HTTP ingress address (`/v1/...`).
    pub http: SocketAddr,
    pub data_dir: PathBuf,
    /// The CA agents and clients trust.
    pub ca: PathBuf,
}

/// How many sets of fresh ports [`GatewayProcess::start`] tries.
const PORT_TRIES: usize = 5;

impl GatewayProcess {
    /// Starts gateway `name` (its `id` in a tree of gateways too) with its
    /// data in `dir/name`, the built plugins, and `tables` (TOML tables such as `[queue]`) appended to its config;
    /// with `tls_of`, it serves that gateway's certificate (so one CA covers
    /// both). Waits until a client can connect.
    pub async fn start(dir: &Path, name: &str, tables: &str, tls_of: Option<&Self>) -> Self {
        // Its ports lie below the ephemeral range (`unassigned_port`), yet
        // a program outside this test process may still take one before
        // the gateway binds it: then it exits with "Address already in
        // use" and starts again on fresh ports.
        for _ in 0..PORT_TRIES {
            if let Some(gateway) = Self::try_start(dir, name, tables, tls_of).await {
                return gateway;
            }
        }
        panic!("gateway {name}: every port tried was in use");
    }

    /// One try of [`Self::start`] on fresh ports: `None` when the gateway
    /// exited because a port was taken; panics on any other failure.
    async fn try_start(
        dir: &Path,
        name: &str,
        tables: &str,
        tls_of: Option<&Self>,
    ) -> Option<Self> {
        let data_dir = dir.join(name);
        std::fs::create_dir_all(&data_dir).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", unassigned_port().unwrap())
            .parse()
            .unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", unassigned_port().unwrap())
            .parse()
            .unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", unassigned_port().unwrap())
            .parse()
            .unwrap();
        let tls = match tls_of {
            Some(other) => format!(
                "[tls]\ncert = {:?}\nkey = {:?}\nca = {:?}\n",
                other.data_dir.join("cert.pem"),
                other.data_dir.join("key.pem"),
                other.ca,
            ),
            None => String::new(),
        };
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "id = {name:?}\nlisten = \"{addr}\"\nadmin_listen = \"{admin}\"\ndata_dir = {data_dir:?}\n\
                 plugins_dir = {:?}\nagent_token = {TOKEN:?}\nadmin_token = {ADMIN:?}\n\
                 pick_deadline_ms = 250\nseed = 7\n[http]\nlisten = \"{http}\"\n{tls}{tables}\n",
                plugins_dir(),
            ),
        )
        .unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = crate::common::spawn_program(
            env!("CARGO_BIN_EXE_switchyard-e2e-gateway"),
            &config,
            &log,
        );
        let ca = tls_of.map_or_else(|| data_dir.join("ca.pem"), |o| o.ca.clone());
        let mut gateway = Self {
            process: Process {
                name: name.into(),
                child,
                log,
            },
            addr,
            admin,
            http,
            data_dir,
            ca,
        };
        let start = Instant::now();
        loop {
            if gateway.ca.exists() {
                let config = ClientConfig::new(addr.to_string(), gateway.ca.clone())
                    .with_connect_timeout(Duration::from_millis(500));
                if let Ok(client) = Client::connect(config).await {
                    client.close().await;
                    return Some(gateway);
                }
            }
            if let Ok(Some(status)) = gateway.process.child.try_wait() {
                let log = gateway.process.log_text();
                if log.contains("Address already in use") {
                    eprintln!("gateway {name}: a port was taken ({status}); trying fresh ports");
                    return None;
                }
                panic!("gateway {name} exited ({status}) before it came up: {log}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "gateway {name} did not come up: {}",
                gateway.process.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A client of this gateway alone, with `pool_size` connections.
    pub async fn client(&self, pool_size: usize) -> Client {
        Client::connect(
            ClientConfig::new(self.addr.to_string(), self.ca.clone()).with_pool_size(pool_size),
        )
        .await
        .expect("client connects")
    }

    /// Waits until `n` nodes are registered, as `client` lists them.
    pub async fn wait_nodes(&self, client: &Client, n: usize) {
        let start = Instant::now();
        loop {
            let have = client.nodes().await.map(|v| v.len()).unwrap_or(0);
            if have == n {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "gateway {}: expected {n} nodes, have {have}",
                self.process.name
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}
