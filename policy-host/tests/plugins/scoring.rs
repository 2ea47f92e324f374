//! Contract 1.1.0's `score`: plugins compiled against 1.0.0 (the fixtures in
//! `fixtures/wit-1.0.0/`) load unchanged and are scored through `rank` or
//! `pick`; the rebuilt plugins of `plugins/dist/` export `scorer`; the
//! hostile `bad-scores` test plugin's broken answers are refused or
//! sanitised.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::{CallHead, ErrorKind};
use switchyard_core::{Balance, PickError, PickRequest};
use switchyard_policy_host::types::{
    Candidate, Candidates, Context, Decision, ModelLoad, Ranking, Request, Scored, Verdict,
};
use switchyard_policy_host::{
    EngineConfig, MAX_REASON_BYTES, NoNodes, PickFailure, Policy, PolicyBalance, PolicyEngine,
    PolicyError, TrapReason,
};

/// Plugins compiled against contract 1.0.0, kept as they were built:
/// `round-robin.wasm` exports only the `policy` world, `least-request.wasm`
/// also `ranker`.
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/plugins/fixtures/wit-1.0.0")
        .join(format!("{name}.wasm"))
}

/// A built plugin of `plugins/<dir>/`; fails the test when missing.
fn built(dir: &str, name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins")
        .join(dir)
        .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run `make plugins plugins-test-wasm` first",
        path.display()
    );
    path
}

/// A deadline long enough for a loaded machine (these tests check answers,
/// not deadlines), and a cache so each plugin compiles once.
fn engine() -> Result<PolicyEngine, PolicyError> {
    PolicyEngine::new(EngineConfig {
        pick_deadline: Duration::from_secs(2),
        cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("scoring-cache")),
        ..EngineConfig::default()
    })
}

fn load(engine: &PolicyEngine, path: &Path) -> Result<Policy, PolicyError> {
    engine.load(path, Arc::new(NoNodes))
}

fn request(hints: &[(&str, &str)]) -> Request {
    Request {
        service: "svc".to_owned(),
        payload_bytes: 64,
        hints: hints
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        now_ms: 1,
        random: 42,
    }
}

fn candidates(n: u32) -> Candidates {
    (0..n)
        .map(|node| Candidate {
            node,
            in_flight: node % 3,
            max_concurrent: 4,
            cpu_pct: 10.0,
            mem_used_mib: 1024,
            mem_total_mib: 8192,
            gpu_count: 1,
            gpu_util_pct: 5.0,
            gpu_mem_free_mib: 70_000,
            gpu_mem_total_mib: 80_000,
            latency_ms: 5.0 + node as f32,
            latency_samples: 10,
            cost_per_hour: 1.5,
            ..Candidate::default()
        })
        .collect()
}

/// A model server's load: `waiting` requests, one running, `kv` % of its
/// KV cache used.
fn model_load(waiting: u32, kv: f32) -> ModelLoad {
    ModelLoad {
        waiting,
        running: 1,
        kv_cache_pct: kv,
    }
}

/// Prefix hashes and a load known for every other candidate.
fn context(n: u32) -> Context {
    Context::new(
        &[11, 22, 33],
        (0..n).map(|i| (i % 2 == 0).then(|| model_load(i, 10.0 * i as f32))),
    )
}

fn scored(verdict: Verdict) -> Scored {
    match verdict {
        Verdict::Scored(scored) => scored,
        Verdict::Reject(reason) => panic!("unexpected reject: {reason}"),
    }
}

/// Every index below `n`, none twice.
fn assert_valid_order(order: &[u32], n: u32) {
    let mut seen = vec![false; n as usize];
    for &i in order {
        assert!(i < n, "index {i} of {n} in {order:?}");
        assert!(!std::mem::replace(&mut seen[i as usize], true), "{order:?}");
    }
}

#[test]
fn old_plugins_load_unchanged() -> Result<(), PolicyError> {
    let engine = engine()?;

    // 1.0.0, `policy` world only: pick, rank (of one) and score (of one,
    // unexplained) all go through `pick`.
    let rr = load(&engine, &fixture("round-robin"))?;
    assert_eq!(rr.name(), "round-robin");
    assert!(!rr.ranks() && !rr.scores());
    let cands = candidates(3);
    let req = request(&[]);
    assert_eq!(rr.pick(&req, &cands)?, Decision::Route(0));
    assert_eq!(rr.rank(&req, &cands)?, Ranking::Order(vec![1]));
    let s = scored(rr.score(&req, &cands, &context(3))?);
    assert_eq!(s.order, [2]);
    assert!(s.scores.is_empty() && s.reason.is_empty());
    assert_eq!(rr.pick(&req, &cands)?, Decision::Route(0), "it cycled");
    assert_eq!(rr.picks_total(), 4);

    // 1.0.0 `ranked-policy`: the whole ranking, unexplained.
    let lr = load(&engine, &fixture("least-request"))?;
    assert_eq!(lr.name(), "least-request");
    assert!(lr.ranks() && !lr.scores());
    let Decision::Route(first) = lr.pick(&req, &cands)? else {
        panic!("least-request rejected");
    };
    let Ranking::Order(ranked) = lr.rank(&req, &cands)? else {
        panic!("least-request rejected");
    };
    assert_eq!(ranked[0], first);
    let s = scored(lr.score(&req, &cands, &Context::empty())?);
    assert_eq!(s.order, ranked, "score is the ranking");
    assert_valid_order(&s.order, 3);
    assert_eq!(s.order.len(), 3);
    assert!(s.scores.is_empty() && s.reason.is_empty());
    assert_eq!(lr.picks_total(), 3);
    assert_eq!(lr.traps_total(), 0);
    Ok(())
}

/// A context that breaks the contract is refused before any guest call,
/// with or without a `scorer`.
#[test]
fn a_bad_context_is_refused() -> Result<(), PolicyError> {
    let engine = engine()?;
    for path in [fixture("round-robin"), built("dist-test", "bad-scores")] {
        let policy = load(&engine, &path)?;
        let mut ragged = context(3);
        ragged.waiting.pop();
        let err = policy.score(&request(&[]), &candidates(3), &ragged);
        assert!(
            matches!(&err, Err(PolicyError::BadInput { reason, .. }) if reason.contains("waiting")),
            "{err:?}"
        );
        let mut long = Context::empty();
        long.prefix_hashes = vec![1; 257];
        let err = policy.score(&request(&[]), &candidates(3), &long);
        assert!(matches!(err, Err(PolicyError::BadInput { .. })), "{err:?}");
        let err = policy.score(&request(&[]), &candidates(0), &Context::empty());
        assert!(matches!(err, Err(PolicyError::BadInput { .. })), "{err:?}");
    }
    Ok(())
}

/// The plugins of `plugins/dist/` are built against 1.1.0: those built on
/// policy-sdk export `scorer`, and every answer is a valid ranking.
#[test]
fn rebuilt_plugins_score() -> Result<(), PolicyError> {
    let engine = engine()?;
    let sdk = [
        "least-request",
        "latency",
        "cost",
        "resource-aware",
        "adaptive",
        "random",
        "pick-first",
    ];
    for name in sdk.iter().chain(&["round-robin"]) {
        let policy = load(&engine, &built("dist", name))?;
        if sdk.contains(name) {
            assert!(policy.scores(), "{name} exports scorer");
        }
        for n in [1, 4, 9] {
            let verdict = policy.score(&request(&[]), &candidates(n), &context(n))?;
            let Verdict::Scored(s) = verdict else {
                continue; // a refusal is a valid answer
            };
            assert!(!s.order.is_empty(), "{name}: empty order");
            assert_valid_order(&s.order, n);
            assert!(
                s.scores.is_empty() || s.scores.len() == n as usize,
                "{name}"
            );
            assert!(s.scores.iter().all(|x| x.is_finite()), "{name}");
            assert!(s.reason.len() <= MAX_REASON_BYTES, "{name}");
        }
        assert_eq!(policy.picks_total(), 3, "{name}: one pick per score");
        assert_eq!(policy.traps_total(), 0, "{name}");
    }
    Ok(())
}

#[test]
fn the_context_reaches_the_guest() -> Result<(), PolicyError> {
    let engine = engine()?;
    let policy = load(&engine, &built("dist-test", "bad-scores"))?;
    assert!(policy.ranks() && policy.scores());
    let ctx = Context::new(
        &[7, 8, 9],
        [Some(model_load(2, 30.0)), None, Some(model_load(3, 20.0))],
    );
    let s = scored(policy.score(&request(&[]), &candidates(3), &ctx)?);
    assert_eq!(s.order, [0, 1, 2]);
    assert_eq!(s.scores, [0.0, 1.0, 2.0]);
    assert_eq!(s.reason, "prefix=3 first=7 known=2 waiting=5 kv=50");
    let s = scored(policy.score(&request(&[]), &candidates(2), &Context::empty())?);
    assert_eq!(s.reason, "prefix=0 first=0 known=0 waiting=0 kv=0");
    Ok(())
}

#[test]
fn broken_answers_are_refused_or_sanitised() -> Result<(), PolicyError> {
    let engine = engine()?;
    let policy = load(&engine, &built("dist-test", "bad-scores"))?;
    let score =
        |bad: &str, n: u32| policy.score(&request(&[("bad", bad)]), &candidates(n), &context(n));

    let err = score("length", 3);
    assert!(
        matches!(
            err,
            Err(PolicyError::BadScores {
                scores: 4,
                len: 3,
                ..
            })
        ),
        "{err:?}"
    );
    let err = score("index", 3);
    assert!(
        matches!(
            err,
            Err(PolicyError::BadDecision {
                index: 3,
                len: 3,
                ..
            })
        ),
        "{err:?}"
    );
    assert_eq!(scored(score("nan", 4)?).scores, [0.0, 0.0, 0.0, 1.0]);
    assert_eq!(scored(score("repeat", 3)?).order, [0, 1]);
    assert_eq!(
        score("reject", 3)?,
        Verdict::Reject("bad-scores: rejected".to_owned())
    );

    // 10 KB of "\né": cut at 200 bytes would split an `é`, so 199 are kept,
    // line breaks turned into spaces.
    let reason = scored(score("reason", 3)?).reason;
    assert_eq!(reason.len(), MAX_REASON_BYTES - 1);
    assert_eq!(reason, " é".repeat(66) + " ");

    assert_eq!(policy.traps_total(), 0, "refusals are no traps");
    assert_eq!(policy.picks_total(), 6);
    Ok(())
}

#[test]
fn a_trap_in_score_rebuilds_the_instance() -> Result<(), PolicyError> {
    let engine = engine()?;
    let policy = load(&engine, &built("dist-test", "bad-scores"))?;
    let err = policy.score(&request(&[("bad", "trap")]), &candidates(2), &context(2));
    assert!(
        matches!(
            err,
            Err(PolicyError::Trap {
                reason: TrapReason::Other(_),
                ..
            })
        ),
        "{err:?}"
    );
    assert_eq!(policy.traps_total(), 1);
    let s = scored(policy.score(&request(&[]), &candidates(2), &context(2))?);
    assert_eq!(s.order, [0, 1], "it answers again");
    Ok(())
}

/// A pick request of the core becomes the WIT's request, columns and
/// context; the verdict becomes a ranking of node keys with the policy's
/// scores and reason; a rejection and a trap become the core's errors.
#[test]
fn a_policy_balance_ranks_the_cores_pick_requests() -> Result<(), PolicyError> {
    let engine = engine()?;
    let policy = load(&engine, &built("dist-test", "bad-scores"))?;
    let pick = |hints: &[(&str, &str)]| {
        let mut head = CallHead::new("svc", 0, 1000);
        head.hints = hints
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        PickRequest {
            call: 1,
            head: Arc::new(head),
            candidates: [
                (10, Some(model_load(2, 30.0))),
                (11, None),
                (12, Some(model_load(3, 20.0))),
            ]
            .into_iter()
            .map(|(node, model_load)| Candidate {
                node,
                max_concurrent: 4,
                model_load,
                ..Candidate::default()
            })
            .collect(),
            prefix: Arc::from(vec![7, 8, 9]),
        }
    };
    let base = Instant::now();
    let draws = std::cell::Cell::new(0);
    let mut balance = PolicyBalance::new(&policy, base, || {
        draws.set(draws.get() + 1);
        42
    });
    assert_eq!(balance.now_ms(base + Duration::from_millis(1500)), 1500);
    let ranking = match balance.rank(&pick(&[]), base) {
        Ok(ranking) => ranking,
        Err(failure) => panic!("{failure:?}"),
    };
    assert_eq!(ranking.nodes, [10, 11, 12]);
    assert_eq!(ranking.scores, [0.0, 1.0, 2.0]);
    assert_eq!(ranking.reason, "prefix=3 first=7 known=2 waiting=5 kv=50");

    match balance.pick(&pick(&[("bad", "reject")]), base) {
        Err(PickError::Refused(e)) => {
            assert_eq!(e.kind, ErrorKind::Rejected);
            assert_eq!(
                e.message,
                "policy bad-scores rejected the call: bad-scores: rejected"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(balance.failures(), 0, "a rejection is no failure");
    let trapped = balance.rank(&pick(&[("bad", "trap")]), base);
    assert!(
        matches!(trapped, Err(PickFailure::Failed(PolicyError::Trap { .. }))),
        "{trapped:?}"
    );
    assert_eq!(balance.failures(), 1);
    assert_eq!(draws.get(), 3, "one random number per pick");
    Ok(())
}
