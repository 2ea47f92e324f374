//! What every Switchyard policy plugin shares, in plain Rust that builds and
//! is unit-tested on the host as well as for `wasm32-wasip2`.
//!
//! - [`Candidate`], [`Request`], [`Outcome`], [`NodeFacts`] and [`Gpu`]: plain
//!   mirrors of the records of `wit/policy.wit` (same fields, same units), so
//!   a policy's algorithm never sees generated types and a native bench can
//!   drive it directly. [`Candidate`] is the row of
//!   `switchyard-policy-types`, the very type the gateway builds.
//! - [`Policy`]: the shape every policy's algorithm has (`score`, from
//!   which `rank` and `pick` derive, and `observe`); [`Context`] and
//!   [`Scored`] for `score` (WIT 1.1.0's `scorer`), [`ModelLoad`] on each
//!   candidate; [`order_after`] for a ranking that starts with the policy's
//!   own choice, [`to_score`] and [`EXCLUDED`] for finite scores.
//! - [`export_policy!`]: the WebAssembly component glue (generated bindings,
//!   conversions from the generated records, the `scoring-policy` world's
//!   exports).
//! - [`Hints`] (typed hint getters) and [`Requirement`] (the `require` grammar
//!   of resource requirements such as `gpu_mem_mib>=16000`).
//! - [`SplitMix64`] (deterministic RNG seeded from `request.random`) and
//!   [`p2c`] (power of two choices).
//! - [`PeakEwma`] and [`Ewma`] (latency estimates), [`NodeStates`] (per
//!   service and node state that forgets idle nodes).
//!
//! This crate is a library, not a policy: it is not a `cdylib` and
//! `make plugins` installs no `.wasm` for it.

mod ewma;
mod explain;
mod facts;
mod glue;
mod hints;
mod num;
mod prefix;
mod require;
mod rng;
mod scored;
mod table;
mod types;

pub use ewma::{DEFAULT_DECAY_MS, DEFAULT_RTT_MS, Ewma, PeakEwma, failure_penalty_ms};
pub use explain::{EXCLUDED, order_after, to_score};
pub use facts::FactsCache;
pub use hints::Hints;
pub use num::fmt_num;
pub use prefix::{DEFAULT_MAX_ENTRIES, PrefixTable};
pub use require::{Metric, Op, Requirement, Value, requirements};
pub use rng::{SplitMix64, p2c};
pub use scored::{Context, ModelLoad, Scored};
pub use table::{FORGET_AFTER_MS, NodeStates};
pub use types::{Candidate, Gpu, NodeFacts, NodeKey, Outcome, Request, index_u32, no_facts};

/// The crate that holds the candidate row and the one list of the WIT's
/// candidate columns, for [`export_policy!`]'s expansion.
#[doc(hidden)]
pub use switchyard_policy_types as __types;

/// A load-balancing policy's algorithm, independent of WebAssembly.
///
/// A policy implements [`Policy::score`], its one decision; [`Policy::rank`]
/// and [`Policy::pick`], what the exports of contract 1.0.0 ask, are derived
/// from it, and [`Policy::observe`] does nothing unless overridden. The
/// component glue from [`export_policy!`] calls these methods; a native
/// bench or a unit test calls the very same code (import the trait).
pub trait Policy: Default {
    /// The policy name: the `name` export, what `gateway.toml` and the per-call
    /// hint `policy=NAME` refer to.
    const NAME: &'static str;

    /// Scores and ranks the candidates for one call, with a short reason
    /// (the `scorer` export of `wit/policy.wit`): candidate indices best
    /// first (no repeats; it may name fewer than all, and the gateway tries
    /// the rest after them, taking the next one without asking again when
    /// another call took the first choice's last slot meanwhile), one
    /// finite score per candidate or none, and the reason the gateway keeps
    /// with its last decisions per service ("why this node").
    ///
    /// `ctx` carries the call's prefix hashes, and each candidate its model
    /// server's load (`model_load`). `facts` is the host's `node-info`
    /// import: call it only for the nodes whose region, labels or GPUs the
    /// policy needs.
    ///
    /// # Errors
    /// The reason the call is rejected (returned to the caller).
    fn score(
        &mut self,
        req: &Request,
        candidates: &[Candidate],
        ctx: &Context,
        facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
    ) -> Result<Scored, String>;

    /// Ranks the candidates for one call, best first (the `ranker` export):
    /// [`Policy::score`]'s order with an empty [`Context`], as a `rank`
    /// call carries neither prefix hashes nor model-server load (each
    /// candidate's `model_load` is `None` there).
    ///
    /// # Errors
    /// The reason the call is rejected (returned to the caller).
    fn rank(
        &mut self,
        req: &Request,
        candidates: &[Candidate],
        facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
    ) -> Result<Vec<u32>, String> {
        self.score(req, candidates, &Context::default(), facts)
            .map(|scored| scored.order)
    }

    /// Chooses a node for one call (the `pick` export): `Ok(i)` routes to
    /// `candidates[i]`, the first of [`Policy::rank`]'s order (the first
    /// candidate when the order names none).
    ///
    /// # Errors
    /// The reason the call is rejected (returned to the caller); `no
    /// candidates` when the order names none and there is no candidate.
    fn pick(
        &mut self,
        req: &Request,
        candidates: &[Candidate],
        facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
    ) -> Result<u32, String> {
        match self.rank(req, candidates, facts)?.first() {
            Some(&first) => Ok(first),
            None if candidates.is_empty() => Err("no candidates".to_owned()),
            None => Ok(0),
        }
    }

    /// Learns from a finished call; does nothing unless overridden.
    fn observe(&mut self, outcome: &Outcome) {
        let _ = outcome;
    }
}
