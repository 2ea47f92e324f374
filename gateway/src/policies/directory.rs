//! The policies' `host.node-info` import: a node's id, region, labels and
//! GPUs (the numbers-only candidates come from the core's
//! [`switchyard_core::Candidate`]).

use std::sync::Arc;

use policy_host::NodeDirectory;
use policy_host::types::{Gpu, NodeInfo};

use crate::fleet::Registry;

/// Answers the policies' `host.node-info` import from the registry.
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
}
