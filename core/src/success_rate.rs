//! Success-rate outlier ejection (Envoy's `success_rate` detection, off by
//! default): over each interval, the nodes of a service with at least
//! `request_volume` finished calls there are compared; when at least
//! `minimum_hosts` qualify, a node whose success rate is below mean −
//! stdev × `stdev_factor` is ejected like a node with too many failures in
//! a row (same ejection time, same percentage cap, never the last one).

use std::time::{Duration, Instant};

use crate::{CallEnd, Core, EjectReason, NodeKey};

/// Success-rate ejection's rules (Envoy's `interval`,
/// `success_rate_request_volume`, `success_rate_minimum_hosts`,
/// `success_rate_stdev_factor`).
#[derive(Debug, Clone, PartialEq)]
pub struct SuccessRateRules {
    /// How often rates are compared (default 10 s); each comparison starts
    /// a new interval.
    pub interval: Duration,
    /// Calls a node must have finished in the interval to be compared
    /// (default 100).
    pub request_volume: u32,
    /// Nodes that must qualify for any to be ejected (default 5).
    pub minimum_hosts: u32,
    /// Ejected below mean − stdev × this (default 1.9, Envoy's 1900/1000).
    pub stdev_factor: f64,
}

impl Default for SuccessRateRules {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            request_volume: 100,
            minimum_hosts: 5,
            stdev_factor: 1.9,
        }
    }
}

impl Core {
    /// Counts a finished call into its node's interval.
    pub(crate) fn count_rate(&mut self, node: NodeKey, service: &str, end: CallEnd) {
        if self.config.outlier.success_rate.is_none() || end == CallEnd::Abandoned {
            return;
        }
        if let Some(s) = self.fleet.service_mut(node, service) {
            s.window_total = s.window_total.saturating_add(1);
            if end == CallEnd::Ok {
                s.window_ok = s.window_ok.saturating_add(1);
            }
        }
    }

    /// At the end of an interval, compares each service's nodes and ejects
    /// the outliers, then starts the next interval. Runs on any event.
    pub(crate) fn check_success_rates(&mut self, now: Instant) {
        let Some(rules) = self.config.outlier.success_rate.clone() else {
            return;
        };
        let due = *self.next_rate_check.get_or_insert(now + rules.interval);
        if now < due {
            return;
        }
        self.next_rate_check = Some(now + rules.interval);
        let mut services: Vec<String> = self.fleet.service_names();
        services.sort();
        services.dedup();
        for service in services {
            let mut rates: Vec<(NodeKey, f64)> = Vec::new();
            for node in self.fleet.hosting(&service) {
                if let Some(s) = node.services.get(&service)
                    && s.ejected_until.is_none()
                    && s.window_total >= rules.request_volume.max(1)
                {
                    rates.push((node.key, f64::from(s.window_ok) / f64::from(s.window_total)));
                }
            }
            for (key, why) in outliers(&rates, &rules) {
                if self.may_eject(&service) {
                    self.eject(key, &service, EjectReason::SuccessRate, why, now);
                }
            }
        }
        for node in self.fleet.nodes_mut() {
            for s in node.services.values_mut() {
                s.window_ok = 0;
                s.window_total = 0;
            }
        }
    }
}

/// The nodes of `rates` (node, success rate in 0..=1) below mean − stdev ×
/// factor, when at least `minimum_hosts` are compared; with each its rate
/// in % (for the log).
fn outliers(rates: &[(NodeKey, f64)], rules: &SuccessRateRules) -> Vec<(NodeKey, u32)> {
    if rates.is_empty() || rates.len() < rules.minimum_hosts as usize {
        return Vec::new();
    }
    let n = rates.len() as f64;
    let mean = rates.iter().map(|(_, r)| r).sum::<f64>() / n;
    let variance = rates.iter().map(|(_, r)| (r - mean).powi(2)).sum::<f64>() / n;
    let threshold = mean - variance.sqrt() * rules.stdev_factor;
    rates
        .iter()
        .filter(|(_, r)| *r < threshold)
        .map(|(k, r)| (*k, (r * 100.0).round() as u32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_rate_far_below_the_others_is_an_outlier() {
        let rules = SuccessRateRules::default();
        let mut rates: Vec<(NodeKey, f64)> = (1..=5).map(|k| (k, 0.99)).collect();
        rates.push((6, 0.5));
        assert_eq!(outliers(&rates, &rules), vec![(6, 50)]);
        rates.pop();
        assert!(outliers(&rates, &rules).is_empty(), "all alike");
        assert!(
            outliers(&[(1, 0.99), (2, 0.1)], &rules).is_empty(),
            "too few hosts"
        );
    }
}
