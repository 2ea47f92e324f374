//! `[[tenants]]` in `gateway.toml`: the settings of one tenant, the rules
//! they are checked against, and the refusal of anonymous access on a
//! public address.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, GatewayConfig};

/// The name of the built-in tenant every caller is when no `[[tenants]]`
/// are configured (and the `tenant` label of calls no tenant is known for).
/// No configured tenant may take it.
pub const ANONYMOUS: &str = "anonymous";

/// `[[tenants]]`: one tenant, its API keys and its limits.
///
/// ```toml
/// [[tenants]]
/// name = "team-a"
/// api_keys = ["sk-team-a-1"]
/// api_key_files = ["/etc/switchyard/team-a.keys"]
/// calls_per_s = 20.0
/// burst = 40
/// max_in_flight = 8
/// max_priority = 5
/// services = ["llama-*", "echo"]
/// ```
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Unique, non-empty name; the `tenant` label of its metrics. Not
    /// `anonymous` (reserved).
    pub name: String,
    /// API keys the tenant's callers present (default none; a tenant needs
    /// at least one key here or in `api_key_files`). Non-empty; no key may
    /// belong to two tenants.
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// Files of more API keys, read once at start: one key per line,
    /// surrounding whitespace trimmed, blank lines and lines starting with
    /// `#` skipped (default none). Relative paths are relative to the
    /// gateway's working directory.
    #[serde(default)]
    pub api_key_files: Vec<PathBuf>,
    /// Sustained call rate, calls per second (finite, > 0; fractions allowed:
    /// 0.5 is one call every 2 s). Unset (the default): no rate limit.
    #[serde(default)]
    pub calls_per_s: Option<f64>,
    /// Most calls admitted at once after an idle spell, calls (> 0; default
    /// max(1, ceil(`calls_per_s`))). Only with `calls_per_s`.
    #[serde(default)]
    pub burst: Option<u32>,
    /// Most calls of the tenant admitted and not yet finished, waiting
    /// included (> 0). Unset (the default): no cap.
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    /// Highest queue priority the tenant's calls get: a higher one is
    /// lowered to it, so the tenant cannot jump ahead of others past it.
    /// Unset (the default): any priority.
    #[serde(default)]
    pub max_priority: Option<i32>,
    /// Glob patterns of the services the tenant may call (`*`, `?`, `[a-z]`;
    /// e.g. `["llama-*", "echo"]`). Default `["*"]`: every service. Not
    /// empty.
    #[serde(default = "all_services")]
    pub services: Vec<String>,
}

fn all_services() -> Vec<String> {
    vec!["*".into()]
}

impl TenantConfig {
    /// A tenant named `name` with no keys and no limits, allowed every
    /// service (add keys before use: a tenant needs one).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            api_keys: Vec::new(),
            api_key_files: Vec::new(),
            calls_per_s: None,
            burst: None,
            max_in_flight: None,
            max_priority: None,
            services: all_services(),
        }
    }

    /// The bucket size in effect, calls: `burst`, else
    /// max(1, ceil(`calls_per_s`)); `None` without a rate limit.
    pub fn effective_burst(&self) -> Option<u32> {
        let rate = self.calls_per_s?;
        // `as` saturates: a huge rate gives u32::MAX.
        Some(self.burst.unwrap_or_else(|| (rate.ceil() as u32).max(1)))
    }
}

/// Shows the name, the number of keys and the limits, never the keys.
impl std::fmt::Debug for TenantConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantConfig")
            .field("name", &self.name)
            .field("api_keys", &format_args!("<{} keys>", self.api_keys.len()))
            .field("api_key_files", &self.api_key_files)
            .field("calls_per_s", &self.calls_per_s)
            .field("burst", &self.burst)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_priority", &self.max_priority)
            .field("services", &self.services)
            .finish()
    }
}

/// Checks `[[tenants]]` without reading key files (that is
/// [`Tenants::new`]'s part): unique non-empty names, not `anonymous`, at
/// least one key or key file each, no empty key, no key shared by two
/// tenants, `calls_per_s` finite and > 0, `burst` > 0 and only with
/// `calls_per_s`, `max_in_flight` > 0, `services` non-empty valid globs.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the tenant and the rule it breaks.
pub(crate) fn validate(tenants: &[TenantConfig]) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    let mut owners: HashMap<&str, &str> = HashMap::new();
    for tenant in tenants {
        let name = tenant.name.as_str();
        let invalid = |rule: String| Err(ConfigError::Invalid(format!("tenant {name:?}: {rule}")));
        if name.is_empty() {
            return Err(ConfigError::Invalid(
                "every [[tenants]] entry needs a non-empty name".into(),
            ));
        }
        if name == ANONYMOUS {
            return invalid(format!("the name {ANONYMOUS:?} is reserved"));
        }
        if !names.insert(name) {
            return invalid("the name is used by two [[tenants]] entries".into());
        }
        if tenant.api_keys.is_empty() && tenant.api_key_files.is_empty() {
            return invalid("needs at least one key in api_keys or api_key_files".into());
        }
        if tenant.api_keys.iter().any(String::is_empty) {
            return invalid("api_keys must not be empty strings".into());
        }
        for key in &tenant.api_keys {
            if let Some(other) = owners.insert(key, name)
                && other != name
            {
                return invalid(format!("shares an api key with tenant {other:?}"));
            }
        }
        if tenant
            .calls_per_s
            .is_some_and(|rate| !rate.is_finite() || rate <= 0.0)
        {
            return invalid("calls_per_s must be finite and > 0".into());
        }
        if tenant.burst == Some(0) {
            return invalid("burst must be > 0".into());
        }
        if tenant.burst.is_some() && tenant.calls_per_s.is_none() {
            return invalid("burst needs calls_per_s".into());
        }
        if tenant.max_in_flight == Some(0) {
            return invalid("max_in_flight must be > 0".into());
        }
        if tenant.services.is_empty() {
            return invalid("services must not be empty (leave it out for every service)".into());
        }
        if let Err(e) = patterns(&tenant.services) {
            return invalid(e);
        }
    }
    Ok(())
}

pub(crate) fn patterns(globs: &[String]) -> Result<Vec<glob::Pattern>, String> {
    globs
        .iter()
        .map(|g| glob::Pattern::new(g).map_err(|e| format!("services: bad pattern {g:?}: {e}")))
        .collect()
}

/// Refuses to serve without authentication on a reachable address: with no
/// `[[tenants]]` configured and `allow_anonymous = false`, every address in
/// `listens` (the QUIC listen, the HTTP ingress listen) must be loopback
/// (`127.0.0.0/8`, `::1`, or `::ffff:127.x.y.z`). With tenants configured,
/// or `allow_anonymous = true`, anything goes.
///
/// # Errors
/// [`ConfigError::Refused`] naming the first address that is not loopback.
pub fn check_anonymous(config: &GatewayConfig, listens: &[SocketAddr]) -> Result<(), ConfigError> {
    if !config.tenants.is_empty() || config.allow_anonymous {
        return Ok(());
    }
    match listens
        .iter()
        .find(|addr| !addr.ip().to_canonical().is_loopback())
    {
        None => Ok(()),
        Some(addr) => Err(ConfigError::Refused(format!(
            "no [[tenants]] are configured and {addr} is not a loopback address; \
             add [[tenants]] with api keys, or set allow_anonymous = true"
        ))),
    }
}
