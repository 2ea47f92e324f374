//! Unit tests of the cache-aware algorithm.

use policy_sdk::{Candidate, Context, ModelLoad, Policy, PrefixTable, Request, no_facts};

use crate::CacheAware;

fn node(node: u32, in_flight: u32) -> Candidate {
    Candidate {
        node,
        in_flight,
        max_concurrent: 64,
        ..Candidate::default()
    }
}

fn req(now_ms: u64, random: u64, hints: &[(&str, &str)]) -> Request {
    Request {
        service: "llm".into(),
        now_ms,
        random,
        hints: hints
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Request::default()
    }
}

/// A conversation's chained hashes: `blocks` blocks of conversation `conv`.
fn chain(conv: u64, blocks: usize) -> Vec<u64> {
    (0..blocks as u64).map(|i| conv << 20 | i).collect()
}

fn ctx(hashes: Vec<u64>) -> Context {
    Context {
        prefix_hashes: hashes,
    }
}

/// A policy whose record already holds `hashes` for `(node, hashes)` pairs.
fn seeded(pairs: &[(u32, Vec<u64>)]) -> CacheAware {
    let mut table = PrefixTable::default();
    for (node, hashes) in pairs {
        table.record("llm", *node, hashes, 0);
    }
    CacheAware::with_table(table)
}

#[test]
fn the_longest_match_wins_and_is_recorded() {
    let mut p = seeded(&[(1, chain(7, 4)), (2, chain(7, 10))]);
    let candidates = [node(0, 0), node(1, 0), node(2, 3)];
    let s = p
        .score(&req(1, 0, &[]), &candidates, &ctx(chain(7, 12)), &no_facts)
        .expect("scored");
    assert_eq!(s.order[0], 2, "{s:?}");
    assert_eq!(s.order, vec![2, 1, 0]);
    assert_eq!(s.scores, vec![0.0, 4.0, 10.0]);
    assert_eq!(s.reason, "prefix match 10/12 blocks");
    // The call's 12 blocks are now recorded for node 2.
    assert_eq!(p.table().matched("llm", 2, &chain(7, 12), 1), 12);
    assert_eq!(p.table().matched("llm", 0, &chain(7, 12), 1), 0);
}

#[test]
fn equal_matches_go_to_the_less_loaded() {
    let mut p = seeded(&[(1, chain(7, 8)), (2, chain(7, 8))]);
    let candidates = [node(1, 5), node(2, 1), node(3, 0)];
    for random in 0..20 {
        let s = p
            .score(
                &req(1, random, &[]),
                &candidates,
                &ctx(chain(7, 9)),
                &no_facts,
            )
            .expect("scored");
        assert_eq!(s.order[..2], [1, 0], "{s:?}");
    }
}

#[test]
fn imbalance_falls_back_to_the_least_loaded() {
    let candidates = [node(0, 40), node(1, 2), node(2, 9)];
    let mut p = seeded(&[(0, chain(1, 10))]);
    let s = p
        .score(&req(1, 0, &[]), &candidates, &ctx(chain(1, 10)), &no_facts)
        .expect("scored");
    assert_eq!(s.order, vec![1, 2, 0]);
    assert_eq!(s.scores, vec![-40.0, -2.0, -9.0]);
    assert_eq!(s.reason, "imbalanced (40 vs 2 in flight): least loaded");
    // Both conditions are needed: a spread within the absolute threshold
    // keeps the cache's choice...
    let mut p = seeded(&[(0, chain(1, 10))]);
    let s = p
        .score(
            &req(1, 0, &[("balance_abs_threshold", "64")]),
            &candidates,
            &ctx(chain(1, 10)),
            &no_facts,
        )
        .expect("scored");
    assert_eq!(
        (s.order[0], s.reason.as_str()),
        (0, "prefix match 10/10 blocks")
    );
    // ...and so does one within the relative threshold.
    let mut p = seeded(&[(0, chain(1, 10))]);
    let hints = [
        ("balance_abs_threshold", "1"),
        ("balance_rel_threshold", "100"),
    ];
    let s = p
        .score(
            &req(1, 0, &hints),
            &candidates,
            &ctx(chain(1, 10)),
            &no_facts,
        )
        .expect("scored");
    assert_eq!(s.order[0], 0);
}

#[test]
fn model_server_load_is_used_when_every_node_reports_it() {
    let load = |waiting, running| {
        Some(ModelLoad {
            waiting,
            running,
            kv_cache_pct: 0.0,
        })
    };
    let with_load = |c: Candidate, model_load| Candidate { model_load, ..c };
    let mut candidates = [
        with_load(node(0, 1), load(30, 20)),
        with_load(node(1, 1), load(0, 3)),
    ];
    let mut p = seeded(&[(0, chain(1, 10))]);
    let c = ctx(chain(1, 10));
    let s = p
        .score(&req(1, 0, &[]), &candidates, &c, &no_facts)
        .expect("scored");
    assert_eq!(s.order[0], 1);
    assert_eq!(
        s.reason,
        "imbalanced (50 vs 3 waiting+running): least loaded"
    );
    // One node without metrics: the gateway's counts for all (balanced).
    candidates[1].model_load = None;
    let s = p
        .score(&req(2, 0, &[]), &candidates, &c, &no_facts)
        .expect("scored");
    assert_eq!(
        (s.order[0], s.reason.as_str()),
        (0, "prefix match 10/10 blocks")
    );
}

#[test]
fn no_prefix_is_least_loaded_and_records_nothing() {
    let mut p = CacheAware::new();
    let candidates = [node(0, 3), node(1, 1), node(2, 2)];
    for random in 0..10 {
        let s = p
            .score(
                &req(1, random, &[]),
                &candidates,
                &Context::default(),
                &no_facts,
            )
            .expect("scored");
        assert_eq!(s.order, vec![1, 2, 0]);
        assert_eq!(s.scores, vec![-3.0, -1.0, -2.0]);
        assert_eq!(s.reason, "no prefix: least loaded");
        let picked = Policy::pick(&mut p, &req(1, random, &[]), &candidates, &no_facts);
        assert_eq!(picked, Ok(1));
    }
    assert_eq!(p.table().entries(), 0);
}

#[test]
fn a_match_not_above_the_threshold_is_least_loaded() {
    let mut p = seeded(&[(0, chain(1, 5))]);
    let candidates = [node(0, 2), node(1, 0)];
    let s = p
        .score(&req(1, 0, &[]), &candidates, &ctx(chain(1, 10)), &no_facts)
        .expect("scored");
    assert_eq!(s.order[0], 1);
    assert_eq!(
        s.reason,
        "prefix match 5/10 blocks, not above 50%: least loaded"
    );
    // A lower threshold by hint takes the match (on a fresh record: the
    // call above recorded its 10 blocks for node 1).
    let mut p = seeded(&[(0, chain(1, 5))]);
    let s = p
        .score(
            &req(2, 0, &[("cache_threshold", "0.3")]),
            &candidates,
            &ctx(chain(1, 10)),
            &no_facts,
        )
        .expect("scored");
    assert_eq!(s.order[0], 0);
}

#[test]
fn conversations_stick_to_their_node_and_spread_over_idle_nodes() {
    let mut p = CacheAware::new();
    let candidates = [node(0, 0), node(1, 0), node(2, 0), node(3, 0)];
    let mut home = Vec::new();
    for conv in 0..8u64 {
        let s = p
            .score(
                &req(conv, conv * 7919, &[]),
                &candidates,
                &ctx(chain(conv, 4)),
                &no_facts,
            )
            .expect("scored");
        home.push(s.order[0]);
    }
    // The smaller record wins ties: two conversations per node.
    let mut per_node = [0; 4];
    for &h in &home {
        per_node[h as usize] += 1;
    }
    assert_eq!(per_node, [2, 2, 2, 2], "{home:?}");
    // Later turns resend the history (more blocks): same node every time.
    for turn in 2..6 {
        for conv in 0..8u64 {
            let s = p
                .score(
                    &req(100 * turn, turn + conv, &[]),
                    &candidates,
                    &ctx(chain(conv, 4 * turn as usize)),
                    &no_facts,
                )
                .expect("scored");
            assert_eq!(
                s.order[0], home[conv as usize],
                "conv {conv} turn {turn}: {s:?}"
            );
        }
    }
}

#[test]
fn the_memory_cap_holds() {
    let mut p = CacheAware::with_table(PrefixTable::new(64, 60_000));
    let candidates = [node(0, 0), node(1, 1), node(2, 0)];
    for call in 0..500u64 {
        let blocks = 1 + (call as usize * 37) % 40;
        p.score(
            &req(call, call, &[]),
            &candidates,
            &ctx(chain(call % 23, blocks)),
            &no_facts,
        )
        .expect("scored");
        assert!(p.table().entries() <= 64, "{} entries", p.table().entries());
    }
    assert_eq!(p.table().entries(), 64);
}

#[test]
fn a_node_that_leaves_is_forgotten() {
    let mut p = CacheAware::with_table(PrefixTable::new(1000, 1000));
    let a = chain(1, 8);
    p.score(&req(0, 0, &[]), &[node(5, 0)], &ctx(a.clone()), &no_facts)
        .expect("scored");
    assert_eq!(p.table().matched("llm", 5, &a, 0), 8);
    // Node 5 is gone for longer than the forgetting time.
    for t in (100..=1500).step_by(100) {
        p.score(&req(t, t, &[]), &[node(6, 0)], &ctx(chain(2, 2)), &no_facts)
            .expect("scored");
    }
    assert_eq!(p.table().node_entries("llm", 5), 0, "swept");
    assert_eq!(p.table().records(), 1);
    // Back again, it starts with nothing; node 6, seen all along, kept its own.
    let s = p
        .score(
            &req(1600, 0, &[]),
            &[node(5, 0), node(6, 1)],
            &ctx(a),
            &no_facts,
        )
        .expect("scored");
    assert_eq!(s.scores, vec![0.0, -1.0], "{s:?}");
    assert_eq!(p.table().matched("llm", 6, &chain(2, 2), 1600), 2);
}

#[test]
fn scores_name_every_candidate_and_bad_hints_reject() {
    let mut p = CacheAware::new();
    for n in 1..10u32 {
        let candidates: Vec<Candidate> = (0..n).map(|i| node(i, i % 3)).collect();
        let s = p
            .score(&req(1, 5, &[]), &candidates, &ctx(chain(9, 3)), &no_facts)
            .expect("scored");
        assert_eq!(s.scores.len(), n as usize);
        let mut seen = s.order.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..n).collect::<Vec<u32>>());
    }
    assert_eq!(
        p.score(&req(1, 0, &[]), &[], &Context::default(), &no_facts),
        Err("no candidates".into())
    );
    let bad = p.score(
        &req(1, 0, &[("cache_threshold", "x")]),
        &[node(0, 0)],
        &Context::default(),
        &no_facts,
    );
    assert_eq!(
        bad,
        Err("bad hint cache_threshold=\"x\": expected a number >= 0".into())
    );
}

#[test]
fn a_node_reporting_the_blocks_wins_though_its_own_record_is_empty() {
    let mut p = CacheAware::new();
    // Another gateway sent this conversation to node 2: this policy never
    // saw it, but node 2 reports holding 10 of its 12 blocks.
    let candidates = [
        node(0, 0),
        node(1, 0),
        Candidate {
            prefix_matched: 10,
            ..node(2, 3)
        },
    ];
    let s = p
        .score(&req(1, 0, &[]), &candidates, &ctx(chain(7, 12)), &no_facts)
        .expect("scored");
    assert_eq!(s.order[0], 2, "{s:?}");
    assert_eq!(s.scores, vec![0.0, 0.0, 10.0]);
    assert_eq!(s.reason, "prefix match 10/12 blocks");
    // A report longer than the call's prefix counts as the whole prefix,
    // and the longer of the record and the report wins.
    let mut p = seeded(&[(1, chain(7, 6))]);
    let candidates = [
        Candidate {
            prefix_matched: 500,
            ..node(0, 0)
        },
        Candidate {
            prefix_matched: 2,
            ..node(1, 0)
        },
    ];
    let s = p
        .score(&req(1, 0, &[]), &candidates, &ctx(chain(7, 8)), &no_facts)
        .expect("scored");
    assert_eq!(s.scores, vec![8.0, 6.0]);
}
