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
//!   as GCRA (`tenants/bucket.rs`) with the time passed in, so it is tested
//!   without sleeping. In a cluster of `n` gateways each enforces its share
//!   (`tenants/share.rs`: `calls_per_s / n`, `ceil(burst / n)`).
//! - **Fairness** between tenants waiting for the same service is the
//!   scheduling core's queue (round-robin across tenants within a
//!   priority).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use protocol::{CallError, ErrorKind};

use crate::config::ConfigError;
use crate::config::TenantConfig;
pub(crate) use crate::config::tenants::ANONYMOUS;
use crate::config::tenants::{patterns, validate};
use bucket::Gcra;

mod bucket;
mod share;

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
        CallError::new(error.kind(), error.to_string())
    }
}

/// The API key an HTTP request presents: the `KEY` of `Authorization:
/// Bearer KEY` (scheme case-insensitive), if the request carries one.
pub(crate) fn api_key(headers: &axum::http::HeaderMap) -> Option<String> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, key) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| key.trim().to_string())
        .filter(|k| !k.is_empty())
}

/// Every tenant and the digests of their keys, built once at start.
pub(crate) struct Tenants {
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
    pub(crate) fn new(configs: &[TenantConfig]) -> Result<Self, ConfigError> {
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
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }

    /// The configured tenants, in configuration order.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.tenants.iter()
    }

    /// Splits every tenant's rate limit among `members` live gateways
    /// (`members` 0 counts as 1): each bucket then refills at
    /// `calls_per_s / members` and holds `ceil(burst / members)` calls
    /// (`tenants/share.rs`). Calls admitted so far keep counting.
    pub(crate) fn set_members(&self, members: usize) {
        for tenant in &self.tenants {
            tenant.set_members(members);
        }
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
    pub(crate) fn authenticate(&self, key: Option<&str>) -> Result<Arc<Tenant>, TenantError> {
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
pub(crate) struct Tenant {
    name: Arc<str>,
    services: Vec<glob::Pattern>,
    max_in_flight: Option<u32>,
    max_priority: Option<i32>,
    /// The configured `calls_per_s` and effective `burst` (the whole
    /// cluster's), when rate limited.
    rate: Option<(f64, u32)>,
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
pub(crate) struct Admitted {
    /// The priority to queue the call at.
    pub priority: i32,
    /// Holds one of the tenant's `max_in_flight` places until dropped: keep
    /// it until the call ends, whatever the outcome.
    pub permit: InFlightPermit,
}

/// One call of a tenant in flight; dropping it lowers the tenant's count.
#[derive(Debug)]
pub(crate) struct InFlightPermit {
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
        let rate = config.calls_per_s.zip(config.effective_burst());
        let bucket = rate.map(|(rate, burst)| Mutex::new(Gcra::new(rate, burst)));
        Ok(Self {
            name: config.name.as_str().into(),
            services,
            max_in_flight: config.max_in_flight,
            max_priority: config.max_priority,
            rate,
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
            rate: None,
            bucket: None,
            in_flight: Arc::new(AtomicU32::new(0)),
        }
    }

    /// Enforces this gateway's share of the tenant's rate among `members`
    /// live gateways ([`share::share`]).
    fn set_members(&self, members: usize) {
        if let (Some((rate, burst)), Some(bucket)) = (self.rate, &self.bucket) {
            let (rate, burst) = share::share(rate, burst, members);
            bucket
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .set_rate(rate, burst);
        }
    }

    /// The tenant's name (the queue's and the metrics' `tenant`).
    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Calls admitted and not finished (permits alive).
    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Whether the tenant's `services` patterns cover `service`.
    pub(crate) fn allows(&self, service: &str) -> bool {
        self.services.is_empty() || self.services.iter().any(|p| p.matches(service))
    }

    /// Admits a call of `service` at `priority` arriving at `now`. Checks,
    /// in order: the service patterns, the in-flight cap, the token bucket;
    /// a refused call takes no token and no in-flight place.
    ///
    /// # Errors
    /// [`TenantError::Forbidden`], [`TenantError::TooManyInFlight`] or
    /// [`TenantError::RateLimited`] (with the time until a token is back).
    pub(crate) fn admit(
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

#[cfg(test)]
mod tests;
