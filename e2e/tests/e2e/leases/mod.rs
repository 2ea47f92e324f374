//! Look-aside leases end to end: a real gateway grants leases on real
//! agents with a direct port, and clients call the nodes directly with the
//! token (over real QUIC on loopback). `tokens`: forged, expired, replayed
//! and misdirected tokens are refused and nothing runs; `slots`: a lease
//! holds a slot like a call until it is used up or expires, and
//! `max_concurrent` holds with leases and proxied calls mixed; `sdk`: the
//! SDK's leases (queue positions, direct and streamed calls) and its
//! look-aside mode's fallback to proxying; `http`: leases with curl;
//! `hostile`: the reliability suite's hostile QUIC client against a direct
//! port. (kill -9 of an agent holding leases is a chaos scenario.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod hostile;
mod http;
mod sdk;
mod slots;
mod tokens;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::{Fleet, eventually};
pub use crate::common::{metric, wait_metric};

/// A `command` service that appends a line to `runs` for each call it
/// runs (before answering with its payload): the tests count what ran.
pub fn recording(runs: &Path, extra: &str) -> String {
    format!(
        "command = [\"sh\", \"-c\", \"echo ran >> {}; cat\"]\n{extra}",
        runs.display()
    )
}

/// The calls a recording service ran so far.
pub fn runs(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .count()
}

/// Where node `id`'s recording service writes its runs.
pub fn runs_file(fleet: &Fleet, id: &str) -> PathBuf {
    fleet.dir.path().join(format!("{id}.runs"))
}

/// Waits until `n` calls or leases wait in `service`'s queue.
pub async fn wait_queued(fleet: &Fleet, service: &str, n: u32) {
    eventually(Duration::from_secs(10), || {
        let length = fleet
            .gateway
            .queues()
            .iter()
            .find(|q| q.service == service)
            .map_or(0, |q| q.length);
        (length == n)
            .then_some(())
            .ok_or(format!("expected {n} queued, have {length}"))
    })
    .await;
}

/// Waits until the gateway counts `n` calls or leases of `service` in
/// flight on node `id`.
pub async fn wait_in_flight(fleet: &Fleet, id: &str, service: &str, n: u32) {
    eventually(Duration::from_secs(10), || {
        let have = fleet
            .gateway
            .registry()
            .get(id)
            .map_or(0, |node| node.in_flight(service));
        (have == n).then_some(()).ok_or(format!(
            "{id}: expected {n} of {service} in flight, have {have}"
        ))
    })
    .await;
}
