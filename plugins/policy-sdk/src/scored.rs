//! Plain mirrors of the `scorer` interface of `wit/policy.wit` (new in
//! 1.1.0): what a scoring policy sees beyond the candidates, and its answer.

/// The model server's load on one candidate, from the agent's scrape of its
/// Prometheus endpoint (`metrics_url`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ModelLoad {
    /// Requests waiting in the model server (vLLM `num_requests_waiting`).
    pub waiting: u32,
    /// Requests running there (vLLM `num_requests_running`).
    pub running: u32,
    /// KV-cache use, 0..=100 % (vLLM `gpu_cache_usage_perc` × 100).
    pub kv_cache_pct: f32,
}

/// What else a scoring policy knows about the call and the candidates (WIT
/// `scorer.context`, its load columns turned into rows).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    /// Chained block hashes of the call's prompt or `affinity` hint, first
    /// block first: hash i covers blocks 0..=i, so two calls share their
    /// first k blocks exactly when their first k hashes are equal. At most
    /// 256; empty when the call has neither.
    pub prefix_hashes: Vec<u64>,
    /// Candidate i's model-server load, `None` when its node reports none;
    /// same length as the candidates (or empty: nothing known of any).
    pub load: Vec<Option<ModelLoad>>,
}

impl Context {
    /// Candidate `i`'s model-server load, if its node reports one.
    #[must_use]
    pub fn load_of(&self, i: usize) -> Option<ModelLoad> {
        self.load.get(i).copied().flatten()
    }
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

    #[test]
    fn load_of_out_of_range_is_none() {
        let ctx = Context {
            prefix_hashes: vec![],
            load: vec![Some(ModelLoad::default())],
        };
        assert!(ctx.load_of(0).is_some());
        assert!(ctx.load_of(1).is_none());
    }
}
