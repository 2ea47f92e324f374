//! Switchyard policy plugin `latency`.
//!
//! Linkerd2-proxy's load balancer (tower's `PeakEwma` + power of two
//! choices): each (service, node) keeps a peak-EWMA latency estimate
//! ([`policy_sdk::PeakEwma`]), fed by `observe`; a pick draws two distinct
//! candidates at random and routes to the lower cost
//!
//! `cost = rtt_estimate_ms × (in_flight + 1)`
//!
//! ties to the lower index (with two candidates both are compared). Defaults
//! as in linkerd2-proxy: a node with no samples is assumed at 30 ms, decay
//! window τ = 10 s. The estimate read at pick time decays towards 0 with
//! `exp(-Δt/τ)` since the node's last sample, so a node avoided for being slow
//! is probed again after a while and a recovered node wins its traffic back.
//!
//! A failed call counts as a sample of `max(latency, 5 × estimate, 1000 ms)`
//! ([`policy_sdk::failure_penalty_ms`]), so a node that fails fast does not
//! attract traffic. Nodes with no sample for 10 minutes are forgotten (back
//! to the 30 ms default), which bounds the state. Hints are ignored.
//!
//! A ranking puts the pick first, then the others by cost. A scored answer
//! is that ranking with each candidate's score `-cost` (ms) and a reason
//! such as `lower p-ewma cost of two drawn: 12.3 ms, 0 in flight (vs 30.0
//! ms, 2 in flight)`.
//!
//! The algorithm is [`Latency`], plain Rust unit-tested on the host; the
//! WebAssembly component glue is [`policy_sdk::export_policy!`], compiled for
//! `wasm32` only.

mod peak;

pub use peak::Latency;

/// The policy name the plugin reports through the `name` export.
pub const NAME: &str = "latency";

policy_sdk::export_policy!(crate::Latency);
