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
/// candidate per node with the service loaded and a free slot (the row of
/// the WIT `candidates` columns, with the node's model-server load; defined
/// beside the WIT in `switchyard-policy-types`).
pub use switchyard_policy_types::{Candidate, ModelLoad};

/// The load of a stats report's entry for one service, its KV-cache use
/// clamped to 0..=100 % (0 when not a number).
#[must_use]
pub fn model_load(load: &protocol::ServiceLoad) -> ModelLoad {
    let kv = load.kv_cache_pct;
    ModelLoad {
        waiting: load.waiting,
        running: load.running,
        kv_cache_pct: if kv.is_finite() {
            kv.clamp(0.0, 100.0)
        } else {
            0.0
        },
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
///
/// It also carries the policy's explanation, for the shell to record ("why
/// this node"); the core ignores it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ranking {
    /// Node keys, best first.
    pub nodes: Vec<NodeKey>,
    /// The policy's score of each offered candidate, in the order of
    /// [`PickRequest::candidates`] (higher is better, in the policy's own
    /// unit); empty when it gave none.
    pub scores: Vec<f32>,
    /// Why, in a few words, as the policy said it; empty when it gave no
    /// reason.
    pub reason: String,
}

impl Ranking {
    /// A ranking of `nodes`, best first, without scores or reason.
    #[must_use]
    pub fn new(nodes: Vec<NodeKey>) -> Self {
        Self {
            nodes,
            ..Self::default()
        }
    }

    /// A ranking of one node.
    #[must_use]
    pub fn one(node: NodeKey) -> Self {
        Self::new(vec![node])
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
        Ok(Ranking::new(
            (0..request.candidates.len())
                .map(|i| request.candidates[(first + i) % n].node)
                .collect(),
        ))
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
