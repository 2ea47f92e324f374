//! One `pick` of each policy, as its WebAssembly component in `plugins/dist`
//! (through [`switchyard_policy_host::Policy::pick`], everything the gateway pays) versus
//! the same algorithm compiled natively (the plugin crate's struct, called
//! directly), over 10, 100 and 1000 candidates; the fixed cost of a wasm pick
//! (1 candidate); what epoch interruption (the pick deadline) costs; and what
//! the WIT shape of the candidates costs.
//!
//! Run (release; about 4 minutes of benchmarking on 2 cores, after the
//! build):
//!
//! ```text
//! make plugins
//! cargo bench -p switchyard-policy-host --bench pick
//! ```
//!
//! Criterion groups, ids `<group>/<function>/<candidates>`:
//! - `<policy>/native/N` and `<policy>/wasm/N`, N in 1, 10, 100, 1000;
//! - `epoch/<policy>-on/100` and `epoch/<policy>-off/100`: the wasm pick with
//!   deadlines (the default engine) and with an engine built with
//!   [`EngineConfig::interruptible`] `false` (no epoch checks compiled in, no
//!   ticker), measured side by side;
//! - `least-loaded-py/wasm/N` and `least-loaded-js/wasm/N`: the policy
//!   written in Python and in JavaScript (`plugins/python/`, `plugins/js/`,
//!   built by `make plugins-polyglot` into `plugins/dist-polyglot/`; skipped
//!   when absent), with their load
//!   times printed (`polyglot.rs`);
//! - `lowering/<shape>/N`: what passing N candidates costs the host alone, on
//!   a minimal hand-written component whose exports only return the list
//!   length (no policy, no guest-side decoding), in three shapes: `records`
//!   (`list<candidate>`, a list of 14-field records: the WIT before 1.0.0
//!   shipped), `bytes` (the same figures packed by the host into one
//!   `list<u8>` per call) and `columns` (a record of 14 lists, one per field:
//!   today's WIT, `candidates`, transposed from rows per call as the
//!   gateway builds it per pick), and `transpose` (that transposition
//!   alone). It tells what the WIT shape costs.
//! - `score/<policy>-{pick,rank,score}/N`, N in 1, 100, 1000, and
//!   `score/context-build/100`: contract 1.1.0's `score` (with a context of
//!   64 prefix hashes and every candidate's load) against `rank` and `pick`
//!   on the same instance (`score.rs`).
//!
//! The state is steady: every policy first observes three outcomes per node
//! (the same ones natively and in wasm), the clock (`now_ms`) stands still so
//! nothing is forgotten, and `random` changes every iteration. Each request
//! carries the hints its policy reads (`resource-aware` gets
//! `gpu_mem_mib>=8000` and `label:tier=gold`, so it calls `node-info`).
//! Before timing, wasm and native picks are compared on the same inputs.
//!
//! At the end a markdown table (medians) is printed from the estimates
//! criterion wrote in this run. Timings default to 1 s warm-up, 2 s
//! measurement and 10 000 bootstrap resamples per benchmark; criterion's
//! flags override them (`-- --warm-up-time 3 --measurement-time 5`), and a
//! filter (a regex) runs a subset (`-- 'least-request|epoch'`).

mod lowering;
mod polyglot;
mod score;
mod summary;

use lowering::bench_lowering;
use polyglot::{bench_polyglot, polyglot_summary};
use score::{bench_score, score_summary};
use summary::{lowering_summary, summary};

use std::collections::HashMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{BenchmarkGroup, BenchmarkId, Criterion, measurement::WallTime};
use policy_sdk::SplitMix64;
use switchyard_policy_host::types as wit;
use switchyard_policy_host::{EngineConfig, NodeDirectory, Policy, PolicyEngine};

/// The policies of `plugins/dist`, in table order.
const POLICIES: [&str; 7] = [
    "round-robin",
    "least-request",
    "latency",
    "cost",
    "resource-aware",
    "adaptive",
    "pick-first",
];

/// Candidate counts: 1 is the fixed cost of a pick.
const SIZES: [usize; 4] = [1, 10, 100, 1000];

/// Candidate count of the epoch-interruption comparison.
const EPOCH_SIZE: usize = 100;

/// The fleet: the largest candidate list; smaller lists are its prefixes.
const FLEET: usize = 1000;

const SERVICE: &str = "llama-3-8b";

/// The (frozen) clock of every pick, ms since the gateway started.
const NOW_MS: u64 = 3_600_000;

/// Per-node GPUs by node index: most nodes have GPUs, some none.
const GPU_COUNTS: [u32; 7] = [1, 2, 4, 8, 1, 2, 0];

const H100_MIB: u64 = 81_559;

/// The directory the components are loaded from.
fn dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist")
}

// ---------------------------------------------------------------------------
// The fleet, in both shapes
// ---------------------------------------------------------------------------

/// One fleet of [`FLEET`] nodes, as the rows the native algorithm takes
/// (see [`Fleet::wit`] for the columns a component gets from them).
struct Fleet {
    rows: Vec<wit::Candidate>,
    facts: HashMap<u32, policy_sdk::NodeFacts>,
    outcomes: Vec<policy_sdk::Outcome>,
}

impl Fleet {
    fn new() -> Self {
        let mut rng = SplitMix64::new(0x5717_c4a7);
        let mut rows = Vec::with_capacity(FLEET);
        let mut facts = HashMap::with_capacity(FLEET);
        let mut outcomes = Vec::with_capacity(3 * FLEET);
        for i in 0..FLEET {
            // Sparse keys, as a gateway that saw nodes come and go hands out.
            let node = u32::try_from(i * 3 + 17).expect("fits");
            let gpu_count = GPU_COUNTS[i % GPU_COUNTS.len()];
            let max_concurrent = 4 + below(&mut rng, 61);
            let in_flight = below(&mut rng, max_concurrent);
            let mem_total_mib = [65_536, 131_072, 262_144, 524_288][i % 4];
            let latency_ms = 5.0 + 395.0 * rng.next_f64();
            // One node in five has no estimate from the gateway yet.
            let latency_samples = if i % 5 == 4 {
                0
            } else {
                1 + below(&mut rng, 999)
            };
            let gpus: Vec<policy_sdk::Gpu> = (0..gpu_count)
                .map(|index| {
                    let used = frac(&mut rng, H100_MIB);
                    policy_sdk::Gpu {
                        index,
                        name: "NVIDIA H100 80GB HBM3".to_owned(),
                        util_pct: pct(&mut rng),
                        mem_used_mib: used,
                        mem_total_mib: H100_MIB,
                        temperature_c: 30.0 + 50.0 * f32_of(rng.next_f64()),
                        power_w: 70.0 + 630.0 * f32_of(rng.next_f64()),
                    }
                })
                .collect();
            let gpu_util_pct = if gpus.is_empty() {
                0.0
            } else {
                gpus.iter().map(|g| g.util_pct).sum::<f32>() / f32_of(gpus.len() as f64)
            };
            rows.push(wit::Candidate {
                node,
                in_flight,
                max_concurrent,
                node_in_flight: in_flight + below(&mut rng, 32),
                cpu_pct: pct(&mut rng),
                mem_used_mib: frac(&mut rng, mem_total_mib),
                mem_total_mib,
                gpu_count,
                gpu_util_pct,
                gpu_mem_free_mib: gpus
                    .iter()
                    .map(|g| g.mem_total_mib - g.mem_used_mib)
                    .max()
                    .unwrap_or(0),
                gpu_mem_total_mib: gpus.iter().map(|g| g.mem_total_mib).sum(),
                latency_ms: if latency_samples == 0 {
                    0.0
                } else {
                    f32_of(latency_ms)
                },
                latency_samples,
                cost_per_hour: 0.5 + 11.5 * f32_of(rng.next_f64()),
                model_load: None,
                prefix_matched: 0,
            });
            let tier = ["gold", "silver", "bronze"][i % 3];
            let region = ["eu-west", "us-east", "ap-south"][i / 3 % 3];
            facts.insert(
                node,
                policy_sdk::NodeFacts {
                    id: format!("gpu-node-{i:04}"),
                    region: region.to_owned(),
                    labels: vec![
                        ("tier".to_owned(), tier.to_owned()),
                        ("rack".to_owned(), format!("r{:02}", i % 16)),
                        ("owner".to_owned(), "inference-platform".to_owned()),
                    ],
                    gpus,
                },
            );
            for k in 1..=3u64 {
                outcomes.push(policy_sdk::Outcome {
                    service: SERVICE.to_owned(),
                    node,
                    latency_ms: f32_of(latency_ms * (0.7 + 0.6 * rng.next_f64())),
                    ok: below(&mut rng, 20) != 0,
                    now_ms: NOW_MS - 4_000 + 1_000 * k,
                });
            }
        }
        Self {
            rows,
            facts,
            outcomes,
        }
    }

    /// The first `n` nodes as the gateway hands them to a component.
    fn wit(&self, n: usize) -> wit::Candidates {
        wit::Candidates::from(&self.rows[..n])
    }
}

fn below(rng: &mut SplitMix64, n: u32) -> u32 {
    u32::try_from(rng.below(n as usize)).expect("below n")
}

#[allow(clippy::cast_possible_truncation)]
fn f32_of(x: f64) -> f32 {
    x as f32
}

fn pct(rng: &mut SplitMix64) -> f32 {
    f32_of(100.0 * rng.next_f64())
}

#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)]
fn frac(rng: &mut SplitMix64, of: u64) -> u64 {
    (rng.next_f64() * of as f64) as u64
}

fn wit_node_info(f: &policy_sdk::NodeFacts) -> wit::NodeInfo {
    wit::NodeInfo {
        id: f.id.clone(),
        region: f.region.clone(),
        labels: f.labels.clone(),
        gpus: f
            .gpus
            .iter()
            .map(|g| wit::Gpu {
                index: g.index,
                name: g.name.clone(),
                util_pct: g.util_pct,
                mem_used_mib: g.mem_used_mib,
                mem_total_mib: g.mem_total_mib,
                temperature_c: g.temperature_c,
                power_w: g.power_w,
            })
            .collect(),
    }
}

fn wit_outcome(o: &policy_sdk::Outcome) -> wit::Outcome {
    wit::Outcome {
        service: o.service.clone(),
        node: o.node,
        latency_ms: o.latency_ms,
        ok: o.ok,
        now_ms: o.now_ms,
    }
}

/// The gateway's side of `node-info`: a map lookup and a clone, as the
/// native side's `facts` function does.
struct Directory(HashMap<u32, wit::NodeInfo>);

impl NodeDirectory for Directory {
    fn node_info(&self, key: wit::NodeKey) -> Option<wit::NodeInfo> {
        self.0.get(&key).cloned()
    }
}

/// The hints each policy reads, as a caller would send them.
fn hints(policy: &str) -> Vec<(String, String)> {
    let pairs: &[(&str, &str)] = match policy {
        "cost" => &[("max_latency_ms", "400")],
        "resource-aware" => &[("gpu_mem_mib", ">=8000"), ("label:tier", "gold")],
        "adaptive" => &[("optimize", "throughput")],
        _ => &[],
    };
    pairs
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn sdk_request(policy: &str) -> policy_sdk::Request {
    policy_sdk::Request {
        service: SERVICE.to_owned(),
        payload_bytes: 4096,
        hints: hints(policy),
        now_ms: NOW_MS,
        random: 0,
    }
}

fn wit_request(policy: &str) -> wit::Request {
    wit::Request {
        service: SERVICE.to_owned(),
        payload_bytes: 4096,
        hints: hints(policy),
        now_ms: NOW_MS,
        random: 0,
    }
}

/// The `random` of iteration `i`: well mixed, so p2c draws vary.
fn random(i: u64) -> u64 {
    SplitMix64::new(i).next_u64()
}

// ---------------------------------------------------------------------------
// The native side
// ---------------------------------------------------------------------------

type Facts<'a> = &'a dyn Fn(u32) -> Option<policy_sdk::NodeFacts>;

/// A policy algorithm called directly (statically dispatched in the bench).
trait Native {
    fn pick(
        &mut self,
        req: &policy_sdk::Request,
        candidates: &[policy_sdk::Candidate],
        facts: Facts<'_>,
    ) -> Result<u32, String>;
    fn observe(&mut self, outcome: &policy_sdk::Outcome);
}

impl<P: policy_sdk::Policy> Native for P {
    #[inline]
    fn pick(
        &mut self,
        req: &policy_sdk::Request,
        candidates: &[policy_sdk::Candidate],
        facts: Facts<'_>,
    ) -> Result<u32, String> {
        policy_sdk::Policy::pick(self, req, candidates, facts)
    }

    fn observe(&mut self, outcome: &policy_sdk::Outcome) {
        policy_sdk::Policy::observe(self, outcome);
    }
}

// ---------------------------------------------------------------------------
// Benchmarks
// ---------------------------------------------------------------------------

/// Loads `plugins/dist/<name>.wasm` into `engine` and feeds it the fleet's
/// outcomes.
fn load(engine: &PolicyEngine, name: &str, fleet: &Fleet, dir: &Arc<Directory>) -> Policy {
    load_from(
        &dist().join(format!("{name}.wasm")),
        engine,
        name,
        fleet,
        dir,
    )
}

/// Loads the component at `path` (which must report `name`) into `engine`
/// and feeds it the fleet's outcomes.
fn load_from(
    path: &Path,
    engine: &PolicyEngine,
    name: &str,
    fleet: &Fleet,
    dir: &Arc<Directory>,
) -> Policy {
    assert!(
        path.is_file(),
        "{} is missing: run `make plugins` first",
        path.display()
    );
    let nodes: Arc<dyn NodeDirectory> = Arc::clone(dir) as _;
    let policy = engine
        .load(path, nodes)
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
    assert_eq!(
        policy.name(),
        name,
        "{} reports another name",
        path.display()
    );
    for o in &fleet.outcomes {
        policy
            .observe(&wit_outcome(o))
            .unwrap_or_else(|e| panic!("{name}: observe failed: {e}"));
    }
    policy
}

/// A fresh native policy in the same state as the loaded component.
fn native<P: Native + Default>(fleet: &Fleet) -> P {
    let mut p = P::default();
    for o in &fleet.outcomes {
        p.observe(o);
    }
    p
}

/// Checks that wasm and native route (never reject) and agree on where,
/// over a few `random`s; prints the agreement, since `adaptive`'s `ln`/`exp`
/// may round differently in the guest's libm.
fn cross_check<P: Native>(
    name: &str,
    n: usize,
    wasm: &Policy,
    native: &mut P,
    fleet: &Fleet,
    facts: Facts<'_>,
) {
    const TRIES: u64 = 32;
    let (mut wreq, mut sreq) = (wit_request(name), sdk_request(name));
    let cands = fleet.wit(n);
    let mut agree = 0;
    for i in 0..TRIES {
        (wreq.random, sreq.random) = (random(i), random(i));
        let w = match wasm.pick(&wreq, &cands) {
            Ok(wit::Decision::Route(i)) => i,
            other => panic!("{name}/wasm/{n}: expected a route, got {other:?}"),
        };
        let s = native
            .pick(&sreq, &fleet.rows[..n], facts)
            .unwrap_or_else(|e| panic!("{name}/native/{n}: rejected: {e}"));
        agree += u64::from(w == s);
    }
    // Stateful round-robin agrees too: both sides advance in step here.
    if agree != TRIES {
        eprintln!("note: {name}/{n}: wasm and native agree on {agree}/{TRIES} picks");
    }
}

fn bench_policy<P: Native + Default>(
    c: &mut Criterion,
    engine: &PolicyEngine,
    name: &str,
    fleet: &Fleet,
    dir: &Arc<Directory>,
) {
    let wasm = load(engine, name, fleet, dir);
    let mut nat: P = native(fleet);
    let facts = |key: u32| fleet.facts.get(&key).cloned();
    for n in SIZES {
        cross_check(name, n, &wasm, &mut nat, fleet, &facts);
    }
    let mut group = c.benchmark_group(name);
    for n in SIZES {
        let candidates = &fleet.rows[..n];
        let mut req = sdk_request(name);
        let mut i = 0u64;
        group.bench_function(BenchmarkId::new("native", n), |b| {
            b.iter(|| {
                i += 1;
                req.random = random(i);
                black_box(nat.pick(black_box(&req), black_box(candidates), &facts))
            });
        });
        bench_wasm(&mut group, "wasm", n, &wasm, &fleet.wit(n), name);
    }
    group.finish();
    assert_eq!(wasm.traps_total(), 0, "{name}: the component trapped");
}

fn bench_wasm(
    group: &mut BenchmarkGroup<'_, WallTime>,
    function: &str,
    n: usize,
    wasm: &Policy,
    candidates: &wit::Candidates,
    name: &str,
) {
    let mut req = wit_request(name);
    let mut i = 0u64;
    group.bench_function(BenchmarkId::new(function, n), |b| {
        b.iter(|| {
            i += 1;
            req.random = random(i);
            black_box(wasm.pick(black_box(&req), black_box(candidates)))
        });
    });
}

/// Engine settings: a deadline long enough that a descheduled bench thread
/// never traps (a trap would reset the policy's state); its length does not
/// change the cost of a call. Compiled code is cached across runs.
fn engine(interruptible: bool) -> PolicyEngine {
    PolicyEngine::new(EngineConfig {
        pick_deadline: Duration::from_secs(1),
        load_deadline: Duration::from_secs(5),
        cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("pick-bench-cache")),
        interruptible,
        ..EngineConfig::default()
    })
    .expect("policy engine")
}

fn bench_epoch(c: &mut Criterion, fleet: &Fleet, dir: &Arc<Directory>) {
    let (on, off) = (engine(true), engine(false));
    let mut group = c.benchmark_group("epoch");
    for name in POLICIES {
        for (engine, label) in [(&on, "on"), (&off, "off")] {
            let wasm = load(engine, name, fleet, dir);
            bench_wasm(
                &mut group,
                &format!("{name}-{label}"),
                EPOCH_SIZE,
                &wasm,
                &fleet.wit(EPOCH_SIZE),
                name,
            );
            assert_eq!(wasm.traps_total(), 0, "{name}: the component trapped");
        }
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let fleet = Fleet::new();
    let dir = Arc::new(Directory(
        fleet
            .facts
            .iter()
            .map(|(&k, f)| (k, wit_node_info(f)))
            .collect(),
    ));
    let engine = engine(true);
    bench_policy::<round_robin::RoundRobin>(c, &engine, "round-robin", &fleet, &dir);
    bench_policy::<least_request::LeastRequest>(c, &engine, "least-request", &fleet, &dir);
    bench_policy::<latency::Latency>(c, &engine, "latency", &fleet, &dir);
    bench_policy::<cost::Cost>(c, &engine, "cost", &fleet, &dir);
    bench_policy::<resource_aware::ResourceAware>(c, &engine, "resource-aware", &fleet, &dir);
    bench_policy::<adaptive::Adaptive>(c, &engine, "adaptive", &fleet, &dir);
    bench_policy::<pick_first::PickFirst>(c, &engine, "pick-first", &fleet, &dir);
    bench_polyglot(c, &engine, &fleet, &dir);
    bench_epoch(c, &fleet, &dir);
    bench_score(c, &fleet, &dir);
    bench_lowering(c, &fleet);
}

fn main() {
    let since = SystemTime::now();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .nresamples(10_000)
        .configure_from_args();
    benches(&mut c);
    c.final_summary();
    summary(since);
    polyglot_summary(since);
    lowering_summary(since);
    score_summary(since);
}
