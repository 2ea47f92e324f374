//! The published results `make sim` reproduces, each a set of runs and the
//! checks of their figures against the published ones (PASS or FAIL):
//!
//! 1. Mitzenmacher's supermarket model: random vs two choices.
//! 2. Erlang C: the core's own queue (late binding) as an M/M/c queue.
//! 3. Linkerd's slow-backend experiment: round-robin, least-request and
//!    peak-EWMA against a backend that turns slow.
//! 4. A heterogeneous GPU fleet: every shipped policy's p50, p99 and cost.
//! 5. Model swapping: the core's swap rules on and off against an oracle.
//! 6. Pick first: `pick-first` as Erlang's ordered hunting, per node.
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
        pick_first(plugins, scale)?,
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
            Process::Chat(chat) => chat.rate_per_s,
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

mod fleets;
mod hunting;
mod queueing;

use fleets::{heterogeneous, linkerd, swapping};
use hunting::pick_first;
pub use hunting::{erlang_b, hunting_share};
use queueing::{erlang_c, supermarket};
pub use queueing::{erlang_c_probability, erlang_c_wait, two_choices_theory};

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
