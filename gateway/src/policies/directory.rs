//! The policies' `host.node-info` import: a node's id, region, labels and
//! GPUs (the numbers-only candidates come from the core's
//! [`switchyard_core::Candidate`]); and their `blocks.prefix-matched`
//! import: the leading prefix blocks of a call a node reports holding.

use std::sync::Arc;

use policy_host::NodeDirectory;
use policy_host::types::{Gpu, NodeInfo};

use crate::fleet::Registry;

/// Answers the policies' `host.node-info` and `blocks.prefix-matched`
/// imports from the registry.
pub(crate) struct Directory(pub(crate) Arc<Registry>);

impl NodeDirectory for Directory {
    fn node_info(&self, key: u32) -> Option<NodeInfo> {
        let node = self.0.by_key(key)?;
        let gpus = node
            .stats()
            .map(|s| s.gpus.iter().map(Gpu::from).collect())
            .unwrap_or_default();
        Some(NodeInfo {
            id: node.spec.id.clone(),
            region: node.spec.region.clone(),
            labels: node.spec.labels.clone(),
            gpus,
        })
    }

    fn prefix_matched(&self, key: u32, service: &str, prefix_hashes: &[u64]) -> u32 {
        self.0
            .by_key(key)
            .map_or(0, |node| node.blocks.matched(service, prefix_hashes))
    }
}
