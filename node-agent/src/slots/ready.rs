//! Waiting for a started server to become ready: its `ready_url` answers a
//! GET with 2xx, or its `ready_command` exits 0.

use std::time::Duration;

use tokio::time::Instant;

use super::process::{Process, run_command};
use crate::config::{ReadyProbe, SwapConfig};

/// Time between two probes.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Longest one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Probes every 100 ms until the service is ready, giving up after
/// `timeout` or as soon as the process exits.
///
/// # Errors
/// `start failed: process exited with ...` when the process exits first,
/// `not ready within N s` past `timeout`.
pub(crate) async fn wait(
    process: &Process,
    swap: &SwapConfig,
    client: &reqwest::Client,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let poll = async {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match probe(swap, client, left.min(PROBE_TIMEOUT)).await {
                Ok(()) => return,
                Err(e) => tracing::trace!("not ready yet: {e}"),
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    };
    tokio::select! {
        biased;
        reason = process.wait_exit() => Err(format!("start failed: process {reason}")),
        polled = tokio::time::timeout_at(deadline, poll) => polled.map_err(|_| {
            format!("not ready within {} s", timeout.as_secs_f32())
        }),
    }
}

/// One probe.
async fn probe(swap: &SwapConfig, client: &reqwest::Client, limit: Duration) -> Result<(), String> {
    match &swap.ready {
        ReadyProbe::Url(url) => {
            let response = client
                .get(url)
                .timeout(limit)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("{url} answered {status}"))
            }
        }
        ReadyProbe::Command(argv) => run_command(argv, &swap.env, swap.cwd.as_ref(), limit).await,
    }
}
