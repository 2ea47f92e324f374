//! The round-robin algorithm, independent of WebAssembly.

use std::collections::HashMap;

/// Per-service round-robin state: one counter per service name.
#[derive(Debug, Default, Clone)]
pub struct RoundRobin {
    counters: HashMap<String, u64>,
}

impl RoundRobin {
    /// Creates a state with no counters (each service starts at index 0).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Picks the index of the next candidate for `service` among `len`
    /// candidates and advances that service's counter.
    ///
    /// Returns `None` (and leaves the counter alone) when `len` is 0, or when
    /// the index would not fit the WIT `u32` (more than `u32::MAX` candidates).
    pub fn pick(&mut self, service: &str, len: usize) -> Option<u32> {
        let len = u64::try_from(len).ok().filter(|&n| n > 0)?;
        // Look up by `&str` first so that the steady state allocates nothing.
        let counter = match self.counters.get_mut(service) {
            Some(c) => c,
            None => self.counters.entry(service.to_owned()).or_insert(0),
        };
        let index = u32::try_from(*counter % len).ok()?;
        *counter = counter.wrapping_add(1);
        Some(index)
    }

    /// How many services have a counter.
    #[must_use]
    pub fn services(&self) -> usize {
        self.counters.len()
    }
}

#[cfg(test)]
mod tests {
    use super::RoundRobin;

    #[test]
    fn cycles_over_candidates() {
        let mut rr = RoundRobin::new();
        let picks: Vec<_> = (0..7).filter_map(|_| rr.pick("svc", 3)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn services_are_independent() {
        let mut rr = RoundRobin::new();
        assert_eq!(rr.pick("a", 3), Some(0));
        assert_eq!(rr.pick("a", 3), Some(1));
        assert_eq!(rr.pick("b", 3), Some(0));
        assert_eq!(rr.pick("a", 3), Some(2));
        assert_eq!(rr.pick("b", 3), Some(1));
        assert_eq!(rr.services(), 2);
    }

    #[test]
    fn empty_candidates_pick_nothing_and_keep_the_counter() {
        let mut rr = RoundRobin::new();
        assert_eq!(rr.pick("a", 0), None);
        assert_eq!(rr.pick("a", 2), Some(0));
    }

    #[test]
    fn candidate_count_changes_stay_in_bounds() {
        let mut rr = RoundRobin::new();
        for len in [5, 1, 4, 2, 3, 1, 7] {
            let i = rr.pick("svc", len).expect("non-empty");
            assert!((i as usize) < len);
        }
    }
}
