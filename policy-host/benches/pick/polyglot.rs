//! The policies written in Python and JavaScript (`least-loaded-py`,
//! `least-loaded-js`, built by `make plugins-polyglot` into
//! `plugins/dist-polyglot/`): one wasm pick over
//! 1, 10, 100 and 1000 candidates (group `<policy>`, function `wasm`), beside
//! the Rust `least-request` component's, and what loading each costs
//! (compile and instantiate with no cache, then instantiate from the cache),
//! printed. A component that is absent is skipped with a note.

use std::time::Instant;

use super::summary::{fmt_ns, median_ns};
use super::*;

/// The polyglot components of `plugins/dist-polyglot`, with their language.
pub(super) const POLYGLOT: [(&str, &str); 2] = [
    ("least-loaded-py", "Python"),
    ("least-loaded-js", "JavaScript"),
];

/// Loads `path` on a fresh engine without a compile cache, then again on
/// `cached` (whose cache the first load of the bench filled), and prints
/// both times and the file's size.
fn load_times(path: &Path, cached: &PolicyEngine, dir: &Arc<Directory>) {
    let cold = PolicyEngine::new(EngineConfig {
        load_deadline: Duration::from_secs(30),
        ..EngineConfig::default()
    })
    .expect("policy engine");
    let nodes: Arc<dyn NodeDirectory> = Arc::clone(dir) as _;
    let start = Instant::now();
    let policy = cold.load(path, Arc::clone(&nodes));
    let compile = start.elapsed();
    let start = Instant::now();
    let again = cached.load(path, nodes);
    let instantiate = start.elapsed();
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    match (policy, again) {
        (Ok(p), Ok(_)) => eprintln!(
            "load {}: {:.1} MiB; compile + instantiate {compile:.2?}, from the cache {instantiate:.2?}",
            p.name(),
            f64::from(u32::try_from(size).unwrap_or(u32::MAX)) / f64::from(1_u32 << 20)
        ),
        (Err(e), _) | (_, Err(e)) => panic!("loading {}: {e}", path.display()),
    }
}

/// Benchmarks each polyglot component present in `plugins/dist-polyglot`.
pub(super) fn bench_polyglot(
    c: &mut Criterion,
    engine: &PolicyEngine,
    fleet: &Fleet,
    dir: &Arc<Directory>,
) {
    for (name, _) in POLYGLOT {
        let path = dist()
            .with_file_name("dist-polyglot")
            .join(format!("{name}.wasm"));
        if !path.is_file() {
            eprintln!(
                "note: {} is absent (`make plugins-polyglot`): not measured",
                path.display()
            );
            continue;
        }
        // Loaded without the fleet's outcomes: both are stateless
        // (`observe` ignores them), and the JavaScript component runs past
        // the 16 MiB memory cap after a few thousand calls (its heap is not
        // collected between calls), which traps and rebuilds it.
        let nodes: Arc<dyn NodeDirectory> = Arc::clone(dir) as _;
        let wasm = engine
            .load(&path, nodes)
            .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
        load_times(&path, engine, dir);
        let mut group = c.benchmark_group(name);
        for n in SIZES {
            bench_wasm(&mut group, "wasm", n, &wasm, &fleet.wit(n), name);
        }
        group.finish();
        eprintln!(
            "{name}: {} traps over {} picks (a trap rebuilds the instance)",
            wasm.traps_total(),
            wasm.picks_total()
        );
    }
}

/// Prints the polyglot table of this run, if measured: each pick beside the
/// Rust `least-request` component's.
pub(super) fn polyglot_summary(since: SystemTime) {
    let mut rows = Vec::new();
    for (name, language) in POLYGLOT {
        for n in SIZES {
            let Some(wasm) = median_ns(name, "wasm", n, since) else {
                continue;
            };
            let rust = median_ns("least-request", "wasm", n, since);
            rows.push(format!(
                "| {name} | {language} | {n} | {} | {} | {} |",
                fmt_ns(wasm),
                rust.map_or("-".to_owned(), fmt_ns),
                rust.map_or("-".to_owned(), |r| format!("{:.0}×", wasm / r)),
            ));
        }
    }
    if !rows.is_empty() {
        println!("\nPolicies in other languages, one wasm pick, median (criterion):\n");
        println!("| policy | language | n | wasm | Rust least-request wasm | ratio |");
        println!("|---|---|---:|---:|---:|---:|");
        for row in rows {
            println!("{row}");
        }
    }
}
