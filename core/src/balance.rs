//! Picks: what a policy is shown ([`PickRequest`]: the call and the
//! numbers-only [`Candidate`]s) and what it answers (a [`Ranking`]).
//!
//! The core never runs a policy itself: it asks with
//! [`Action::Pick`](crate::Action::Pick) and goes on with other events; the
//! shell runs the policy (a wasm call, outside any lock the core's other
//! events need) and answers with [`Event::Picked`](crate::Event::Picked). By
//! then a slot may have been taken: the core takes the first node of the
//! ranking that is still free, so a lost race never enters the policy
//! again (pingora's `BackendIter`). [`Balance`] and [`drive`] run picks at
//! once, for tests and the simulator.

use std::sync::Arc;
use std::time::Instant;

use protocol::CallHead;

use crate::{Action, CallId, Core, Event, NodeKey, PickError};

/// What a policy sees of one node for one call: numbers only, one
/// candidate per node with the service loaded and a free slot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Candidate {
    /// The node's key.
    pub node: NodeKey,
    /// Calls of the service in flight there.
    pub in_flight: u32,
    /// Its `max_concurrent` for the service.
    pub max_concurrent: u32,
    /// Calls of every service in flight there.
    pub node_in_flight: u32,
    /// The service's latency EWMA there, ms (0 with no samples).
    pub latency_ms: f32,
    /// Samples behind `latency_ms`.
    pub latency_samples: u32,
    /// The node's price, per hour.
    pub cost_per_hour: f32,
    /// CPU use, % of all cores (0 before the first stats report).
    pub cpu_pct: f32,
    /// Memory used, MiB.
    pub mem_used_mib: u64,
    /// Memory in all, MiB.
    pub mem_total_mib: u64,
    /// GPUs.
    pub gpu_count: u32,
    /// Mean GPU utilisation, %.
    pub gpu_util_pct: f32,
    /// Free memory of the GPU with the most free, MiB.
    pub gpu_mem_free_mib: u64,
    /// GPU memory in all, MiB.
    pub gpu_mem_total_mib: u64,
    /// The model server's own load for the service there, from the agent's
    /// scrape of its Prometheus endpoint; `None` when the agent reports
    /// none for it (no `metrics_url`, or the latest scrape failed).
    pub model_load: Option<ModelLoad>,
}

/// A model server's load for one service on one node, as its agent last
/// scraped it (vLLM's or SGLang's gauges).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ModelLoad {
    /// Requests waiting in the server's queue (vLLM
    /// `vllm:num_requests_waiting`).
    pub waiting: u32,
    /// Requests running in the server (vLLM `vllm:num_requests_running`).
    pub running: u32,
    /// KV-cache use, 0..=100 % (vLLM's 0..1 `gpu_cache_usage_perc` × 100).
    pub kv_cache_pct: f32,
}

impl From<&protocol::ServiceLoad> for ModelLoad {
    /// The load of a stats report's entry, its KV-cache use clamped to
    /// 0..=100 % (0 when not a number).
    fn from(load: &protocol::ServiceLoad) -> Self {
        let kv = load.kv_cache_pct;
        Self {
            waiting: load.waiting,
            running: load.running,
            kv_cache_pct: if kv.is_finite() {
                kv.clamp(0.0, 100.0)
            } else {
                0.0
            },
        }
    }
}

/// One pick to make.
#[derive(Debug, Clone, PartialEq)]
pub struct PickRequest {
    /// The call it is for.
    pub call: CallId,
    /// The call's head (service, hints, payload size).
    pub head: Arc<CallHead>,
    /// The nodes it may go to, by key (never empty).
    pub candidates: Vec<Candidate>,
    /// The chained block hashes of the call's prompt or affinity key
    /// ([`crate::prefix`]); empty for none.
    pub prefix: Arc<[u64]>,
}

/// A policy's answer: node keys, best first. The core takes the first one
/// still free; a ranking may name fewer nodes than it was offered, and the
/// core then tries the rest of the offered nodes after them, in the order
/// they were offered starting after the first choice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranking {
    /// Node keys, best first.
    pub nodes: Vec<NodeKey>,
}

impl Ranking {
    /// A ranking of one node.
    pub fn one(node: NodeKey) -> Self {
        Self { nodes: vec![node] }
    }
}

/// Something that picks: the gateway's and the simulator's wasm policy
/// table, or the built-in [`RoundRobin`].
pub trait Balance {
    /// Ranks `request.candidates` for the call at `now`.
    ///
    /// # Errors
    /// [`PickError::Refused`] to fail the call (the policy rejected it),
    /// [`PickError::Failed`] when the policy itself failed.
    fn pick(&mut self, request: &PickRequest, now: Instant) -> Result<Ranking, PickError>;
}

/// The built-in round-robin: each pick starts one candidate further on.
#[derive(Debug, Default, Clone)]
pub struct RoundRobin {
    next: usize,
}

impl Balance for RoundRobin {
    fn pick(&mut self, request: &PickRequest, _now: Instant) -> Result<Ranking, PickError> {
        let n = request.candidates.len().max(1);
        let first = self.next % n;
        self.next = self.next.wrapping_add(1);
        Ok(Ranking {
            nodes: (0..request.candidates.len())
                .map(|i| request.candidates[(first + i) % n].node)
                .collect(),
        })
    }
}

/// Handles `event` and every pick it leads to at once with `balance` (as if
/// picks took no time), returning the other actions in order.
pub fn drive(
    core: &mut Core,
    balance: &mut impl Balance,
    event: Event,
    now: Instant,
) -> Vec<Action> {
    let mut out = Vec::new();
    let mut pending = core.handle(event, now);
    while !pending.is_empty() {
        let mut next = Vec::new();
        for action in pending {
            match action {
                Action::Pick(request) => {
                    let ranking = balance.pick(&request, now);
                    next.extend(core.handle(
                        Event::Picked {
                            call: request.call,
                            ranking,
                        },
                        now,
                    ));
                }
                other => out.push(other),
            }
        }
        pending = next;
    }
    out
}
