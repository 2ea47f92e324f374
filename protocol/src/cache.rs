//! Result cache messages: its statistics, and purging it.

use minicbor::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// Gateway → client: the result cache's size and each cached service's
/// counters, for `switchyard cache stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct CacheStatsView {
    /// The cache's bound, bytes (`[cache] max_bytes`).
    #[n(0)]
    pub max_bytes: u64,
    /// Bytes held now, all services (results plus a fixed per-entry
    /// overhead).
    #[n(1)]
    pub total_bytes: u64,
    /// Entries held now, all services.
    #[n(2)]
    pub entries: u64,
    /// Every service with a `cache_ttl_s`, sorted by name.
    #[n(3)]
    pub services: Vec<ServiceCacheStats>,
}

/// One cached service's entries and counters (counters since the gateway
/// started).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct ServiceCacheStats {
    /// Service name.
    #[n(0)]
    pub service: String,
    /// How long its results are kept, s (`cache_ttl_s`).
    #[n(1)]
    pub ttl_s: u32,
    /// Entries held now.
    #[n(2)]
    pub entries: u64,
    /// Bytes held now.
    #[n(3)]
    pub bytes: u64,
    /// Calls answered from a stored entry.
    #[n(4)]
    pub hits: u64,
    /// Calls answered by waiting for an identical call in flight (with its
    /// result, or with its shared `service failed` error).
    #[n(5)]
    pub coalesced: u64,
    /// Calls that ran on a node (no usable entry, or `no_cache`).
    #[n(6)]
    pub misses: u64,
    /// Entries evicted to stay within `max_bytes`.
    #[n(7)]
    pub evictions: u64,
    /// Entries dropped because their TTL ran out.
    #[n(8)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct PurgeCache {
    /// The gateway's admin token.
    #[n(0)]
    pub admin_token: String,
    /// Only this service's entries; `None` for every service.
    #[n(1)]
    pub service: Option<String>,
}
