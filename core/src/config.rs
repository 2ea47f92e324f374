//! The core's settings: queue sizes and the swap planner's rules (the
//! gateway fills them from `gateway.toml`, the simulator from a scenario).

use std::collections::HashMap;
use std::time::Duration;

use crate::retry::{Breakers, RetryRules};
use crate::success_rate::SuccessRateRules;

/// Queue and swap settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CoreConfig {
    /// Most calls that may wait per service (default 1000).
    pub queue_capacity: u32,
    /// Per-service queue sizes overriding `queue_capacity`.
    pub service_queue_capacity: HashMap<String, u32>,
    /// The swap planner's rules.
    pub swap: SwapRules,
    /// Whether waiting calls are told their positions (default true; the
    /// simulator turns it off, nobody listens there).
    pub positions: bool,
    /// When a policy fails, the built-in round-robin picks (true, the
    /// default) or the call fails (false).
    pub fail_open: bool,
    /// Outlier ejection (Envoy's `consecutive_5xx` detection).
    pub outlier: OutlierRules,
    /// Retries: attempts, backoff, the retry budget.
    pub retry: RetryRules,
    /// Circuit breakers of every service (default none).
    pub breakers: Breakers,
    /// Per-service circuit breakers overriding `breakers`.
    pub service_breakers: HashMap<String, Breakers>,
    /// The most candidates a policy is offered per pick (default 0: every
    /// node with a free slot). Past it the core offers a uniform random
    /// sample of that many of them, in key order: the power of d choices
    /// (Mitzenmacher, "The Power of Two Choices in Randomized Load
    /// Balancing", 2001; Envoy's and linkerd's least-request draw 2), so a
    /// pick costs the same whatever the fleet's size.
    pub max_candidates: usize,
    /// Per-service bounds overriding `max_candidates`.
    pub service_max_candidates: HashMap<String, usize>,
    /// Seed of the candidate sample's random numbers (default 0).
    pub seed: u64,
}

/// Outlier ejection: a node whose calls of a service fail
/// `consecutive_failures` times in a row (`service failed`, `node lost`, a
/// timeout on the node) leaves that service's candidates for
/// `base_ejection` × the number of times it was ejected, at most
/// `max_ejection`. At most `max_ejected_percent` of the nodes with the
/// service loaded are out at once (but at least one may be), and never the
/// last one. Semantics of Envoy's outlier detection (`consecutive_5xx`,
/// `base_ejection_time`, `max_ejection_time`, `max_ejection_percent`).
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierRules {
    /// Consecutive failures that eject a node (default 5; 0 turns ejection
    /// off).
    pub consecutive_failures: u32,
    /// Ejection time per ejection so far (default 30 s).
    pub base_ejection: Duration,
    /// Longest ejection (default 300 s).
    pub max_ejection: Duration,
    /// Most nodes of a service ejected at once, % (default 10; at least one
    /// may be).
    pub max_ejected_percent: u32,
    /// Success-rate ejection, off (`None`) by default.
    pub success_rate: Option<SuccessRateRules>,
}

impl Default for OutlierRules {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 10,
            success_rate: None,
        }
    }
}

/// The swap planner's rules (see `schedule/swap.rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct SwapRules {
    /// Whether the core swaps at all (default true).
    pub enabled: bool,
    /// Least time between two swaps on one node, its swap cooldown
    /// (default 60 s).
    pub node_cooldown: Duration,
    /// Per node id, overriding `node_cooldown`.
    pub node_cooldowns: HashMap<String, Duration>,
    /// Per service: least time it stays in a slot a swap loaded it into
    /// (default 0).
    pub service_cooldowns: HashMap<String, Duration>,
    /// A service with calls of its own waiting is swapped away only for a
    /// queue at least this many times longer (default 4).
    pub queue_ratio: u32,
    /// A swap starts only when the expected wait exceeds the load time
    /// times this (default 1.0).
    pub cost_factor: f32,
    /// Longest wait for a swap report (default 300 s); past it the swap
    /// failed.
    pub timeout: Duration,
    /// After a failed swap, the slot leaves that service alone at least
    /// this long (default 30 s; the node's and service's cooldowns apply
    /// when longer).
    pub failure_cooldown: Duration,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 1000,
            service_queue_capacity: HashMap::new(),
            swap: SwapRules::default(),
            positions: true,
            fail_open: true,
            outlier: OutlierRules::default(),
            retry: RetryRules::default(),
            breakers: Breakers::default(),
            service_breakers: HashMap::new(),
            max_candidates: 0,
            service_max_candidates: HashMap::new(),
            seed: 0,
        }
    }
}

impl Default for SwapRules {
    fn default() -> Self {
        Self {
            enabled: true,
            node_cooldown: Duration::from_secs(60),
            node_cooldowns: HashMap::new(),
            service_cooldowns: HashMap::new(),
            queue_ratio: 4,
            cost_factor: 1.0,
            timeout: Duration::from_secs(300),
            failure_cooldown: Duration::from_secs(30),
        }
    }
}

impl CoreConfig {
    /// The queue size of `service`.
    pub fn queue_capacity(&self, service: &str) -> u32 {
        self.service_queue_capacity
            .get(service)
            .copied()
            .unwrap_or(self.queue_capacity)
    }

    /// The most candidates a policy of `service` is offered (0: all).
    pub fn max_candidates(&self, service: &str) -> usize {
        self.service_max_candidates
            .get(service)
            .copied()
            .unwrap_or(self.max_candidates)
    }

    /// The circuit breakers of `service`.
    pub fn breakers(&self, service: &str) -> Breakers {
        self.service_breakers
            .get(service)
            .copied()
            .unwrap_or(self.breakers)
    }

    /// The swap cooldown of node `node_id`.
    pub fn node_swap_cooldown(&self, node_id: &str) -> Duration {
        self.swap
            .node_cooldowns
            .get(node_id)
            .copied()
            .unwrap_or(self.swap.node_cooldown)
    }

    /// How long `service` stays in a slot a swap loaded it into.
    pub fn service_swap_cooldown(&self, service: &str) -> Duration {
        self.swap
            .service_cooldowns
            .get(service)
            .copied()
            .unwrap_or_default()
    }

    /// How long a slot of node `node_id` that failed to load `service`
    /// leaves it alone: the longest of the failure, node and service
    /// cooldowns.
    pub fn failed_swap_block(&self, node_id: &str, service: &str) -> Duration {
        self.swap
            .failure_cooldown
            .max(self.node_swap_cooldown(node_id))
            .max(self.service_swap_cooldown(service))
    }
}
