//! Switchyard policy plugin `kv-aware`.
//!
//! A weighted scorer in the style of llm-d's inference scheduler (the
//! endpoint picker of the Gateway API inference extension): each candidate
//! gets
//!
//! `score = w_queue × queue + w_kv × kv + w_prefix × prefix`
//!
//! with each term in 0..=1, computed as llm-d's scorers do:
//! - `queue` (queue-scorer): `(max − q) / (max − min)` over the candidates'
//!   queue depths q, 1 for all when they are equal. q is the model server's
//!   waiting requests when every candidate's node reports them, else the
//!   gateway's calls of the service in flight (for every candidate: the two
//!   are not comparable).
//! - `kv` (kv-cache-utilization-scorer): `1 − kv_cache_pct / 100`; for a
//!   node that reports no model-server load, `1 − in_flight /
//!   max_concurrent`.
//! - `prefix` (prefix-cache-scorer): the leading blocks of the call's prefix
//!   hashes recorded for the node over the call's blocks (0 without hashes),
//!   from the plugin's own record of what each node was sent
//!   ([`policy_sdk::PrefixTable`], as llm-d's approximate prefix scorer keeps
//!   an LRU per server).
//!
//! Weights default to llm-d's default scheduling profile (queue 2, KV-cache
//! utilisation 2, prefix cache 3) and are overridable per call by the hints
//! `w_queue`, `w_kv`, `w_prefix` (numbers >= 0). The highest score wins;
//! ties are broken by a rotation drawn from `request.random` (llm-d's
//! max-score picker breaks them at random). The call's hashes are then
//! recorded for the winner. The reason gives the winner's terms, e.g.
//! `prefix 12/14 (0.86×3) + queue 0 waiting (1×2) + kv free 0.8×2 = 6.17`.
//!
//! The algorithm is [`KvAware`], plain Rust unit-tested on the host; the
//! WebAssembly component glue is [`policy_sdk::export_policy!`], compiled for
//! `wasm32` only.

mod kv;
mod terms;
#[cfg(test)]
mod tests;

pub use kv::KvAware;
pub use terms::{Terms, Weights};

/// The policy name the plugin reports through the `name` export.
pub const NAME: &str = "kv-aware";

policy_sdk::export_policy!(crate::KvAware);
