//! A cluster fleet: a throwaway etcd member ([`switchyard_testkit::Etcd`]),
//! gateway processes that are members of one cluster on it (one CA, the
//! first gateway's, covers all of them), and real agent processes each
//! given one gateway's address to start from.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_testkit::Etcd;

use crate::chaos::{GatewayProcess, Process, agent_process};
use crate::common::ADMIN;

/// Lease TTL of the test gateways' member keys, s.
pub const LEASE_TTL_S: u32 = 2;

/// A cluster of gateway processes on one etcd, and its agents.
pub struct ClusterFleet {
    pub etcd: Etcd,
    pub dir: tempfile::TempDir,
    /// `None` once killed (until restarted).
    pub gateways: Vec<Option<GatewayProcess>>,
    pub agents: Vec<Process>,
    /// Extra TOML tables every gateway's config gets.
    tables: String,
    http: reqwest::Client,
}

/// Whether the `etcd` binary is on `PATH`; when it is not, a test skips
/// (or fails under `SWITCHYARD_REQUIRE_ALL=1`, as in CI) through
/// [`switchyard_testkit::skip_or_fail`].
pub fn etcd_installed() -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join("etcd").is_file()));
    if !found {
        switchyard_testkit::skip_or_fail(
            "etcd (not on PATH)",
            "`make setup` installs Debian's package etcd-server",
        );
    }
    found
}

/// The `[cluster]` table of gateway `name` on `etcd`.
pub fn cluster_table(etcd: &Etcd, name: &str) -> String {
    format!(
        "[cluster]\netcd = [{:?}]\nname = {name:?}\nlease_ttl_s = {LEASE_TTL_S}\n",
        etcd.endpoint()
    )
}

impl ClusterFleet {
    /// Starts etcd and `n` gateways `gw-0`.. with `tables` appended to each
    /// one's config, and waits until each lists all `n` members.
    pub async fn start(n: usize, tables: &str) -> Self {
        let etcd = Etcd::start_required().expect("etcd starts");
        let dir = tempfile::tempdir().unwrap();
        let mut fleet = Self {
            etcd,
            dir,
            gateways: Vec::new(),
            agents: Vec::new(),
            tables: tables.to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        };
        for i in 0..n {
            let gateway = fleet.start_gateway(i).await;
            fleet.gateways.push(Some(gateway));
        }
        fleet.wait_members(n).await;
        fleet
    }

    /// The name of gateway `i`.
    pub fn name(i: usize) -> String {
        format!("gw-{i}")
    }

    async fn start_gateway(&self, i: usize) -> GatewayProcess {
        let name = Self::name(i);
        let tables = format!("{}{}", cluster_table(&self.etcd, &name), self.tables);
        // One CA for all: gateway 0 makes it, the others serve its
        // certificate (it names 127.0.0.1).
        let first = self.gateways.first().and_then(Option::as_ref);
        GatewayProcess::start(self.dir.path(), &name, &tables, first).await
    }

    /// Gateway `i` (panics if it was killed).
    pub fn gateway(&self, i: usize) -> &GatewayProcess {
        self.gateways[i].as_ref().expect("gateway is running")
    }

    /// The CA every gateway's certificate chains to.
    pub fn ca(&self) -> std::path::PathBuf {
        self.gateway(0).ca.clone()
    }

    /// The running gateways' indexes.
    pub fn live(&self) -> Vec<usize> {
        (0..self.gateways.len())
            .filter(|&i| self.gateways[i].is_some())
            .collect()
    }

    /// kill -9 gateway `i`.
    pub fn kill_gateway(&mut self, i: usize) {
        if let Some(mut gateway) = self.gateways[i].take() {
            gateway.process.kill();
        }
    }

    /// Starts gateway `i` again (same name and data, fresh ports).
    pub async fn restart_gateway(&mut self, i: usize) {
        assert!(self.gateways[i].is_none(), "gateway {i} is running");
        let name = Self::name(i);
        let tables = format!("{}{}", cluster_table(&self.etcd, &name), self.tables);
        let tls_of = self
            .gateways
            .iter()
            .flatten()
            .find(|g| g.process.name != name);
        let gateway = GatewayProcess::start(self.dir.path(), &name, &tables, tls_of).await;
        self.gateways[i] = Some(gateway);
    }

    /// Starts agent `id` given gateway `via`'s address alone.
    pub fn spawn_agent(&mut self, id: &str, via: usize, services: &str) {
        let gateway = self.gateway(via);
        let agent = agent_process(
            self.dir.path(),
            id,
            gateway.addr,
            &gateway.ca,
            200,
            services,
        );
        self.agents.push(agent);
    }

    /// GET `path` on gateway `i`'s admin port, as JSON.
    pub async fn admin_json(&self, i: usize, path: &str) -> Result<Value, String> {
        let url = format!("http://{}{path}", self.gateway(i).admin);
        let response = self
            .http
            .get(&url)
            .bearer_auth(ADMIN)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| format!("{url}: {e}"))?;
        if !status.is_success() {
            return Err(format!("{url}: {status} {body}"));
        }
        serde_json::from_str(&body).map_err(|e| format!("{url}: {e}: {body}"))
    }

    /// The member names gateway `i` lists (`GET /api/cluster`).
    pub async fn members_of(&self, i: usize) -> Result<Vec<String>, String> {
        let cluster = self.admin_json(i, "/api/cluster").await?;
        let members = cluster["members"]
            .as_array()
            .ok_or_else(|| format!("no members in {cluster}"))?;
        let mut names: Vec<String> = members
            .iter()
            .filter_map(|m| m["name"].as_str().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    /// The node ids gateway `i` has registered (`GET /api/nodes`).
    pub async fn nodes_of(&self, i: usize) -> Result<Vec<String>, String> {
        let nodes = self.admin_json(i, "/api/nodes").await?;
        let list = nodes
            .as_array()
            .or_else(|| nodes["nodes"].as_array())
            .ok_or_else(|| format!("no node list in {nodes}"))?;
        let mut ids: Vec<String> = list
            .iter()
            .filter_map(|n| {
                n["id"]
                    .as_str()
                    .or_else(|| n["spec"]["id"].as_str())
                    .map(str::to_string)
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Waits until every running gateway lists `n` members.
    pub async fn wait_members(&self, n: usize) {
        self.wait("members", Duration::from_secs(20), async |i| {
            let names = self.members_of(i).await?;
            if names.len() == n {
                Ok(())
            } else {
                Err(format!("{} lists {names:?}", Self::name(i)))
            }
        })
        .await;
    }

    /// Waits until every running gateway has registered exactly `ids`.
    pub async fn wait_nodes_everywhere(&self, ids: &[&str]) {
        let mut want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        want.sort();
        self.wait("nodes", Duration::from_secs(30), async |i| {
            let have = self.nodes_of(i).await?;
            if have == want {
                Ok(())
            } else {
                Err(format!("{} has {have:?}", Self::name(i)))
            }
        })
        .await;
    }

    /// Polls `check` on every running gateway (every 20 ms) until all
    /// pass, and returns how long that took; panics past `limit` with the
    /// last complaint and the logs' tails.
    pub async fn wait(
        &self,
        what: &str,
        limit: Duration,
        check: impl AsyncFn(usize) -> Result<(), String>,
    ) -> Duration {
        let start = Instant::now();
        loop {
            let mut why = None;
            for i in self.live() {
                if let Err(e) = check(i).await {
                    why = Some(e);
                    break;
                }
            }
            let Some(why) = why else {
                return start.elapsed();
            };
            if start.elapsed() >= limit {
                panic!("{what} after {limit:?}: {why}\n{}", self.log_tails());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last lines of every process's log, for a failure message.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        let processes = self
            .gateways
            .iter()
            .flatten()
            .map(|g| &g.process)
            .chain(&self.agents);
        for p in processes {
            let text = p.log_text();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("--- {} ---\n", p.name));
            for line in tail.iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Where the fleet's files are.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}
