//! Active health checks of `http` and `openai` services: the keys
//! `health_url`, `health_interval_ms`, `health_timeout_ms`,
//! `healthy_threshold` and `unhealthy_threshold` of a `[[services]]` entry.
//!
//! The semantics are Envoy's active HTTP health checking
//! (`interval`, `timeout`, `healthy_threshold`, `unhealthy_threshold`): a
//! probe is a `GET` of the URL that passes on a 2xx status within the
//! timeout; the service turns unhealthy after `unhealthy_threshold` failed
//! probes in a row and healthy again after `healthy_threshold` passed ones.
//! Unlike Envoy, a service starts healthy (its first calls are not held
//! back until a probe passed).

/// Default time between two probes, ms.
pub const DEFAULT_HEALTH_INTERVAL_MS: u64 = 1000;
/// Default longest wait for a probe's answer, ms (a probe past it failed).
pub const DEFAULT_HEALTH_TIMEOUT_MS: u64 = 1000;
/// Default passed probes in a row that make an unhealthy service healthy.
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
/// Default failed probes in a row that make a healthy service unhealthy.
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 2;
/// Largest interval or timeout accepted, ms (one hour).
pub const MAX_HEALTH_MS: u64 = 60 * 60 * 1000;

/// A service's active health check (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// `http://` URL probed with `GET` (TOML `health_url`).
    pub url: String,
    /// Time between probes, ms (TOML `health_interval_ms`, default 1000).
    pub interval_ms: u64,
    /// Longest wait for a probe, ms (TOML `health_timeout_ms`, default 1000).
    pub timeout_ms: u64,
    /// Passed probes in a row to turn healthy (TOML `healthy_threshold`,
    /// default 2, at least 1).
    pub healthy_threshold: u32,
    /// Failed probes in a row to turn unhealthy (TOML
    /// `unhealthy_threshold`, default 2, at least 1).
    pub unhealthy_threshold: u32,
}

impl HealthCheck {
    /// A check of `url` with every other setting at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            interval_ms: DEFAULT_HEALTH_INTERVAL_MS,
            timeout_ms: DEFAULT_HEALTH_TIMEOUT_MS,
            healthy_threshold: DEFAULT_HEALTHY_THRESHOLD,
            unhealthy_threshold: DEFAULT_UNHEALTHY_THRESHOLD,
        }
    }

    /// Builds a check from the TOML keys; `None` without `health_url`.
    ///
    /// # Errors
    /// A message when a `health_*`/threshold key is set without
    /// `health_url`, or a value is out of range (URL not plain `http`,
    /// interval or timeout 0 or over an hour, a threshold of 0).
    pub(crate) fn from_keys(
        url: Option<String>,
        interval_ms: Option<u64>,
        timeout_ms: Option<u64>,
        healthy_threshold: Option<u32>,
        unhealthy_threshold: Option<u32>,
    ) -> Result<Option<Self>, String> {
        let Some(url) = url else {
            let stray = interval_ms.is_some()
                || timeout_ms.is_some()
                || healthy_threshold.is_some()
                || unhealthy_threshold.is_some();
            return if stray {
                Err("health check settings need health_url = \"http://...\"".into())
            } else {
                Ok(None)
            };
        };
        super::parse_url(&url).map_err(|e| format!("health_url: {e}"))?;
        let check = Self {
            url,
            interval_ms: interval_ms.unwrap_or(DEFAULT_HEALTH_INTERVAL_MS),
            timeout_ms: timeout_ms.unwrap_or(DEFAULT_HEALTH_TIMEOUT_MS),
            healthy_threshold: healthy_threshold.unwrap_or(DEFAULT_HEALTHY_THRESHOLD),
            unhealthy_threshold: unhealthy_threshold.unwrap_or(DEFAULT_UNHEALTHY_THRESHOLD),
        };
        for (key, ms) in [
            ("health_interval_ms", check.interval_ms),
            ("health_timeout_ms", check.timeout_ms),
        ] {
            if ms == 0 || ms > MAX_HEALTH_MS {
                return Err(format!("{key} must be in 1..={MAX_HEALTH_MS}, got {ms}"));
            }
        }
        if check.healthy_threshold == 0 || check.unhealthy_threshold == 0 {
            return Err("healthy_threshold and unhealthy_threshold must be >= 1".into());
        }
        Ok(Some(check))
    }
}
