//! Exponential reconnect backoff with jitter, its randomness injected.

use std::time::Duration;

use rand::Rng;

/// Delays between reconnect attempts: the base doubles from `initial` up
/// to `max`, and each delay is drawn uniformly from `[base / 2, base]`
/// ("equal jitter"), so agents that lost the same gateway spread out.
#[derive(Debug, Clone)]
pub struct Backoff<R> {
    initial: Duration,
    max: Duration,
    attempt: u32,
    rng: R,
}

impl<R: Rng> Backoff<R> {
    /// A backoff from `initial` doubling up to `max` (at least
    /// `initial`), drawing jitter from `rng`.
    pub fn new(initial: Duration, max: Duration, rng: R) -> Self {
        Self {
            initial,
            max: max.max(initial),
            attempt: 0,
            rng,
        }
    }

    /// The delay before the next attempt; counts one more failed attempt.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt).unwrap_or(u32::MAX);
        let base = self.initial.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let jitter: f64 = self.rng.random();
        base.mul_f64(0.5 + 0.5 * jitter)
    }

    /// Failed attempts since the last [`Backoff::reset`].
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Starts over at `initial` (after a successful connection).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// An RNG that always yields the same word: 0 gives the smallest jitter,
    /// all ones the largest.
    struct Fixed(u64);

    impl rand::RngCore for Fixed {
        fn next_u32(&mut self) -> u32 {
            self.0 as u32
        }
        fn next_u64(&mut self) -> u64 {
            self.0
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            dest.fill(self.0 as u8);
        }
    }

    fn millis<R: Rng>(backoff: &mut Backoff<R>, n: usize) -> Vec<u128> {
        (0..n).map(|_| backoff.next_delay().as_millis()).collect()
    }

    const INITIAL: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_millis(10_000);

    #[test]
    fn doubles_up_to_the_maximum() {
        let mut low = Backoff::new(INITIAL, MAX, Fixed(0));
        assert_eq!(
            millis(&mut low, 9),
            [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]
        );
        let mut high = Backoff::new(INITIAL, MAX, Fixed(u64::MAX));
        assert_eq!(
            millis(&mut high, 9),
            [200, 400, 800, 1600, 3200, 6400, 10000, 10000, 10000]
        );
        assert_eq!(high.attempts(), 9);
        high.reset();
        assert_eq!(high.attempts(), 0);
        assert_eq!(millis(&mut high, 1), [200]);
    }

    #[test]
    fn seeded_jitter_is_deterministic_and_bounded() {
        let mut a = Backoff::new(INITIAL, MAX, StdRng::seed_from_u64(7));
        let mut b = Backoff::new(INITIAL, MAX, StdRng::seed_from_u64(7));
        let (a, b) = (millis(&mut a, 20), millis(&mut b, 20));
        assert_eq!(a, b);
        for (i, delay) in a.iter().enumerate() {
            let base = (200u128 << i.min(20)).min(10_000);
            assert!((base / 2..=base).contains(delay), "attempt {i}: {delay}");
        }
    }

    #[test]
    fn many_attempts_do_not_overflow() {
        let mut backoff = Backoff::new(INITIAL, MAX, Fixed(0));
        for _ in 0..100 {
            backoff.next_delay();
        }
        assert_eq!(backoff.next_delay(), Duration::from_millis(5000));
    }
}
