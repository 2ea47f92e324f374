//! API keys, tenants and their limits: who a call comes from
//! ([`Tenants::authenticate`]) and whether it may run now
//! ([`Tenant::admit`]).
//!
//! - **Tenants** are configured as `[[tenants]]` in `gateway.toml`
//!   ([`TenantConfig`]): a name, API keys (inline or in files), and limits:
//!   a call rate with a burst, calls in flight, the highest priority, and
//!   the services the tenant may call (glob patterns).
//! - **No tenants configured**: every caller is the built-in
//!   [`ANONYMOUS`] tenant, which has no limits. [`check_anonymous`] refuses
//!   to start such a gateway on an address that is not loopback unless
//!   `allow_anonymous = true`.
//! - **Keys** are kept only as BLAKE3 digests. A presented key's digest is
//!   compared with every stored digest, without stopping at a match, and
//!   `blake3::Hash`'s `==` is constant-time, so the time taken does not tell
//!   which key matched nor how much of one. Keys are never logged, never in
//!   an error message, and no `Debug` output shows them.
//! - **Rate**: a token bucket per tenant (`calls_per_s`, `burst`), computed
//!   as GCRA (below) with the time passed in, so it is tested without
//!   sleeping.
//! - **Fairness** between tenants waiting for the same service is the
//!   queue's ([`crate::queue`]: round-robin across tenants within a
//!   priority).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use protocol::{CallError, ErrorKind};
use serde::Deserialize;

use crate::config::{ConfigError, GatewayConfig};

/// The name of the built-in tenant every caller is when no `[[tenants]]`
/// are configured (and the `tenant` label of calls no tenant is known for).
/// No configured tenant may take it.
pub const ANONYMOUS: &str = "anonymous";

/// Longest span the rate limiter computes with (100 years): a smaller
/// `calls_per_s` counts as one call per 100 years, and a larger
/// `burst / calls_per_s` is capped, so no setting overflows the clock.
const MAX_SPAN: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

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

fn patterns(globs: &[String]) -> Result<Vec<glob::Pattern>, String> {
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

/// Why a call's tenant could not be found or may not run the call now.
/// Messages never hold key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    /// No API key was presented, or an unknown one ([`ErrorKind::Unauthorized`]).
    #[error("missing or unknown api key")]
    Unauthorized,
    /// The tenant's `services` patterns do not cover the service
    /// ([`ErrorKind::Forbidden`]).
    #[error("tenant {tenant:?} may not call service {service:?}")]
    Forbidden {
        /// The tenant.
        tenant: String,
        /// The service it asked for.
        service: String,
    },
    /// The tenant has `max_in_flight` calls admitted and not finished
    /// ([`ErrorKind::RateLimited`]).
    #[error("too many calls in flight for this tenant (at most {max})")]
    TooManyInFlight {
        /// The tenant's `max_in_flight`.
        max: u32,
    },
    /// The tenant's token bucket is empty ([`ErrorKind::RateLimited`]).
    #[error("rate limited: retry in {} ms", retry_after.as_millis())]
    RateLimited {
        /// How long until the bucket holds a token again.
        retry_after: Duration,
    },
}

impl TenantError {
    /// The protocol error kind a client sees.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Unauthorized => ErrorKind::Unauthorized,
            Self::Forbidden { .. } => ErrorKind::Forbidden,
            Self::TooManyInFlight { .. } | Self::RateLimited { .. } => ErrorKind::RateLimited,
        }
    }

    /// How long the caller should wait before trying again (an HTTP
    /// `Retry-After`): only for [`TenantError::RateLimited`].
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}

impl From<TenantError> for CallError {
    fn from(error: TenantError) -> Self {
        CallError {
            kind: error.kind(),
            message: error.to_string(),
        }
    }
}

/// Every tenant and the digests of their keys, built once at start.
pub struct Tenants {
    tenants: Vec<Arc<Tenant>>,
    /// BLAKE3 digest of each key, with the index of its tenant.
    keys: Vec<(blake3::Hash, usize)>,
    anonymous: Arc<Tenant>,
}

/// Shows the tenants' names and the number of keys, never a key.
impl std::fmt::Debug for Tenants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenants")
            .field(
                "tenants",
                &self.tenants.iter().map(|t| &*t.name).collect::<Vec<_>>(),
            )
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Tenants {
    /// Builds the tenants from `[[tenants]]`, reading their key files.
    /// Empty `configs`: every caller is the anonymous tenant.
    ///
    /// # Errors
    /// [`ConfigError::Read`] when a key file cannot be read;
    /// [`ConfigError::Invalid`] when the configuration breaks a rule of
    /// `GatewayConfig::validate`, when a tenant ends up with no key (its
    /// files hold none), or a key from a file belongs to two tenants.
    pub fn new(configs: &[TenantConfig]) -> Result<Self, ConfigError> {
        validate(configs)?;
        let mut tenants = Vec::with_capacity(configs.len());
        let mut keys = Vec::new();
        let mut owner: HashMap<blake3::Hash, usize> = HashMap::new();
        for (index, config) in configs.iter().enumerate() {
            let mut digests: Vec<blake3::Hash> = config
                .api_keys
                .iter()
                .map(|k| blake3::hash(k.as_bytes()))
                .collect();
            for path in &config.api_key_files {
                digests.extend(read_key_file(path)?);
            }
            let name = &config.name;
            if digests.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "tenant {name:?}: no api key (its api_key_files hold none)"
                )));
            }
            for digest in digests {
                match owner.insert(digest, index) {
                    Some(other) if other != index => {
                        return Err(ConfigError::Invalid(format!(
                            "tenant {name:?}: shares an api key with tenant {:?}",
                            configs[other].name
                        )));
                    }
                    Some(_) => {}
                    None => keys.push((digest, index)),
                }
            }
            tenants.push(Arc::new(Tenant::from_config(config)?));
        }
        Ok(Self {
            tenants,
            keys,
            anonymous: Arc::new(Tenant::unlimited(ANONYMOUS)),
        })
    }

    /// Whether no tenant is configured (every caller is anonymous).
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }

    /// The configured tenants, in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.tenants.iter()
    }

    /// The tenant a caller presenting `key` is. With no tenants configured,
    /// the anonymous tenant, whatever the key.
    ///
    /// The key's digest is compared with every stored digest (constant-time
    /// `==`, no early exit).
    ///
    /// # Errors
    /// [`TenantError::Unauthorized`] when tenants are configured and `key`
    /// is missing or belongs to none.
    pub fn authenticate(&self, key: Option<&str>) -> Result<Arc<Tenant>, TenantError> {
        if self.tenants.is_empty() {
            return Ok(self.anonymous.clone());
        }
        let key = key.ok_or(TenantError::Unauthorized)?;
        let digest = blake3::hash(key.as_bytes());
        let mut found = None;
        for (stored, index) in &self.keys {
            let matched = *stored == digest;
            found = if matched { Some(*index) } else { found };
        }
        found
            .and_then(|i| self.tenants.get(i))
            .cloned()
            .ok_or(TenantError::Unauthorized)
    }
}

/// The digests of the keys in `path`: one per line, trimmed, blank lines and
/// `#` comments skipped.
fn read_key_file(path: &Path) -> Result<Vec<blake3::Hash>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|key| blake3::hash(key.as_bytes()))
        .collect())
}

/// One tenant: its name, limits, and the calls it has in flight.
pub struct Tenant {
    name: Arc<str>,
    services: Vec<glob::Pattern>,
    max_in_flight: Option<u32>,
    max_priority: Option<i32>,
    bucket: Option<Mutex<Gcra>>,
    in_flight: Arc<AtomicU32>,
}

/// Shows the name and limits (a tenant holds no key).
impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant")
            .field("name", &self.name)
            .field("in_flight", &self.in_flight())
            .field("max_in_flight", &self.max_in_flight)
            .field("max_priority", &self.max_priority)
            .field("rate_limited", &self.bucket.is_some())
            .finish_non_exhaustive()
    }
}

/// A call the tenant may run: its priority, lowered to the tenant's
/// `max_priority`, and its place among the tenant's calls in flight.
#[derive(Debug)]
#[must_use = "dropping the permit ends the call's place in flight"]
pub struct Admitted {
    /// The priority to queue the call at.
    pub priority: i32,
    /// Holds one of the tenant's `max_in_flight` places until dropped: keep
    /// it until the call ends, whatever the outcome.
    pub permit: InFlightPermit,
}

/// One call of a tenant in flight; dropping it lowers the tenant's count.
#[derive(Debug)]
pub struct InFlightPermit {
    count: Arc<AtomicU32>,
}

impl Drop for InFlightPermit {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Tenant {
    fn from_config(config: &TenantConfig) -> Result<Self, ConfigError> {
        let services = patterns(&config.services)
            .map_err(|e| ConfigError::Invalid(format!("tenant {:?}: {e}", config.name)))?;
        let bucket = config
            .calls_per_s
            .zip(config.effective_burst())
            .map(|(rate, burst)| Mutex::new(Gcra::new(rate, burst)));
        Ok(Self {
            name: config.name.as_str().into(),
            services,
            max_in_flight: config.max_in_flight,
            max_priority: config.max_priority,
            bucket,
            in_flight: Arc::new(AtomicU32::new(0)),
        })
    }

    /// A tenant with no limit at all, allowed every service.
    fn unlimited(name: &str) -> Self {
        Self {
            name: name.into(),
            services: Vec::new(),
            max_in_flight: None,
            max_priority: None,
            bucket: None,
            in_flight: Arc::new(AtomicU32::new(0)),
        }
    }

    /// The tenant's name (the queue's and the metrics' `tenant`).
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Calls admitted and not finished (permits alive).
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Whether the tenant's `services` patterns cover `service`.
    pub fn allows(&self, service: &str) -> bool {
        self.services.is_empty() || self.services.iter().any(|p| p.matches(service))
    }

    /// Admits a call of `service` at `priority` arriving at `now`. Checks,
    /// in order: the service patterns, the in-flight cap, the token bucket;
    /// a refused call takes no token and no in-flight place.
    ///
    /// # Errors
    /// [`TenantError::Forbidden`], [`TenantError::TooManyInFlight`] or
    /// [`TenantError::RateLimited`] (with the time until a token is back).
    pub fn admit(
        &self,
        service: &str,
        priority: i32,
        now: Instant,
    ) -> Result<Admitted, TenantError> {
        if !self.allows(service) {
            return Err(TenantError::Forbidden {
                tenant: self.name.to_string(),
                service: service.to_string(),
            });
        }
        let permit = match &self.bucket {
            None => self.take_in_flight()?,
            Some(bucket) => {
                // Admissions of this tenant are serialised by the bucket's
                // lock, so a permit dropped below (rate refused) was never
                // seen by another admission.
                let mut bucket = bucket.lock().unwrap_or_else(PoisonError::into_inner);
                let permit = self.take_in_flight()?;
                bucket
                    .take(now)
                    .map_err(|retry_after| TenantError::RateLimited { retry_after })?;
                permit
            }
        };
        Ok(Admitted {
            priority: self.max_priority.map_or(priority, |max| priority.min(max)),
            permit,
        })
    }

    fn take_in_flight(&self) -> Result<InFlightPermit, TenantError> {
        let max = self.max_in_flight.unwrap_or(u32::MAX);
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| TenantError::TooManyInFlight { max })?;
        Ok(InFlightPermit {
            count: self.in_flight.clone(),
        })
    }
}

/// A token bucket of `burst` tokens refilled at `calls_per_s`, computed as
/// GCRA, the generic cell rate algorithm (ITU-T I.371, "virtual scheduling";
/// the algorithm behind the `governor` crate, which we do not use since it
/// reads its own clock): instead of a token count it keeps the *theoretical
/// arrival time* (TAT) of the next call. A call at `now` is allowed when
/// `TAT - tolerance <= now`, and then moves the TAT to `max(TAT, now) +
/// interval`, with `interval = 1 / calls_per_s` and `tolerance = (burst - 1)
/// × interval`. A full bucket lets `burst` calls through at once; after that
/// one every `interval`.
#[derive(Debug)]
struct Gcra {
    interval: Duration,
    tolerance: Duration,
    /// `None`: the bucket is full (no call yet).
    tat: Option<Instant>,
}

impl Gcra {
    fn new(calls_per_s: f64, burst: u32) -> Self {
        let interval = Duration::try_from_secs_f64(1.0 / calls_per_s)
            .unwrap_or(MAX_SPAN)
            .min(MAX_SPAN);
        let tolerance = interval
            .checked_mul(burst.saturating_sub(1))
            .unwrap_or(MAX_SPAN)
            .min(MAX_SPAN);
        Self {
            interval,
            tolerance,
            tat: None,
        }
    }

    /// Takes a token at `now`, or says how long until there is one.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let tat = self.tat.map_or(now, |tat| tat.max(now));
        let ahead = tat.saturating_duration_since(now);
        if ahead > self.tolerance {
            return Err(ahead - self.tolerance);
        }
        self.tat = Some(tat + self.interval);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
