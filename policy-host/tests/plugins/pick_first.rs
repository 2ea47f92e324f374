//! `plugins/dist/pick-first.wasm` through the host: it orders the
//! candidates by the node ids `host.node-info` answers, not by key or by
//! position, and falls back to the next when the first is full or gone.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use switchyard_policy_host::types::{
    Candidate, Candidates, Context, NodeInfo, NodeKey, Request, Scored, Verdict,
};
use switchyard_policy_host::{EngineConfig, NodeDirectory, Policy, PolicyEngine, PolicyError};

/// Keys 0, 1, 2 are the nodes `node-c`, `node-a`, `node-b`.
struct Ids;

impl NodeDirectory for Ids {
    fn node_info(&self, key: NodeKey) -> Option<NodeInfo> {
        let id = ["node-c", "node-a", "node-b"].get(key as usize)?;
        Some(NodeInfo {
            id: (*id).to_owned(),
            region: String::new(),
            labels: Vec::new(),
            gpus: Vec::new(),
        })
    }
}

fn pick_first() -> Result<Policy, PolicyError> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist/pick-first.wasm");
    assert!(
        path.is_file(),
        "{} is missing: run `make plugins` first",
        path.display()
    );
    let engine = PolicyEngine::new(EngineConfig {
        pick_deadline: Duration::from_secs(2),
        cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("pick-first-cache")),
        ..EngineConfig::default()
    })?;
    engine.load(&path, Arc::new(Ids))
}

/// Candidates of 2 slots each: (node key, calls in flight).
fn candidates(rows: &[(NodeKey, u32)]) -> Candidates {
    rows.iter()
        .map(|&(node, in_flight)| Candidate {
            node,
            in_flight,
            max_concurrent: 2,
            ..Candidate::default()
        })
        .collect()
}

fn score(policy: &Policy, rows: &[(NodeKey, u32)]) -> Result<Scored, PolicyError> {
    let request = Request {
        service: "svc".to_owned(),
        payload_bytes: 1,
        hints: Vec::new(),
        now_ms: 1,
        random: 7,
    };
    let c = candidates(rows);
    match policy.score(&request, &c, &Context::empty())? {
        Verdict::Scored(s) => Ok(s),
        Verdict::Reject(reason) => panic!("unexpected reject: {reason}"),
    }
}

#[test]
fn the_component_orders_by_node_id_from_the_host() -> Result<(), PolicyError> {
    let policy = pick_first()?;
    assert_eq!(policy.name(), "pick-first");
    assert!(policy.ranks() && policy.scores());
    let s = score(&policy, &[(0, 0), (1, 1), (2, 0)])?;
    assert_eq!(s.order, [1, 2, 0], "node-a, node-b, node-c: {s:?}");
    assert_eq!(s.scores, [-2.0, 0.0, -1.0]);
    assert_eq!(s.reason, "first by node id: node-a (1/2 in flight)");
    // node-a full (no longer a candidate): node-b; node-a gone too: the same.
    let s = score(&policy, &[(0, 0), (2, 1)])?;
    assert_eq!(s.order, [1, 0], "{s:?}");
    assert_eq!(s.reason, "first by node id: node-b (1/2 in flight)");
    // Only node-c left.
    let s = score(&policy, &[(0, 1)])?;
    assert_eq!(s.order, [0]);
    assert_eq!(policy.traps_total(), 0);
    Ok(())
}
