//! The thresholds, sgl-router's defaults overridable by hints.

use policy_sdk::Hints;

/// The thresholds of one pick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Route to the longest match only when its ratio `matched / blocks` is
    /// above this, 0..=1 (hint `cache_threshold`; default 0.5).
    pub cache_threshold: f64,
    /// Imbalanced needs `max − min` load above this, requests (hint
    /// `balance_abs_threshold`; default 32).
    pub balance_abs_threshold: f64,
    /// Imbalanced also needs `max > this × min` (hint
    /// `balance_rel_threshold`; default 1.1).
    pub balance_rel_threshold: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            cache_threshold: 0.5,
            balance_abs_threshold: 32.0,
            balance_rel_threshold: 1.1,
        }
    }
}

impl Settings {
    /// The defaults, overridden by the call's hints.
    ///
    /// # Errors
    /// `bad hint KEY="VALUE": expected a number >= 0` for a hint that is not
    /// a finite number `>= 0`.
    pub fn from_hints(hints: &Hints<'_>) -> Result<Self, String> {
        let d = Self::default();
        Ok(Self {
            cache_threshold: hints
                .get_non_negative("cache_threshold")?
                .unwrap_or(d.cache_threshold),
            balance_abs_threshold: hints
                .get_non_negative("balance_abs_threshold")?
                .unwrap_or(d.balance_abs_threshold),
            balance_rel_threshold: hints
                .get_non_negative("balance_rel_threshold")?
                .unwrap_or(d.balance_rel_threshold),
        })
    }

    /// SGLang's imbalance test: `max − min > abs` and `max > rel × min`.
    #[must_use]
    pub fn imbalanced(&self, max: u64, min: u64) -> bool {
        let (max, min) = (max as f64, min as f64);
        max - min > self.balance_abs_threshold && max > self.balance_rel_threshold * min
    }
}
