//! Switchyard policy plugin `round-robin`.
//!
//! Each service gets its own counter; a pick routes to
//! `candidates[counter % candidates.len()]` and advances the counter. A
//! ranking (and a scored answer) starts with that candidate and goes on in
//! turn (`counter + 1`, `counter + 2`, ... modulo the count); the score is 1
//! for the node in turn and 0 for the others, the reason
//! `round robin: next in turn (index 2 of 4)`. Ignores hints and `observe`.
//!
//! The algorithm lives in [`RoundRobin`], plain Rust unit-tested on the
//! host; the WebAssembly component glue is [`policy_sdk::export_policy!`],
//! compiled for `wasm32` only.

mod rr;

pub use rr::RoundRobin;

/// The policy name the plugin reports through the `name` export.
pub const NAME: &str = "round-robin";

policy_sdk::export_policy!(crate::RoundRobin);
