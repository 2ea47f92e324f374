//! `[scale]` of `gateway.toml`: the autoscaling signals (`GET /api/scale`
//! on the admin port and the `service_*` series of `/metrics`).

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// `[scale]`: how the desired node count of a service is worked out.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScaleConfig {
    /// The share of a service's call slots the fleet should keep busy, in
    /// `(0, 1]` (default 0.7): the desired node count is the offered load
    /// (calls/s × mean slot time, in slots) over `target_utilisation ×` the
    /// slots of one node. `[services.NAME] target_utilisation` overrides it
    /// per service.
    pub target_utilisation: f64,
    /// The time arrival rates, mean slot times and queue-wait percentiles
    /// are measured over, s (default 60; 1..=3600).
    pub window_s: u32,
}

impl Default for ScaleConfig {
    fn default() -> Self {
        Self {
            target_utilisation: 0.7,
            window_s: 60,
        }
    }
}

impl ScaleConfig {
    /// [`Self::window_s`] as a duration.
    pub fn window(&self) -> Duration {
        Duration::from_secs(u64::from(self.window_s))
    }

    /// Checks the ranges; `overrides` are the services' own targets, by
    /// service name.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the bad value.
    pub fn validate<'a>(
        &self,
        overrides: impl IntoIterator<Item = (&'a String, Option<f64>)>,
    ) -> Result<(), ConfigError> {
        if !valid_target(self.target_utilisation) {
            return Err(ConfigError::Invalid(format!(
                "scale.target_utilisation must be in (0, 1], not {}",
                self.target_utilisation
            )));
        }
        if !(1..=3600).contains(&self.window_s) {
            return Err(ConfigError::Invalid(format!(
                "scale.window_s must be in 1..=3600, not {}",
                self.window_s
            )));
        }
        for (name, target) in overrides {
            if let Some(target) = target.filter(|t| !valid_target(*t)) {
                return Err(ConfigError::Invalid(format!(
                    "services.{name}.target_utilisation must be in (0, 1], not {target}"
                )));
            }
        }
        Ok(())
    }
}

fn valid_target(target: f64) -> bool {
    target.is_finite() && target > 0.0 && target <= 1.0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use crate::config::{ConfigError, GatewayConfig};

    #[test]
    fn defaults_the_example_and_per_service_targets() {
        let config = GatewayConfig::from_toml_str("").unwrap();
        assert_eq!(config.scale.target_utilisation, 0.7);
        assert_eq!(config.scale.window_s, 60);
        let example = GatewayConfig::from_toml_str(crate::cli::EXAMPLE_CONFIG).unwrap();
        assert_eq!(example.scale, config.scale);
        let config = GatewayConfig::from_toml_str(
            "[scale]\ntarget_utilisation = 0.5\nwindow_s = 30\n\
             [services.llama]\ntarget_utilisation = 0.9\n",
        )
        .unwrap();
        assert_eq!(config.scale.target_utilisation, 0.5);
        assert_eq!(config.scale.window().as_secs(), 30);
        assert_eq!(config.services["llama"].target_utilisation, Some(0.9));
    }

    #[test]
    fn out_of_range_values_are_refused_by_name() {
        for (toml, names) in [
            (
                "[scale]\ntarget_utilisation = 0.0\n",
                "scale.target_utilisation",
            ),
            (
                "[scale]\ntarget_utilisation = 1.5\n",
                "scale.target_utilisation",
            ),
            (
                "[scale]\ntarget_utilisation = nan\n",
                "scale.target_utilisation",
            ),
            ("[scale]\nwindow_s = 0\n", "scale.window_s"),
            ("[scale]\nwindow_s = 3601\n", "scale.window_s"),
            (
                "[services.llama]\ntarget_utilisation = -1.0\n",
                "services.llama.target_utilisation",
            ),
        ] {
            match GatewayConfig::from_toml_str(toml) {
                Err(ConfigError::Invalid(message)) => {
                    assert!(message.contains(names), "{toml}: {message}");
                }
                other => panic!("{toml}: {other:?}"),
            }
        }
        assert!(GatewayConfig::from_toml_str("[scale]\nwindow = 5\n").is_err());
    }
}
