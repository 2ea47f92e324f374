//! Plain mirrors of the records of `wit/policy.wit`: same fields, same units.
//!
//! The component glue ([`crate::export_policy!`]) converts the generated
//! records into these; tests and native benches build them directly. The
//! candidate row is the one of `switchyard-policy-types`, shared with the
//! gateway.

use crate::{Hints, SplitMix64};

/// One node that hosts the service and has a free slot for the call (the
/// i-th element of every column of the WIT `candidates` record, with its
/// model-server load), and the gateway's handle for a node (WIT
/// `node-key`). Defined beside the WIT in `switchyard-policy-types`: the
/// gateway's scheduling core builds the very same rows.
pub use switchyard_policy_types::{Candidate, NodeKey};

/// What the policy is asked to place (WIT `request`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// The service called, e.g. `llama-3-8b`.
    pub service: String,
    /// Size of the call's payload, bytes.
    pub payload_bytes: u64,
    /// Caller-supplied key/value hints, e.g. (`max_cost`, `0.5`).
    pub hints: Vec<(String, String)>,
    /// Milliseconds since the gateway started (monotonic).
    pub now_ms: u64,
    /// A fresh random number for this pick (seeded in tests).
    pub random: u64,
}

impl Request {
    /// Typed access to the hints.
    #[must_use]
    pub fn hints(&self) -> Hints<'_> {
        Hints::new(&self.hints)
    }

    /// A deterministic RNG for this pick, seeded from `random`.
    #[must_use]
    pub fn rng(&self) -> SplitMix64 {
        SplitMix64::new(self.random)
    }
}

/// What happened to a call the policy placed (WIT `outcome`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// The service called.
    pub service: String,
    /// The node that served it.
    pub node: NodeKey,
    /// Time the node took, from dispatch to result, ms.
    pub latency_ms: f32,
    /// Whether the call succeeded.
    pub ok: bool,
    /// Milliseconds since the gateway started (monotonic).
    pub now_ms: u64,
}

/// One GPU of a node, as NVML reports it (WIT `gpu`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gpu {
    /// NVML device index.
    pub index: u32,
    /// Product name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Utilisation, 0..=100 %.
    pub util_pct: f32,
    /// Memory used, MiB.
    pub mem_used_mib: u64,
    /// Memory installed, MiB.
    pub mem_total_mib: u64,
    /// Temperature, °C.
    pub temperature_c: f32,
    /// Power draw, W.
    pub power_w: f32,
}

/// The slow-changing facts about a node (WIT `node-info`, from the host's
/// `node-info` import).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeFacts {
    /// The node id the agent registered with.
    pub id: String,
    /// Region, e.g. `eu-west`; empty when unset.
    pub region: String,
    /// Labels the agent declared, e.g. (`tier`, `premium`).
    pub labels: Vec<(String, String)>,
    /// Per-GPU detail from the latest stats report.
    pub gpus: Vec<Gpu>,
}

impl NodeFacts {
    /// The value of label `key` (the first one when declared twice).
    #[must_use]
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A `facts` source that knows no node: for policies and tests that need none.
#[must_use]
pub fn no_facts(_node: NodeKey) -> Option<NodeFacts> {
    None
}

/// Converts a candidate index into the WIT `route` index.
///
/// # Errors
/// When the index does not fit a `u32` (more than `u32::MAX` candidates).
pub fn index_u32(index: usize) -> Result<u32, String> {
    u32::try_from(index).map_err(|_| format!("candidate index {index} does not fit u32"))
}
