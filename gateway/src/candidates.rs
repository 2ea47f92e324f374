//! What policies see of the fleet: the numbers-only candidate record per
//! node (built for every pick) and the `host.node-info` import.

use std::sync::Arc;

use policy_host::NodeDirectory;
use policy_host::types::{Candidate, Gpu, NodeInfo};

use crate::registry::{Node, Registry};

/// The policy's numbers-only view of a node for one service.
pub(crate) fn candidate(node: &Node, service: &str) -> Candidate {
    let (in_flight, max_concurrent, latency) = node
        .services
        .get(service)
        .map(|s| (s.in_flight(), s.max_concurrent, s.latency()))
        .unwrap_or_default();
    let mut c = Candidate {
        node: node.key,
        in_flight,
        max_concurrent,
        node_in_flight: node.in_flight_total(),
        cpu_pct: 0.0,
        mem_used_mib: 0,
        mem_total_mib: 0,
        gpu_count: 0,
        gpu_util_pct: 0.0,
        gpu_mem_free_mib: 0,
        gpu_mem_total_mib: 0,
        latency_ms: latency.value_ms,
        latency_samples: latency.samples,
        cost_per_hour: node.spec.cost_per_hour,
    };
    node.with_stats(|stats| {
        let Some(s) = stats else { return };
        c.cpu_pct = s.cpu_pct;
        c.mem_used_mib = s.mem_used_mib;
        c.mem_total_mib = s.mem_total_mib;
        c.gpu_count = u32::try_from(s.gpus.len()).unwrap_or(u32::MAX);
        if !s.gpus.is_empty() {
            c.gpu_util_pct = s.gpus.iter().map(|g| g.util_pct).sum::<f32>() / s.gpus.len() as f32;
        }
        c.gpu_mem_free_mib = s
            .gpus
            .iter()
            .map(|g| g.mem_total_mib.saturating_sub(g.mem_used_mib))
            .max()
            .unwrap_or(0);
        c.gpu_mem_total_mib = s.gpus.iter().map(|g| g.mem_total_mib).sum();
    });
    c
}

/// Answers the policies' `host.node-info` import from the registry.
pub(crate) struct Directory(pub(crate) Arc<Registry>);

impl NodeDirectory for Directory {
    fn node_info(&self, key: u32) -> Option<NodeInfo> {
        let node = self.0.by_key(key)?;
        let gpus = node.with_stats(|s| {
            s.map(|s| {
                s.gpus
                    .iter()
                    .map(|g| Gpu {
                        index: g.index,
                        name: g.name.clone(),
                        util_pct: g.util_pct,
                        mem_used_mib: g.mem_used_mib,
                        mem_total_mib: g.mem_total_mib,
                        temperature_c: g.temperature_c,
                        power_w: g.power_w,
                    })
                    .collect()
            })
            .unwrap_or_default()
        });
        Some(NodeInfo {
            id: node.spec.id.clone(),
            region: node.spec.region.clone(),
            labels: node.spec.labels.clone(),
            gpus,
        })
    }
}
