//! Switchyard policy plugin `random`.
//!
//! Routes each call to a candidate drawn uniformly at random, from the
//! request's `random` field (so a pick is a pure function of the request).
//! It is the baseline "one choice" of Mitzenmacher's supermarket model ("The
//! Power of Two Choices in Randomized Load Balancing", IEEE TPDS 2001): with
//! one FIFO server per node and Poisson arrivals, each node is an M/M/1
//! queue, against which `least-request` (two choices) is measured by
//! `switchyard-sim`. Stateless; ignores hints and `observe`.
//!
//! A ranking puts the draw first, then the others in index order; a scored
//! answer gives the drawn candidate 1, the others 0, and the reason
//! `random: drew index 3 of 8 (uniform)`.
//!
//! The algorithm is [`Random`], plain Rust unit-tested on the host; the
//! WebAssembly component glue is [`policy_sdk::export_policy!`], compiled for
//! `wasm32` only.

mod uniform;

pub use uniform::Random;

/// The policy name the plugin reports through the `name` export.
pub const NAME: &str = "random";

policy_sdk::export_policy!(crate::Random);
