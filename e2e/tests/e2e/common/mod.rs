//! A test fleet: an in-process gateway on 127.0.0.1:0 loading the real
//! compiled plugins, and agents dialing it: in this process
//! (`node_agent::run`, the test's runtime) unless a test kills one or
//! watches it exit, which gets a real agent process (`switchyard-e2e-agent`,
//! the `node-agent` program).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod browser;
pub mod cluster;
pub mod direct;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use client::{Client, ClientConfig};
use gateway::{Gateway, GatewayConfig};
use tokio::sync::oneshot;

pub const TOKEN: &str = "test-agent-token";
pub const ADMIN: &str = "test-admin-token";
/// Stats interval the test agents use: nodes that die are dropped after 3.
pub const STATS_MS: u32 = 200;

pub struct Fleet {
    pub gateway: Gateway,
    pub addr: String,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    agents: Vec<Agent>,
    in_process: Vec<InProcessAgent>,
    /// The stats interval of agents spawned from now on, ms (default
    /// [`STATS_MS`]; a test that loads the machine raises it, so that a
    /// late stats report does not drop a live node).
    pub stats_ms: u32,
}

/// A real agent process.
pub struct Agent {
    pub id: String,
    pub child: Child,
    pub log: PathBuf,
}

/// An agent running on the test's runtime, told to stop when the fleet
/// drops (and gone with the runtime at the test's end in any case).
struct InProcessAgent {
    stop: Option<oneshot::Sender<()>>,
}

/// A fresh plugins folder holding copies of the named plugins (`round-robin`,
/// `latency`, ... from plugins/dist; `tests/spin` etc. from plugins/dist-test).
pub fn plugin_copies(dir: &Path, names: &[&str]) -> PathBuf {
    let target = dir.join("plugins");
    std::fs::create_dir_all(&target).unwrap();
    for name in names {
        let source = built_plugin(name);
        let file = Path::new(name).file_name().unwrap();
        std::fs::copy(&source, target.join(file).with_extension("wasm")).unwrap();
    }
    target
}

/// Where the built plugin `name` is (`tests/NAME` for the hostile ones).
pub fn built_plugin(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let path = match name.strip_prefix("tests/") {
        Some(test) => root.join("dist-test").join(format!("{test}.wasm")),
        None => root.join("dist").join(format!("{name}.wasm")),
    };
    assert!(
        path.exists(),
        "{} missing: run `make plugins plugins-test-wasm` first",
        path.display()
    );
    path
}

pub fn plugins_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist");
    assert!(
        dir.join("round-robin.wasm").exists(),
        "{} has no round-robin.wasm: run `make plugins` first",
        dir.display()
    );
    dir
}

impl Fleet {
    /// Starts a gateway; `tweak` edits its configuration first.
    pub async fn start(tweak: impl FnOnce(&mut GatewayConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = GatewayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            http: gateway::config::HttpConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                ..Default::default()
            },
            data_dir: dir.path().join("gateway"),
            plugins_dir: plugins_dir(),
            agent_token: Some(TOKEN.into()),
            admin_token: Some(ADMIN.into()),
            // CI machines are slow and shared: a descheduled thread must not
            // turn a pick into a deadline trap. The 5 ms default is tested
            // directly in policy-host.
            pick_deadline_ms: 250,
            seed: Some(7),
            ..GatewayConfig::default()
        };
        tweak(&mut config);
        let gateway = Gateway::bind(config).await.expect("gateway binds");
        let addr = gateway.local_addr().unwrap().to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = gateway.clone();
        tokio::spawn(async move {
            serving
                .serve(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            gateway,
            addr,
            dir,
            stop: Some(stop),
            agents: Vec::new(),
            in_process: Vec::new(),
            stats_ms: STATS_MS,
        }
    }

    /// Tells the gateway to shut down (as SIGTERM does): it drains its
    /// calls in flight for up to `shutdown_grace_s`, then closes.
    pub fn shut_down_gateway(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.gateway.ca_path().to_path_buf()
    }

    /// Writes an agent config and starts an agent on it in this process.
    pub fn spawn_agent(&mut self, id: &str, token: &str, services_toml: &str) {
        self.spawn_agent_with(id, token, "", services_toml);
    }

    /// As `spawn_agent`, with extra top-level keys (`region`, `cost_per_hour`,
    /// `labels = { .. }`) in the agent's config.
    pub fn spawn_agent_with(&mut self, id: &str, token: &str, top: &str, services_toml: &str) {
        let path = self.agent_config(id, token, top, services_toml);
        let config = node_agent::AgentConfig::load(&path).expect("agent config");
        let (stop, stopped) = oneshot::channel::<()>();
        let id = id.to_string();
        tokio::spawn(async move {
            let stopped = async {
                let _ = stopped.await;
            };
            if let Err(e) = node_agent::run(config, stopped).await {
                eprintln!("agent {id} stopped: {e}");
            }
        });
        self.in_process.push(InProcessAgent { stop: Some(stop) });
    }

    /// Writes an agent config and starts a real agent process on it, for a
    /// test that kills it or watches it exit (`agent(index)`).
    pub fn spawn_agent_process(&mut self, id: &str, token: &str, services_toml: &str) -> usize {
        self.spawn_agent_process_with(id, token, "", services_toml)
    }

    /// As `spawn_agent_process`, with extra top-level keys or tables
    /// (`top`) in the agent's config.
    pub fn spawn_agent_process_with(
        &mut self,
        id: &str,
        token: &str,
        top: &str,
        services_toml: &str,
    ) -> usize {
        let config = self.agent_config(id, token, top, services_toml);
        let log = self.dir.path().join(format!("{id}.log"));
        let child = spawn_program(AGENT_PROGRAM, &config, &log);
        self.agents.push(Agent {
            id: id.into(),
            child,
            log,
        });
        self.agents.len() - 1
    }

    /// Writes agent `id`'s config file (`top`: extra top-level keys).
    fn agent_config(&self, id: &str, token: &str, top: &str, services_toml: &str) -> PathBuf {
        let config = self.dir.path().join(format!("{id}.toml"));
        std::fs::write(
            &config,
            format!(
                "gateway = {:?}\nca = {:?}\ntoken = {token:?}\nnode_id = {id:?}\nstats_interval_ms = {}\n{top}\n\
                 [reconnect]\ninitial_ms = 50\nmax_ms = 200\n{services_toml}",
                self.addr,
                self.ca(),
                self.stats_ms,
            ),
        )
        .unwrap();
        config
    }

    pub fn agent(&mut self, index: usize) -> &mut Agent {
        &mut self.agents[index]
    }

    /// Waits until exactly `n` nodes are registered.
    pub async fn wait_nodes(&self, n: usize) {
        let start = Instant::now();
        while self.gateway.registry().len() != n {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "expected {n} nodes, have {} (logs in {})",
                self.gateway.registry().len(),
                self.dir.path().display()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(ClientConfig::new(self.addr.clone(), self.ca()))
            .await
            .expect("client connects")
    }
}

impl Agent {
    /// SIGKILL: the agent gets no chance to say goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for agent in &mut self.agents {
            agent.kill();
        }
        for agent in &mut self.in_process {
            if let Some(stop) = agent.stop.take() {
                let _ = stop.send(());
            }
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Polls `check` every 10 ms until it is satisfied; past `limit` panics
/// with what `check` last said.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    loop {
        match check() {
            Ok(()) => return,
            Err(why) if start.elapsed() >= limit => panic!("after {limit:?}: {why}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// A `[[services]]` entry.
pub fn service(name: &str, kind: &str, extra: &str) -> String {
    format!("\n[[services]]\nname = {name:?}\nkind = {kind:?}\n{extra}\n")
}

/// The agent program (`node-agent`'s main) built for this package.
pub const AGENT_PROGRAM: &str = env!("CARGO_BIN_EXE_switchyard-e2e-agent");

/// Starts `program --config config` with `RUST_LOG=info`, its stderr in
/// `log`, stdout discarded.
pub fn spawn_program(program: &str, config: &Path, log: &Path) -> Child {
    Command::new(program)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} starts: {e}"))
}

/// Checks a `/metrics` page with Prometheus's `promtool check metrics`
/// (every metric has help text, names and types are valid); panics with
/// its complaints.
pub async fn promtool_check(text: &str) {
    let mut check = tokio::process::Command::new(browser::tool("promtool", "prometheus"))
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = check.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).await.unwrap();
    }
    let out = check.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The sum of the gateway's `/metrics` samples of `name` whose labels
/// include each of `labels` (e.g. `service="echo"`), 0 if none. Metrics
/// are the process's: tests name their services apart.
pub async fn metric(fleet: &Fleet, name: &str, labels: &[&str]) -> f64 {
    let text = reqwest::get(format!(
        "http://{}/metrics",
        fleet.gateway.admin_addr().unwrap()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

/// Waits until [`metric`] reads `value`.
pub async fn wait_metric(fleet: &Fleet, name: &str, labels: &[&str], value: f64) {
    let start = Instant::now();
    loop {
        let now = metric(fleet, name, labels).await;
        if now == value {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{name} {labels:?} is {now}, expected {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
