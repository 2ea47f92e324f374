//! What `gateway.toml` says of services and nodes: `[services.NAME]`,
//! `[nodes.ID]`, the queues (`[queue]`), swaps (`[swap]`) and the result
//! cache (`[cache]`).

use serde::Deserialize;

use super::BreakerConfig;

/// Settings of one service.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// The policy that picks nodes for this service (default: `default_policy`).
    pub policy: Option<String>,
    /// Most calls of this service waiting (default `[queue] capacity`).
    pub queue_capacity: Option<u32>,
    /// Per-service swap cooldown, s (default 0): once a swap loaded this
    /// service into a slot it stays at least this long, and after a failed
    /// load the slot does not try it again for this long (at least the
    /// node's cooldown).
    pub swap_cooldown_s: u32,
    /// How long this service's results are kept in the result cache, s
    /// (1..=31536000). Unset (the default): the service is not cached, since
    /// only idempotent services may be.
    pub cache_ttl_s: Option<u32>,
    /// The call hints that change this service's result (e.g. `["model",
    /// "temperature"]`) and so are part of its cache key, with the service
    /// and the payload's BLAKE3 hash. Default none: hints are routing hints.
    /// `policy` may not be one.
    pub cache_key_hints: Vec<String>,
    /// Whether a call may run twice (default false): a call of an
    /// idempotent service that fails on its node is retried on another
    /// (`[retry]`); any other call is never sent twice once dispatched.
    pub idempotent: bool,
    /// This service's circuit breaker: most calls waiting (default
    /// `[circuit_breakers]`).
    pub max_waiting: Option<u32>,
    /// This service's circuit breaker: most calls running or waiting
    /// (default `[circuit_breakers]`).
    pub max_in_flight: Option<u32>,
    /// This service's circuit breaker: most retries under way (default
    /// `[circuit_breakers]`).
    pub max_retries_in_flight: Option<u32>,
    /// The share of this service's call slots to keep busy, in `(0, 1]`
    /// (default `[scale] target_utilisation`).
    pub target_utilisation: Option<f64>,
    /// The most candidates this service's policy is offered per pick
    /// (default the top-level `max_candidates`; 0: every free node).
    pub max_candidates: Option<usize>,
}

impl ServiceConfig {
    /// Its circuit breakers, falling back to `defaults`.
    pub fn breakers(&self, defaults: BreakerConfig) -> switchyard_core::Breakers {
        BreakerConfig {
            max_waiting: self.max_waiting,
            max_in_flight: self.max_in_flight,
            max_retries_in_flight: self.max_retries_in_flight,
        }
        .or(defaults)
    }
}

/// `[queue]`: calls wait here when no node has a free slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Most calls waiting per service (default 1000); past it calls get
    /// `overloaded`. `[services.NAME] queue_capacity` overrides it.
    pub capacity: u32,
}

/// `[swap]`: when calls wait for a service that no idle node has loaded, an
/// idle slot that can host it is switched to it (see `ARCHITECTURE.md`,
/// "Swap planning", for the rules).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwapConfig {
    /// Whether the gateway swaps at all (default true).
    pub enabled: bool,
    /// Least time between two swaps on one node (its swap cooldown), s
    /// (default 60); `[nodes.ID] swap_cooldown_s` overrides it per node.
    pub swap_cooldown_s: u32,
    /// A service with calls of its own waiting is swapped away only when the
    /// queue that wants the slot is at least this many times longer
    /// (default 4).
    pub queue_ratio: u32,
    /// A swap is started only when the queue's expected wait is longer than
    /// the service's load time times this factor (default 1.0).
    pub cost_factor: f32,
    /// Longest the gateway waits for an agent's swap report, s (default
    /// 300); past it the swap counts as failed.
    pub timeout_s: u32,
    /// After a slot failed to load a service, it does not try that service
    /// again for at least this long, s (default 30; the node's and the
    /// service's cooldowns apply when longer).
    pub failure_cooldown_s: u32,
}

/// `[cache]`: the gateway's result cache, shared by every cached service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Most bytes the cached results may take, bytes (default 256 MiB;
    /// each entry weighs its result plus a fixed overhead for its key and
    /// bookkeeping).
    /// Past it the least valuable entries are evicted. 0 stores nothing
    /// (identical calls in flight are still coalesced).
    pub max_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_bytes: 256 * 1024 * 1024,
        }
    }
}

/// `[nodes.ID]`: settings of one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Least time between two swaps on this node, s (default
    /// `[swap] swap_cooldown_s`).
    pub swap_cooldown_s: Option<u32>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self { capacity: 1000 }
    }
}

impl Default for SwapConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            swap_cooldown_s: 60,
            queue_ratio: 4,
            cost_factor: 1.0,
            timeout_s: 300,
            failure_cooldown_s: 30,
        }
    }
}
