//! Switchyard policy plugin `pick-first`.
//!
//! gRPC's `pick_first` over the gateway's candidates: the nodes in one
//! stable order, by node id (byte order of the id the agent registered
//! with, the same on every gateway), and every call to the first node in
//! that order that can take it. The candidates are the nodes with a free
//! slot for the service, so a call goes to the first node until it is
//! full (its `max_concurrent` calls in flight), then to the next, and back
//! to the first as soon as it frees a slot; when the first node leaves the
//! fleet, the next takes its place. A row the gateway marks full
//! (`in_flight >= max_concurrent`) goes after every row with room.
//!
//! A ranking (and a scored answer) is that whole order, so a call that
//! loses the first node's last slot to another call meanwhile takes the
//! next one. Scores: `-position` (0 for the first, -1 for the next, ...);
//! the reason, e.g. `first by node id: node-a (2/4 in flight)`. Node ids
//! come from the host's `node-info` once per node (a node key never
//! changes its node id); a node the host does not know goes last, by key.
//! Ignores hints and `observe`.
//!
//! The algorithm is [`PickFirst`], plain Rust unit-tested on the host; the
//! WebAssembly component glue is [`policy_sdk::export_policy!`], compiled
//! for `wasm32` only.

mod first;

pub use first::{MAX_REMEMBERED, PickFirst};

/// The policy name the plugin reports through the `name` export.
pub const NAME: &str = "pick-first";

policy_sdk::export_policy!(crate::PickFirst);
