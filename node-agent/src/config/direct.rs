//! The direct port (table `[direct]`): where the agent takes look-aside
//! calls from clients holding a lease token, and what it tells the
//! gateways to tell those clients.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, expand_home, split_host_port};

/// Default most client connections the direct port holds at once.
pub const DEFAULT_DIRECT_MAX_CONNECTIONS: u32 = 1024;

/// The direct port's settings (TOML table `[direct]`; default none: the
/// agent takes no direct calls and registers no direct address).
///
/// ```toml
/// [direct]
/// listen = "0.0.0.0:7443"
/// advertise = "10.0.0.5:7443"
/// cert = "direct-cert.pem"
/// key = "direct-key.pem"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectConfig {
    /// The UDP address the direct port listens on, e.g. `0.0.0.0:7443`
    /// (port 0: one the system picks; then, without `advertise`, the
    /// address bound is the one registered).
    pub listen: SocketAddr,
    /// The address clients are told to dial, `host:port` (default: the
    /// address bound). Required when `listen`'s address is unspecified
    /// (`0.0.0.0`, `[::]`). Its host must be one of the certificate's
    /// names.
    #[serde(default)]
    pub advertise: Option<String>,
    /// PEM file of the direct port's certificate chain, signed by the
    /// gateways' CA (`gateway cert issue --node ID --out DIR --direct
    /// NAME`). Required. In a file read by
    /// [`AgentConfig::load`](super::AgentConfig::load), a relative path is
    /// relative to the file's folder and `~/` is the home directory.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM file of the certificate's private key. Required; relative paths
    /// as `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Most client connections at once, handshakes included (default
    /// 1024); past it new ones are refused.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

fn default_max_connections() -> u32 {
    DEFAULT_DIRECT_MAX_CONNECTIONS
}

impl DirectConfig {
    /// A direct port on `listen` presenting `cert` and `key` (PEM files),
    /// advertised as the address bound, with the default connection cap.
    pub fn new(listen: SocketAddr, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            listen,
            advertise: None,
            cert: Some(cert.into()),
            key: Some(key.into()),
            max_connections: DEFAULT_DIRECT_MAX_CONNECTIONS,
        }
    }

    /// The same, advertised to clients as `advertise` (`host:port`).
    #[must_use]
    pub fn with_advertise(mut self, advertise: impl Into<String>) -> Self {
        self.advertise = Some(advertise.into());
        self
    }

    /// The address to register, given the address the port bound: the
    /// `advertise` address, else `bound`.
    pub fn advertised(&self, bound: SocketAddr) -> String {
        self.advertise.clone().unwrap_or_else(|| bound.to_string())
    }

    /// Checks the section's rules.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] without `cert` or `key`, for an unspecified
    /// `listen` address without `advertise`, a bad `advertise` or no
    /// connections.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(format!("[direct] {m}")));
        if self.cert.is_none() || self.key.is_none() {
            return invalid("cert and key are required with listen (gateway cert issue --direct)");
        }
        match &self.advertise {
            Some(advertise) if split_host_port(advertise).is_err() => {
                return invalid(&format!("advertise must be host:port, got {advertise:?}"));
            }
            None if self.listen.ip().is_unspecified() => {
                return invalid(&format!(
                    "listen {} is unspecified: set advertise to the address clients dial",
                    self.listen
                ));
            }
            _ => {}
        }
        if self.max_connections == 0 {
            return invalid("max_connections must be > 0");
        }
        Ok(())
    }

    /// Makes `cert` and `key` absolute as the configuration file's other
    /// paths: `~/` is `home`, a relative path is relative to `dir`.
    pub(crate) fn resolve_paths(&mut self, dir: Option<&Path>, home: Option<&OsStr>) {
        for path in [&mut self.cert, &mut self.key].into_iter().flatten() {
            *path = expand_home(path, home);
            if let Some(dir) = dir {
                *path = dir.join(&*path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AgentConfig;

    const BASE: &str = r#"
gateway = "127.0.0.1:4433"
ca = "ca.pem"
token = "t"
node_id = "n"
[[services]]
name = "echo"
kind = "echo"
"#;

    fn parse(direct: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::from_toml_str(&format!("{BASE}\n[direct]\n{direct}"))
    }

    #[test]
    fn a_direct_section_parses_with_defaults() {
        let config =
            parse("listen = \"127.0.0.1:7443\"\ncert = \"c.pem\"\nkey = \"k.pem\"").expect("valid");
        let direct = config.direct.expect("direct");
        assert_eq!(
            direct,
            DirectConfig::new("127.0.0.1:7443".parse().expect("addr"), "c.pem", "k.pem")
        );
        assert_eq!(direct.max_connections, 1024);
        assert_eq!(
            direct.advertised("127.0.0.1:7443".parse().expect("addr")),
            "127.0.0.1:7443"
        );
        assert!(
            AgentConfig::from_toml_str(BASE)
                .expect("valid")
                .direct
                .is_none()
        );
    }

    #[test]
    fn bad_direct_sections_are_refused_with_a_reason() {
        for (direct, why) in [
            (
                "listen = \"127.0.0.1:7443\"\ncert = \"c.pem\"",
                "cert and key",
            ),
            (
                "listen = \"127.0.0.1:7443\"\nkey = \"k.pem\"",
                "cert and key",
            ),
            (
                "listen = \"0.0.0.0:7443\"\ncert = \"c\"\nkey = \"k\"",
                "set advertise",
            ),
            (
                "listen = \"[::]:7443\"\ncert = \"c\"\nkey = \"k\"",
                "set advertise",
            ),
            (
                "listen = \"0.0.0.0:7443\"\nadvertise = \"nope\"\ncert = \"c\"\nkey = \"k\"",
                "advertise",
            ),
            (
                "listen = \"127.0.0.1:7443\"\ncert = \"c\"\nkey = \"k\"\nmax_connections = 0",
                "max_connections",
            ),
        ] {
            let err = parse(direct).expect_err(direct).to_string();
            assert!(err.contains(why), "{direct}: {err}");
        }
        let v1 = AgentConfig::from_toml_str(&format!(
            "max_wire_version = 1\n{BASE}\n[direct]\nlisten = \"127.0.0.1:0\"\ncert = \"c\"\nkey = \"k\""
        ))
        .expect_err("v1");
        assert!(v1.to_string().contains("max_wire_version 2"), "{v1}");
        let err = parse("listen = \"nowhere\"\ncert = \"c\"\nkey = \"k\"").expect_err("addr");
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        let config = parse(
            "listen = \"0.0.0.0:7443\"\nadvertise = \"10.0.0.5:7443\"\ncert = \"c\"\nkey = \"k\"",
        )
        .expect("valid");
        let direct = config.direct.expect("direct");
        assert_eq!(
            direct.advertised("0.0.0.0:7443".parse().expect("addr")),
            "10.0.0.5:7443"
        );
    }

    #[test]
    fn the_examples_direct_section_parses_uncommented() {
        let example = crate::EXAMPLE_CONFIG
            .lines()
            .map(|line| {
                let open = [
                    "# [direct]",
                    "# listen",
                    "# advertise",
                    "# cert",
                    "# key",
                    "# max_conn",
                ];
                match open.iter().any(|p| line.starts_with(p)) {
                    true => &line[2..],
                    false => line,
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let config = AgentConfig::from_toml_str(&example).expect("uncommented example parses");
        let direct = config.direct.expect("direct");
        assert_eq!(direct.advertise.as_deref(), Some("10.0.0.5:7443"));
        assert_eq!(direct.max_connections, DEFAULT_DIRECT_MAX_CONNECTIONS);
    }

    #[test]
    fn relative_paths_are_next_to_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("agent.toml");
        std::fs::write(
            &file,
            format!(
                "{BASE}\n[direct]\nlisten = \"127.0.0.1:0\"\ncert = \"d/c.pem\"\nkey = \"/abs/k.pem\""
            ),
        )
        .expect("write");
        let config = AgentConfig::load(&file).expect("loads");
        let direct = config.direct.expect("direct");
        assert_eq!(direct.cert, Some(dir.path().join("d/c.pem")));
        assert_eq!(direct.key, Some(PathBuf::from("/abs/k.pem")));
    }
}
