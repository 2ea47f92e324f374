//! Switchyard policy plugin `least-request`.
//!
//! Power of two choices on load (Mitzenmacher, "The Power of Two Choices in
//! Randomized Load Balancing", IEEE TPDS 2001; Envoy's `LEAST_REQUEST` with
//! `choice_count` 2): draw two distinct candidates at random and route to the
//! less loaded, load = `in_flight / max_concurrent` of the called service.
//! Ties go to fewer calls in flight, then to the lower index. With two
//! candidates both are compared, so the busier one is always avoided.
//! Stateless; ignores hints and `observe`.
//!
//! A ranking puts the pick first, then the others by load (then calls in
//! flight, then index). A scored answer is that ranking with each
//! candidate's score `-in_flight / max_concurrent` (0 is idle) and a reason
//! such as `least loaded of two drawn: 2/8 in flight (vs 5/8)`.
//!
//! The algorithm is [`LeastRequest`], plain Rust unit-tested on the host; the
//! WebAssembly component glue is [`policy_sdk::export_policy!`], compiled for
//! `wasm32` only.

mod least;

pub use least::LeastRequest;

/// The policy name the plugin reports through the `name` export.
pub const NAME: &str = "least-request";

policy_sdk::export_policy!(crate::LeastRequest);
