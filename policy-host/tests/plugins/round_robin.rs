//! The real `round-robin` plugin, built by `make plugins`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use switchyard_policy_host::types::{Candidate, Candidates, Decision, Outcome, Request};
use switchyard_policy_host::{EngineConfig, NoNodes, PolicyEngine, PolicyError, load_dir};

fn plugin_path() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist/round-robin.wasm");
    assert!(
        path.is_file(),
        "{} is missing: run `make plugins` first",
        path.display()
    );
    path
}

/// The default engine with a pick deadline long enough for a loaded
/// machine: these tests check what the plugin answers, not deadlines (the
/// epoch ticker counts wall time, so a descheduled test thread could miss
/// the default 5 ms; `sandbox_plugins.rs` tests the deadlines).
fn patient() -> EngineConfig {
    EngineConfig {
        pick_deadline: std::time::Duration::from_secs(2),
        ..EngineConfig::default()
    }
}

fn request(service: &str) -> Request {
    Request {
        service: service.to_owned(),
        payload_bytes: 64,
        hints: vec![("optimize".to_owned(), "latency".to_owned())],
        now_ms: 1,
        random: 42,
    }
}

fn candidates(n: u32) -> Candidates {
    (0..n)
        .map(|node| Candidate {
            node,
            in_flight: 0,
            max_concurrent: 4,
            node_in_flight: 0,
            cpu_pct: 10.0,
            mem_used_mib: 1024,
            mem_total_mib: 8192,
            gpu_count: 1,
            gpu_util_pct: 5.0,
            gpu_mem_free_mib: 70_000,
            gpu_mem_total_mib: 80_000,
            latency_ms: 0.0,
            latency_samples: 0,
            cost_per_hour: 1.5,
            model_load: None,
            prefix_matched: 0,
        })
        .collect()
}

fn route(decision: Decision) -> u32 {
    match decision {
        Decision::Route(i) => i,
        Decision::Reject(reason) => panic!("unexpected reject: {reason}"),
    }
}

#[test]
fn loads_and_cycles() -> Result<(), PolicyError> {
    let engine = PolicyEngine::new(patient())?;
    let path = plugin_path();
    let policy = engine.load(&path, Arc::new(NoNodes))?;
    assert_eq!(policy.name(), "round-robin");
    assert_eq!(policy.path(), Some(path.as_path()));
    assert_eq!(policy.content_hash().len(), 64);

    let cands = candidates(3);
    let picks = (0..7)
        .map(|_| policy.pick(&request("llama"), &cands).map(route))
        .collect::<Result<Vec<_>, _>>()?;
    assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
    assert_eq!(policy.picks_total(), 7);
    assert_eq!(policy.traps_total(), 0);

    policy.observe(&Outcome {
        service: "llama".to_owned(),
        node: 0,
        latency_ms: 12.5,
        ok: true,
        now_ms: 2,
    })?;
    Ok(())
}

#[test]
fn services_have_independent_counters() -> Result<(), PolicyError> {
    let engine = PolicyEngine::new(patient())?;
    let policy = engine.load(&plugin_path(), Arc::new(NoNodes))?;
    let cands = candidates(3);
    let pick = |svc: &str| policy.pick(&request(svc), &cands).map(route);
    assert_eq!(pick("a")?, 0);
    assert_eq!(pick("a")?, 1);
    assert_eq!(pick("b")?, 0);
    assert_eq!(pick("a")?, 2);
    assert_eq!(pick("b")?, 1);
    Ok(())
}

#[test]
fn routes_stay_in_bounds_as_candidates_change() -> Result<(), PolicyError> {
    let engine = PolicyEngine::new(patient())?;
    let policy = engine.load(&plugin_path(), Arc::new(NoNodes))?;
    for n in [1, 5, 2, 300, 3, 1, 7] {
        let cands = candidates(n);
        let i = route(policy.pick(&request("svc"), &cands)?);
        assert!(i < n, "route {i} out of {n}");
    }
    Ok(())
}

#[test]
fn concurrent_picks_share_one_counter() -> Result<(), PolicyError> {
    // Four threads on a shared (2-core CI) machine: a descheduled thread must
    // not turn a pick into a deadline trap; the 5 ms default is tested in
    // the hostile suites.
    let engine = PolicyEngine::new(EngineConfig {
        pick_deadline: std::time::Duration::from_millis(500),
        ..EngineConfig::default()
    })?;
    let policy = engine.load(&plugin_path(), Arc::new(NoNodes))?;
    let cands = candidates(4);
    let mut hits = [0u32; 4];
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    (0..100)
                        .map(|_| policy.pick(&request("svc"), &cands).map(route))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        for worker in workers {
            let picks = worker.join().expect("worker panicked")?;
            for i in picks {
                hits[i as usize] += 1;
            }
        }
        Ok::<_, PolicyError>(())
    })?;
    assert_eq!(hits, [100; 4]);
    Ok(())
}

#[test]
fn policy_outlives_engine() -> Result<(), PolicyError> {
    let engine = PolicyEngine::new(patient())?;
    let policy = engine.load(&plugin_path(), Arc::new(NoNodes))?;
    drop(engine);
    assert_eq!(route(policy.pick(&request("svc"), &candidates(2))?), 0);
    Ok(())
}

#[test]
fn load_dir_reports_each_file_sorted() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    std::fs::copy(plugin_path(), dir.path().join("b-round-robin.wasm"))?;
    std::fs::write(dir.path().join("a-junk.wasm"), b"not wasm")?;
    std::fs::write(dir.path().join("notes.txt"), b"ignored")?;
    let engine = PolicyEngine::new(patient())?;
    let loaded = load_dir(&engine, dir.path(), Arc::new(NoNodes));
    assert_eq!(loaded.len(), 2);
    assert!(loaded[0].0.ends_with("a-junk.wasm"));
    assert!(matches!(loaded[0].1, Err(PolicyError::Compile { .. })));
    assert!(loaded[1].0.ends_with("b-round-robin.wasm"));
    assert_eq!(
        loaded[1].1.as_ref().map(|p| p.name()).ok(),
        Some("round-robin")
    );

    let missing = load_dir(&engine, &dir.path().join("nope"), Arc::new(NoNodes));
    assert!(matches!(missing[..], [(_, Err(PolicyError::Io(_)))]));
    Ok(())
}

#[test]
fn policy_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<switchyard_policy_host::Policy>();
    check::<PolicyEngine>();
}

#[test]
fn cache_dir_stores_compiled_code() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let engine = PolicyEngine::new(EngineConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..patient()
    })?;
    let policy = engine.load(&plugin_path(), Arc::new(NoNodes))?;
    assert_eq!(policy.name(), "round-robin");
    let cached = walk(dir.path())?;
    assert!(cached > 0, "no file in the cache directory");
    Ok(())
}

fn walk(dir: &Path) -> std::io::Result<usize> {
    let mut files = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        files += if path.is_dir() { walk(&path)? } else { 1 };
    }
    Ok(files)
}

/// The real `least-request` plugin exports `ranker`: its ranking starts with
/// its pick and names every candidate once.
#[test]
fn a_plugin_with_a_ranker_ranks_every_candidate() -> Result<(), PolicyError> {
    use switchyard_policy_host::types::Ranking;
    let engine = PolicyEngine::new(patient())?;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist/least-request.wasm");
    let policy = engine.load(&path, Arc::new(NoNodes))?;
    assert!(policy.ranks());
    let mut columns = candidates(4);
    columns.in_flight = vec![3, 0, 2, 1];
    let first = route(policy.pick(&request("svc"), &columns)?);
    match policy.rank(&request("svc"), &columns)? {
        Ranking::Order(order) => {
            assert_eq!(order[0], first, "the same draw picks the same node");
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, vec![0, 1, 2, 3]);
        }
        Ranking::Reject(reason) => panic!("unexpected reject: {reason}"),
    }
    Ok(())
}
