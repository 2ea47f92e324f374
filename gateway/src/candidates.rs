//! What policies see of the fleet: the numbers-only candidate columns (built
//! for every pick) and the `host.node-info` import.

use std::sync::Arc;

use policy_host::NodeDirectory;
use policy_host::types::{Candidates, Gpu, NodeInfo};

use crate::registry::{Node, Registry};

/// The policy's numbers-only view of `nodes` for one service, in column
/// layout: one pass over the nodes, pushing into the 14 columns (each sized
/// for `nodes.len()` up front), so every column has the same length.
pub(crate) fn candidates(nodes: &[Arc<Node>], service: &str) -> Candidates {
    let mut c = Candidates::with_capacity(nodes.len());
    for node in nodes {
        let (in_flight, max_concurrent, latency) = node
            .services
            .get(service)
            .map(|s| (s.in_flight(), s.max_concurrent, s.latency()))
            .unwrap_or_default();
        c.node.push(node.key);
        c.in_flight.push(in_flight);
        c.max_concurrent.push(max_concurrent);
        c.node_in_flight.push(node.in_flight_total());
        c.latency_ms.push(latency.value_ms);
        c.latency_samples.push(latency.samples);
        c.cost_per_hour.push(node.spec.cost_per_hour);
        node.with_stats(|stats| {
            let Some(s) = stats else {
                c.cpu_pct.push(0.0);
                c.mem_used_mib.push(0);
                c.mem_total_mib.push(0);
                c.gpu_count.push(0);
                c.gpu_util_pct.push(0.0);
                c.gpu_mem_free_mib.push(0);
                c.gpu_mem_total_mib.push(0);
                return;
            };
            c.cpu_pct.push(s.cpu_pct);
            c.mem_used_mib.push(s.mem_used_mib);
            c.mem_total_mib.push(s.mem_total_mib);
            c.gpu_count
                .push(u32::try_from(s.gpus.len()).unwrap_or(u32::MAX));
            c.gpu_util_pct.push(if s.gpus.is_empty() {
                0.0
            } else {
                s.gpus.iter().map(|g| g.util_pct).sum::<f32>() / s.gpus.len() as f32
            });
            c.gpu_mem_free_mib.push(
                s.gpus
                    .iter()
                    .map(|g| g.mem_total_mib.saturating_sub(g.mem_used_mib))
                    .max()
                    .unwrap_or(0),
            );
            c.gpu_mem_total_mib
                .push(s.gpus.iter().map(|g| g.mem_total_mib).sum());
        });
    }
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
