//! Reproduction 6, pick first: `pick-first` on Erlang's loss system is
//! ordered (sequential) hunting, whose per-node shares Erlang B gives.

use super::*;

/// Erlang B, the blocking probability of `c` servers offered `a` Erlangs
/// (A. K. Erlang, 1917): B(0, a) = 1, B(k, a) = a·B(k−1, a) / (k + a·B(k−1, a)).
pub fn erlang_b(c: u32, a: f64) -> f64 {
    (1..=c).fold(1.0, |b, k| a * b / (f64::from(k) + a * b))
}

/// The share of calls that node `i` (0-based, in hunting order) of nodes
/// with `slots` slots each takes under ordered hunting at `a` Erlangs:
/// B(slots·i, a) − B(slots·(i+1), a).
pub fn hunting_share(i: u32, slots: u32, a: f64) -> f64 {
    erlang_b(slots * i, a) - erlang_b(slots * (i + 1), a)
}

const PICK_FIRST: &str = include_str!("../../scenarios/pick-first.toml");

pub(super) fn pick_first(plugins: &Path, scale: Scale) -> Result<Plan, SimError> {
    let mut base = builtin(PICK_FIRST, "pick-first")?;
    if scale == Scale::Short {
        base.duration_s = 2_000.0;
    }
    let runs = runs_of(&base, plugins)
        .into_iter()
        .map(|r| (fleets::policy_stem(&r.policy), r))
        .collect();
    Ok(Plan {
        title: "6. Pick first (Erlang's ordered hunting)",
        source: "A. K. Erlang, 1917: in a loss system whose calls take the first free server in a fixed order, the first k servers carry A·(1 − B(k, A)) Erlangs; 4 nodes × 4 slots, 8 Erlangs, no queue; pick-first's share per node by id against it, and no call passing over a free node earlier by id (round-robin's do)",
        runs,
        scale,
        judge: judge_pick_first,
    })
}

fn judge_pick_first(reports: &[(String, Report)], scale: Scale) -> Vec<Check> {
    const SLOTS: u32 = 4;
    const ERLANGS: f64 = 8.0;
    let band = match scale {
        Scale::Short => 3.0,
        Scale::Full => 1.0,
    };
    let (Some(first), Some(rr)) = (find(reports, "pick-first"), find(reports, "round-robin"))
    else {
        return vec![missing("pick-first")];
    };
    let mut checks = Vec::new();
    let calls = first.calls.max(1) as f64;
    let mut by_id = first.by_node.clone();
    by_id.sort();
    for ((id, taken), i) in by_id.iter().zip(0..) {
        let share = 100.0 * *taken as f64 / calls;
        let theory = 100.0 * hunting_share(i, SLOTS, ERLANGS);
        checks.push(Check {
            figure: format!("pick-first: calls taken by {id} ({} by id)", ordinal(i)),
            measured: format!("{share:.2}%"),
            published: format!(
                "{theory:.2}% (B({}, A) − B({}, A))",
                SLOTS * i,
                SLOTS * (i + 1)
            ),
            criterion: format!("within {band:.1} percentage points"),
            pass: (share - theory).abs() <= band,
        });
    }
    let blocked = 100.0 * erlang_b(SLOTS * 4, ERLANGS);
    for (label, r) in [("pick-first", first), ("round-robin", rr)] {
        let refused = 100.0 * r.rejected as f64 / r.calls.max(1) as f64;
        checks.push(Check {
            figure: format!("{label}: calls refused, every slot taken"),
            measured: format!("{refused:.2}%"),
            published: format!("{blocked:.2}% (B(16, A))"),
            criterion: format!("within {:.1} percentage points", band / 2.0),
            pass: (refused - blocked).abs() <= band / 2.0 && r.unfinished == 0,
        });
    }
    checks.push(Check {
        figure: "pick-first: calls sent past a free node earlier by id".into(),
        measured: first.passed_over.to_string(),
        published: "0".into(),
        criterion: "none".into(),
        pass: first.passed_over == 0 && first.calls > 0,
    });
    checks.push(Check {
        figure: "round-robin: calls sent past a free node earlier by id".into(),
        measured: rr.passed_over.to_string(),
        published: "-".into(),
        criterion: "some (the count sees them)".into(),
        pass: rr.passed_over > 0,
    });
    checks
}

fn ordinal(i: u32) -> &'static str {
    ["first", "second", "third", "fourth"]
        .get(i as usize)
        .copied()
        .unwrap_or("later")
}

#[cfg(test)]
mod tests {
    use super::{erlang_b, hunting_share};
    use crate::repro::erlang_c_probability;

    #[test]
    fn erlang_b_matches_textbook_values_and_erlang_c() {
        assert!((erlang_b(0, 8.0) - 1.0).abs() < 1e-12);
        // B(1, a) = a / (1 + a).
        assert!((erlang_b(1, 3.0) - 0.75).abs() < 1e-12);
        // B(2, 1) = (1/2) / (1 + 1 + 1/2) = 0.2.
        assert!((erlang_b(2, 1.0) - 0.2).abs() < 1e-12);
        // C = c·B / (c − a·(1 − B)).
        let (c, a) = (8, 6.0);
        let b = erlang_b(c, a);
        let from_b = f64::from(c) * b / (f64::from(c) - a * (1.0 - b));
        assert!((from_b - erlang_c_probability(c, a)).abs() < 1e-12);
    }

    #[test]
    fn hunting_shares_sum_to_the_calls_carried() {
        let sum: f64 = (0..4).map(|i| hunting_share(i, 4, 8.0)).sum();
        assert!((sum + erlang_b(16, 8.0) - 1.0).abs() < 1e-12);
        assert!((hunting_share(0, 4, 8.0) - 0.4254).abs() < 1e-4);
    }
}
