//! The built-in fallback policy.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::types::Scored;

/// Native round-robin over all services: the fail-open fallback the gateway
/// uses when no policy is configured or when a policy call fails.
///
/// Lock-free (one shared `AtomicU64` counter), so concurrent callers never
/// wait on each other.
#[derive(Debug, Default)]
pub struct NativeRoundRobin {
    next: AtomicU64,
}

impl NativeRoundRobin {
    /// Creates a fallback whose first pick is index 0.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The index of the candidate to use among `candidates_len`, cycling
    /// 0, 1, ..., `candidates_len - 1`, 0, ... across calls.
    ///
    /// Returns 0 when `candidates_len` is 0: the caller must not index then.
    pub fn pick(&self, candidates_len: usize) -> usize {
        if candidates_len == 0 {
            return 0;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // `candidates_len` fits u64 on every supported target, and the
        // remainder is below it, so both conversions are lossless.
        let len = u64::try_from(candidates_len).unwrap_or(u64::MAX);
        usize::try_from(n % len).unwrap_or(0)
    }

    /// [`Self::pick`] as a scored ranking (the shape of
    /// [`crate::Policy::score`]): the next candidate in turn first, then the
    /// others in turn after it; score 1.0 for it and 0 for the others;
    /// reason [`Self::REASON`]. Advances the same counter as `pick`.
    ///
    /// With `candidates_len` 0: an empty order and no scores.
    pub fn score(&self, candidates_len: usize) -> Scored {
        if candidates_len == 0 {
            return Scored {
                order: Vec::new(),
                scores: Vec::new(),
                reason: Self::REASON.to_owned(),
            };
        }
        let first = self.pick(candidates_len);
        let order = (0..candidates_len)
            .filter_map(|k| u32::try_from((first + k) % candidates_len).ok())
            .collect();
        let mut scores = vec![0.0; candidates_len];
        if let Some(score) = scores.get_mut(first) {
            *score = 1.0;
        }
        Scored {
            order,
            scores,
            reason: Self::REASON.to_owned(),
        }
    }

    /// The reason [`Self::score`] gives.
    pub const REASON: &'static str = "round robin: next in turn";
}

#[cfg(test)]
mod tests {
    use super::NativeRoundRobin;

    #[test]
    fn cycles_and_handles_empty() {
        let rr = NativeRoundRobin::new();
        let picks: Vec<usize> = (0..5).map(|_| rr.pick(3)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1]);
        assert_eq!(rr.pick(0), 0);
        assert!(rr.pick(1) == 0);
    }

    #[test]
    fn scores_the_next_in_turn() {
        let rr = NativeRoundRobin::new();
        let first = rr.score(3);
        assert_eq!(first.order, [0, 1, 2]);
        assert_eq!(first.scores, [1.0, 0.0, 0.0]);
        assert_eq!(first.reason, "round robin: next in turn");
        assert_eq!(rr.pick(3), 1, "score and pick share the counter");
        let third = rr.score(3);
        assert_eq!(third.order, [2, 0, 1]);
        assert_eq!(third.scores, [0.0, 0.0, 1.0]);
        let none = rr.score(0);
        assert!(none.order.is_empty() && none.scores.is_empty());
    }
}
