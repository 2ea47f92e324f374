//! `[retry]` and `[circuit_breakers]`: how idempotent calls are retried and
//! when a service refuses calls at once (see [`switchyard_core::RetryRules`]
//! and [`switchyard_core::Breakers`] for the semantics, from Envoy).

use std::time::Duration;

use protocol::ErrorKind;
use serde::Deserialize;
use switchyard_core::{Breakers, RetryRules};

use super::ConfigError;

/// An error a call of an idempotent service is retried after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// The node went away after the call was sent (`node lost`).
    NodeLost,
    /// The service ran and failed (`service failed`).
    ServiceFailed,
    /// The node answered `timeout` (its own time limit; the call's deadline
    /// is never retried past).
    Timeout,
}

impl RetryOn {
    /// Whether a call that failed with `kind` is retried under this rule.
    pub fn matches(self, kind: ErrorKind) -> bool {
        matches!(
            (self, kind),
            (Self::NodeLost, ErrorKind::NodeLost)
                | (Self::ServiceFailed, ErrorKind::ServiceFailed)
                | (Self::Timeout, ErrorKind::Timeout)
        )
    }
}

/// `[retry]`: a call of a service with `[services.NAME] idempotent = true`
/// that fails on its node with an error of `retry_on` runs again on another
/// node, after a jittered backoff, within its deadline and the retry
/// budget. A call of any other service is never sent twice.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Errors retried (default `["node_lost", "service_failed",
    /// "timeout"]`).
    pub retry_on: Vec<RetryOn>,
    /// Most attempts of one call, the first included (default 3, 1..=10).
    pub max_attempts: u32,
    /// Backoff before the first retry, ms (default 25), doubling with each
    /// retry; the wait is drawn uniformly below it.
    pub base_backoff_ms: u32,
    /// Longest backoff, ms (default 250).
    pub max_backoff_ms: u32,
    /// Retries under way at most this % of a service's calls under way
    /// (default 20, 0..=100; Envoy's `retry_budget.budget_percent`).
    pub budget_percent: u32,
    /// Retries per second and service always allowed past the percentage
    /// (default 3).
    pub min_retries_per_second: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            retry_on: vec![RetryOn::NodeLost, RetryOn::ServiceFailed, RetryOn::Timeout],
            max_attempts: 3,
            base_backoff_ms: 25,
            max_backoff_ms: 250,
            budget_percent: 20,
            min_retries_per_second: 3,
        }
    }
}

impl RetryConfig {
    /// Whether a call that failed with `kind` is retried.
    pub fn retries(&self, kind: ErrorKind) -> bool {
        self.retry_on.iter().any(|r| r.matches(kind))
    }

    /// The core's rules.
    pub fn rules(&self) -> RetryRules {
        RetryRules {
            max_attempts: self.max_attempts,
            base_backoff: Duration::from_millis(u64::from(self.base_backoff_ms)),
            max_backoff: Duration::from_millis(u64::from(self.max_backoff_ms)),
            budget_percent: self.budget_percent,
            min_retries_per_second: self.min_retries_per_second,
        }
    }

    /// Checks the ranges.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the bad value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=10).contains(&self.max_attempts) {
            return Err(ConfigError::Invalid(
                "retry.max_attempts must be in 1..=10".into(),
            ));
        }
        if self.budget_percent > 100 {
            return Err(ConfigError::Invalid(
                "retry.budget_percent must be in 0..=100".into(),
            ));
        }
        if self.base_backoff_ms > self.max_backoff_ms || self.max_backoff_ms > 60_000 {
            return Err(ConfigError::Invalid(
                "retry: base_backoff_ms must be <= max_backoff_ms <= 60000".into(),
            ));
        }
        Ok(())
    }
}

/// `[circuit_breakers]` (defaults for every service) and the same keys in
/// `[services.NAME]` (that service's own): past a limit a call is refused
/// with `overloaded` at once (retry-safe: it ran nowhere), and a retry is
/// refused. Unset: no limit. Envoy's circuit breakers
/// (`max_pending_requests`, `max_requests`, `max_retries`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Most calls waiting in the service's queue.
    pub max_waiting: Option<u32>,
    /// Most calls under way: running on nodes plus waiting.
    pub max_in_flight: Option<u32>,
    /// Most retries under way.
    pub max_retries_in_flight: Option<u32>,
}

impl BreakerConfig {
    /// These limits, each falling back to `defaults`'.
    pub fn or(self, defaults: Self) -> Breakers {
        Breakers {
            max_waiting: self.max_waiting.or(defaults.max_waiting),
            max_in_flight: self.max_in_flight.or(defaults.max_in_flight),
            max_retries_in_flight: self
                .max_retries_in_flight
                .or(defaults.max_retries_in_flight),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::GatewayConfig;
    use super::*;

    #[test]
    fn retries_and_breakers_parse_with_defaults_and_overrides() {
        let config = GatewayConfig::from_toml_str(
            "[retry]\nretry_on = [\"node_lost\"]\nmax_attempts = 2\n\
             [circuit_breakers]\nmax_waiting = 10\nmax_retries_in_flight = 3\n\
             [services.echo]\nidempotent = true\nmax_waiting = 4\n",
        )
        .unwrap();
        assert!(config.retry.retries(ErrorKind::NodeLost));
        assert!(!config.retry.retries(ErrorKind::ServiceFailed));
        assert!(config.services["echo"].idempotent);
        let core = crate::scheduler::core_config(&config);
        assert_eq!(core.retry.max_attempts, 2);
        assert_eq!(core.breakers("echo").max_waiting, Some(4));
        assert_eq!(core.breakers("echo").max_retries_in_flight, Some(3));
        assert_eq!(core.breakers("other").max_waiting, Some(10));
        assert!(!GatewayConfig::default().services.contains_key("echo"));
        assert_eq!(core.outlier.success_rate, None, "off by default");
        let on = GatewayConfig::from_toml_str("[outlier]\nsuccess_rate = true\n").unwrap();
        let rules = crate::scheduler::core_config(&on)
            .outlier
            .success_rate
            .unwrap();
        assert_eq!(rules.minimum_hosts, 5);
        assert!((rules.stdev_factor - 1.9).abs() < 1e-9);
        for bad in [
            "[retry]\nmax_attempts = 0\n",
            "[retry]\nbudget_percent = 101\n",
            "[retry]\nretry_on = [\"bad_request\"]\n",
            "[circuit_breakers]\nmax_queue = 1\n",
        ] {
            assert!(GatewayConfig::from_toml_str(bad).is_err(), "{bad}");
        }
    }
}
