//! Plain mirrors of the records of `wit/policy.wit`: same fields, same units.
//!
//! The component glue ([`crate::export_policy!`]) converts the generated
//! records into these; tests and native benches build them directly.

use crate::{Hints, SplitMix64};

/// The gateway's handle for a node (WIT `node-key`): stable for a node id
/// while the gateway runs, never reused for another node id.
pub type NodeKey = u32;

/// One node that hosts the service and has a free slot for the call: the
/// i-th element of every column of the WIT `candidates` record. Figures come
/// from the node's latest stats report and from the gateway's own counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Candidate {
    /// Which node this is.
    pub node: NodeKey,
    /// Calls of this service in flight on the node.
    pub in_flight: u32,
    /// The most calls of this service the node takes at once (> `in_flight`).
    pub max_concurrent: u32,
    /// Calls of every service in flight on the node.
    pub node_in_flight: u32,
    /// CPU utilisation of the whole node, 0..=100 %.
    pub cpu_pct: f32,
    /// Memory used on the node, MiB.
    pub mem_used_mib: u64,
    /// Memory installed on the node, MiB.
    pub mem_total_mib: u64,
    /// Number of GPUs the node reports (0 where NVML is absent).
    pub gpu_count: u32,
    /// Mean GPU utilisation over the node's GPUs, 0..=100 % (0 with no GPU).
    pub gpu_util_pct: f32,
    /// The largest free memory on any single GPU of the node, MiB.
    pub gpu_mem_free_mib: u64,
    /// GPU memory installed, summed over the node's GPUs, MiB.
    pub gpu_mem_total_mib: u64,
    /// The gateway's EWMA (weight 0.3) of this service's latency on the node,
    /// ms; 0 when `latency_samples` is 0.
    pub latency_ms: f32,
    /// How many calls fed `latency_ms` (saturating); 0 = no estimate yet.
    pub latency_samples: u32,
    /// What the node costs to run, in the operator's currency per hour.
    pub cost_per_hour: f32,
}

impl Candidate {
    /// This service's load on the node: `in_flight / max_concurrent`, in
    /// 0..1 (infinite when `max_concurrent` is 0, which the gateway never
    /// sends).
    #[must_use]
    pub fn load(&self) -> f64 {
        if self.max_concurrent == 0 {
            return f64::INFINITY;
        }
        f64::from(self.in_flight) / f64::from(self.max_concurrent)
    }

    /// Memory free on the node, MiB (`mem_total_mib - mem_used_mib`, never
    /// below 0).
    #[must_use]
    pub fn mem_free_mib(&self) -> u64 {
        self.mem_total_mib.saturating_sub(self.mem_used_mib)
    }
}

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
