//! The published results `make sim` reproduces, each a set of runs and the
//! checks of their figures against the published ones (PASS or FAIL):
//!
//! 1. Mitzenmacher's supermarket model: random vs two choices.
//! 2. Erlang C: the core's own queue (late binding) as an M/M/c queue.
//! 3. Linkerd's slow-backend experiment: round-robin, least-request and
//!    peak-EWMA against a backend that turns slow.
//! 4. A heterogeneous GPU fleet: every shipped policy's p50, p99 and cost.
//! 5. Model swapping: the core's swap rules on and off against an oracle.
//!
//! The scenarios are the files in `sim/scenarios/`, compiled in, varied
//! here (rate, length). Runs are deterministic, so the shortened ones are
//! tests (`cargo test -p switchyard-sim`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::engine::SimError;
use crate::metrics::{Report, fmt_ms};
use crate::scenario::{Preload, Process, Scenario};
use crate::{Run, run_all, runs_of};

/// How long the reproductions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Shortened: the tests, in a debug build.
    Short,
    /// Full length: `make sim`, in a release build.
    Full,
}

/// One figure checked against its published value.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// What is measured, e.g. `λ=0.99 random: mean time in system`.
    pub figure: String,
    /// The measured value, formatted.
    pub measured: String,
    /// The published (or theoretical) value, formatted; `-` when none.
    pub published: String,
    /// The PASS rule, in words.
    pub criterion: String,
    /// Whether the rule held.
    pub pass: bool,
}

/// One reproduction's result.
#[derive(Debug, Clone)]
pub struct Reproduction {
    /// Its number and name.
    pub title: String,
    /// Where the published figures come from.
    pub source: String,
    /// Its checks.
    pub checks: Vec<Check>,
    /// The runs' reports, each with its label.
    pub reports: Vec<(String, Report)>,
}

/// A reproduction: the runs it needs at a scale, and how it judges them.
pub struct Plan {
    /// Its number and name.
    pub title: &'static str,
    /// The published source.
    pub source: &'static str,
    /// The runs, each with a label for its checks.
    pub runs: Vec<(String, Run)>,
    /// The scale the runs are at (the short ones have wider bands).
    pub scale: Scale,
    judge: Judge,
}

/// How a reproduction judges its labelled reports at a scale.
type Judge = fn(&[(String, Report)], Scale) -> Vec<Check>;

/// Every reproduction's plan at `scale`, policies from `plugins`.
///
/// # Errors
/// A built-in scenario does not parse (a bug).
pub fn plans(plugins: &Path, scale: Scale) -> Result<Vec<Plan>, SimError> {
    Ok(vec![
        supermarket(plugins, scale)?,
        erlang_c(plugins, scale)?,
        linkerd(plugins, scale)?,
        heterogeneous(plugins, scale)?,
        swapping(plugins, scale)?,
    ])
}

/// Runs `plans` (all their runs in one pool of `jobs` threads, longest
/// first) and judges them.
///
/// # Errors
/// A run could not start (a policy file is missing).
pub fn run_plans(plans: Vec<Plan>, jobs: usize) -> Result<Vec<Reproduction>, SimError> {
    let mut runs: Vec<(usize, usize, Run)> = Vec::new();
    for (p, plan) in plans.iter().enumerate() {
        for (r, (_, run)) in plan.runs.iter().enumerate() {
            runs.push((p, r, run.clone()));
        }
    }
    // Longest first: the pool then ends about together.
    runs.sort_by(|a, b| cost(&b.2).total_cmp(&cost(&a.2)));
    let results = run_all(
        &runs
            .iter()
            .map(|(_, _, run)| run.clone())
            .collect::<Vec<_>>(),
        jobs,
    );
    let mut by_plan: Vec<Vec<Option<Report>>> =
        plans.iter().map(|p| vec![None; p.runs.len()]).collect();
    for ((p, r, _), result) in runs.into_iter().zip(results) {
        by_plan[p][r] = Some(result?);
    }
    Ok(plans
        .into_iter()
        .zip(by_plan)
        .map(|(plan, reports)| {
            let labelled: Vec<(String, Report)> = plan
                .runs
                .iter()
                .zip(reports)
                .filter_map(|((label, _), r)| Some((label.clone(), r?)))
                .collect();
            Reproduction {
                title: plan.title.to_string(),
                source: plan.source.to_string(),
                checks: (plan.judge)(&labelled, plan.scale),
                reports: labelled,
            }
        })
        .collect())
}

/// Expected work of a run: calls offered (for ordering the pool).
fn cost(run: &Run) -> f64 {
    let s = &run.scenario;
    let rate: f64 = s
        .arrivals
        .iter()
        .map(|a| match &a.process {
            Process::Poisson { rate_per_s } => *rate_per_s,
            Process::OnOff {
                rate_per_s,
                off_rate_per_s,
                on_s,
                off_s,
                ..
            } => (rate_per_s * on_s + off_rate_per_s * off_s) / (on_s + off_s),
            Process::Burst { .. } => 0.0,
            Process::Trace { .. } => 1.0,
        })
        .sum();
    let nodes: u32 = s.nodes.iter().map(|g| g.count).sum();
    rate * s.duration_s * (1.0 + f64::from(nodes) / 50.0)
}

/// Runs the reproductions (all, or those `only` names by number or by a
/// word of their title), prints each with its checks, and a summary;
/// whether every check passed.
///
/// # Errors
/// A run could not start.
pub fn run_and_print(
    plugins: &Path,
    scale: Scale,
    jobs: usize,
    only: &[String],
) -> Result<bool, SimError> {
    let started = Instant::now();
    let chosen: Vec<Plan> = plans(plugins, scale)?
        .into_iter()
        .filter(|p| {
            only.is_empty()
                || only.iter().any(|o| {
                    if o.chars().all(|c| c.is_ascii_digit()) {
                        p.title.starts_with(&format!("{o}."))
                    } else {
                        p.title.to_lowercase().contains(&o.to_lowercase())
                    }
                })
        })
        .collect();
    let done = run_plans(chosen, jobs)?;
    let mut all = true;
    for r in &done {
        print!("{}", render(r));
        all &= r.checks.iter().all(|c| c.pass);
    }
    println!("{}", summary(&done));
    println!(
        "{} in {:.0} s ({} scale, {jobs} jobs)",
        if all { "ALL PASS" } else { "SOME FAIL" },
        started.elapsed().as_secs_f64(),
        match scale {
            Scale::Short => "short",
            Scale::Full => "full",
        }
    );
    Ok(all)
}

/// One reproduction as text: title, source, the runs' table, the checks.
pub fn render(r: &Reproduction) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "=== {}\n    {}", r.title, r.source);
    let rows: Vec<Report> = r
        .reports
        .iter()
        .map(|(label, report)| Report {
            policy: label.clone(),
            ..report.clone()
        })
        .collect();
    for line in crate::metrics::table(&rows).lines() {
        let _ = writeln!(out, "    {line}");
    }
    for c in &r.checks {
        let _ = writeln!(
            out,
            "    {:<4} {}: measured {}, published {} ({})",
            if c.pass { "PASS" } else { "FAIL" },
            c.figure,
            c.measured,
            c.published,
            c.criterion
        );
    }
    out.push('\n');
    out
}

/// Every check as a Markdown table (the one in `sim/README.md`).
pub fn summary(done: &[Reproduction]) -> String {
    let mut out = String::from(
        "| reproduction | figure | measured | published | criterion | result |\n|---|---|---:|---:|---|---|\n",
    );
    for r in done {
        let short = r.title.split(" (").next().unwrap_or(&r.title);
        for c in &r.checks {
            let _ = writeln!(
                out,
                "| {short} | {} | {} | {} | {} | {} |",
                c.figure,
                c.measured,
                c.published,
                c.criterion,
                if c.pass { "PASS" } else { "FAIL" }
            );
        }
    }
    out
}

fn builtin(text: &str, name: &str) -> Result<Scenario, SimError> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    Ok(Scenario::parse(text, name, &dir)?)
}

fn run(scenario: &Scenario, plugins: &Path, policy: &str) -> Run {
    Run {
        scenario: scenario.clone(),
        policy: plugins.join(policy),
    }
}

fn find<'a>(reports: &'a [(String, Report)], label: &str) -> Option<&'a Report> {
    reports.iter().find(|(l, _)| l == label).map(|(_, r)| r)
}

fn missing(label: &str) -> Check {
    Check {
        figure: label.to_string(),
        measured: "-".into(),
        published: "-".into(),
        criterion: "the run must finish".into(),
        pass: false,
    }
}

fn set_rate(scenario: &mut Scenario, rate: f64) {
    for a in &mut scenario.arrivals {
        a.process = Process::Poisson { rate_per_s: rate };
    }
}

// ---------------------------------------------------------------------------
// 1. The supermarket model.

/// Mean time in system of the supermarket model with two choices as n → ∞,
/// in mean service times: Σ_{i≥1} λ^(2^i − 2) (Mitzenmacher 2001, Thm. 4).
pub fn two_choices_theory(lambda: f64) -> f64 {
    (1..64)
        .map(|i| lambda.powf(2f64.powi(i) - 2.0))
        .take_while(|x| *x > 1e-15)
        .sum()
}

const SUPERMARKET: &str = include_str!("../scenarios/supermarket.toml");

fn supermarket(plugins: &Path, scale: Scale) -> Result<Plan, SimError> {
    let base = builtin(SUPERMARKET, "supermarket")?;
    // (λ, policy, n, replications, duration s, warm-up s). Long runs at
    // λ = 0.99, since M/M/1 at ρ = 0.99 relaxes over ~2·10⁴ mean service
    // times; random's run there is split into independent replications
    // (own seed, own warm-up) that run in parallel. Every run starts with
    // the stationary mean number of calls arriving at 0, so the warm-up
    // starts near equilibrium rather than from empty.
    let plan: &[(f64, &str, u32, u64, f64, f64)] = match scale {
        Scale::Short => &[
            (0.9, "random", 100, 1, 2_200.0, 200.0),
            (0.9, "least-request", 100, 1, 1_100.0, 100.0),
        ],
        Scale::Full => &[
            (0.9, "random", 100, 1, 22_000.0, 2_000.0),
            (0.9, "least-request", 100, 1, 11_000.0, 1_000.0),
            (0.99, "random", 100, 2, 120_000.0, 20_000.0),
            (0.99, "least-request", 100, 1, 44_000.0, 4_000.0),
        ],
    };
    let mut runs = Vec::new();
    for &(lambda, policy, n, replications, duration, warmup) in plan {
        for k in 0..replications {
            let mut s = base.clone();
            s.name = format!("supermarket λ={lambda} n={n}");
            s.seed = base.seed + k;
            s.duration_s = duration;
            s.warmup_s = warmup;
            for g in &mut s.nodes {
                g.count = n;
            }
            set_rate(&mut s, lambda * f64::from(n));
            // Start near equilibrium: the stationary mean number of calls
            // in system, n·λ·W (Little), arrives at 0.
            let w = if policy == "random" {
                1.0 / (1.0 - lambda)
            } else {
                two_choices_theory(lambda)
            };
            let mut fill = s.arrivals[0].clone();
            fill.process = Process::Burst {
                at_s: 0.0,
                calls: (f64::from(n) * lambda * w).round() as u32,
                every_s: None,
            };
            s.arrivals.push(fill);
            runs.push((
                format!("{lambda} {policy} n={n}"),
                run(&s, plugins, &format!("{policy}.wasm")),
            ));
        }
    }
    Ok(Plan {
        title: "1. Supermarket model (Mitzenmacher 2001)",
        source: "M. Mitzenmacher, \"The Power of Two Choices in Randomized Load Balancing\", IEEE TPDS 12(10), 2001: n = 100, exp(1) service, Poisson λn; random = M/M/1: 1/(1−λ); two choices (n → ∞): Σ λ^(2^i−2)",
        runs,
        scale,
        judge: judge_supermarket,
    })
}

/// Runs with the same label (replications) as one: means weighted by
/// calls, standard errors combined.
fn merge(reports: &[(String, Report)]) -> Vec<(String, Report)> {
    let mut out: Vec<(String, Report)> = Vec::new();
    for (label, r) in reports {
        match out.iter_mut().find(|(l, _)| l == label) {
            None => out.push((label.clone(), r.clone())),
            Some((_, m)) => {
                let (a, b) = (m.calls as f64, r.calls as f64);
                let n = (a + b).max(1.0);
                m.mean_se_ms =
                    ((a / n * m.mean_se_ms).powi(2) + (b / n * r.mean_se_ms).powi(2)).sqrt();
                m.mean_ms = (a * m.mean_ms + b * r.mean_ms) / n;
                m.mean_wait_ms = (a * m.mean_wait_ms + b * r.mean_wait_ms) / n;
                m.calls += r.calls;
            }
        }
    }
    out
}

fn judge_supermarket(reports: &[(String, Report)], scale: Scale) -> Vec<Check> {
    // Shortened runs (the tests) hold about a tenth of the calls: twice
    // the band.
    let band = match scale {
        Scale::Short => 0.20,
        Scale::Full => 0.10,
    };
    let mut checks = Vec::new();
    for (label, r) in &merge(reports) {
        let mut parts = label.split(' ');
        let lambda: f64 = parts.next().and_then(|l| l.parse().ok()).unwrap_or(0.0);
        let policy = parts.next().unwrap_or("");
        let n = parts.next().unwrap_or("");
        let (theory, name, published) = if policy == "random" {
            (1.0 / (1.0 - lambda), "random (one choice)", "1/(1−λ)")
        } else {
            (
                two_choices_theory(lambda),
                "least-request (two choices)",
                "Σλ^(2^i−2), n → ∞",
            )
        };
        let mean = r.mean_ms / 1000.0;
        let se = r.mean_se_ms / 1000.0;
        // The two-choice limit is for n → ∞; at n = 100 and λ = 0.99 the
        // finite system sits ~10% above it (sim/scripts/supermarket_ctmc.py,
        // an independent CTMC simulation of the model, gives 5.96 at
        // n = 100 and 5.50 at n = 1000), so there the band is 15%, above
        // the limit.
        let finite = policy != "random" && lambda >= 0.99 && n == "n=100";
        let (pass, criterion) = if finite {
            (
                mean >= theory && mean / theory - 1.0 <= 0.15,
                "above the limit, within 15% (finite n)".to_string(),
            )
        } else {
            (
                (mean / theory - 1.0).abs() <= band,
                format!("within {:.0}%", band * 100.0),
            )
        };
        checks.push(Check {
            figure: format!("λ={lambda} {n} {name}: mean time in system, s"),
            measured: format!("{mean:.3} ± {se:.3}"),
            published: format!("{theory:.3} ({published})"),
            criterion,
            pass,
        });
    }
    checks
}

// ---------------------------------------------------------------------------
// 2. Erlang C.

/// Erlang's C formula: the probability that a call waits in an M/M/c queue
/// with offered load `a` = λ/μ Erlangs (a < c).
pub fn erlang_c_probability(c: u32, a: f64) -> f64 {
    // Σ_{k<c} a^k/k! and a^c/c!, iteratively.
    let (mut sum, mut term) = (0.0, 1.0);
    for k in 0..c {
        sum += term;
        term *= a / f64::from(k + 1);
    }
    let top = term * f64::from(c) / (f64::from(c) - a);
    top / (sum + top)
}

/// Mean wait in queue of M/M/c, in mean service times: C(c, a) / (c − a).
pub fn erlang_c_wait(c: u32, a: f64) -> f64 {
    erlang_c_probability(c, a) / (f64::from(c) - a)
}

const ERLANG: &str = include_str!("../scenarios/erlang-c.toml");

fn erlang_c(plugins: &Path, scale: Scale) -> Result<Plan, SimError> {
    let base = builtin(ERLANG, "erlang-c")?;
    let c: u32 = base.nodes.iter().map(|g| g.count).sum();
    let rhos: &[(f64, f64)] = match scale {
        // (ρ, duration s): enough calls for a standard error near 1.5% (the
        // wait's variance grows towards ρ = 0.9 from its correlation, and
        // at ρ = 0.5 from how rarely a call waits at all).
        Scale::Short => &[(0.7, 8_000.0)],
        Scale::Full => &[
            (0.5, 400_000.0),
            (0.6, 200_000.0),
            (0.7, 200_000.0),
            (0.8, 200_000.0),
            (0.9, 400_000.0),
        ],
    };
    let mut runs = Vec::new();
    for &(rho, duration) in rhos {
        let mut s = base.clone();
        s.name = format!("erlang-c ρ={rho}");
        s.duration_s = duration;
        s.warmup_s = duration / 20.0;
        set_rate(&mut s, rho * f64::from(c));
        for policy in &base.policies {
            runs.push((format!("rho={rho} c={c}"), run(&s, plugins, policy)));
        }
    }
    Ok(Plan {
        title: "2. Erlang C (the core's queue as M/M/c)",
        source: "A. K. Erlang (1917); M/M/c: W_q = C(c, a) / (cμ − λ); c nodes with max_concurrent 1, the core's own queue (late binding), Poisson arrivals, exp(1 s) service",
        runs,
        scale,
        judge: judge_erlang,
    })
}

fn judge_erlang(reports: &[(String, Report)], scale: Scale) -> Vec<Check> {
    // Shortened: one ρ with a twentieth of the calls, twice the band.
    let band = match scale {
        Scale::Short => 0.10,
        Scale::Full => 0.05,
    };
    let mut checks = Vec::new();
    for (label, r) in reports {
        let mut parts = label.split(' ');
        let rho: f64 = parts
            .next()
            .and_then(|l| l.trim_start_matches("rho=").parse().ok())
            .unwrap_or(0.0);
        let c: u32 = parts
            .next()
            .and_then(|l| l.trim_start_matches("c=").parse().ok())
            .unwrap_or(1);
        let theory = erlang_c_wait(c, rho * f64::from(c));
        let wait = r.core_wait_ms / 1000.0;
        let se = r.mean_wait_se_ms / 1000.0;
        checks.push(Check {
            figure: format!("c={c} ρ={rho}: mean queue wait (core), s"),
            measured: format!("{wait:.4} ± {se:.4}"),
            published: format!("{theory:.4} (C(c,a)/(cμ−λ))"),
            criterion: format!("within {:.0}%", band * 100.0),
            pass: (wait / theory - 1.0).abs() <= band,
        });
    }
    checks
}

// ---------------------------------------------------------------------------
// 3. Linkerd's slow backend.

const LINKERD: &str = include_str!("../scenarios/linkerd-slow-backend.toml");

fn linkerd(plugins: &Path, scale: Scale) -> Result<Plan, SimError> {
    // The experiment is 60 s at 1000 calls/s: short enough to run whole in
    // the tests too.
    let base = builtin(LINKERD, "linkerd-slow-backend")?;
    let runs = runs_of(&base, plugins)
        .into_iter()
        .map(|r| (policy_stem(&r.policy), r))
        .collect();
    Ok(Plan {
        title: "3. Slow backend (Linkerd, Buoyant 2016)",
        source: "S. Jenson, R. Oanta, \"Beyond Round Robin: Load Balancing for Latency\", Buoyant, 2016: 11 backends, median 167 ms, one at 2 s for 30 of 60 s, 1000 calls/s, 1 s timeout; success within 1 s: round-robin ≈95%, least loaded ≈99%, peak EWMA ≈99.9%",
        runs,
        scale,
        judge: judge_linkerd,
    })
}

fn policy_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn judge_linkerd(reports: &[(String, Report)], _scale: Scale) -> Vec<Check> {
    let bands: [(&str, &str, f64, f64, &str); 3] = [
        ("round-robin", "≈95%", 93.0, 97.0, "93–97%"),
        ("least-request", "≈99%", 98.0, 100.0, "≥ 98%"),
        ("latency", "≈99.9%", 99.5, 100.0, "≥ 99.5%"),
    ];
    bands
        .iter()
        .map(|&(policy, published, low, high, criterion)| {
            let Some(r) = find(reports, policy) else {
                return missing(policy);
            };
            let share = r.within_deadline * 100.0;
            Check {
                figure: format!("{policy}: calls answered within 1 s"),
                measured: format!("{share:.2}%"),
                published: published.into(),
                criterion: criterion.into(),
                pass: (low..=high).contains(&share),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// 4. A heterogeneous GPU fleet.

const HETEROGENEOUS: &str = include_str!("../scenarios/heterogeneous.toml");

fn heterogeneous(plugins: &Path, scale: Scale) -> Result<Plan, SimError> {
    let mut base = builtin(HETEROGENEOUS, "heterogeneous")?;
    if scale == Scale::Short {
        base.duration_s = 600.0;
        base.warmup_s = 60.0;
    }
    let runs = runs_of(&base, plugins)
        .into_iter()
        .map(|r| (policy_stem(&r.policy), r))
        .collect();
    Ok(Plan {
        title: "4. Heterogeneous GPU fleet (no published figure)",
        source: "half the nodes 2× slower and cheaper per call, 80% load, every shipped policy; PASS: every run completes, and the latency-aware policies (latency, adaptive) beat round-robin's p99",
        runs,
        scale,
        judge: judge_heterogeneous,
    })
}

fn judge_heterogeneous(reports: &[(String, Report)], _scale: Scale) -> Vec<Check> {
    let mut checks = Vec::new();
    for (label, r) in reports {
        checks.push(Check {
            figure: format!("{label}: p50 / p99 ms, cost per call"),
            measured: format!(
                "{} / {}, {:.3e}",
                fmt_ms(r.p50_ms),
                fmt_ms(r.p99_ms),
                r.cost_per_call
            ),
            published: "-".into(),
            criterion: "the run completes (every call ends)".into(),
            pass: r.unfinished == 0 && r.calls > 0,
        });
    }
    let Some(rr) = find(reports, "round-robin") else {
        checks.push(missing("round-robin"));
        return checks;
    };
    for policy in ["latency", "adaptive"] {
        let Some(r) = find(reports, policy) else {
            checks.push(missing(policy));
            continue;
        };
        checks.push(Check {
            figure: format!("{policy}: p99 against round-robin's"),
            measured: format!("{} ms", fmt_ms(r.p99_ms)),
            published: format!("{} ms (round-robin)", fmt_ms(rr.p99_ms)),
            criterion: "below round-robin's p99".into(),
            pass: r.p99_ms < rr.p99_ms,
        });
    }
    checks
}

// ---------------------------------------------------------------------------
// 5. Model swapping.

const SWAPPING: &str = include_str!("../scenarios/swapping.toml");

fn swapping(plugins: &Path, scale: Scale) -> Result<Plan, SimError> {
    let mut base = builtin(SWAPPING, "swapping")?;
    if scale == Scale::Short {
        base.duration_s = 2_400.0;
        base.warmup_s = 600.0;
    }
    let policy = base.policies.first().cloned().unwrap_or_default();
    let mut on = base.clone();
    on.name = "swapping, rules on".into();
    on.core = Default::default();
    on.core.queue_capacity = base.core.queue_capacity;
    let mut off = base.clone();
    off.name = "swapping, rules off".into();
    off.core = Default::default();
    off.core.queue_capacity = base.core.queue_capacity;
    off.core.node_cooldown_s = 0.0;
    off.core.queue_ratio = 1;
    off.core.cost_factor = 0.0;
    let oracle = oracle_of(&base);
    Ok(Plan {
        title: "5. Model swapping (the core's swap rules)",
        source: "two services, demand alternating every phase, 10 s load time; the core's rules on (defaults: node cooldown 60 s, queue_ratio 4, cost_factor 1) and off (0, 1, 0), against an oracle that knows the phases (core swaps off, the simulator loads slots as each phase starts); PASS: rules on swap at most half as often as rules off, and the oracle's mean wait is the lowest",
        runs: vec![
            ("rules on".into(), run(&on, plugins, &policy)),
            ("rules off".into(), run(&off, plugins, &policy)),
            ("oracle".into(), run(&oracle, plugins, &policy)),
        ],
        scale,
        judge: judge_swapping,
    })
}

/// The oracle's scenario: core swaps off; at each phase change (minus
/// `lead_s`, so the moving slots drain their last calls as the phase
/// starts) the simulator moves slots to the next phase's allocation.
///
/// The phases are those of the first two on-off streams (service `a`
/// hot first, then `b`); the allocation gives each service slots in
/// proportion to its offered load in the phase, at least enough for 90%
/// use.
fn oracle_of(base: &Scenario) -> Scenario {
    let mut s = base.clone();
    s.name = "swapping, oracle".into();
    s.core.swap = false;
    let slots: Vec<(String, String)> = base
        .nodes
        .iter()
        .flat_map(|g| {
            let slot = g.slots.first().map(|s| s.name.clone()).unwrap_or_default();
            g.ids().into_iter().map(move |id| (id, slot.clone()))
        })
        .collect();
    let phase_of = |stream: usize| match base.arrivals.get(stream).map(|a| &a.process) {
        Some(Process::OnOff {
            rate_per_s,
            off_rate_per_s,
            on_s,
            off_s,
            offset_s,
        }) => Some((*rate_per_s, *off_rate_per_s, *on_s, *off_s, *offset_s)),
        _ => None,
    };
    let (Some(a), Some(b)) = (phase_of(0), phase_of(1)) else {
        return s;
    };
    let services: Vec<String> = base.arrivals.iter().map(|x| x.service.clone()).collect();
    let mean_s: Vec<f64> = services
        .iter()
        .map(|name| {
            base.services
                .iter()
                .find(|x| &x.name == name)
                .and_then(|x| crate::dist::Sampler::new(&x.service_time, base).ok())
                .map_or(1.0, |d| d.mean_ms() / 1000.0)
        })
        .collect();
    let n = slots.len();
    // Phase 0: a hot (a's on rate, b's off rate); phase 1 the other way.
    let loads = [
        [a.0 * mean_s[0], b.1 * mean_s[1]],
        [a.1 * mean_s[0], b.0 * mean_s[1]],
    ];
    let alloc = |load: [f64; 2]| -> usize {
        // Slots for service a; b gets the rest.
        let need = |l: f64| ((l / 0.9).ceil() as usize).max(1);
        let share = load[0] / (load[0] + load[1]).max(1e-9);
        let want = (share * n as f64).round() as usize;
        want.clamp(need(load[0]), n.saturating_sub(need(load[1])).max(1))
    };
    let a_slots = [alloc(loads[0]), alloc(loads[1])];
    let period = a.2 + a.3;
    let lead = 2.0 * mean_s[0].max(mean_s[1]);
    let holds = |i: usize, phase: usize| {
        if i < a_slots[phase] {
            services[0].clone()
        } else {
            services[1].clone()
        }
    };
    // The first phase's allocation is loaded at start; then each slot that
    // changes moves `lead` before each phase it changes for.
    set_initial(&mut s, &slots, |i| holds(i, 0));
    let mut preloads = Vec::new();
    for (i, (node, slot)) in slots.iter().enumerate() {
        for phase in 0..2 {
            if holds(i, phase) == holds(i, 1 - phase) {
                continue;
            }
            let start = a.4 + if phase == 0 { 0.0 } else { a.2 };
            let mut at = start - lead;
            if at < 0.0 {
                at += period;
            }
            preloads.push(Preload {
                at_s: at,
                every_s: Some(period),
                node: node.clone(),
                slot: slot.clone(),
                service: holds(i, phase),
            });
        }
    }
    s.preloads = preloads;
    s
}

/// Sets which service each slot holds at start (`holds(i)` for the i-th
/// node's first slot), splitting node groups into single nodes.
fn set_initial(s: &mut Scenario, slots: &[(String, String)], holds: impl Fn(usize) -> String) {
    let mut nodes = Vec::new();
    let mut i = 0;
    for g in &s.nodes {
        for id in g.ids() {
            let mut one = g.clone();
            one.id = id;
            one.count = 1;
            if let Some(slot) = one.slots.first_mut() {
                slot.loaded = Some(holds(i));
            }
            debug_assert_eq!(slots.get(i).map(|x| &x.0), Some(&one.id));
            nodes.push(one);
            i += 1;
        }
    }
    s.nodes = nodes;
}

fn judge_swapping(reports: &[(String, Report)], _scale: Scale) -> Vec<Check> {
    let (Some(on), Some(off), Some(oracle)) = (
        find(reports, "rules on"),
        find(reports, "rules off"),
        find(reports, "oracle"),
    ) else {
        return vec![missing("swapping")];
    };
    let mut checks = Vec::new();
    for (label, r) in [("rules on", on), ("rules off", off), ("oracle", oracle)] {
        checks.push(Check {
            figure: format!("{label}: swaps, mean wait, p99"),
            measured: format!(
                "{} swaps, {} ms, {} ms",
                r.swaps,
                fmt_ms(r.mean_wait_ms),
                fmt_ms(r.p99_ms)
            ),
            published: "-".into(),
            criterion: "the run completes".into(),
            pass: r.unfinished == 0 && r.calls > 0,
        });
    }
    checks.push(Check {
        figure: "swaps: rules on against rules off".into(),
        measured: format!("{} vs {}", on.swaps, off.swaps),
        published: "-".into(),
        criterion: "rules on ≤ ½ × rules off".into(),
        pass: on.swaps * 2 <= off.swaps,
    });
    checks.push(Check {
        figure: "mean wait: the oracle as a lower bound".into(),
        measured: format!(
            "{} ms vs {} (on), {} (off)",
            fmt_ms(oracle.mean_wait_ms),
            fmt_ms(on.mean_wait_ms),
            fmt_ms(off.mean_wait_ms)
        ),
        published: "-".into(),
        criterion: "oracle ≤ both".into(),
        pass: oracle.mean_wait_ms <= on.mean_wait_ms && oracle.mean_wait_ms <= off.mean_wait_ms,
    });
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn theory_matches_the_published_figures() {
        assert!((two_choices_theory(0.9) - 2.61).abs() < 0.01);
        assert!((two_choices_theory(0.99) - 5.43).abs() < 0.01);
        // M/M/1 is Erlang C with c = 1: W_q = ρ / (1 − ρ).
        assert!((erlang_c_wait(1, 0.5) - 1.0).abs() < 1e-12);
        // A textbook value: c = 2, a = 1: C = 1/3, W_q = 1/3.
        assert!((erlang_c_probability(2, 1.0) - 1.0 / 3.0).abs() < 1e-12);
    }
}
