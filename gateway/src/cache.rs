//! The result cache: results of idempotent services, kept per service for
//! `cache_ttl_s` within a byte bound (`[cache] max_bytes`), and single flight
//! for identical calls in flight.
//!
//! - **Key**: the service, and a BLAKE3 hash of the payload and of the
//!   service's `cache_key_hints` (name and value, or their absence, in name
//!   order). Other hints (`policy`, `max_cost`, ...) only route: calls that
//!   differ in them share entries.
//! - **Store**: a `moka` cache weighed in bytes (result + node id + policy
//!   name + [`ENTRY_OVERHEAD`]), TinyLFU admission and LRU eviction, each
//!   entry expiring after its service's TTL (moka's per-entry `Expiry`). A
//!   lookup also checks the age itself against the TTL and the call's
//!   `max_age_s`, with the caller's clock, so freshness never depends on when
//!   moka's housekeeping runs.
//! - **Single flight**: the first call that misses becomes the *leader* and
//!   runs on a node; identical calls arriving meanwhile *follow*: they wait
//!   for its outcome instead of calling a node. A success is handed to every
//!   follower. A `service failed` error (the service ran on this very input
//!   and failed) or a result too large is handed to them too, since running
//!   the same input again would fail the same way. Any other failure is the
//!   leader's own (its timeout, its client leaving, a full queue, a policy
//!   rejecting its routing hints, a lost node): the followers wake and one
//!   of them leads a new attempt, under its own timeout.
//! - Errors are never stored.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::notification::RemovalCause;
use protocol::{CacheStatsView, CallHead, ServiceCacheStats};
use tokio::sync::watch;

use crate::GatewayConfig;
use flight::{Flight, Outcome};
pub(crate) use flight::{Followed, Follower, Leader};

/// Bytes each entry weighs on top of its result, node id and policy name
/// (key, timestamps and the cache's own bookkeeping).
pub(crate) const ENTRY_OVERHEAD: u64 = 160;

/// Identifies a cached result: the service and a hash of what changes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    service: Arc<str>,
    digest: [u8; 32],
}

/// A stored result.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The result bytes.
    pub(crate) data: Bytes,
    /// The node that produced it.
    pub(crate) node_id: String,
    /// The policy that picked that node.
    pub(crate) policy: String,
    /// The result's media type, as the service gave it.
    pub(crate) content_type: Option<String>,
    /// The service's HTTP status, as the service gave it.
    pub(crate) status: Option<u16>,
    /// When it was stored.
    pub(crate) stored_at: Instant,
    ttl: Duration,
}

impl Entry {
    /// What the entry weighs against `max_bytes`, bytes.
    fn weight(&self) -> u64 {
        self.data.len() as u64
            + self.node_id.len() as u64
            + self.policy.len() as u64
            + self.content_type.as_ref().map_or(0, |c| c.len() as u64)
            + ENTRY_OVERHEAD
    }

    /// The entry's age at `now` (zero if `now` is earlier).
    pub(crate) fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.stored_at)
    }
}

/// What a cached call does next.
pub(crate) enum Lookup {
    /// A stored result, young enough for the call.
    Hit(Arc<Entry>),
    /// An identical call is in flight: wait for its outcome.
    Follow(Follower),
    /// Run the call on a node and report the outcome.
    Lead(Leader),
}

/// A cacheable service's settings and counters.
struct ServiceCache {
    name: Arc<str>,
    ttl: Duration,
    /// Sorted, without duplicates.
    key_hints: Vec<String>,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    entries: AtomicU64,
    bytes: AtomicU64,
    hits: AtomicU64,
    coalesced: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    expirations: AtomicU64,
}

/// State the eviction listener shares with the cache.
struct Books {
    services: HashMap<String, ServiceCache>,
    total_bytes: AtomicU64,
}

impl Books {
    fn added(&self, service: &ServiceCache, weight: u64) {
        service.counters.entries.fetch_add(1, Ordering::Relaxed);
        service.counters.bytes.fetch_add(weight, Ordering::Relaxed);
        let total = self.total_bytes.fetch_add(weight, Ordering::Relaxed) + weight;
        metrics::gauge!("cache_bytes").set(total as f64);
    }

    /// Books an entry that left the store (evicted, expired, replaced,
    /// purged).
    fn removed(&self, key: &Key, entry: &Entry, cause: RemovalCause) {
        let Some(service) = self.services.get(&*key.service) else {
            return;
        };
        let weight = entry.weight();
        let c = &service.counters;
        sub(&c.entries, 1);
        sub(&c.bytes, weight);
        let total = sub(&self.total_bytes, weight);
        metrics::gauge!("cache_bytes").set(total as f64);
        match cause {
            RemovalCause::Size => {
                c.evictions.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("cache_evictions_total", "service" => service.name.to_string())
                    .increment(1);
            }
            RemovalCause::Expired => {
                c.expirations.fetch_add(1, Ordering::Relaxed);
            }
            RemovalCause::Explicit | RemovalCause::Replaced => {}
        }
    }
}

/// Subtracts without wrapping; returns the new value.
fn sub(counter: &AtomicU64, n: u64) -> u64 {
    let old = counter
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_sub(n))
        })
        .unwrap_or_default();
    old.saturating_sub(n)
}

struct PerEntryTtl;

impl moka::Expiry<Key, Arc<Entry>> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &Key,
        entry: &Arc<Entry>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// The gateway's result cache (see the module docs).
pub(crate) struct ResultCache {
    store: moka::sync::Cache<Key, Arc<Entry>>,
    books: Arc<Books>,
    flights: Mutex<HashMap<Key, Flight>>,
    next_flight: AtomicU64,
    max_bytes: u64,
}

impl ResultCache {
    /// A cache bounded by `config.cache.max_bytes`, for the services with a
    /// `cache_ttl_s`.
    pub(crate) fn new(config: &GatewayConfig) -> Self {
        let services = config
            .services
            .iter()
            .filter_map(|(name, s)| {
                let ttl = config.cache_ttl(name)?;
                let mut key_hints = s.cache_key_hints.clone();
                key_hints.sort();
                key_hints.dedup();
                let service = ServiceCache {
                    name: Arc::from(name.as_str()),
                    ttl,
                    key_hints,
                    counters: Counters::default(),
                };
                Some((name.clone(), service))
            })
            .collect();
        let books = Arc::new(Books {
            services,
            total_bytes: AtomicU64::new(0),
        });
        let listener_books = books.clone();
        let store = moka::sync::Cache::builder()
            .max_capacity(config.cache.max_bytes)
            .weigher(|_key: &Key, entry: &Arc<Entry>| {
                u32::try_from(entry.weight()).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .eviction_listener(move |key: Arc<Key>, entry: Arc<Entry>, cause| {
                listener_books.removed(&key, &entry, cause);
            })
            .build();
        Self {
            store,
            books,
            flights: Mutex::new(HashMap::new()),
            next_flight: AtomicU64::new(1),
            max_bytes: config.cache.max_bytes,
        }
    }

    /// Whether `service` is cached (has a `cache_ttl_s`).
    pub(crate) fn is_cached(&self, service: &str) -> bool {
        self.books.services.contains_key(service)
    }

    /// The call's cache key, or `None` when its service is not cached.
    pub(crate) fn key(&self, head: &CallHead, payload: &[u8]) -> Option<Key> {
        let service = self.books.services.get(&head.service)?;
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"switchyard result cache v1\0");
        let put = |hasher: &mut blake3::Hasher, bytes: &[u8]| {
            hasher.update(&(bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        for name in &service.key_hints {
            put(&mut hasher, name.as_bytes());
            match head.hint(name) {
                Some(value) => {
                    hasher.update(&[1]);
                    put(&mut hasher, value.as_bytes());
                }
                None => {
                    hasher.update(&[0]);
                }
            }
        }
        // The endpoint (an OpenAI service's /chat/completions or
        // /embeddings) is part of what was asked.
        put(&mut hasher, head.endpoint().as_bytes());
        put(&mut hasher, payload);
        Some(Key {
            service: service.name.clone(),
            digest: *hasher.finalize().as_bytes(),
        })
    }

    /// Decides how a call with `key` is answered at `now`: from a stored
    /// entry younger than its TTL and than `max_age` (unless `no_cache`),
    /// by following an identical call in flight (unless `no_cache`), or by
    /// leading a node call. A `no_cache` call leads a flight when none is
    /// under way, else runs on its own; either way its result is stored.
    pub(crate) fn lookup(
        self: &Arc<Self>,
        key: &Key,
        no_cache: bool,
        max_age: Option<Duration>,
        now: Instant,
    ) -> Lookup {
        let Some(service) = self.books.services.get(&*key.service) else {
            // Keys are only made for cached services; lead without storing.
            return Lookup::Lead(self.leader(key, None));
        };
        if !no_cache && let Some(entry) = self.fresh(key, max_age, now) {
            return self.hit(service, entry);
        }
        let mut flights = self.flights();
        if !no_cache {
            // A leader stores its result before it ends its flight: looking
            // again under the lock means a result is never fetched twice.
            if let Some(entry) = self.fresh(key, max_age, now) {
                drop(flights);
                return self.hit(service, entry);
            }
            if let Some(flight) = flights.get(key) {
                return Lookup::Follow(Follower {
                    cache: self.clone(),
                    service: key.service.clone(),
                    outcome: flight.outcome.clone(),
                });
            }
        }
        service.counters.misses.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("cache_misses_total", "service" => service.name.to_string()).increment(1);
        if flights.contains_key(key) {
            drop(flights);
            return Lookup::Lead(self.leader(key, None));
        }
        let id = self.next_flight.fetch_add(1, Ordering::Relaxed);
        let (publish, outcome) = watch::channel(None);
        flights.insert(key.clone(), Flight { id, outcome });
        drop(flights);
        Lookup::Lead(self.leader(key, Some((id, publish))))
    }

    fn leader(
        self: &Arc<Self>,
        key: &Key,
        flight: Option<(u64, watch::Sender<Outcome>)>,
    ) -> Leader {
        Leader {
            cache: self.clone(),
            key: key.clone(),
            flight,
        }
    }

    fn fresh(&self, key: &Key, max_age: Option<Duration>, now: Instant) -> Option<Arc<Entry>> {
        let entry = self.store.get(key)?;
        let age = entry.age(now);
        (age < entry.ttl && max_age.is_none_or(|max| age <= max)).then_some(entry)
    }

    fn hit(&self, service: &ServiceCache, entry: Arc<Entry>) -> Lookup {
        service.counters.hits.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("cache_hits_total", "service" => service.name.to_string()).increment(1);
        Lookup::Hit(entry)
    }

    fn flights(&self) -> MutexGuard<'_, HashMap<Key, Flight>> {
        // A panic while holding the lock cannot leave the map inconsistent
        // (single inserts and removes), so a poisoned lock is still usable.
        self.flights
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Drops the stored results of `service`, or of every service; returns
    /// how many entries and bytes went. Calls still running store their
    /// results when they finish.
    pub(crate) fn purge(&self, service: Option<&str>) -> (u64, u64) {
        let (mut entries, mut bytes) = (0, 0);
        for (key, _) in self.store.iter() {
            if service.is_none_or(|s| *key.service == *s)
                && let Some(entry) = self.store.remove(&*key)
            {
                entries += 1;
                bytes += entry.weight();
            }
        }
        self.store.run_pending_tasks();
        (entries, bytes)
    }

    /// Entries, bytes and counters, per service and in all.
    pub(crate) fn stats(&self) -> CacheStatsView {
        // Books pending evictions and expirations first.
        self.store.run_pending_tasks();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let services: BTreeMap<_, _> = self
            .books
            .services
            .values()
            .map(|s| {
                let c = &s.counters;
                let stats = ServiceCacheStats {
                    service: s.name.to_string(),
                    ttl_s: u32::try_from(s.ttl.as_secs()).unwrap_or(u32::MAX),
                    entries: get(&c.entries),
                    bytes: get(&c.bytes),
                    hits: get(&c.hits),
                    coalesced: get(&c.coalesced),
                    misses: get(&c.misses),
                    evictions: get(&c.evictions),
                    expirations: get(&c.expirations),
                };
                (stats.service.clone(), stats)
            })
            .collect();
        let services: Vec<_> = services.into_values().collect();
        CacheStatsView {
            max_bytes: self.max_bytes,
            total_bytes: get(&self.books.total_bytes),
            entries: services.iter().map(|s| s.entries).sum(),
            services,
        }
    }
}

mod flight;
/// Help texts of the result cache's series.
pub(crate) fn describe_metrics() {
    metrics::describe_counter!(
        "cache_hits_total",
        "Calls answered from a stored result, by service."
    );
    metrics::describe_counter!(
        "cache_misses_total",
        "Calls of a cached service that ran on a node."
    );
    metrics::describe_counter!(
        "cache_coalesced_total",
        "Calls answered by waiting for an identical call in flight (single flight)."
    );
    metrics::describe_counter!(
        "cache_evictions_total",
        "Results evicted to stay within the cache's byte bound."
    );
    metrics::describe_gauge!("cache_bytes", "Bytes the result cache holds.");
}

#[cfg(test)]
mod tests;
