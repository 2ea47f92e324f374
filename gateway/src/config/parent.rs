//! `[parent]` of `gateway.toml`: this gateway is a node of a parent gateway
//! (a tree of gateways: one per site, region or lab, and one above them).
//! It dials the parent as an agent does and registers its own fleet as one
//! node of kind `gateway`.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

/// `[parent]`: the gateway above this one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParentConfig {
    /// The parent's QUIC address, `host:port` (required).
    pub address: String,
    /// The CA file the parent's certificate chains to (required).
    pub ca: PathBuf,
    /// The parent's agent token (its `agent_token`; required).
    pub token: String,
    /// The name the parent's certificate is checked against (default
    /// `localhost`, the name self-made certificates carry).
    #[serde(default = "default_server_name")]
    pub server_name: String,
    /// A client certificate and its key (PEM) for a parent whose
    /// `[agents] require_client_cert` is set; the certificate names this
    /// gateway's id. Default none.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// The key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// How often this gateway sends the parent its fleet's summed stats, ms
    /// (default 1000; 50 to 60 000); the parent drops it after three
    /// intervals without one. Its free capacity goes out whenever it
    /// changes, not on this period.
    #[serde(default = "default_stats_interval_ms")]
    pub stats_interval_ms: u32,
    /// First delay before dialling the parent again after the link broke,
    /// ms (default 200), doubling up to `reconnect_max_ms` (default 5000),
    /// with jitter.
    #[serde(default = "default_reconnect_ms")]
    pub reconnect_ms: u32,
    /// Longest delay between two dials, ms (default 5000).
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u32,
}

fn default_server_name() -> String {
    "localhost".into()
}

fn default_stats_interval_ms() -> u32 {
    1000
}

fn default_reconnect_ms() -> u32 {
    200
}

fn default_reconnect_max_ms() -> u32 {
    5000
}

impl ParentConfig {
    /// Checks the values.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the bad value.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(format!("parent.{m}")));
        let shaped = self
            .address
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !shaped {
            return invalid("address must be host:port");
        }
        if self.token.is_empty() {
            return invalid("token must not be empty");
        }
        if self.server_name.is_empty() {
            return invalid("server_name must not be empty");
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return invalid("client_cert and client_key go together");
        }
        if !(50..=60_000).contains(&self.stats_interval_ms) {
            return invalid("stats_interval_ms must be in 50..=60000");
        }
        if self.reconnect_ms == 0 || self.reconnect_max_ms < self.reconnect_ms {
            return invalid("reconnect_ms must be > 0 and at most reconnect_max_ms");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::GatewayConfig;

    #[test]
    fn a_parent_needs_an_address_a_ca_and_a_token() {
        let good = "id = \"site-b\"\n[parent]\naddress = \"10.0.0.1:4433\"\nca = \"ca.pem\"\ntoken = \"t\"\n";
        let config = GatewayConfig::from_toml_str(good).expect("valid");
        let parent = config.parent.expect("a parent");
        assert_eq!(parent.stats_interval_ms, 1000);
        assert_eq!(parent.server_name, "localhost");
        assert_eq!(config.id.as_deref(), Some("site-b"));
        for bad in [
            "[parent]\naddress = \"nohost\"\nca = \"ca.pem\"\ntoken = \"t\"\n",
            "[parent]\naddress = \"h:1\"\nca = \"ca.pem\"\ntoken = \"\"\n",
            "[parent]\naddress = \"h:1\"\nca = \"ca.pem\"\ntoken = \"t\"\nstats_interval_ms = 10\n",
            "[parent]\naddress = \"h:1\"\nca = \"ca.pem\"\ntoken = \"t\"\nclient_cert = \"c.pem\"\n",
            "[parent]\naddress = \"h:1\"\ntoken = \"t\"\n",
            "id = \"\"\n",
        ] {
            assert!(GatewayConfig::from_toml_str(bad).is_err(), "{bad}");
        }
    }
}
