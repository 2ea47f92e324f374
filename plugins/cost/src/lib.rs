//! Switchyard policy plugin `cost`.
//!
//! Routes each call to the node with the lowest expected cost per call,
//! within the caller's limits (after EasyRemote's cost-aware strategy, with
//! real figures):
//!
//! - expected duration, ms: the gateway's latency estimate for the service on
//!   the node (`candidate.latency_ms`) when it has samples; else this plugin's
//!   own EWMA (weight 0.3) of the latencies `observe` reported for the
//!   (service, node) in the last 10 minutes (a failed call counts as
//!   `max(latency, 5 × estimate, 1000 ms)`); else 1000 ms;
//! - expected cost = `cost_per_hour × duration_ms / 3 600 000`, in the
//!   operator's currency (the one of `cost_per_hour`).
//!
//! Hints (both optional, numbers `>= 0`):
//! - `max_latency_ms`: only nodes whose expected duration is at most this;
//! - `max_cost`: only nodes whose expected cost is at most this.
//!
//! Limits allow a relative slack of 1e-6 (the inputs are `f32`). The cheapest
//! qualifying node wins; ties go to the lower expected latency, then the lower
//! index. When none qualifies the call is rejected, naming the limit and the
//! best figure available (node named by its id):
//!
//! - `no node meets max_latency_ms=50: fastest expected latency is 120 ms (node gpu-a)`
//! - `no node meets max_cost=0.0001: cheapest expected cost is 0.00025 (node gpu-b)`
//! - `no node meets max_cost=0.0001 with max_latency_ms=50: cheapest expected
//!   cost among nodes meeting max_latency_ms is 0.00025 (node gpu-b)`
//!
//! A malformed limit rejects the call: `bad hint max_cost="abc": expected a
//! number >= 0`.
//!
//! A ranking names the qualifying nodes, the pick first, then by expected
//! cost, expected latency and index. A scored answer is that ranking with
//! each candidate's score `-expected cost per call` (the lowest finite
//! `f32`, `policy_sdk::EXCLUDED`, outside the limits) and a reason such as `cheapest expected 0.000111 per call (0.4/h
//! × 1000 ms) of 3 fitting`.
//!
//! The algorithm is [`Cost`], plain Rust unit-tested on the host; the
//! WebAssembly component glue is [`policy_sdk::export_policy!`], compiled for
//! `wasm32` only.

mod cheapest;

pub use cheapest::Cost;

/// The policy name the plugin reports through the `name` export.
pub const NAME: &str = "cost";

policy_sdk::export_policy!(crate::Cost);
