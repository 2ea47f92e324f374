//! The built-in fallback policy.

use std::sync::atomic::{AtomicU64, Ordering};

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
}
