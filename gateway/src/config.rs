//! `gateway.toml`: every setting has a default, so an empty file (or none)
//! runs a gateway on `127.0.0.1:4433`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The gateway's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// QUIC listen address (default `127.0.0.1:4433`; port 0 picks a free one).
    pub listen: SocketAddr,
    /// Where the gateway keeps its generated certificate, key, CA and agent
    /// token (default `$XDG_DATA_HOME/switchyard`, else
    /// `~/.local/share/switchyard`, else `./.switchyard`).
    pub data_dir: PathBuf,
    /// TLS material; unset paths default to `cert.pem`, `key.pem` and
    /// `ca.pem` in `data_dir`, created on first start.
    pub tls: TlsConfig,
    /// Folder the gateway loads policy plugins (`*.wasm`) from
    /// (default `plugins/dist`).
    pub plugins_dir: PathBuf,
    /// Policy used for services with none configured (default `round-robin`).
    pub default_policy: String,
    /// Largest call payload accepted, bytes (default 16 MiB). Also bounds
    /// results relayed from nodes.
    pub max_payload_bytes: u64,
    /// Largest timeout a call may ask for, ms (default 600 000).
    pub max_timeout_ms: u32,
    /// The shared secret agents present when they register. Unset: a random
    /// token is generated into `data_dir/agent-token` on first start.
    pub agent_token: Option<String>,
    /// The shared secret admin requests (`switchyard policy set`) present.
    /// Unset: a random token is generated into `data_dir/admin-token`.
    pub admin_token: Option<String>,
    /// How long one policy `pick` or `observe` may run, ms (default 5); past
    /// it the call traps and the pick falls back.
    pub pick_deadline_ms: u64,
    /// Whether compiled plugins are cached on disk in `data_dir/wasm-cache`,
    /// keyed by content hash, so restarts skip compilation (default true).
    pub plugin_cache: bool,
    /// Whether a pick that the policy fails (trap, deadline) falls back to the
    /// built-in round-robin (default true: fail open) instead of failing the
    /// call.
    pub fail_open: bool,
    /// Seed for the random numbers handed to policies; unset = from entropy.
    pub seed: Option<u64>,
    /// Per-service settings, by service name.
    pub services: BTreeMap<String, ServiceConfig>,
}

/// TLS file locations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Server certificate chain, PEM.
    pub cert: Option<PathBuf>,
    /// Server private key, PEM.
    pub key: Option<PathBuf>,
    /// CA file to print for agents and clients, PEM.
    pub ca: Option<PathBuf>,
    /// Names the generated certificate covers (default `localhost`, `127.0.0.1`, `::1`).
    pub names: Vec<String>,
}

/// Settings of one service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// The policy that picks nodes for this service (default: `default_policy`).
    pub policy: Option<String>,
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 4433)),
            data_dir: default_data_dir(),
            tls: TlsConfig::default(),
            plugins_dir: PathBuf::from("plugins/dist"),
            default_policy: "round-robin".into(),
            max_payload_bytes: u64::from(protocol::DEFAULT_MAX_FRAME_LEN),
            max_timeout_ms: 600_000,
            agent_token: None,
            admin_token: None,
            pick_deadline_ms: 5,
            plugin_cache: true,
            fail_open: true,
            seed: None,
            services: BTreeMap::new(),
        }
    }
}

impl GatewayConfig {
    /// Parses a TOML document.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for bad TOML or unknown keys,
    /// [`ConfigError::Invalid`] for out-of-range values.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses `path`.
    ///
    /// # Errors
    /// As [`GatewayConfig::from_toml_str`], plus [`ConfigError::Read`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text)
    }

    /// Checks value ranges.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the bad value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_payload_bytes == 0 || self.max_payload_bytes > 1 << 32 {
            return Err(ConfigError::Invalid(
                "max_payload_bytes must be in 1..=4 GiB".into(),
            ));
        }
        if self.max_timeout_ms == 0 {
            return Err(ConfigError::Invalid("max_timeout_ms must be > 0".into()));
        }
        if self.agent_token.as_deref() == Some("") || self.admin_token.as_deref() == Some("") {
            return Err(ConfigError::Invalid(
                "agent_token and admin_token must not be empty".into(),
            ));
        }
        if !(1..=10_000).contains(&self.pick_deadline_ms) {
            return Err(ConfigError::Invalid(
                "pick_deadline_ms must be in 1..=10000".into(),
            ));
        }
        if self.default_policy.is_empty() {
            return Err(ConfigError::Invalid(
                "default_policy must not be empty".into(),
            ));
        }
        Ok(())
    }

    /// The policy configured for `service`, else the default policy.
    pub fn policy_for(&self, service: &str) -> &str {
        self.services
            .get(service)
            .and_then(|s| s.policy.as_deref())
            .unwrap_or(&self.default_policy)
    }

    /// Where the TLS files are, defaults filled in from `data_dir`.
    pub fn tls_files(&self) -> transport::TlsFiles {
        let dflt = transport::TlsFiles::in_dir(&self.data_dir);
        transport::TlsFiles {
            cert: self.tls.cert.clone().unwrap_or(dflt.cert),
            key: self.tls.key.clone().unwrap_or(dflt.key),
            ca: self.tls.ca.clone().unwrap_or(dflt.ca),
        }
    }
}

/// The default data directory: `$XDG_DATA_HOME/switchyard`, else
/// `$HOME/.local/share/switchyard`, else `./.switchyard`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("switchyard");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".local/share/switchyard");
    }
    PathBuf::from(".switchyard")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default() {
        let config = GatewayConfig::from_toml_str("").expect("parse");
        assert_eq!(config, GatewayConfig::default());
        assert_eq!(config.listen.to_string(), "127.0.0.1:4433");
        assert_eq!(config.max_payload_bytes, 16 * 1024 * 1024);
    }

    #[test]
    fn services_choose_policies() {
        let config = GatewayConfig::from_toml_str(
            r#"
            listen = "127.0.0.1:0"
            default_policy = "round-robin"
            agent_token = "s3cret"
            [services.llama]
            policy = "latency"
            "#,
        )
        .expect("parse");
        assert_eq!(config.policy_for("llama"), "latency");
        assert_eq!(config.policy_for("other"), "round-robin");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(matches!(
            GatewayConfig::from_toml_str("lisen = \"x\""),
            Err(ConfigError::Parse(_))
        ));
        assert!(matches!(
            GatewayConfig::from_toml_str("max_payload_bytes = 0"),
            Err(ConfigError::Invalid(_))
        ));
    }
}
