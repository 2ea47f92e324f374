//! Reproductions 1 and 2, queueing theory: Mitzenmacher's supermarket
//! model (random vs two choices) and Erlang C (the core's own queue as an
//! M/M/c queue).

use super::*;

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

const SUPERMARKET: &str = include_str!("../../scenarios/supermarket.toml");

pub(super) fn supermarket(plugins: &Path, scale: Scale) -> Result<Plan, SimError> {
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

const ERLANG: &str = include_str!("../../scenarios/erlang-c.toml");

pub(super) fn erlang_c(plugins: &Path, scale: Scale) -> Result<Plan, SimError> {
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
