//! `[outlier]` of `gateway.toml`: outlier ejection (Envoy's consecutive
//! failures and success rate).

use serde::Deserialize;

/// `[outlier]`: a node whose calls of a service fail `consecutive_failures`
/// times in a row (`service failed`, `node lost`, a timeout on the node)
/// takes no calls of that service for `base_ejection_s` × the number of
/// times it was ejected, at most `max_ejection_s`; at most
/// `max_ejection_percent` of a service's nodes are out at once (at least
/// one may be), never the last. Envoy's outlier detection
/// (`consecutive_5xx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierConfig {
    /// Failures in a row that eject a node (default 5; 0 turns it off).
    pub consecutive_failures: u32,
    /// Ejection per ejection so far, s (default 30).
    pub base_ejection_s: u32,
    /// Longest ejection, s (default 300).
    pub max_ejection_s: u32,
    /// Most of a service's nodes out at once, % (default 10, 0..=100).
    pub max_ejection_percent: u32,
    /// Success-rate ejection (default false; Envoy's `success_rate`): every
    /// `success_rate_interval_s`, nodes of a service with at least
    /// `success_rate_request_volume` calls are compared, and when at least
    /// `success_rate_minimum_hosts` are, one whose success rate is below
    /// mean − stdev × `success_rate_stdev_factor` / 1000 is ejected.
    pub success_rate: bool,
    /// Interval of success-rate ejection, s (default 10, > 0).
    pub success_rate_interval_s: u32,
    /// Calls a node needs in an interval to be compared (default 100).
    pub success_rate_request_volume: u32,
    /// Nodes that must qualify for any ejection (default 5).
    pub success_rate_minimum_hosts: u32,
    /// Standard deviations below the mean that eject, thousandths
    /// (default 1900, as Envoy's).
    pub success_rate_stdev_factor: u32,
}

impl OutlierConfig {
    /// The core's success-rate rules, `None` when it is off.
    pub fn success_rate_rules(&self) -> Option<switchyard_core::SuccessRateRules> {
        self.success_rate
            .then(|| switchyard_core::SuccessRateRules {
                interval: std::time::Duration::from_secs(u64::from(
                    self.success_rate_interval_s.max(1),
                )),
                request_volume: self.success_rate_request_volume,
                minimum_hosts: self.success_rate_minimum_hosts,
                stdev_factor: f64::from(self.success_rate_stdev_factor) / 1000.0,
            })
    }
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection_s: 30,
            max_ejection_s: 300,
            max_ejection_percent: 10,
            success_rate: false,
            success_rate_interval_s: 10,
            success_rate_request_volume: 100,
            success_rate_minimum_hosts: 5,
            success_rate_stdev_factor: 1900,
        }
    }
}
