//! What contract 1.1.0's `score` costs against `rank` and `pick`: group
//! `score`, functions `<policy>-pick`, `<policy>-rank` and `<policy>-score`
//! over [`SCORE_SIZES`] candidates (the same steady state as the pick
//! benches; `score` with 64 prefix hashes and every candidate's model-server
//! load known, as an OpenAI call on a fleet of vLLM nodes sees it), and
//! `context/build` (what the gateway pays to build that [`wit::Context`]).

use super::*;
use crate::summary::{fmt_ns, median_ns};

/// Candidate counts of the `score` group.
pub(super) const SCORE_SIZES: [usize; 3] = [1, 100, 1000];

/// Prefix hashes per call: a prompt of 64 blocks.
const PREFIX_BLOCKS: u64 = 64;

/// The context of a call over the first `n` nodes.
fn context(n: usize) -> wit::Context {
    let prefix: Vec<u64> = (0..PREFIX_BLOCKS).map(random).collect();
    wit::Context::new(&prefix, (0..n).map(load_of))
}

/// Node `i`'s model-server load: waiting, running, KV-cache %.
#[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
fn load_of(i: usize) -> Option<wit::ModelLoad> {
    Some(wit::ModelLoad {
        waiting: (i % 7) as u32,
        running: (i % 13) as u32,
        kv_cache_pct: (i % 100) as f32,
    })
}

pub(super) fn bench_score(c: &mut Criterion, fleet: &Fleet, dir: &Arc<Directory>) {
    let engine = engine(true);
    let mut group = c.benchmark_group("score");
    for name in POLICIES {
        let wasm = load(&engine, name, fleet, dir);
        if !wasm.scores() {
            eprintln!("note: {name} exports no `scorer`; its `score` is its `rank`");
        }
        for n in SCORE_SIZES {
            let candidates = fleet.wit(n);
            let ctx = context(n);
            let mut req = wit_request(name);
            let mut i = 0u64;
            group.bench_function(BenchmarkId::new(format!("{name}-pick"), n), |b| {
                b.iter(|| {
                    i += 1;
                    req.random = random(i);
                    black_box(wasm.pick(black_box(&req), black_box(&candidates)))
                });
            });
            group.bench_function(BenchmarkId::new(format!("{name}-rank"), n), |b| {
                b.iter(|| {
                    i += 1;
                    req.random = random(i);
                    black_box(wasm.rank(black_box(&req), black_box(&candidates)))
                });
            });
            group.bench_function(BenchmarkId::new(format!("{name}-score"), n), |b| {
                b.iter(|| {
                    i += 1;
                    req.random = random(i);
                    black_box(wasm.score(black_box(&req), black_box(&candidates), black_box(&ctx)))
                });
            });
        }
        assert_eq!(wasm.traps_total(), 0, "{name}: the component trapped");
    }
    let prefix: Vec<u64> = (0..PREFIX_BLOCKS).map(random).collect();
    group.bench_function(BenchmarkId::new("context-build", 100), |b| {
        b.iter(|| black_box(wit::Context::new(black_box(&prefix), (0..100).map(load_of))));
    });
    group.finish();
}

/// Prints the `score` comparison of this run, if measured.
pub(super) fn score_summary(since: SystemTime) {
    let mut rows = Vec::new();
    for name in POLICIES {
        for n in SCORE_SIZES {
            let cells: Vec<Option<f64>> = ["pick", "rank", "score"]
                .iter()
                .map(|call| median_ns("score", &format!("{name}-{call}"), n, since))
                .collect();
            if let [Some(p), Some(r), Some(s)] = cells[..] {
                rows.push(format!(
                    "| {name} | {n} | {} | {} | {} | {:+.0} ns |",
                    fmt_ns(p),
                    fmt_ns(r),
                    fmt_ns(s),
                    s - r
                ));
            }
        }
    }
    if !rows.is_empty() {
        println!("\n`score` (64 prefix hashes, load known) vs `rank` and `pick`, wasm, median:\n");
        println!("| policy | n | pick | rank | score | score − rank |");
        println!("|---|---:|---:|---:|---:|---:|");
        for row in rows {
            println!("{row}");
        }
    }
    if let Some(build) = median_ns("score", "context-build", 100, since) {
        println!(
            "\nBuilding the context of 100 candidates: {}",
            fmt_ns(build)
        );
    }
}
