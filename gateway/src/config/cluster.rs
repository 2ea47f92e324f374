//! `[cluster]` of `gateway.toml`: several gateways serving one fleet, their
//! membership kept in etcd. Without the section the gateway is a cluster
//! of one and never talks to etcd.

use std::net::SocketAddr;

use serde::Deserialize;

use super::ConfigError;

/// Most etcd endpoints `etcd` may list.
const MAX_ENDPOINTS: usize = 16;

/// Longest member name, bytes.
const MAX_NAME_LEN: usize = 64;

/// `[cluster]`: this gateway's membership of a cluster whose members hold
/// leased keys under `{prefix}/gateways/` in etcd.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// etcd's client endpoints, e.g. `["http://10.0.0.5:2379"]`
    /// (`http://host:port` or `host:port`, plain HTTP/2; 1 to 16;
    /// required).
    pub etcd: Vec<String>,
    /// This gateway's name, unique in the cluster (letters, digits, `.`,
    /// `_`, `-`; at most 64 bytes). Default: the host name.
    #[serde(default)]
    pub name: Option<String>,
    /// Where agents, clients and the other gateways dial this gateway's
    /// QUIC port, `host:port`. Default: `listen` (refused when its address
    /// is unspecified, `0.0.0.0` or `[::]`).
    #[serde(default)]
    pub advertise_quic: Option<String>,
    /// Where this gateway's HTTP ingress is reached, `host:port`. Default:
    /// `[http] listen` (empty with the ingress off; refused when
    /// unspecified).
    #[serde(default)]
    pub advertise_http: Option<String>,
    /// Where this gateway's admin HTTP port is reached, `host:port`.
    /// Default: `admin_listen` (empty with the admin port off; refused when
    /// unspecified).
    #[serde(default)]
    pub advertise_admin: Option<String>,
    /// The etcd key prefix of the cluster (default `/switchyard`): members
    /// are under `{prefix}/gateways/`. Gateways with other prefixes are
    /// other clusters.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The TTL of this gateway's lease, s (default 3; 2 to 300): a gateway
    /// that stops renewing its lease (dead, or cut off from etcd) leaves
    /// every other member's list within it.
    #[serde(default = "default_lease_ttl_s")]
    pub lease_ttl_s: u32,
    /// How long one etcd request (connect, grant, put, get) may take, ms
    /// (default 2000; 100 to 60 000).
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u32,
}

fn default_prefix() -> String {
    "/switchyard".into()
}

fn default_lease_ttl_s() -> u32 {
    3
}

fn default_connect_timeout_ms() -> u32 {
    2000
}

impl ClusterConfig {
    /// A cluster section naming `etcd` with every other key at its
    /// default.
    pub fn with_etcd(etcd: Vec<String>) -> Self {
        Self {
            etcd,
            name: None,
            advertise_quic: None,
            advertise_http: None,
            advertise_admin: None,
            prefix: default_prefix(),
            lease_ttl_s: default_lease_ttl_s(),
            connect_timeout_ms: default_connect_timeout_ms(),
        }
    }

    /// This gateway's name: `name`, else the host name (`/proc`'s, else
    /// `$HOSTNAME`, else `gateway`).
    pub fn member_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| check_name(h).is_ok())
            .unwrap_or_else(|| "gateway".into())
    }

    /// Checks the values against the listen addresses they default to
    /// (`http` and `admin` are `None` when those ports are off).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for a bad value; [`ConfigError::Refused`]
    /// when an address others must dial defaults to an unspecified listen
    /// address.
    pub(super) fn validate(
        &self,
        quic: SocketAddr,
        http: Option<SocketAddr>,
        admin: Option<SocketAddr>,
    ) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(format!("cluster.{m}")));
        if self.etcd.is_empty() || self.etcd.len() > MAX_ENDPOINTS {
            return invalid(format!(
                "etcd must list 1 to {MAX_ENDPOINTS} endpoints, got {}",
                self.etcd.len()
            ));
        }
        for e in &self.etcd {
            if let Err(why) = check_endpoint(e) {
                return invalid(format!("etcd: {e:?}: {why}"));
            }
        }
        if let Some(name) = &self.name
            && let Err(why) = check_name(name)
        {
            return invalid(format!("name {name:?}: {why}"));
        }
        let prefix_ok = self.prefix.len() > 1
            && self.prefix.len() <= 256
            && self.prefix.starts_with('/')
            && !self.prefix.ends_with('/')
            && !self.prefix.chars().any(char::is_whitespace);
        if !prefix_ok {
            return invalid(format!(
                "prefix {:?} must start with `/`, not end with one, hold no spaces and be \
                 2 to 256 bytes",
                self.prefix
            ));
        }
        if !(2..=300).contains(&self.lease_ttl_s) {
            return invalid("lease_ttl_s must be in 2..=300".into());
        }
        if !(100..=60_000).contains(&self.connect_timeout_ms) {
            return invalid("connect_timeout_ms must be in 100..=60000".into());
        }
        for (key, advertised, listen) in [
            ("advertise_quic", &self.advertise_quic, Some(quic)),
            ("advertise_http", &self.advertise_http, http),
            ("advertise_admin", &self.advertise_admin, admin),
        ] {
            match (advertised, listen) {
                (Some(addr), _) => {
                    if let Err(why) = check_host_port(addr) {
                        return invalid(format!("{key} {addr:?}: {why}"));
                    }
                }
                (None, Some(listen)) if listen.ip().is_unspecified() => {
                    return Err(ConfigError::Refused(format!(
                        "cluster: the listen address {listen} is unspecified, so the other \
                         gateways and the agents cannot dial it; set cluster.{key} to the \
                         address they reach this gateway at"
                    )));
                }
                (None, _) => {}
            }
        }
        Ok(())
    }
}

/// Checks a member name: 1 to 64 bytes of letters, digits, `.`, `_`, `-`.
///
/// # Errors
/// What is wrong, in words.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!("must be 1 to {MAX_NAME_LEN} bytes"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("may hold only letters, digits, `.`, `_` and `-`".into());
    }
    Ok(())
}

/// Checks an etcd endpoint: `host:port`, optionally after `http://`.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    if endpoint.starts_with("https://") {
        return Err("TLS to etcd is not supported: use http:// (etcd on a private network)".into());
    }
    let rest = endpoint.strip_prefix("http://").unwrap_or(endpoint);
    check_host_port(rest.trim_end_matches('/'))
}

/// Checks `host:port` (a `[v6]` host in brackets), at most 256 bytes.
fn check_host_port(addr: &str) -> Result<(), String> {
    let bad = || Err("must be host:port".to_string());
    if addr.len() > 256 || addr.contains(['/', ' ']) {
        return bad();
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return bad();
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return bad();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("an address")
    }

    fn loopback() -> (SocketAddr, Option<SocketAddr>, Option<SocketAddr>) {
        (
            addr("127.0.0.1:4433"),
            Some(addr("127.0.0.1:4480")),
            Some(addr("127.0.0.1:4490")),
        )
    }

    #[test]
    fn defaults_are_valid_on_loopback() {
        let c = ClusterConfig::with_etcd(vec!["http://127.0.0.1:2379".into()]);
        let (q, h, a) = loopback();
        assert!(c.validate(q, h, a).is_ok());
        assert_eq!(c.prefix, "/switchyard");
        assert_eq!(c.lease_ttl_s, 3);
        assert_eq!(c.connect_timeout_ms, 2000);
        assert!(check_name(&c.member_name()).is_ok(), "{}", c.member_name());
    }

    #[test]
    fn bad_values_are_named() {
        let (q, h, a) = loopback();
        let base = ClusterConfig::with_etcd(vec!["127.0.0.1:2379".into()]);
        let cases: Vec<(ClusterConfig, &str)> = vec![
            (ClusterConfig::with_etcd(vec![]), "etcd must list"),
            (
                ClusterConfig::with_etcd(vec!["http://nohost".into()]),
                "host:port",
            ),
            (
                ClusterConfig::with_etcd(vec!["https://127.0.0.1:2379".into()]),
                "TLS",
            ),
            (
                ClusterConfig {
                    name: Some("a/b".into()),
                    ..base.clone()
                },
                "name",
            ),
            (
                ClusterConfig {
                    prefix: "/x/".into(),
                    ..base.clone()
                },
                "prefix",
            ),
            (
                ClusterConfig {
                    lease_ttl_s: 1,
                    ..base.clone()
                },
                "lease_ttl_s",
            ),
            (
                ClusterConfig {
                    connect_timeout_ms: 0,
                    ..base.clone()
                },
                "connect_timeout_ms",
            ),
            (
                ClusterConfig {
                    advertise_http: Some("10.0.0.1".into()),
                    ..base.clone()
                },
                "advertise_http",
            ),
        ];
        for (c, what) in cases {
            let e = c.validate(q, h, a).expect_err(what).to_string();
            assert!(e.contains(what), "{e}");
        }
    }

    #[test]
    fn an_unspecified_listen_address_needs_an_advertised_one() {
        let (_, h, a) = loopback();
        let any = addr("0.0.0.0:4433");
        let c = ClusterConfig::with_etcd(vec!["127.0.0.1:2379".into()]);
        let e = c.validate(any, h, a).expect_err("refused").to_string();
        assert!(e.contains("advertise_quic"), "{e}");
        assert!(e.starts_with("refusing to start"), "{e}");
        let c = ClusterConfig {
            advertise_quic: Some("gw-a.internal:4433".into()),
            ..c
        };
        assert!(c.validate(any, h, a).is_ok());
        let e = c
            .validate(any, Some(addr("[::]:4480")), a)
            .expect_err("refused")
            .to_string();
        assert!(e.contains("advertise_http"), "{e}");
        assert!(
            c.validate(any, None, a).is_ok(),
            "no ingress, nothing to dial"
        );
    }
}
