//! `[reconnect]`: the agent's backoff between attempts to reach a gateway.

use serde::Deserialize;

/// Exponential reconnect backoff with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconnectConfig {
    /// First delay, ms (default 200).
    #[serde(default = "default_initial_ms")]
    pub initial_ms: u64,
    /// Largest delay, ms (default 10 000).
    #[serde(default = "default_max_ms")]
    pub max_ms: u64,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self {
            initial_ms: default_initial_ms(),
            max_ms: default_max_ms(),
        }
    }
}

fn default_initial_ms() -> u64 {
    200
}

fn default_max_ms() -> u64 {
    10_000
}
