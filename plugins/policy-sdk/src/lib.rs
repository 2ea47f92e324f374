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
pub use explain::{EXCLUDED, RANKED_AFTER_FIRST, order_after, to_score};
pub use facts::FactsCache;
pub use hints::Hints;
pub use num::fmt_num;
pub use prefix::{DEFAULT_MAX_ENTRIES, PrefixTable};
pub use require::{Metric, Op, Requirement, Value, requirements};
pub use rng::{SplitMix64, p2c};
pub use scored::{Context, ModelLoad, Scored};
pub use table::{FORGET_AFTER_MS, NodeStates, ServiceStates};
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
///
/// ```
/// use policy_sdk::{Candidate, Context, NodeFacts, NodeKey, Policy, Request, Scored, no_facts};
/// use policy_sdk::to_score;
///
/// #[derive(Debug, Default)]
/// pub struct MyPolicy;
///
/// impl Policy for MyPolicy {
///     const NAME: &'static str = "my-policy";
///
///     fn score(
///         &mut self,
///         _req: &Request,
///         candidates: &[Candidate],
///         _ctx: &Context,
///         _facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
///     ) -> Result<Scored, String> {
///         let scores = candidates.iter().map(|c| to_score(-c.load())).collect();
///         Ok(Scored::by_score(scores, "least loaded".to_owned()))
///     }
/// }
///
/// let node = |node, in_flight| Candidate { node, in_flight, max_concurrent: 4, ..Candidate::default() };
/// let candidates = [node(7, 3), node(8, 1)];
/// let mut p = MyPolicy;
/// assert_eq!(p.rank(&Request::default(), &candidates, &no_facts), Ok(vec![1, 0]));
/// assert_eq!(p.pick(&Request::default(), &candidates, &no_facts), Ok(1));
/// ```
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
    /// server's load (`model_load`) and how many leading blocks of those
    /// hashes its node reports holding (`prefix_matched`, from the agents'
    /// reports to every gateway). `facts` is the host's `node-info`
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

#[cfg(test)]
mod tests {
    use super::{Candidate, Context, NodeFacts, NodeKey, Policy, Request, Scored, no_facts};

    /// Answers with the order it is told to, and remembers the context of
    /// its last call.
    #[derive(Debug, Default)]
    struct Told {
        order: Vec<u32>,
        reject: bool,
        seen: Option<Context>,
    }

    impl Policy for Told {
        const NAME: &'static str = "told";

        fn score(
            &mut self,
            _req: &Request,
            _candidates: &[Candidate],
            ctx: &Context,
            _facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
        ) -> Result<Scored, String> {
            self.seen = Some(ctx.clone());
            if self.reject {
                return Err("told to reject".to_owned());
            }
            Ok(Scored {
                order: self.order.clone(),
                scores: Vec::new(),
                reason: String::new(),
            })
        }
    }

    /// `n` candidates (`Told` reads none of their figures).
    fn nodes(n: usize) -> Vec<Candidate> {
        vec![Candidate::default(); n]
    }

    #[test]
    fn rank_is_the_scored_order_without_a_context() {
        let mut p = Told {
            order: vec![2, 0],
            ..Told::default()
        };
        let req = Request::default();
        assert_eq!(p.rank(&req, &nodes(3), &no_facts), Ok(vec![2, 0]));
        assert_eq!(p.seen, Some(Context::default()));
        assert_eq!(p.pick(&req, &nodes(3), &no_facts), Ok(2));
    }

    #[test]
    fn pick_of_an_empty_order_is_the_first_candidate_if_any() {
        let mut p = Told::default();
        let req = Request::default();
        assert_eq!(p.pick(&req, &nodes(2), &no_facts), Ok(0));
        assert_eq!(
            p.pick(&req, &[], &no_facts),
            Err("no candidates".to_owned())
        );
    }

    #[test]
    fn a_rejection_passes_through() {
        let mut p = Told {
            reject: true,
            ..Told::default()
        };
        let req = Request::default();
        let rejected = Err("told to reject".to_owned());
        assert_eq!(p.rank(&req, &nodes(2), &no_facts), rejected);
        assert_eq!(
            p.pick(&req, &nodes(2), &no_facts),
            Err("told to reject".to_owned())
        );
    }
}
