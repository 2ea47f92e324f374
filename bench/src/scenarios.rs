//! Measuring: a [`System`] is one way of making the workload's call (a
//! target and the processes whose CPU counts); a scenario measures its
//! systems interleaved (`for rep in 0..reps { for system in systems { .. } }`)
//! and keeps each figure's median over the reps.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use loadgen::{Arrival, CallFailure, HttpTarget, Plan, Process, QuicTarget, Report, Target};
use serde::Serialize;

use crate::procs::cpu_seconds;

/// Calls in flight of the max-rate (closed-loop) runs.
pub const IN_FLIGHT: usize = 16;
/// Most calls outstanding in the open loop at half the max rate (and the
/// HTTP targets' keep-alive connections): Poisson bursts past it are sent
/// late, still measured from when they were due.
pub const HALF_MAX_IN_FLIGHT: usize = 64;

/// A QUIC (SDK) or HTTP target.
#[derive(Debug)]
pub enum AnyTarget {
    /// Through the SDK.
    Quic(QuicTarget),
    /// A POST.
    Http(HttpTarget),
    /// Through the SDK, each call to the next of several gateways.
    Spread(QuicSpread),
    /// Look-aside: on leases, straight to the nodes (or streamed).
    LookAside(crate::lookaside::LookAside),
    /// A streamed chat completion, its time to first token recorded.
    Stream(crate::routers::stream::StreamTarget),
}

impl AnyTarget {
    /// Forgets what the target recorded of its own (times to first token)
    /// before a measured window.
    pub fn reset(&self) {
        if let Self::Stream(t) = self {
            t.reset();
        }
    }

    /// What the target recorded of its own since [`reset`](Self::reset),
    /// under `prefix.`: a stream's `ttft_p50_us` and `ttft_p99_us`.
    pub fn figures(&self, prefix: &str, out: &mut BTreeMap<String, f64>) {
        if let Self::Stream(t) = self {
            for (name, q) in [("ttft_p50_us", 0.5), ("ttft_p99_us", 0.99)] {
                if let Some(us) = t.first_token_quantile_us(q) {
                    out.insert(format!("{prefix}.{name}"), us);
                }
            }
        }
    }
}

impl Target for AnyTarget {
    async fn call(&self) -> Result<(), CallFailure> {
        match self {
            Self::Quic(t) => t.call().await,
            Self::Http(t) => t.call().await,
            Self::Spread(t) => t.call().await,
            Self::LookAside(t) => t.call().await,
            Self::Stream(t) => t.call().await,
        }
    }
}

/// SDK targets (one per gateway) taken round-robin, call by call.
#[derive(Debug)]
pub struct QuicSpread {
    targets: Vec<QuicTarget>,
    next: std::sync::atomic::AtomicUsize,
}

impl QuicSpread {
    /// Spreads the calls over `targets` (at least one).
    pub fn new(targets: Vec<QuicTarget>) -> Self {
        Self {
            targets,
            next: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    async fn call(&self) -> Result<(), CallFailure> {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match self.targets.get(i % self.targets.len().max(1)) {
            Some(t) => t.call().await,
            None => Err(CallFailure::new("no target")),
        }
    }
}

/// One system measured.
#[derive(Debug, Clone)]
pub struct System {
    /// Its name in the tables.
    pub name: String,
    /// What the call goes through.
    pub path: String,
    /// The target.
    pub target: Arc<AnyTarget>,
    /// The proxy's processes (the gateway for Switchyard).
    pub proxy_pids: Vec<u32>,
    /// Every process of the system (gateway and agents for Switchyard).
    pub all_pids: Vec<u32>,
}

/// Lengths of a measurement.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Timing {
    /// Unrecorded run before each measurement, s.
    pub warm_up_s: f64,
    /// The measured window, s.
    pub duration_s: f64,
    /// Repetitions (medians over these).
    pub reps: usize,
}

/// The steps a scenario measures for each system in each rep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Step {
    /// Closed loop, [`IN_FLIGHT`] callers: the max rate.
    Max,
    /// Closed loop, 1 caller: latency at 1 in flight.
    One,
    /// Open loop (Poisson) at half this rep's max rate (needs `Max` first).
    Half,
    /// Open loop (Poisson) at [`FIXED_RATE`] calls/s, whatever the system's
    /// max: rows compared at the same offered load.
    Fixed,
}

/// [`Step::Fixed`]'s rate, calls/s: below the max of every row of the
/// scale section on 2 cores (1 597 calls/s was the lowest, 1 000 nodes
/// offered to the policy all at once, in a slow hour).
pub const FIXED_RATE: f64 = 1000.0;

impl Step {
    /// The figures' prefix: `max`, `one`, `half`, `fixed`.
    pub fn key(self) -> &'static str {
        match self {
            Self::Max => "max",
            Self::One => "one",
            Self::Half => "half",
            Self::Fixed => "fixed",
        }
    }
}

/// One measurement: the load generator's report and the CPU used.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// The load generator's report.
    pub report: Report,
    /// CPU seconds of the proxy's processes in the window.
    pub cpu_proxy_s: f64,
    /// CPU seconds of all the system's processes in the window.
    pub cpu_all_s: f64,
}

impl Measurement {
    /// Its figures under `prefix.`: calls/s, errors, calls per CPU-second
    /// (proxy, all), CPU µs per call (proxy), latency p50/p90/p99 µs.
    pub fn figures(&self, prefix: &str, out: &mut BTreeMap<String, f64>) {
        let r = &self.report;
        let per = |cpu: f64| if cpu > 0.0 { r.calls as f64 / cpu } else { 0.0 };
        let calls = r.calls.max(1) as f64;
        for (k, v) in [
            ("calls_per_s", r.calls_per_s),
            ("errors", r.errors as f64),
            ("calls_per_cpu_s_proxy", per(self.cpu_proxy_s)),
            ("calls_per_cpu_s_all", per(self.cpu_all_s)),
            ("cpu_us_per_call_proxy", self.cpu_proxy_s * 1e6 / calls),
            ("cpu_us_per_call_all", self.cpu_all_s * 1e6 / calls),
            ("p50_us", r.latency_us.p50),
            ("p90_us", r.latency_us.p90),
            ("p99_us", r.latency_us.p99),
        ] {
            out.insert(format!("{prefix}.{k}"), v);
        }
    }
}

/// Runs `arrival` against `system`: an unrecorded warm-up run, then the
/// measured run with the CPU of its processes read before and after.
pub async fn measure(system: &System, arrival: Arrival, timing: &Timing, seed: u64) -> Measurement {
    if timing.warm_up_s > 0.0 {
        let warm = Plan {
            arrival,
            warm_up: Duration::ZERO,
            duration: Duration::from_secs_f64(timing.warm_up_s),
            seed,
        };
        loadgen::run(system.target.clone(), &warm, None).await;
    }
    system.target.reset();
    let plan = Plan {
        arrival,
        warm_up: Duration::ZERO,
        duration: Duration::from_secs_f64(timing.duration_s),
        seed,
    };
    let (p0, a0) = (
        cpu_seconds(&system.proxy_pids),
        cpu_seconds(&system.all_pids),
    );
    let report = loadgen::run(system.target.clone(), &plan, None).await;
    let (p1, a1) = (
        cpu_seconds(&system.proxy_pids),
        cpu_seconds(&system.all_pids),
    );
    Measurement {
        report,
        cpu_proxy_s: p1 - p0,
        cpu_all_s: a1 - a0,
    }
}

/// A system's results over the reps.
#[derive(Debug, Clone, Serialize)]
pub struct SystemResult {
    /// Its name.
    pub name: String,
    /// What the call goes through.
    pub path: String,
    /// Each figure's median over the reps.
    pub medians: BTreeMap<String, f64>,
    /// Each rep's measurements by step.
    pub reps: Vec<BTreeMap<String, Measurement>>,
}

/// The median of `values` (mean of the middle two for an even count; 0 for
/// none). NaNs sort last.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Each key's median over `reps` (a key missing from a rep is skipped there).
pub fn medians(reps: &[BTreeMap<String, f64>]) -> BTreeMap<String, f64> {
    let mut keys: Vec<&String> = reps.iter().flat_map(|r| r.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|k| {
            let vals: Vec<f64> = reps.iter().filter_map(|r| r.get(k).copied()).collect();
            (k.clone(), median(&vals))
        })
        .collect()
}

/// Measures `steps` on each system, interleaved over `timing.reps`, and
/// prints a line per measurement.
pub async fn interleaved(
    section: &str,
    systems: &[System],
    steps: &[Step],
    timing: &Timing,
) -> Vec<SystemResult> {
    let mut figures: Vec<Vec<BTreeMap<String, f64>>> = vec![Vec::new(); systems.len()];
    let mut raw: Vec<Vec<BTreeMap<String, Measurement>>> = vec![Vec::new(); systems.len()];
    for rep in 0..timing.reps {
        for (i, system) in systems.iter().enumerate() {
            let mut f = BTreeMap::new();
            let mut m = BTreeMap::new();
            let mut max_rate = 0.0;
            for step in steps {
                let arrival = match step {
                    Step::Max => Arrival::Closed {
                        concurrency: IN_FLIGHT,
                    },
                    Step::One => Arrival::Closed { concurrency: 1 },
                    Step::Half => Arrival::Open {
                        rate_per_s: (max_rate / 2.0_f64).max(1.0),
                        process: Process::Poisson,
                        max_in_flight: HALF_MAX_IN_FLIGHT,
                    },
                    Step::Fixed => Arrival::Open {
                        rate_per_s: FIXED_RATE,
                        process: Process::Poisson,
                        max_in_flight: HALF_MAX_IN_FLIGHT,
                    },
                };
                let seed = (rep * 100 + i) as u64;
                let result = measure(system, arrival, timing, seed).await;
                if *step == Step::Max {
                    max_rate = result.report.calls_per_s;
                }
                println!(
                    "[{section} {}/{}] {:<22} {:<4} {:>9.0} calls/s  p50 {:>7.0} µs  p99 {:>7.0} µs  errors {}",
                    rep + 1,
                    timing.reps,
                    system.name,
                    step.key(),
                    result.report.calls_per_s,
                    result.report.latency_us.p50,
                    result.report.latency_us.p99,
                    result.report.errors
                );
                result.figures(step.key(), &mut f);
                system.target.figures(step.key(), &mut f);
                if system.all_pids.is_empty() {
                    f.retain(|k, _| !k.contains("cpu"));
                }
                m.insert(step.key().to_string(), result);
            }
            figures[i].push(f);
            raw[i].push(m);
        }
    }
    systems
        .iter()
        .zip(figures.iter().zip(raw))
        .map(|(s, (f, reps))| SystemResult {
            name: s.name.clone(),
            path: s.path.clone(),
            medians: medians(f),
            reps,
        })
        .collect()
}

/// Adds `added.STEP.p50_us` / `p99_us` to every result: its median latency
/// at 1 in flight (`one`) and at half its max rate (`half`) minus the
/// `baseline` system's (the backend called directly) at 1 in flight, the
/// backend's own unloaded time.
pub fn add_added_latency(results: &mut [SystemResult], baseline: &str) {
    let Some(base) = results
        .iter()
        .find(|r| r.name == baseline)
        .map(|r| r.medians.clone())
    else {
        return;
    };
    for r in results.iter_mut().filter(|r| r.name != baseline) {
        for step in ["one", "half"] {
            for p in ["p50_us", "p99_us"] {
                let key = format!("{step}.{p}");
                if let (Some(mine), Some(theirs)) =
                    (r.medians.get(&key), base.get(&format!("one.{p}")))
                {
                    let added = mine - theirs;
                    r.medians.insert(format!("added.{key}"), added);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[5.0, 1.0, 3.0, 2.0, 4.0]), 3.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[7.0]), 7.0);
    }

    #[test]
    fn medians_per_key_skip_missing_values() {
        let rep = |pairs: &[(&str, f64)]| -> BTreeMap<String, f64> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        let m = medians(&[
            rep(&[("a", 1.0), ("b", 10.0)]),
            rep(&[("a", 3.0)]),
            rep(&[("a", 2.0), ("b", 20.0)]),
        ]);
        assert_eq!(m["a"], 2.0);
        assert_eq!(m["b"], 15.0);
    }
}
