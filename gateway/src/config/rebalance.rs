//! `[rebalance]` of `gateway.toml`: a parent gateway moving waiting calls
//! from a child gateway's queue to a sibling with free capacity.

use serde::Deserialize;

use super::ConfigError;

/// `[rebalance]`: when a parent moves waiting calls between its children.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RebalanceConfig {
    /// Whether this gateway rebalances its child gateways' queues
    /// (default true; it does nothing without gateway children).
    pub enabled: bool,
    /// How often it looks, ms (default 500; 10 to 60 000).
    pub period_ms: u32,
    /// A child's queue for a service gives calls once its oldest call has
    /// waited this long, ms (default 250).
    pub threshold_ms: u32,
    /// Most calls moved per service in one round (default 64; at least 1).
    pub max_moves: u32,
}

impl Default for RebalanceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            period_ms: 500,
            threshold_ms: 250,
            max_moves: 64,
        }
    }
}

impl RebalanceConfig {
    /// Checks the values.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the bad value.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(10..=60_000).contains(&self.period_ms) {
            return Err(ConfigError::Invalid(
                "rebalance.period_ms must be in 10..=60000".into(),
            ));
        }
        if self.max_moves == 0 {
            return Err(ConfigError::Invalid(
                "rebalance.max_moves must be > 0".into(),
            ));
        }
        Ok(())
    }
}
