//! Plain mirrors of the `scorer` interface of `wit/policy.wit` (new in
//! 1.1.0): what a scoring policy sees beyond the candidates, and its answer.

/// A model server's load on one candidate, from the agent's scrape of its
/// Prometheus endpoint (`metrics_url`): a [`Candidate`](crate::Candidate)'s
/// `model_load` when the policy scores (WIT `scorer.context`'s load
/// columns, turned into the rows).
pub use switchyard_policy_types::ModelLoad;

/// What else a scoring policy knows about the call (WIT `scorer.context`
/// less its load columns, which reach the policy as each candidate's
/// `model_load`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// Chained block hashes of the call's prompt or `affinity` hint, first
    /// block first: hash i covers blocks 0..=i, so two calls share their
    /// first k blocks exactly when their first k hashes are equal. At most
    /// 256; empty when the call has neither.
    pub prefix_hashes: Vec<u64>,
}

/// A scoring policy's answer (WIT `scorer.scored`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scored {
    /// Candidate indices, best first, no repeats; may name fewer than all.
    pub order: Vec<u32>,
    /// Candidate i's score, higher is better, in the policy's own unit; one
    /// per candidate, or empty for none.
    pub scores: Vec<f32>,
    /// Why, in a few words; the gateway keeps at most 200 bytes.
    pub reason: String,
}

impl Scored {
    /// Ranks candidates by `scores`, highest first (ties: lower index
    /// first), with `reason`. NaN scores rank last.
    #[must_use]
    pub fn by_score(scores: Vec<f32>, reason: String) -> Self {
        let mut order: Vec<u32> = (0..scores.len())
            .filter_map(|i| u32::try_from(i).ok())
            .collect();
        order.sort_by(|&a, &b| {
            let (a_s, b_s) = (scores[a as usize], scores[b as usize]);
            match (a_s.is_nan(), b_s.is_nan()) {
                (true, true) => a.cmp(&b),
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                (false, false) => b_s.total_cmp(&a_s).then(a.cmp(&b)),
            }
        });
        Self {
            order,
            scores,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_score_ranks_highest_first_ties_by_index_nan_last() {
        let s = Scored::by_score(vec![1.0, f32::NAN, 3.0, 1.0], "r".into());
        assert_eq!(s.order, vec![2, 0, 3, 1]);
        assert_eq!(s.reason, "r");
    }
}
