//! The `cluster` section's fleets: gateways as processes on loopback, one
//! CA for all (the first gateway's; the others serve its certificate), each
//! with a `[cluster]` table on the section's etcd or none, and agents each
//! given one gateway's address.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::fleet::{Ports, http_get, wait_nodes};
use crate::procs::{Proc, free_port};

/// The lease TTL of the section's gateways, s (the gateway's default).
pub const LEASE_TTL_S: u32 = 3;

/// Where a fleet's gateways keep their membership: etcd's client URL and
/// the cluster's key prefix.
#[derive(Debug, Clone)]
pub struct Membership {
    /// `http://127.0.0.1:PORT`.
    pub etcd: String,
    /// The cluster's key prefix (one cluster per fleet on one etcd).
    pub prefix: String,
}

/// The `[cluster]` table of gateway `name`.
pub fn render_cluster(m: &Membership, name: &str) -> String {
    format!(
        "\n[cluster]\netcd = [{etcd:?}]\nname = {name:?}\nprefix = {prefix:?}\nlease_ttl_s = {LEASE_TTL_S}\n",
        etcd = m.etcd,
        prefix = m.prefix,
    )
}

/// The `[tls]` table serving the certificate in `first_data` (the first
/// gateway's data folder), so one CA covers every gateway.
pub fn render_tls(first_data: &Path) -> String {
    format!(
        "\n[tls]\ncert = {:?}\nkey = {:?}\nca = {:?}\n",
        first_data.join("cert.pem").display().to_string(),
        first_data.join("key.pem").display().to_string(),
        first_data.join("ca.pem").display().to_string(),
    )
}

/// One gateway of a fleet: its process (`None` while killed), ports and
/// config file.
#[derive(Debug)]
pub struct Member {
    /// Its member name, `gw-I`.
    pub name: String,
    /// The process, `None` while killed.
    pub proc: Option<Proc>,
    /// Its ports (kept across a restart).
    pub ports: Ports,
    conf: PathBuf,
    dir: PathBuf,
}

/// A fleet's gateways and agents.
#[derive(Debug)]
pub struct Gateways {
    /// The gateways, `gw-0`...
    pub members: Vec<Member>,
    /// The agents.
    pub agents: Vec<Proc>,
    /// The CA every gateway's certificate chains to.
    pub ca: PathBuf,
    /// The membership, `None` for gateways without `[cluster]`.
    pub membership: Option<Membership>,
    bin_dir: PathBuf,
}

impl Gateways {
    /// Starts `n` gateways in `dir/gw-I/`, each configured by `render`
    /// (its ports and data folder) plus, with `membership`, its `[cluster]`
    /// table; with a cluster, waits until every gateway lists `n` members.
    ///
    /// # Errors
    /// A gateway does not start, or the members do not all see each other
    /// within 20 s.
    pub fn start(
        n: usize,
        bin_dir: &Path,
        dir: &Path,
        membership: Option<Membership>,
        render: impl Fn(Ports, &Path) -> String,
    ) -> Result<Self> {
        let mut members: Vec<Member> = Vec::new();
        for i in 0..n {
            let name = format!("gw-{i}");
            let gw_dir = dir.join(&name);
            fs::create_dir_all(&gw_dir)?;
            let ports = Ports {
                quic: free_port()?,
                admin: free_port()?,
                http: free_port()?,
            };
            let data = gw_dir.join("data");
            let mut text = render(ports, &data);
            if let Some(first) = members.first() {
                text.push_str(&render_tls(&first.dir.join("data")));
            }
            if let Some(m) = &membership {
                text.push_str(&render_cluster(m, &name));
            }
            let conf = gw_dir.join("gateway.toml");
            fs::write(&conf, text)?;
            let proc = Proc::gateway(&name, bin_dir, &conf, &gw_dir, ports.admin)?;
            members.push(Member {
                name,
                proc: Some(proc),
                ports,
                conf,
                dir: gw_dir,
            });
        }
        let ca = members
            .first()
            .map(|m| m.dir.join("data").join("ca.pem"))
            .context("no gateway")?;
        let gateways = Self {
            members,
            agents: Vec::new(),
            ca,
            membership,
            bin_dir: bin_dir.to_path_buf(),
        };
        if gateways.membership.is_some() {
            let names: Vec<String> = gateways.members.iter().map(|m| m.name.clone()).collect();
            for m in &gateways.members {
                wait_members(m.ports.admin, &names, Duration::from_secs(20))
                    .with_context(|| format!("{}: see {}", m.name, m.dir.display()))?;
            }
        }
        Ok(gateways)
    }

    /// Starts agent `i` with the config `text` (its `agent-I.toml`), as
    /// `bin_dir/node-agent`.
    ///
    /// # Errors
    /// The config cannot be written or the program not started.
    pub fn spawn_agent(&mut self, i: usize, dir: &Path, text: &str) -> Result<()> {
        let conf = dir.join(format!("agent-{i}.toml"));
        fs::write(&conf, text)?;
        let c = conf.display().to_string();
        self.agents.push(Proc::spawn(
            &format!("agent-{i}"),
            &self.bin_dir.join("node-agent"),
            &["--config", &c],
            &dir.join(format!("agent-{i}.log")),
        )?);
        Ok(())
    }

    /// Waits until every running gateway lists `n` nodes; `Err` names the
    /// first that does not within `within`.
    ///
    /// # Errors
    /// A gateway has fewer nodes after `within`.
    pub fn wait_nodes_everywhere(&self, n: usize, within: Duration) -> Result<()> {
        for m in self.members.iter().filter(|m| m.proc.is_some()) {
            wait_nodes(m.ports.admin, n, within).with_context(|| m.name.clone())?;
        }
        Ok(())
    }

    /// The running gateways' pids.
    pub fn gateway_pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter_map(|m| m.proc.as_ref().map(Proc::pid))
            .collect()
    }

    /// The gateways' and agents' pids.
    pub fn all_pids(&self) -> Vec<u32> {
        let mut pids = self.gateway_pids();
        pids.extend(self.agents.iter().map(Proc::pid));
        pids
    }

    /// The data folder of gateway `i` (its CA, certificate, admin token).
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.members[i].dir.join("data")
    }

    /// `127.0.0.1:QUIC` of gateway `i`.
    pub fn quic_addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.members[i].ports.quic)
    }

    /// kill -9 gateway `i` (and reaps it).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].proc.take() {
            p.kill();
        }
    }

    /// Starts gateway `i` again with its config (same name, ports, data).
    ///
    /// # Errors
    /// It does not start.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        let m = &mut self.members[i];
        if m.proc.is_none() {
            m.proc = Some(Proc::gateway(
                &m.name,
                &self.bin_dir,
                &m.conf,
                &m.dir,
                m.ports.admin,
            )?);
        }
        Ok(())
    }
}

/// The member names a gateway's `GET /api/cluster` lists, sorted.
///
/// # Errors
/// The admin port does not answer, or the answer has no `members` list.
pub fn members(admin: u16) -> Result<Vec<String>> {
    let body = http_get(admin, "/api/cluster")?;
    parse_members(&body)
}

/// The member names in a `/api/cluster` answer (`{"members": [{"name":
/// ..}, ..], ..}`), sorted.
///
/// # Errors
/// It is not JSON or has no `members` list.
pub fn parse_members(body: &str) -> Result<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(body).with_context(|| {
        format!(
            "/api/cluster: {}",
            body.chars().take(200).collect::<String>()
        )
    })?;
    let list = v["members"]
        .as_array()
        .with_context(|| format!("/api/cluster has no members: {v}"))?;
    let mut names: Vec<String> = list
        .iter()
        .filter_map(|m| m["name"].as_str().map(String::from))
        .collect();
    names.sort();
    Ok(names)
}

/// Waits until the gateway on `admin` lists exactly `names` (sorted).
///
/// # Errors
/// It lists others after `within`.
pub fn wait_members(admin: u16, names: &[String], within: Duration) -> Result<()> {
    let mut want = names.to_vec();
    want.sort();
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < within {
        match members(admin) {
            Ok(have) if have == want => return Ok(()),
            Ok(have) => last = format!("{have:?}"),
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("members {want:?} not listed after {within:?}; last: {last}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_parse_and_name_etcd_the_member_and_the_shared_certificate() {
        let m = Membership {
            etcd: "http://127.0.0.1:2379".into(),
            prefix: "/bench-three".into(),
        };
        let text = format!(
            "listen = \"127.0.0.1:1\"\n{}{}",
            render_tls(Path::new("/d/gw-0/data")),
            render_cluster(&m, "gw-2")
        );
        let v: toml::Value = toml::from_str(&text).expect("valid toml");
        assert_eq!(
            v["cluster"]["etcd"][0].as_str(),
            Some("http://127.0.0.1:2379")
        );
        assert_eq!(v["cluster"]["name"].as_str(), Some("gw-2"));
        assert_eq!(v["cluster"]["prefix"].as_str(), Some("/bench-three"));
        assert_eq!(
            v["cluster"]["lease_ttl_s"].as_integer(),
            Some(i64::from(LEASE_TTL_S))
        );
        assert_eq!(v["tls"]["ca"].as_str(), Some("/d/gw-0/data/ca.pem"));
        assert_eq!(v["tls"]["cert"].as_str(), Some("/d/gw-0/data/cert.pem"));
    }

    #[test]
    fn members_are_read_by_name_and_sorted() {
        let body = r#"{"me":"gw-1","members":[{"name":"gw-2","quic":"x"},{"name":"gw-0"}],"degraded":false}"#;
        assert_eq!(parse_members(body).expect("members"), ["gw-0", "gw-2"]);
        assert!(parse_members(r#"{"nodes":[]}"#).is_err());
        assert!(parse_members("not json").is_err());
    }
}
