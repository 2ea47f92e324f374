//! `[metrics]` of `gateway.toml`: the Prometheus series of `GET /metrics`.

use std::time::Duration;

use serde::Deserialize;

/// `[metrics]`: how long series live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Seconds after which a counter or histogram series that was not
    /// updated is dropped from `/metrics` (a service gone, a node gone),
    /// and a service or tenant name whose last node or configuration left
    /// stops being a label value of its own (default 600; 0 keeps series
    /// forever). A series that is updated again starts from zero, which
    /// Prometheus's `rate()` reads as a counter reset. Process-wide: the
    /// first gateway started in a process sets it.
    pub idle_timeout_s: u32,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            idle_timeout_s: 600,
        }
    }
}

impl MetricsConfig {
    /// [`Self::idle_timeout_s`] as a duration; `None` for 0 (never).
    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout_s > 0).then(|| Duration::from_secs(u64::from(self.idle_timeout_s)))
    }
}
