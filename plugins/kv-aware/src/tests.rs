//! Unit tests of the kv-aware algorithm.

use policy_sdk::{Candidate, Context, ModelLoad, Policy, PrefixTable, Request, no_facts};

use crate::KvAware;

fn node(node: u32, in_flight: u32, max_concurrent: u32) -> Candidate {
    Candidate {
        node,
        in_flight,
        max_concurrent,
        ..Candidate::default()
    }
}

fn req(random: u64, hints: &[(&str, &str)]) -> Request {
    Request {
        service: "llm".into(),
        now_ms: 1,
        random,
        hints: hints
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Request::default()
    }
}

fn chain(conv: u64, blocks: usize) -> Vec<u64> {
    (0..blocks as u64).map(|i| conv << 20 | i).collect()
}

fn load(waiting: u32, kv_cache_pct: f32) -> Option<ModelLoad> {
    Some(ModelLoad {
        waiting,
        running: 1,
        kv_cache_pct,
    })
}

/// Node 0 holds the whole prefix but is busier; node 1 is idle.
fn busy_cached_vs_idle() -> (KvAware, [Candidate; 2], Context) {
    let mut table = PrefixTable::default();
    table.record("llm", 0, &chain(1, 10), 0);
    let candidates = [
        Candidate {
            model_load: load(4, 50.0),
            ..node(0, 0, 8)
        },
        Candidate {
            model_load: load(0, 10.0),
            ..node(1, 0, 8)
        },
    ];
    let ctx = Context {
        prefix_hashes: chain(1, 10),
    };
    (KvAware::with_table(table), candidates, ctx)
}

#[test]
fn default_weights_favour_the_cached_prefix() {
    let (mut p, candidates, ctx) = busy_cached_vs_idle();
    let s = p
        .score(&req(0, &[]), &candidates, &ctx, &no_facts)
        .expect("scored");
    // 0: 3×1 + 2×0 + 2×0.5 = 4; 1: 0 + 2×1 + 2×0.9 = 3.8.
    assert_eq!(s.order, vec![0, 1]);
    assert_eq!(s.scores.len(), 2);
    assert!(
        (s.scores[0] - 4.0).abs() < 1e-6 && (s.scores[1] - 3.8).abs() < 1e-6,
        "{s:?}"
    );
    assert_eq!(
        s.reason,
        "prefix 10/10 (1×3) + queue 4 waiting (0×2) + kv free 0.5×2 = 4"
    );
}

#[test]
fn weights_change_the_winner() {
    // A light prefix weight: the idle node wins (0: 1 + 0 + 1 = 2; 1: 3.8).
    let (mut p, candidates, ctx) = busy_cached_vs_idle();
    let s = p
        .score(&req(0, &[("w_prefix", "1")]), &candidates, &ctx, &no_facts)
        .expect("scored");
    assert_eq!(s.order[0], 1, "{s:?}");
    // Only the KV term: the emptier cache wins.
    let (mut p, candidates, ctx) = busy_cached_vs_idle();
    let hints = [("w_prefix", "0"), ("w_queue", "0"), ("w_kv", "1")];
    let s = p
        .score(&req(0, &hints), &candidates, &ctx, &no_facts)
        .expect("scored");
    assert_eq!(s.order[0], 1);
    // Only the prefix term: the cached node, whatever its load.
    let (mut p, candidates, ctx) = busy_cached_vs_idle();
    let hints = [("w_queue", "0"), ("w_kv", "0")];
    let s = p
        .score(&req(0, &hints), &candidates, &ctx, &no_facts)
        .expect("scored");
    assert_eq!(s.order[0], 0);
}

#[test]
fn unknown_load_falls_back_to_the_gateway_counts() {
    let mut p = KvAware::new();
    // Slots: 6/8 used vs 1/8; no model-server load for either.
    let candidates = [node(0, 6, 8), node(1, 1, 8)];
    let s = p
        .score(&req(0, &[]), &candidates, &Context::default(), &no_facts)
        .expect("scored");
    assert_eq!(s.order, vec![1, 0]);
    // 0: queue 0, kv 0.25 → 0.5; 1: queue 1, kv 0.875 → 3.75.
    assert!(
        (s.scores[0] - 0.5).abs() < 1e-6 && (s.scores[1] - 3.75).abs() < 1e-6,
        "{s:?}"
    );
    assert_eq!(
        s.reason,
        "no prefix + queue 1 in flight (1×2) + kv free 0.88×2 = 3.75"
    );
    // One node known, one not: queue depths are the gateway's for both.
    let mixed = [
        Candidate {
            model_load: load(0, 0.0),
            ..candidates[0]
        },
        candidates[1],
    ];
    let s = p
        .score(&req(0, &[]), &mixed, &Context::default(), &no_facts)
        .expect("scored");
    // 0: queue 0 (6 in flight), kv 1 (its model server) → 2; 1: 2 + 1.75.
    assert_eq!(s.order, vec![1, 0]);
    assert!((s.scores[0] - 2.0).abs() < 1e-6, "{s:?}");
}

#[test]
fn equal_scores_are_shared_by_the_random_draw_and_the_winner_is_recorded() {
    let mut p = KvAware::new();
    let candidates = [node(0, 0, 4), node(1, 0, 4), node(2, 0, 4)];
    let mut firsts = [0; 3];
    for random in 0..30 {
        let s = p
            .score(
                &req(random, &[]),
                &candidates,
                &Context::default(),
                &no_facts,
            )
            .expect("scored");
        assert_eq!(s.scores, vec![4.0; 3]);
        firsts[s.order[0] as usize] += 1;
    }
    assert_eq!(firsts, [10, 10, 10]);
    let ctx = Context {
        prefix_hashes: chain(3, 5),
    };
    let s = p
        .score(&req(1, &[]), &candidates, &ctx, &no_facts)
        .expect("scored");
    let winner = candidates[s.order[0] as usize].node;
    assert_eq!(p.table().matched("llm", winner, &chain(3, 5), 1), 5);
    // The next turn of that conversation goes back to it.
    let ctx = Context {
        prefix_hashes: chain(3, 8),
    };
    for random in 0..5 {
        let s = p
            .score(&req(random, &[]), &candidates, &ctx, &no_facts)
            .expect("scored");
        assert_eq!(candidates[s.order[0] as usize].node, winner);
    }
}

#[test]
fn scores_name_every_candidate_and_bad_hints_reject() {
    let mut p = KvAware::new();
    for n in 1..10u32 {
        let candidates: Vec<Candidate> = (0..n).map(|i| node(i, i % 4, 4)).collect();
        let s = p
            .score(&req(7, &[]), &candidates, &Context::default(), &no_facts)
            .expect("scored");
        assert_eq!(s.scores.len(), n as usize);
        let mut seen = s.order.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..n).collect::<Vec<u32>>());
        assert!(s.reason.len() <= 200);
        let picked = Policy::pick(&mut p, &req(7, &[]), &candidates, &no_facts);
        assert_eq!(picked, Ok(s.order[0]));
    }
    assert_eq!(
        p.score(&req(0, &[]), &[], &Context::default(), &no_facts),
        Err("no candidates".into())
    );
    let bad = p.score(
        &req(0, &[("w_kv", "-1")]),
        &[node(0, 0, 1)],
        &Context::default(),
        &no_facts,
    );
    assert_eq!(
        bad,
        Err("bad hint w_kv=\"-1\": expected a number >= 0".into())
    );
}
