//! The policies written in Python and JavaScript (`plugins/python/`,
//! `plugins/js/`), built by `make plugins-polyglot` into
//! `plugins/dist-polyglot/least-loaded-py.wasm` and `least-loaded-js.wasm` when their
//! toolchains install. A component that is absent is skipped as
//! `switchyard_testkit::skip_or_fail` decides: with a `SWITCHYARD-SKIPPED`
//! line, so a machine without the toolchains stays green, or as a failure
//! under `SWITCHYARD_REQUIRE_ALL=1`.
//!
//! They load on the engine's defaults (no bigger memory, no other imports)
//! and answer the same rankings as each other.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use switchyard_policy_host::types::{Candidate, Candidates, Decision, Outcome, Ranking, Request};
use switchyard_policy_host::{EngineConfig, NoNodes, Policy, PolicyEngine, PolicyError};

/// The polyglot plugins: each file stem in `plugins/dist-polyglot` is the name it reports.
const POLYGLOT: [&str; 2] = ["least-loaded-py", "least-loaded-js"];

/// How the components are built, for a test that finds one absent.
const POLYGLOT_HOW: &str = "`make plugins-polyglot` builds it (`make plugins` runs that) \
     once Python's componentize-py and npm's jco install";

/// The built component, or `None` when absent and the test may skip it
/// (`switchyard_testkit::skip_or_fail`).
fn built(name: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/dist-polyglot")
        .join(format!("{name}.wasm"));
    if path.is_file() {
        return Some(path);
    }
    switchyard_testkit::skip_or_fail(&path.display().to_string(), POLYGLOT_HOW);
    None
}

/// The default engine (its 16 MiB memory cap, its WASI granting nothing),
/// except deadlines long enough for a loaded machine (these tests check
/// answers, not deadlines) and compiled code cached across runs.
fn engine() -> Result<PolicyEngine, PolicyError> {
    PolicyEngine::new(EngineConfig {
        pick_deadline: std::time::Duration::from_secs(2),
        load_deadline: std::time::Duration::from_secs(10),
        cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("polyglot-plugins-cache")),
        ..EngineConfig::default()
    })
}

fn load(engine: &PolicyEngine, path: &Path) -> Result<Policy, PolicyError> {
    let start = Instant::now();
    let policy = engine.load(path, Arc::new(NoNodes))?;
    eprintln!(
        "{}: {} bytes, compiled and instantiated in {:?}",
        policy.name(),
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        start.elapsed()
    );
    Ok(policy)
}

fn request(random: u64) -> Request {
    Request {
        service: "llama".to_owned(),
        payload_bytes: 64,
        hints: vec![],
        now_ms: 1,
        random,
    }
}

/// Candidates with these (in-flight, max-concurrent) figures.
fn candidates(load: &[(u32, u32)]) -> Candidates {
    load.iter()
        .zip(0..)
        .map(|(&(in_flight, max_concurrent), node)| Candidate {
            node,
            in_flight,
            max_concurrent,
            node_in_flight: in_flight,
            cpu_pct: 10.0,
            mem_used_mib: 1024,
            mem_total_mib: 8192,
            gpu_count: 0,
            gpu_util_pct: 0.0,
            gpu_mem_free_mib: 0,
            gpu_mem_total_mib: 0,
            latency_ms: 0.0,
            latency_samples: 0,
            cost_per_hour: 1.0,
            model_load: None,
            prefix_matched: 0,
        })
        .collect()
}

fn order(ranking: Ranking) -> Vec<u32> {
    match ranking {
        Ranking::Order(order) => order,
        Ranking::Reject(reason) => panic!("unexpected reject: {reason}"),
    }
}

#[test]
fn polyglot_plugins_rank_least_loaded_first() -> Result<(), PolicyError> {
    let engine = engine()?;
    for stem in POLYGLOT {
        let Some(path) = built(stem) else { continue };
        // One load per component: each compiles for seconds.
        let policy = load(&engine, &path)?;
        assert_eq!(policy.name(), stem);
        assert!(policy.ranks(), "{stem} exports ranker");
        ranks_by_load(stem, &policy)?;
        breaks_ties_by_the_request_random(stem, &policy)?;
        assert_eq!(policy.traps_total(), 0, "{stem}");
    }
    Ok(())
}

fn ranks_by_load(stem: &str, policy: &Policy) -> Result<(), PolicyError> {
    // Load = in-flight / max-concurrent: 3/4, 1/8, 2/4, 0/2.
    let cands = candidates(&[(3, 4), (1, 8), (2, 4), (0, 2)]);
    assert_eq!(
        order(policy.rank(&request(0), &cands)?),
        [3, 1, 2, 0],
        "{stem}"
    );
    match policy.pick(&request(0), &cands)? {
        Decision::Route(i) => assert_eq!(i, 3, "{stem}"),
        Decision::Reject(reason) => panic!("{stem} rejected: {reason}"),
    }
    policy.observe(&Outcome {
        service: "llama".to_owned(),
        node: 3,
        latency_ms: 2.5,
        ok: true,
        now_ms: 2,
    })
}

fn breaks_ties_by_the_request_random(stem: &str, policy: &Policy) -> Result<(), PolicyError> {
    // Four idle nodes and a busy one: the idle ones tie, in a rotation
    // that starts at random % n (skipping the busy one).
    let cands = candidates(&[(0, 4), (0, 4), (3, 4), (0, 4), (0, 4)]);
    let first = |random| -> Result<u32, PolicyError> {
        Ok(order(policy.rank(&request(random), &cands)?)[0])
    };
    assert_eq!(first(0)?, 0, "{stem}");
    assert_eq!(first(1)?, 1, "{stem}");
    assert_eq!(first(2)?, 3, "{stem}");
    assert_eq!(first(3)?, 3, "{stem}");
    assert_eq!(first(4)?, 4, "{stem}");
    // u64 randoms past 2^53 (a JavaScript number's exact range).
    assert_eq!(first(u64::MAX)?, 0, "{stem}: u64::MAX % 5 == 0");
    assert_eq!(
        order(policy.rank(&request(6), &cands)?),
        [1, 3, 4, 0, 2],
        "{stem}"
    );
    // One candidate, and many.
    assert_eq!(
        order(policy.rank(&request(9), &candidates(&[(0, 1)]))?),
        [0]
    );
    let many: Vec<(u32, u32)> = (0..300).map(|i| (i % 7, 8)).collect();
    let ranked = order(policy.rank(&request(5), &candidates(&many))?);
    assert_eq!(ranked.len(), 300, "{stem}");
    assert_eq!(ranked[0] % 7, 0, "{stem}: an idle node first");
    Ok(())
}
