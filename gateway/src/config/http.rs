//! `[http]` and `[tls]` of `gateway.toml`: the HTTP ingress's port and the
//! certificate files every port serves.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

/// Most origins `cors_origins` may list.
const MAX_CORS_ORIGINS: usize = 64;

/// `[http]`: the HTTP ingress, a port of its own (not the admin port).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Whether the ingress is served (default true).
    pub enabled: bool,
    /// Listen address (default `127.0.0.1:4480`; port 0 picks a free one).
    pub listen: SocketAddr,
    /// Serve HTTPS with the gateway's certificate (the QUIC port's; HTTP/2
    /// and HTTP/1.1 by ALPN). Default: on for a non-loopback `listen`, off
    /// on loopback.
    pub tls: Option<bool>,
    /// Timeout of a call that names none (`x-switchyard-timeout-ms`), ms
    /// (default 300 000; at most `max_timeout_ms`).
    pub timeout_ms: u32,
    /// Origins whose browser pages may call the ingress (CORS), as a
    /// browser sends them: `["https://chat.example"]`
    /// (`scheme://host[:port]`, at most 64), or `["*"]` for any origin.
    /// Preflight requests (`OPTIONS` with `Access-Control-Request-Method`)
    /// are answered by the gateway. Default empty: no CORS headers, so
    /// browsers refuse pages of other origins.
    pub cors_origins: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 4480)),
            tls: None,
            timeout_ms: 300_000,
            cors_origins: Vec::new(),
        }
    }
}

impl HttpConfig {
    /// Whether the ingress speaks TLS: `tls` when set, else whether
    /// `listen` is off loopback.
    pub fn uses_tls(&self) -> bool {
        self.tls.unwrap_or(!self.listen.ip().is_loopback())
    }

    /// Checks the values.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for a zero `timeout_ms`, or a
    /// `cors_origins` entry that is not `*` alone or an origin
    /// (`scheme://host[:port]`, no path), or more than 64 of them.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.timeout_ms == 0 {
            return Err(ConfigError::Invalid("http.timeout_ms must be > 0".into()));
        }
        if self.cors_origins.len() > MAX_CORS_ORIGINS {
            return Err(ConfigError::Invalid(format!(
                "http.cors_origins: at most {MAX_CORS_ORIGINS} origins"
            )));
        }
        let any = self.cors_origins.iter().any(|o| o == "*");
        if any && self.cors_origins.len() > 1 {
            return Err(ConfigError::Invalid(
                "http.cors_origins: \"*\" allows every origin and must stand alone".into(),
            ));
        }
        for origin in self.cors_origins.iter().filter(|o| *o != "*") {
            if !is_origin(origin) {
                return Err(ConfigError::Invalid(format!(
                    "http.cors_origins: {origin:?} is not an origin such as \"https://chat.example\" \
                     (scheme://host[:port], no path) or \"*\""
                )));
            }
        }
        Ok(())
    }
}

/// Whether `text` is an origin as browsers send it: `scheme://host[:port]`
/// of printable ASCII, without path, query or trailing slash.
fn is_origin(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once("://") else {
        return false;
    };
    !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_graphic() && !"/?#@".contains(c))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use crate::GatewayConfig;

    #[test]
    fn cors_origins_are_origins_or_one_star() {
        assert!(GatewayConfig::default().http.cors_origins.is_empty());
        let config = GatewayConfig::from_toml_str(
            "[http]\ncors_origins = [\"https://chat.example\", \"http://localhost:3000\"]",
        )
        .unwrap();
        assert_eq!(
            config.http.cors_origins,
            ["https://chat.example", "http://localhost:3000"]
        );
        GatewayConfig::from_toml_str("[http]\ncors_origins = [\"*\"]").unwrap();
        for bad in [
            r#"["*", "https://chat.example"]"#,
            r#"["chat.example"]"#,
            r#"["https://chat.example/"]"#,
            r#"["https://chat.example/app"]"#,
            r#"["https://"]"#,
            r#"["https://chat example"]"#,
        ] {
            let error = GatewayConfig::from_toml_str(&format!("[http]\ncors_origins = {bad}"))
                .unwrap_err()
                .to_string();
            assert!(error.contains("http.cors_origins"), "{bad}: {error}");
        }
    }
}
