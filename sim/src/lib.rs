//! `switchyard-sim`: a discrete-event simulator of a Switchyard fleet on the
//! gateway's own scheduling core.
//!
//! Virtual time (a base [`std::time::Instant`] plus virtual offsets, events
//! ordered by (time, sequence)), a seeded RNG and no sockets: the same
//! scenario and seed give the same figures on any machine. It drives
//! [`switchyard_core::Core`] with the real compiled wasm policies through
//! the real policy host ([`policy_host::PolicyEngine`]), feeding each pick
//! virtual `now-ms` and a seeded `random`, and observing every call that
//! ends, as the gateway does. The nodes are simulated: service-time
//! distributions, speed factors, workers (real parallelism) apart from the
//! core's `max_concurrent` admission cap, a FIFO queue per node, slowdown
//! and failure windows, slots with load times, cost per hour.
//!
//! - [`scenario`]: the TOML scenario format (`sim/scenarios/*.toml`).
//! - [`engine`]: the event loop ([`engine::Sim`]), nodes, deadlines, swaps.
//! - [`policy`]: the wasm policy as a [`switchyard_core::Balance`].
//! - [`metrics`]: per-run figures ([`metrics::Report`]) and the table.
//! - [`repro`]: the published results `make sim` reproduces.
//! - [`tree`]: a tree of gateways (the echo wave, rebalancing between
//!   children) on the algorithms of `switchyard-tree`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

pub mod dist;
pub mod engine;
pub mod metrics;
pub mod policy;
pub mod repro;
pub mod scenario;
pub mod tree;

pub use engine::{Sim, SimError};
pub use metrics::Report;
pub use scenario::Scenario;

/// One run to make: a scenario and a policy file.
#[derive(Debug, Clone)]
pub struct Run {
    /// The scenario.
    pub scenario: Scenario,
    /// The policy's `.wasm` file.
    pub policy: PathBuf,
}

/// The runs of `scenario`: one per policy it lists, found in `plugins`.
pub fn runs_of(scenario: &Scenario, plugins: &Path) -> Vec<Run> {
    scenario
        .policies
        .iter()
        .map(|p| Run {
            scenario: scenario.clone(),
            policy: plugins.join(p),
        })
        .collect()
}

/// Makes `runs`, `jobs` at a time on as many threads (each with its own
/// policy engine), and returns their reports in the order of `runs`. Each
/// run is deterministic whatever the order or parallelism.
pub fn run_all(runs: &[Run], jobs: usize) -> Vec<Result<Report, SimError>> {
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<Result<Report, SimError>>>> =
        runs.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, runs.len().max(1)) {
            scope.spawn(|| {
                let engine = policy_host::PolicyEngine::new(policy::engine_config());
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(run) = runs.get(i) else { break };
                    let result = match &engine {
                        Ok(engine) => Sim::new(&run.scenario, engine, &run.policy).map(Sim::run),
                        Err(e) => Err(SimError::Policy {
                            path: run.policy.display().to_string(),
                            source: policy_host::PolicyError::Engine {
                                reason: e.to_string(),
                            },
                        }),
                    };
                    if let Ok(mut slot) = results[i].lock() {
                        *slot = Some(result);
                    }
                }
            });
        }
    });
    results
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .ok()
                .flatten()
                .unwrap_or(Err(SimError::Lost))
        })
        .collect()
}

/// Threads to use by default: the machine's parallelism.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
