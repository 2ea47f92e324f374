//! `[leases]` of `gateway.toml`: look-aside leases (a client leases a
//! node's slot and calls the node directly with a signed token,
//! `docs/look-aside.md`): their default and longest lifetime, the most
//! calls one may serve, and how often the signing key rotates.

use serde::Deserialize;

/// `[leases]`: leases of nodes for direct (look-aside) calls.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeasesConfig {
    /// Whether leases are granted (default true); when false a lease
    /// request is refused and agents are sent no keys.
    pub enabled: bool,
    /// A lease's lifetime when the request names none, ms (default 30 000).
    pub ttl_ms: u32,
    /// The longest lifetime a lease may ask, ms (default 600 000: 10
    /// minutes); a longer one is cut to it. The previous signing key stays
    /// valid this long after a rotation.
    pub max_ttl_ms: u32,
    /// The most calls one lease may ask to serve (default 1000).
    pub max_calls: u32,
    /// How often the signing key is replaced by a new random one, s
    /// (default 3600).
    pub key_rotate_s: u32,
}

impl Default for LeasesConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl_ms: 30_000,
            max_ttl_ms: 600_000,
            max_calls: 1000,
            key_rotate_s: 3600,
        }
    }
}

impl LeasesConfig {
    /// The first broken rule, if any.
    pub(super) fn check(&self) -> Result<(), String> {
        if self.ttl_ms == 0 || self.ttl_ms > self.max_ttl_ms {
            return Err("leases.ttl_ms must be in 1..=leases.max_ttl_ms".into());
        }
        // A day at most: keys and remembered leases live this long.
        if self.max_ttl_ms > 86_400_000 {
            return Err("leases.max_ttl_ms must be at most 86400000 (a day)".into());
        }
        if self.max_calls == 0 {
            return Err("leases.max_calls must be > 0".into());
        }
        if self.key_rotate_s == 0 {
            return Err("leases.key_rotate_s must be > 0".into());
        }
        Ok(())
    }

    /// A request's lifetime: `asked` ms (0: [`Self::ttl_ms`]) cut to
    /// [`Self::max_ttl_ms`].
    pub fn ttl_of(&self, asked: u32) -> u32 {
        if asked == 0 {
            self.ttl_ms
        } else {
            asked.min(self.max_ttl_ms)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn defaults_pass_and_bad_values_are_named() {
        assert_eq!(LeasesConfig::default().check(), Ok(()));
        let bad = |f: fn(&mut LeasesConfig)| {
            let mut c = LeasesConfig::default();
            f(&mut c);
            c.check().expect_err("refused")
        };
        assert!(bad(|c| c.ttl_ms = 0).contains("ttl_ms"));
        assert!(bad(|c| c.ttl_ms = c.max_ttl_ms + 1).contains("ttl_ms"));
        assert!(bad(|c| c.max_ttl_ms = 86_400_001).contains("max_ttl_ms"));
        assert!(bad(|c| c.max_calls = 0).contains("max_calls"));
        assert!(bad(|c| c.key_rotate_s = 0).contains("key_rotate_s"));
    }

    #[test]
    fn lifetimes_default_and_are_cut() {
        let c = LeasesConfig::default();
        assert_eq!(c.ttl_of(0), 30_000);
        assert_eq!(c.ttl_of(1_500), 1_500);
        assert_eq!(c.ttl_of(u32::MAX), 600_000);
    }

    #[test]
    fn parses_from_toml() {
        let c: LeasesConfig =
            toml::from_str("enabled = false\nttl_ms = 5000\nkey_rotate_s = 60").expect("parses");
        assert!(!c.enabled);
        assert_eq!((c.ttl_ms, c.key_rotate_s, c.max_calls), (5000, 60, 1000));
        assert!(
            toml::from_str::<LeasesConfig>("ttl = 1").is_err(),
            "unknown key"
        );
    }
}
