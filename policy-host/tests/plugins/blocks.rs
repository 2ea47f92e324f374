//! Contract 1.2.0's `blocks` import: a plugin built on it sees the prefix
//! blocks the nodes report holding (`NodeDirectory::prefix_matched`); a
//! plugin compiled against 1.1.0 (`fixtures/wit-1.1.0/`) loads and scores
//! unchanged, without them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use switchyard_policy_host::types::{
    Candidate, Candidates, Context, NodeInfo, NodeKey, Request, Scored, Verdict,
};
use switchyard_policy_host::{
    EngineConfig, NoNodes, NodeDirectory, Policy, PolicyEngine, PolicyError,
};

/// Nodes reporting the blocks they hold, for one service.
struct Reported {
    service: &'static str,
    blocks: HashMap<NodeKey, Vec<u64>>,
}

impl NodeDirectory for Reported {
    fn node_info(&self, _key: NodeKey) -> Option<NodeInfo> {
        None
    }

    fn prefix_matched(&self, key: NodeKey, service: &str, prefix_hashes: &[u64]) -> u32 {
        let Some(held) = self.blocks.get(&key).filter(|_| service == self.service) else {
            return 0;
        };
        let k = prefix_hashes
            .iter()
            .take_while(|h| held.contains(h))
            .count();
        u32::try_from(k).unwrap_or(u32::MAX)
    }
}

fn engine() -> Result<PolicyEngine, PolicyError> {
    PolicyEngine::new(EngineConfig {
        pick_deadline: Duration::from_secs(2),
        cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("blocks-cache")),
        ..EngineConfig::default()
    })
}

/// `plugins/dist/cache-aware.wasm` (built by `make plugins`, against the
/// newest contract) or the one compiled against 1.1.0.
fn cache_aware(fixture_1_1_0: bool) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = if fixture_1_1_0 {
        root.join("tests/plugins/fixtures/wit-1.1.0/cache-aware.wasm")
    } else {
        root.join("../plugins/dist/cache-aware.wasm")
    };
    assert!(
        path.is_file(),
        "{} is missing: run `make plugins` first",
        path.display()
    );
    path
}

fn request() -> Request {
    Request {
        service: "llm".to_owned(),
        payload_bytes: 64,
        hints: Vec::new(),
        now_ms: 1,
        random: 0,
    }
}

/// Three idle nodes but node 2, which runs one call.
fn candidates() -> Candidates {
    (0..3)
        .map(|node| Candidate {
            node,
            in_flight: u32::from(node == 2),
            max_concurrent: 8,
            ..Candidate::default()
        })
        .collect()
}

fn score(policy: &Policy, prefix: &[u64]) -> Result<Scored, PolicyError> {
    match policy.score(&request(), &candidates(), &Context::new(prefix, [None; 3]))? {
        Verdict::Scored(scored) => Ok(scored),
        Verdict::Reject(reason) => panic!("unexpected reject: {reason}"),
    }
}

/// Node 2 holds the first 3 of the call's 4 blocks.
fn node_2_holds_the_prefix() -> Arc<dyn NodeDirectory> {
    Arc::new(Reported {
        service: "llm",
        blocks: HashMap::from([(2, vec![11, 22, 33]), (1, vec![22, 33, 44])]),
    })
}

#[test]
fn a_block_aware_plugin_routes_to_the_node_that_reports_the_blocks() -> Result<(), PolicyError> {
    let engine = engine()?;
    let policy = engine.load(&cache_aware(false), node_2_holds_the_prefix())?;
    assert!(policy.scores());
    // Its own record is empty; node 2's report wins over its higher load
    // (node 1 holds later blocks but not the first: no match).
    let s = score(&policy, &[11, 22, 33, 44])?;
    assert_eq!(s.order[0], 2, "{s:?}");
    assert_eq!(s.scores, [0.0, 0.0, 3.0]);
    assert_eq!(s.reason, "prefix match 3/4 blocks");
    // Another service's blocks are not this one's; a call without prefix
    // hashes asks nothing.
    let other = Request {
        service: "embed".to_owned(),
        ..request()
    };
    let Verdict::Scored(s) = policy.score(
        &other,
        &candidates(),
        &Context::new(&[11, 22, 33], [None; 3]),
    )?
    else {
        panic!("rejected");
    };
    assert_ne!(s.order[0], 2, "{s:?}");
    let s = score(&policy, &[])?;
    assert_eq!(s.reason, "no prefix: least loaded");

    // Without reports (a host knowing no node's blocks) the least loaded
    // node gets the call.
    let blind = engine.load(&cache_aware(false), Arc::new(NoNodes))?;
    let s = score(&blind, &[11, 22, 33, 44])?;
    assert_ne!(s.order[0], 2, "{s:?}");
    assert!(s.reason.ends_with("least loaded"), "{s:?}");
    Ok(())
}

#[test]
fn a_plugin_of_contract_1_1_0_loads_and_scores_without_the_reports() -> Result<(), PolicyError> {
    let engine = engine()?;
    let policy = engine.load(&cache_aware(true), node_2_holds_the_prefix())?;
    assert_eq!(policy.name(), "cache-aware");
    assert!(policy.ranks() && policy.scores());
    // It cannot ask for the reports: the least loaded node, as before.
    let s = score(&policy, &[11, 22, 33, 44])?;
    assert_ne!(s.order[0], 2, "{s:?}");
    assert_eq!(
        s.reason,
        "prefix match 0/4 blocks, not above 50%: least loaded"
    );
    // Its own record still works: the node it picked matches now.
    let first = s.order[0];
    let s = score(&policy, &[11, 22, 33, 44])?;
    assert_eq!(s.order[0], first, "{s:?}");
    assert_eq!(s.reason, "prefix match 4/4 blocks");
    assert_eq!(policy.traps_total(), 0);
    Ok(())
}
