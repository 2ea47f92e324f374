//! Result cache messages: its statistics, and purging it.

use serde::{Deserialize, Serialize};

/// Gateway → client: the result cache's size and each cached service's
/// counters, for `switchyard cache stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStatsView {
    /// The cache's bound, bytes (`[cache] max_bytes`).
    pub max_bytes: u64,
    /// Bytes held now, all services (results plus a fixed per-entry
    /// overhead).
    pub total_bytes: u64,
    /// Entries held now, all services.
    pub entries: u64,
    /// Every service with a `cache_ttl_s`, sorted by name.
    pub services: Vec<ServiceCacheStats>,
}

/// One cached service's entries and counters (counters since the gateway
/// started).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceCacheStats {
    /// Service name.
    pub service: String,
    /// How long its results are kept, s (`cache_ttl_s`).
    pub ttl_s: u32,
    /// Entries held now.
    pub entries: u64,
    /// Bytes held now.
    pub bytes: u64,
    /// Calls answered from a stored entry.
    pub hits: u64,
    /// Calls answered by waiting for an identical call in flight (with its
    /// result, or with its shared `service failed` error).
    pub coalesced: u64,
    /// Calls that ran on a node (no usable entry, or `no_cache`).
    pub misses: u64,
    /// Entries evicted to stay within `max_bytes`.
    pub evictions: u64,
    /// Entries dropped because their TTL ran out.
    pub expirations: u64,
}

impl ServiceCacheStats {
    /// Share of calls that no node had to run: (hits + coalesced) / all
    /// calls, in 0..=1 (0 when there were none).
    pub fn hit_ratio(&self) -> f64 {
        let served = self.hits.saturating_add(self.coalesced);
        let all = served.saturating_add(self.misses);
        if all == 0 {
            0.0
        } else {
            served as f64 / all as f64
        }
    }
}

/// Client → gateway (admin): drop cached results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeCache {
    /// The gateway's admin token.
    pub admin_token: String,
    /// Only this service's entries; `None` for every service.
    pub service: Option<String>,
}
