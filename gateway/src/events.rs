//! Domain events: what changed in the fleet or its policies (a node came
//! up, went down, drained; a service's policy changed), announced by the
//! module that made the change and streamed to the dashboard at once
//! (`GET /api/events`, `change` events).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// A change worth telling the dashboard at once.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AdminEvent {
    /// `node_up`, `node_down`, `drain`, `undrain`, `policy`, ...
    pub(crate) kind: &'static str,
    /// Details in words (e.g. the node id).
    pub(crate) detail: String,
    /// When, ms since the Unix epoch.
    pub(crate) at_unix_ms: u64,
}

impl AdminEvent {
    /// An event of `kind` happening now.
    pub(crate) fn new(kind: &'static str, detail: String) -> Self {
        Self {
            kind,
            detail,
            at_unix_ms: unix_ms(),
        }
    }
}

/// Now, ms since the Unix epoch (0 before 1970).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
