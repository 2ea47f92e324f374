//! The demo's processes: the gateway (its addresses read from its banner),
//! the list of what was started (`pids` in the work folder, for `make
//! demo-stop`), and stopping them, or leaving them running (`--keep`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use client::Client;
use tokio::process::{Child, Command};

/// Where a running gateway listens, as its banner says.
pub struct GatewayAddrs {
    /// QUIC address, `host:port`.
    pub quic: String,
    /// Admin HTTP address, `host:port` (dashboard, `/metrics`, `/api`).
    pub admin: String,
    /// HTTP ingress base URL, `http://host:port` (no `/v1`).
    pub ingress: String,
}

/// The processes the demo started, each with its name; their pids are
/// listed in `pids_file` (`PID NAME` lines) as they start.
pub struct Procs {
    children: Vec<(String, Child)>,
    pids_file: PathBuf,
}

impl Procs {
    /// An empty list whose pids go to `pids_file`.
    pub fn new(pids_file: PathBuf) -> Self {
        Self {
            children: Vec::new(),
            pids_file,
        }
    }

    /// Adds a started process.
    ///
    /// # Errors
    /// The pids file cannot be written.
    pub fn add(&mut self, name: &str, child: Child) -> anyhow::Result<()> {
        // A child without an id has exited already: nothing to stop later.
        if let Some(pid) = child.id() {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.pids_file)
                .with_context(|| format!("writing {}", self.pids_file.display()))?;
            writeln!(file, "{pid} {name}")?;
        }
        self.children.push((name.to_string(), child));
        Ok(())
    }

    /// Stops every process, last started first (agents before the
    /// gateway): SIGTERM, then SIGKILL after 5 s; removes the pids file.
    pub async fn stop(&mut self) {
        while let Some((name, mut child)) = self.children.pop() {
            if let Some(pid) = child.id() {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status()
                    .await;
            }
            match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
                Ok(Ok(status)) => println!("== stopped {name} ({status})"),
                _ => {
                    let _ = child.kill().await;
                    println!("== killed {name}");
                }
            }
        }
        let _ = std::fs::remove_file(&self.pids_file);
    }

    /// Leaves every process running after the demo exits; the pids file
    /// stays for `make demo-stop`. Returns their pids.
    pub fn keep(self) -> Vec<u32> {
        let pids = self.children.iter().filter_map(|(_, c)| c.id()).collect();
        for (_, child) in self.children {
            // A dropped child is killed (`kill_on_drop`); a forgotten one
            // runs on.
            std::mem::forget(child);
        }
        pids
    }
}

/// Fails when the pids file of an earlier `--keep` run names a process
/// that still runs: its fleet uses the work folder the demo would empty.
///
/// # Errors
/// Such a process runs.
pub async fn check_none_kept(pids_file: &Path) -> anyhow::Result<()> {
    let Ok(text) = std::fs::read_to_string(pids_file) else {
        return Ok(());
    };
    for line in text.lines() {
        let Some(pid) = line.split_whitespace().next() else {
            continue;
        };
        let alive = Command::new("kill")
            .args(["-0", pid])
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        if alive {
            bail!(
                "the fleet of a demo run with KEEP=1 is still running ({}: {line}): \
                 `make demo-stop` stops it",
                pids_file.display()
            );
        }
    }
    Ok(())
}

/// Starts the gateway with its stdout in `work/gateway.out` and its logs in
/// `work/gateway.log`; returns it and its addresses, read from its banner.
///
/// # Errors
/// The gateway cannot start, or prints no complete banner within 30 s.
pub async fn start_gateway(
    bin: &Path,
    config: &Path,
    work: &Path,
) -> anyhow::Result<(Child, GatewayAddrs)> {
    let out = work.join("gateway.out");
    let child = Command::new(bin)
        .arg("--config")
        .arg(config)
        .stdout(std::fs::File::create(&out)?)
        .stderr(std::fs::File::create(work.join("gateway.log"))?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let started = Instant::now();
    loop {
        let banner = std::fs::read_to_string(&out).unwrap_or_default();
        if let Some(addrs) = banner_addrs(&banner) {
            for line in banner.lines() {
                println!("   gateway: {line}");
            }
            return Ok((child, addrs));
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!(
                "the gateway printed no complete banner within 30 s (see {} and {})",
                out.display(),
                work.join("gateway.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The QUIC, admin and ingress addresses of a gateway's banner; `None`
/// until all three are printed.
fn banner_addrs(banner: &str) -> Option<GatewayAddrs> {
    let mut quic = None;
    let mut admin = None;
    let mut ingress = None;
    for line in banner.lines() {
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"));
        if let Some(addr) = line.strip_prefix("switchyard gateway listening on ") {
            quic = Some(addr.trim().to_string());
        } else if line.starts_with("dashboard:")
            && let Some(url) = url
        {
            let host = url.split_once("://").map_or(url, |(_, rest)| rest);
            admin = host.split('/').next().map(str::to_string);
        } else if line.starts_with("http ingress")
            && let Some(url) = url
        {
            ingress = Some(
                url.trim_end_matches('/')
                    .trim_end_matches("/v1")
                    .to_string(),
            );
        }
    }
    Some(GatewayAddrs {
        quic: quic?,
        admin: admin?,
        ingress: ingress?,
    })
}

/// Waits until `want` nodes are registered (at most 30 s).
///
/// # Errors
/// Fewer nodes after 30 s, or the listing fails.
pub async fn wait_for_nodes(client: &Client, want: usize) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let nodes = client.nodes().await?;
        if nodes.len() >= want {
            let ids: Vec<_> = nodes.iter().map(|n| n.spec.id.as_str()).collect();
            println!("== {} nodes registered: {}", nodes.len(), ids.join(", "));
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("only {} of {want} nodes registered after 30 s", nodes.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A free loopback port, asked of the OS (bound to port 0, then released
/// for the process that is given it).
///
/// # Errors
/// No port can be bound.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("a free loopback port")?
        .port())
}

#[cfg(test)]
mod tests {
    use super::{banner_addrs, check_none_kept};

    #[tokio::test]
    async fn a_kept_fleet_that_still_runs_stops_a_new_demo() {
        let dir = std::env::temp_dir().join(format!("switchyard-demo-pids-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch folder");
        let pids = dir.join("pids");
        assert!(check_none_kept(&pids).await.is_ok(), "no pids file");
        // A process that has exited: its pid is free (reaped), so stale.
        let mut done = std::process::Command::new("true")
            .spawn()
            .expect("true runs");
        let stale = done.id();
        done.wait().expect("true exits");
        std::fs::write(&pids, format!("{stale} gateway\n")).expect("a pids file");
        assert!(check_none_kept(&pids).await.is_ok(), "a stale pid");
        // This test's own process runs.
        std::fs::write(
            &pids,
            format!("{stale} gateway\n{} node-a\n", std::process::id()),
        )
        .expect("a pids file");
        let err = check_none_kept(&pids)
            .await
            .expect_err("a running pid")
            .to_string();
        assert!(err.contains("make demo-stop"), "{err}");
        std::fs::remove_dir_all(&dir).expect("the scratch folder goes");
    }

    #[test]
    fn the_banner_gives_the_three_addresses() {
        let banner = "switchyard gateway listening on 127.0.0.1:40001\n\
                      CA file (give it to agents and clients): /x/ca.pem\n\
                      dashboard: http://127.0.0.1:40002/  metrics: http://127.0.0.1:40002/metrics\n";
        assert!(banner_addrs(banner).is_none(), "no ingress line yet");
        let banner =
            format!("{banner}http ingress (OpenAI-compatible): http://127.0.0.1:40003/v1\n");
        let addrs = banner_addrs(&banner).expect("complete");
        assert_eq!(addrs.quic, "127.0.0.1:40001");
        assert_eq!(addrs.admin, "127.0.0.1:40002");
        assert_eq!(addrs.ingress, "http://127.0.0.1:40003");
    }
}
