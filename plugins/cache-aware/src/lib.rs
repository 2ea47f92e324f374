//! Switchyard policy plugin `cache-aware`.
//!
//! SGLang's approximate cache-aware routing (sgl-router's `cache_aware`
//! policy), adapted to the chained prefix block hashes the gateway computes
//! per call (WIT 1.1.0 `scorer.context.prefix-hashes`): instead of a radix
//! tree of request text per worker, a bounded record per (service, node) of
//! the block hashes it was sent ([`policy_sdk::PrefixTable`]).
//!
//! Per call, over the candidates:
//! 1. **Imbalance** (SGLang's rule, both at once): `max − min >
//!    balance_abs_threshold` and `max > balance_rel_threshold × min`, loads
//!    being the model servers' `waiting + running` when every candidate's node
//!    reports them, else the gateway's calls in flight. Then: least loaded.
//! 2. No prefix hashes (neither an OpenAI prompt nor an `affinity` hint):
//!    least loaded.
//! 3. Else the match of a node is the number of leading blocks of the call
//!    recorded for it or, when longer, that its node reports holding
//!    (`Candidate::prefix_matched`, WIT 1.2.0's `blocks.prefix-matched`: the
//!    agents report the blocks of the calls they served to every gateway, so
//!    with several gateways each sees the others' traffic too); when the
//!    best match ratio (`matched / blocks`) is
//!    above `cache_threshold` (strictly, as SGLang), route to the longest
//!    match (ties: lower load, then the smaller record); else least loaded.
//!
//! "Least loaded" breaks ties by the smaller record (SGLang's miss rule
//! routes to the smallest tree: the most free cache), then by the longer
//! match, then by a rotation drawn from `request.random`, so idle nodes share
//! new conversations. After choosing, the call's hashes are recorded for the
//! first node of the ranking (also in the imbalanced case, as SGLang does).
//!
//! Defaults are sgl-router's `CacheAwareConfig` defaults: `cache_threshold`
//! 0.5, `balance_abs_threshold` 32, `balance_rel_threshold` 1.1; each is
//! overridable per call by the hint of the same name. The record holds at
//! most [`policy_sdk::DEFAULT_MAX_ENTRIES`] hashes in all (LRU, max-min fair
//! between nodes) and forgets a node not seen among the candidates for
//! [`policy_sdk::FORGET_AFTER_MS`].
//!
//! Scores: the matched blocks of each candidate, or `−load` when routing to
//! the least loaded; the reason says which, e.g. `prefix match 12/14
//! blocks`, `imbalanced (40 vs 2 in flight): least loaded`, `no prefix:
//! least loaded`.
//!
//! The algorithm is [`CacheAware`], plain Rust unit-tested on the host; the
//! WebAssembly component glue is [`policy_sdk::export_policy!`], compiled for
//! `wasm32` only.

mod aware;
mod load;
mod settings;
#[cfg(test)]
mod tests;

pub use aware::CacheAware;
pub use load::Loads;
pub use settings::Settings;

/// The policy name the plugin reports through the `name` export.
pub const NAME: &str = "cache-aware";

policy_sdk::export_policy!(crate::CacheAware);
