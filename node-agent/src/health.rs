//! Active health checks: one task per checked service probes its
//! `health_url` every `interval_ms` and keeps a verdict the stats report
//! carries ([`protocol::NodeStats::unhealthy`]); the gateway offers no call
//! of an unhealthy service to this node. Thresholds as Envoy's active
//! health checking (see [`HealthCheck`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::Client;
use tokio::task::JoinSet;

use crate::config::{HealthCheck, ServiceConfig};

/// The health verdicts of a node's checked services, cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct HealthChecks {
    checks: Arc<Vec<Checked>>,
}

#[derive(Debug)]
struct Checked {
    service: String,
    check: HealthCheck,
    healthy: AtomicBool,
}

impl HealthChecks {
    /// The checks of every service of `services` that has one, each healthy
    /// until its probes say otherwise.
    pub fn new(services: &[ServiceConfig]) -> Self {
        let checks = services
            .iter()
            .filter_map(|s| {
                s.health.as_ref().map(|check| Checked {
                    service: s.name.clone(),
                    check: check.clone(),
                    healthy: AtomicBool::new(true),
                })
            })
            .collect();
        Self {
            checks: Arc::new(checks),
        }
    }

    /// The services whose check fails now, in configuration order.
    pub fn unhealthy(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|c| !c.healthy.load(Ordering::Relaxed))
            .map(|c| c.service.clone())
            .collect()
    }

    /// Starts one probing task per checked service on `client`; they run
    /// until the returned set is dropped.
    pub fn spawn(&self, client: &Client) -> JoinSet<()> {
        let mut tasks = JoinSet::new();
        for index in 0..self.checks.len() {
            let checks = Arc::clone(&self.checks);
            let client = client.clone();
            tasks.spawn(async move { probe_forever(&checks[index], &client).await });
        }
        tasks
    }
}

async fn probe_forever(checked: &Checked, client: &Client) {
    let check = &checked.check;
    let mut tracker = Tracker::default();
    let mut ticks = tokio::time::interval(Duration::from_millis(check.interval_ms));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let outcome = probe(client, &check.url, Duration::from_millis(check.timeout_ms)).await;
        let ok = outcome.is_ok();
        if let Some(healthy) = tracker.record(ok, check) {
            checked.healthy.store(healthy, Ordering::Relaxed);
            match outcome {
                Ok(()) => {
                    tracing::info!(service = %checked.service, "health check passes again: service healthy")
                }
                Err(why) => {
                    tracing::warn!(service = %checked.service, url = %check.url, "health check failed {} times in a row: service unhealthy ({why})", check.unhealthy_threshold)
                }
            }
        }
    }
}

/// One probe: `GET url`, passed on a 2xx status within `timeout`.
async fn probe(client: &Client, url: &str, timeout: Duration) -> Result<(), String> {
    let request = client.get(url).timeout(timeout).send();
    match tokio::time::timeout(timeout, request).await {
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        Ok(Err(e)) => Err(format!("request failed: {e}")),
        Ok(Ok(response)) if response.status().is_success() => Ok(()),
        Ok(Ok(response)) => Err(format!("status {}", response.status())),
    }
}

/// The threshold logic: a verdict flips after enough probes in a row
/// disagree with it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tracker {
    healthy: bool,
    /// Probes in a row that disagree with `healthy`.
    against: u32,
}

impl Default for Tracker {
    fn default() -> Self {
        Self {
            healthy: true,
            against: 0,
        }
    }
}

impl Tracker {
    /// Counts one probe; returns the new verdict when it flipped.
    pub(crate) fn record(&mut self, ok: bool, check: &HealthCheck) -> Option<bool> {
        if ok == self.healthy {
            self.against = 0;
            return None;
        }
        self.against += 1;
        let threshold = if self.healthy {
            check.unhealthy_threshold
        } else {
            check.healthy_threshold
        };
        if self.against < threshold {
            return None;
        }
        self.healthy = ok;
        self.against = 0;
        Some(ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_flip_after_their_thresholds_in_a_row() {
        let mut check = HealthCheck::new("http://127.0.0.1:1/health");
        check.unhealthy_threshold = 3;
        check.healthy_threshold = 2;
        let mut t = Tracker::default();
        assert_eq!(t.record(false, &check), None);
        assert_eq!(t.record(false, &check), None);
        assert_eq!(t.record(true, &check), None, "a pass resets the count");
        assert_eq!(t.record(false, &check), None);
        assert_eq!(t.record(false, &check), None);
        assert_eq!(
            t.record(false, &check),
            Some(false),
            "third failure in a row"
        );
        assert_eq!(t.record(false, &check), None, "already unhealthy");
        assert_eq!(t.record(true, &check), None);
        assert_eq!(t.record(true, &check), Some(true), "second pass in a row");
    }

    #[tokio::test]
    async fn a_probe_of_nothing_fails_and_the_service_turns_unhealthy() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(9);
        let mut check = HealthCheck::new(format!("http://127.0.0.1:{port}/health"));
        check.interval_ms = 10;
        check.timeout_ms = 200;
        let mut service = ServiceConfig::new(
            "svc",
            crate::ServiceKind::http(format!("http://127.0.0.1:{port}/")),
        );
        service.health = Some(check);
        let checks = HealthChecks::new(&[service]);
        assert!(checks.unhealthy().is_empty(), "healthy at first");
        let client = crate::services::http_client().unwrap_or_default();
        let _tasks = checks.spawn(&client);
        let start = std::time::Instant::now();
        while checks.unhealthy().is_empty() {
            assert!(start.elapsed() < Duration::from_secs(10), "never unhealthy");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(checks.unhealthy(), vec!["svc".to_string()]);
    }
}
