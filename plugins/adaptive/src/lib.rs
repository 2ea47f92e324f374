//! Switchyard policy plugin `adaptive`.
//!
//! Online learning per (service, node) with **Discounted Thompson Sampling**
//! for non-stationary bandits (Raj & Kalyani, "Taming Non-stationary Bandits:
//! A Bayesian Approach", 2017, arXiv:1707.09727), with Gaussian arms:
//!
//! - Each node is an arm per service, with a Gaussian posterior over its
//!   log-latency `x = ln(latency_ms)`, kept as discounted statistics: weight
//!   `n`, mean and squared deviations (the discounted sums `n`, `Σx`, `Σx²` in
//!   numerically stable form). Each `observe` of a service first multiplies
//!   the statistics of every arm of that service by γ = 0.95, then adds the
//!   sample to its arm with weight 1: evidence fades with the service's
//!   traffic (an arm's weight tends to 1/(1-γ) = 20), so a node that was slow
//!   and recovers sees its posterior widen and is explored again.
//! - A pick samples each candidate's mean log-latency from its posterior,
//!   `N(mean, s²)` with `s = max(σ / sqrt(n + 1), 0.02)` and `σ²` the arm's
//!   variance shrunk towards the prior (`(n·var + 1·1²) / (n + 1)`, prior std
//!   1 in log units: a factor of e), by Box–Muller from the pick's SplitMix64
//!   RNG; adds the objective's log factor; and routes to the lowest, ties to
//!   the lower index. Arms with no data (never observed, or forgotten) are
//!   tried first, one at random among them (optimism).
//! - Objective (hint `optimize`): `latency` (default) minimises the latency;
//!   `throughput` minimises `latency × (in_flight + 1) / max_concurrent`
//!   (prefer spare capacity); `cost` minimises `latency × cost_per_hour`
//!   (cost floored at 1e-9). The factors come from the candidate at pick
//!   time, so one posterior per arm serves all three objectives. Any other
//!   value rejects the call: `bad hint optimize="fast": expected latency,
//!   throughput or cost`.
//!
//! A ranking puts the pick first, then the others by their score. A scored
//! answer gives each arm's value as its score, minus the objective in ms:
//! of the draw the pick made when every arm has data (reason `thompson:
//! sampled 12.3 ms (mean 11.8 ms), lowest of 4`), else 0 for an arm with no
//! data and of the posterior mean for the others (reason `thompson:
//! exploring an untried node, 1 of 2 untried`).
//!
//! Working in log-latency makes the prior scale-free (ms and cost objectives
//! alike) and suits latencies, which are multiplicative and skewed. A failed
//! call counts as `max(latency, 5 × estimate, 1000 ms)`
//! ([`policy_sdk::failure_penalty_ms`], estimate = the arm's geometric mean).
//! Arms not observed for 10 minutes are forgotten, which bounds the state.
//!
//! The algorithm is [`Adaptive`], plain Rust unit-tested on the host; the
//! WebAssembly component glue is [`policy_sdk::export_policy!`], compiled for
//! `wasm32` only.

mod arm;
mod thompson;

pub use arm::{Arm, DISCOUNT, PRIOR_STD, STD_FLOOR};
pub use thompson::{Adaptive, Objective};

/// The policy name the plugin reports through the `name` export.
pub const NAME: &str = "adaptive";

policy_sdk::export_policy!(crate::Adaptive);
