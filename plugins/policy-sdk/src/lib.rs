//! What every Switchyard policy plugin shares, in plain Rust that builds and
//! is unit-tested on the host as well as for `wasm32-wasip2`.
//!
//! - [`Candidate`], [`Request`], [`Outcome`], [`NodeFacts`] and [`Gpu`]: plain
//!   mirrors of the records of `wit/policy.wit` (same fields, same units), so
//!   a policy's algorithm never sees generated types and a native bench can
//!   drive it directly.
//! - [`Policy`]: the shape every policy's algorithm has (`pick`, `rank`,
//!   `score`, `observe`); [`Context`], [`ModelLoad`] and [`Scored`] for
//!   `score` (WIT 1.1.0's `scorer`); [`order_after`] for a ranking that
//!   starts with the policy's own choice, [`to_score`] and [`EXCLUDED`] for
//!   finite scores.
//! - [`export_policy!`]: the WebAssembly component glue (generated bindings,
//!   conversions from the generated records, the `policy` world's exports).
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

/// A load-balancing policy's algorithm, independent of WebAssembly.
///
/// Each policy crate exposes a pub struct with these two methods (also as
/// inherent methods, so callers need not import this trait); the component
/// glue from [`export_policy!`] calls them, and a native bench can call the
/// very same code.
pub trait Policy: Default {
    /// The policy name: the `name` export, what `gateway.toml` and the per-call
    /// hint `policy=NAME` refer to.
    const NAME: &'static str;

    /// Chooses a node for one call: `Ok(i)` routes to `candidates[i]`,
    /// `Err(reason)` rejects the call with `reason`.
    ///
    /// `facts` is the host's `node-info` import: call it only for the nodes
    /// whose region, labels or GPUs the policy needs.
    ///
    /// # Errors
    /// The reason the call is rejected (returned to the caller).
    fn pick(
        &mut self,
        req: &Request,
        candidates: &[Candidate],
        facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
    ) -> Result<u32, String>;

    /// Ranks the candidates for one call, best first (indices into
    /// `candidates`, no repeats): when another call takes the first choice's
    /// last slot meanwhile, the gateway takes the next one without asking
    /// again (the `ranker` export of `wit/policy.wit`). It may name fewer
    /// than all; the gateway tries the rest after them. The default ranks
    /// [`Policy::pick`]'s choice alone.
    ///
    /// # Errors
    /// The reason the call is rejected (returned to the caller).
    fn rank(
        &mut self,
        req: &Request,
        candidates: &[Candidate],
        facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
    ) -> Result<Vec<u32>, String> {
        self.pick(req, candidates, facts).map(|i| vec![i])
    }

    /// Scores and ranks the candidates for one call, with a short reason
    /// (the `scorer` export of `wit/policy.wit`, new in 1.1.0): the gateway
    /// keeps the last decisions per service and shows them ("why this
    /// node"). `ctx` adds the call's prefix hashes and the model servers'
    /// load. The default is [`Policy::rank`]'s order with no scores and no
    /// reason; every built-in policy overrides it.
    ///
    /// # Errors
    /// The reason the call is rejected (returned to the caller).
    fn score(
        &mut self,
        req: &Request,
        candidates: &[Candidate],
        ctx: &Context,
        facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
    ) -> Result<Scored, String> {
        let _ = ctx;
        self.rank(req, candidates, facts).map(|order| Scored {
            order,
            scores: Vec::new(),
            reason: String::new(),
        })
    }

    /// Learns from a finished call.
    fn observe(&mut self, outcome: &Outcome);
}
