//! The `cluster` section's kill -9: one gateway of a running cluster killed
//! under a client's calls; how long until the other members drop it from
//! their lists, until the client's first call is served through another
//! gateway, and, restarted, until it is a member with the fleet's nodes
//! again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use client::{Client, ClientConfig};
use tokio::sync::Mutex;

use super::fleet::{Gateways, members, wait_members};
use crate::fleet::wait_nodes;

/// Each call's timeout.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Callers in the client's loop.
const CALLERS: usize = 4;
/// How long any one wait of a kill may take.
const LIMIT: Duration = Duration::from_secs(30);

/// One call of the loop: when it started and ended, and whether it was
/// served.
#[derive(Debug, Clone, Copy)]
struct Call {
    start: Instant,
    end: Instant,
    ok: bool,
}

/// The end of the first served call that started at or after `killed`,
/// as time since `killed`.
fn first_served_after(calls: &[Call], killed: Instant) -> Option<Duration> {
    calls
        .iter()
        .filter(|c| c.ok && c.start >= killed)
        .map(|c| c.end.duration_since(killed))
        .min()
}

/// The end of the last failed call that ended at or after `killed`, as
/// time since `killed`; zero when none failed.
fn last_failure_after(calls: &[Call], killed: Instant) -> Duration {
    calls
        .iter()
        .filter(|c| !c.ok && c.end >= killed)
        .map(|c| c.end.duration_since(killed))
        .max()
        .unwrap_or_default()
}

/// [`CALLERS`] tasks calling `service` through `client` in a loop, every
/// call recorded, until stopped.
struct CallLoop {
    calls: Arc<Mutex<Vec<Call>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    client: Client,
}

impl CallLoop {
    fn start(client: Client, service: &str) -> Self {
        let calls = Arc::new(Mutex::new(Vec::<Call>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..CALLERS)
            .map(|_| {
                let (client, calls, stop) = (client.clone(), calls.clone(), stop.clone());
                let service = service.to_string();
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let start = Instant::now();
                        let call = client.call(&service, "cluster").timeout(CALL_TIMEOUT);
                        let ok = matches!(
                            tokio::time::timeout(CALL_TIMEOUT * 2, call).await,
                            Ok(Ok(_))
                        );
                        let end = Instant::now();
                        calls.lock().await.push(Call { start, end, ok });
                        if !ok {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                })
            })
            .collect();
        Self {
            calls,
            stop,
            tasks,
            client,
        }
    }

    /// Stops the callers, waits for them, closes the client; every call.
    async fn finish(self) -> Result<Vec<Call>> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.context("caller")?;
        }
        self.client.close().await;
        Ok(self.calls.lock().await.clone())
    }
}

/// Kills gateway `victim` of `g` (whose agents, `nodes` of them, are
/// registered on every gateway) under two loops of `service` calls, then
/// starts it again. One loop's client is given every gateway's address,
/// the victim's first (`with_gateways`: calls go to the first gateway that
/// is up); the other's is a cluster client on the same addresses
/// (`for_cluster`: calls spread over the members it learns). Figures:
/// `kill_to_removal_ms` (until every other member's `/api/cluster` lacks
/// it; the slowest of them), `kill_to_served_ms` (until the first
/// client's first call started after the kill is served),
/// `restart_to_rejoin_ms` (until every gateway lists all members and the
/// victim lists `nodes` nodes), `failed_calls` (the first client's),
/// `cluster_failed_calls` and `cluster_kill_to_last_failure_ms` (the
/// cluster client's).
///
/// # Errors
/// A client cannot connect, or a wait passes 30 s.
pub async fn kill_once(
    g: &mut Gateways,
    victim: usize,
    nodes: usize,
    service: &str,
) -> Result<BTreeMap<String, f64>> {
    let n = g.members.len();
    let order: Vec<String> = (0..n).map(|k| g.quic_addr((victim + k) % n)).collect();
    let config = ClientConfig::new(order[0].clone(), &g.ca)
        .with_gateways(order.clone())
        .with_connect_timeout(Duration::from_secs(1));
    let failover = CallLoop::start(
        Client::connect(config).await.context("SDK connect")?,
        service,
    );
    let config =
        ClientConfig::for_cluster(order, &g.ca).with_connect_timeout(Duration::from_secs(1));
    let cluster = CallLoop::start(
        Client::connect(config)
            .await
            .context("SDK cluster client connect")?,
        service,
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let victim_name = g.members[victim].name.clone();
    let survivors: Vec<u16> = (0..n)
        .filter(|&k| k != victim)
        .map(|k| g.members[k].ports.admin)
        .collect();
    let killed = Instant::now();
    g.kill(victim);
    let removal = tokio::task::spawn_blocking(move || -> Result<Duration> {
        let mut left: Vec<u16> = survivors;
        while !left.is_empty() {
            left.retain(|&admin| members(admin).map_or(true, |names| names.contains(&victim_name)));
            if killed.elapsed() > LIMIT {
                bail!("still a member after {LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(killed.elapsed())
    })
    .await??;
    let served = loop {
        if let Some(d) = first_served_after(&failover.calls.lock().await, killed) {
            break d;
        }
        if killed.elapsed() > LIMIT {
            bail!("no call served through another gateway {LIMIT:?} after the kill");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // A second more for the cluster client to settle on the survivors.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let failover = failover.finish().await?;
    let cluster = cluster.finish().await?;
    let restarted = Instant::now();
    g.restart(victim)?;
    let (names, admins): (Vec<String>, Vec<u16>) = g
        .members
        .iter()
        .map(|m| (m.name.clone(), m.ports.admin))
        .unzip();
    let victim_admin = g.members[victim].ports.admin;
    let rejoin = tokio::task::spawn_blocking(move || -> Result<Duration> {
        for admin in admins {
            wait_members(admin, &names, LIMIT)?;
        }
        wait_nodes(victim_admin, nodes, LIMIT)?;
        Ok(restarted.elapsed())
    })
    .await??;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let failed = |calls: &[Call]| calls.iter().filter(|c| !c.ok).count() as f64;
    Ok(BTreeMap::from([
        ("kill_to_removal_ms".to_string(), ms(removal)),
        ("kill_to_served_ms".to_string(), ms(served)),
        ("restart_to_rejoin_ms".to_string(), ms(rejoin)),
        ("failed_calls".to_string(), failed(&failover)),
        ("cluster_failed_calls".to_string(), failed(&cluster)),
        (
            "cluster_kill_to_last_failure_ms".to_string(),
            ms(last_failure_after(&cluster, killed)),
        ),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_served_call_is_one_started_after_the_kill() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let killed = at(100);
        let calls = [
            // In flight at the kill, served after it: not counted.
            Call {
                start: at(90),
                end: at(150),
                ok: true,
            },
            Call {
                start: at(110),
                end: at(400),
                ok: false,
            },
            Call {
                start: at(120),
                end: at(3300),
                ok: true,
            },
            Call {
                start: at(410),
                end: at(3200),
                ok: true,
            },
        ];
        assert_eq!(
            first_served_after(&calls, killed),
            Some(Duration::from_millis(3100))
        );
        assert_eq!(first_served_after(&calls[..2], killed), None);
        assert_eq!(
            last_failure_after(&calls, killed),
            Duration::from_millis(300)
        );
        assert_eq!(last_failure_after(&calls[..1], killed), Duration::ZERO);
    }
}
