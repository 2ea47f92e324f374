//! `[http]` and `[tls]` of `gateway.toml`: the HTTP ingress's port and the
//! certificate files every port serves.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// `[http]`: the HTTP ingress, a port of its own (not the admin port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Whether the ingress is served (default true).
    pub enabled: bool,
    /// Listen address (default `127.0.0.1:8080`; port 0 picks a free one).
    pub listen: SocketAddr,
    /// Serve HTTPS with the gateway's certificate (the QUIC port's; HTTP/2
    /// and HTTP/1.1 by ALPN). Default: on for a non-loopback `listen`, off
    /// on loopback.
    pub tls: Option<bool>,
    /// Timeout of a call that names none (`x-switchyard-timeout-ms`), ms
    /// (default 300 000; at most `max_timeout_ms`).
    pub timeout_ms: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls: None,
            timeout_ms: 300_000,
        }
    }
}

impl HttpConfig {
    /// Whether the ingress speaks TLS: `tls` when set, else whether
    /// `listen` is off loopback.
    pub fn uses_tls(&self) -> bool {
        self.tls.unwrap_or(!self.listen.ip().is_loopback())
    }
}

/// TLS file locations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Server certificate chain, PEM.
    pub cert: Option<PathBuf>,
    /// Server private key, PEM.
    pub key: Option<PathBuf>,
    /// CA file to print for agents and clients, PEM; agents' client
    /// certificates must be signed by it.
    pub ca: Option<PathBuf>,
    /// The CA's private key, PEM (default `ca-key.pem` in `data_dir`,
    /// written with a generated CA): `gateway cert issue` signs with it.
    pub ca_key: Option<PathBuf>,
    /// Names the generated certificate covers (default `localhost`, `127.0.0.1`, `::1`).
    pub names: Vec<String>,
}
