//! The stats keys: how often the agent samples its node, when a sample
//! counts as changed, and the heartbeat that bounds its silence.

use std::time::Duration;

use super::AgentConfig;

/// Default stats period, ms.
pub const DEFAULT_STATS_INTERVAL_MS: u32 = 1000;

/// Default [`AgentConfig::stats_change_pct`]: a figure moves by 5 points,
/// or 5% of its total or last value, before a sample counts as changed.
pub const DEFAULT_STATS_CHANGE_PCT: f32 = 5.0;

/// The default heartbeat, in stats intervals.
const HEARTBEAT_INTERVALS: u32 = 2;

pub(super) fn default_interval_ms() -> u32 {
    DEFAULT_STATS_INTERVAL_MS
}

pub(super) fn default_change_pct() -> f32 {
    DEFAULT_STATS_CHANGE_PCT
}

impl AgentConfig {
    /// The longest the agent stays silent when its stats do not change,
    /// ms: `stats_heartbeat_ms`, or twice `stats_interval_ms` (at most
    /// [`protocol::MAX_HEARTBEAT_MS`], at least the interval).
    pub fn stats_heartbeat_ms(&self) -> u32 {
        self.stats_heartbeat_ms.unwrap_or_else(|| {
            self.stats_interval_ms
                .saturating_mul(HEARTBEAT_INTERVALS)
                .min(protocol::MAX_HEARTBEAT_MS)
                .max(self.stats_interval_ms)
        })
    }

    /// [`Self::stats_heartbeat_ms`] as a duration.
    pub fn stats_heartbeat(&self) -> Duration {
        Duration::from_millis(u64::from(self.stats_heartbeat_ms()))
    }

    /// # Errors
    /// What is wrong with the stats keys, in words.
    pub(super) fn check_stats(&self) -> Result<(), String> {
        let interval = self.stats_interval_ms;
        if interval == 0 {
            return Err("stats_interval_ms must be > 0".into());
        }
        if interval > protocol::MAX_HEARTBEAT_MS {
            return Err(format!(
                "stats_interval_ms must be at most {}",
                protocol::MAX_HEARTBEAT_MS
            ));
        }
        if let Some(heartbeat) = self.stats_heartbeat_ms
            && !(interval..=protocol::MAX_HEARTBEAT_MS).contains(&heartbeat)
        {
            return Err(format!(
                "stats_heartbeat_ms must be in stats_interval_ms ({interval})..={}, got {heartbeat}",
                protocol::MAX_HEARTBEAT_MS
            ));
        }
        let pct = self.stats_change_pct;
        if !(0.0..=100.0).contains(&pct) {
            return Err(format!("stats_change_pct must be in 0..=100, got {pct}"));
        }
        Ok(())
    }
}
