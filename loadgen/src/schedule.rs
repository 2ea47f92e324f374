//! An open loop's intended send times: a pure iterator of offsets from the
//! run's start, evenly spaced or Poisson from a seed.

use std::time::Duration;

use rand::SeedableRng as _;
use rand::rngs::StdRng;
use rand_distr::{Distribution as _, Exp};

use crate::Process;

/// The intended send times of an open loop, as offsets from its start:
/// `k / rate` for [`Process::Constant`] (computed from `k`, so no drift
/// accumulates), sums of exponential gaps of mean `1 / rate` for
/// [`Process::Poisson`] (the first call after one gap). The same rate,
/// process and seed give the same times. A rate that is not a positive
/// finite number gives no times.
#[derive(Debug, Clone)]
pub struct Schedule {
    rate_per_s: f64,
    kind: Kind,
    /// Calls yielded so far.
    index: u64,
}

#[derive(Debug, Clone)]
enum Kind {
    Constant,
    Poisson {
        rng: Box<StdRng>,
        gaps: Exp<f64>,
        /// The last time yielded, s.
        at_s: f64,
    },
    Empty,
}

impl Schedule {
    /// The times of `process` at `rate_per_s` calls/s; `seed` draws the
    /// Poisson gaps.
    pub fn new(rate_per_s: f64, process: Process, seed: u64) -> Self {
        let kind = if !(rate_per_s.is_finite() && rate_per_s > 0.0) {
            Kind::Empty
        } else {
            match (process, Exp::new(rate_per_s)) {
                (Process::Constant, _) => Kind::Constant,
                (Process::Poisson, Ok(gaps)) => Kind::Poisson {
                    rng: Box::new(StdRng::seed_from_u64(seed)),
                    gaps,
                    at_s: 0.0,
                },
                (Process::Poisson, Err(_)) => Kind::Empty,
            }
        };
        Self {
            rate_per_s,
            kind,
            index: 0,
        }
    }
}

impl Iterator for Schedule {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let at_s = match &mut self.kind {
            Kind::Empty => return None,
            Kind::Constant => self.index as f64 / self.rate_per_s,
            Kind::Poisson { rng, gaps, at_s } => {
                *at_s += gaps.sample(rng);
                *at_s
            }
        };
        self.index += 1;
        // Past ~584 years try_from fails: the schedule is over.
        Duration::try_from_secs_f64(at_s).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_before(schedule: Schedule, end: Duration) -> usize {
        schedule.take_while(|t| *t < end).count()
    }

    #[test]
    fn constant_spacing_is_exact_and_starts_at_zero() {
        let times: Vec<_> = Schedule::new(4.0, Process::Constant, 0).take(5).collect();
        let ms: Vec<_> = times.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 250, 500, 750, 1000]);
        assert_eq!(
            count_before(
                Schedule::new(1000.0, Process::Constant, 0),
                Duration::from_secs(10)
            ),
            10_000
        );
    }

    #[test]
    fn poisson_has_the_mean_rate_and_is_increasing() {
        let end = Duration::from_secs(100);
        let n = count_before(Schedule::new(1000.0, Process::Poisson, 42), end);
        // 100 000 expected, standard deviation ~316: 1% is > 3 sigma.
        assert!((99_000..=101_000).contains(&n), "{n} calls in 100 s");
        let times: Vec<_> = Schedule::new(1000.0, Process::Poisson, 42)
            .take(10_000)
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        // Gaps are exponential: their coefficient of variation is ~1 (0 for
        // constant spacing).
        let gaps: Vec<f64> = times
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        let cv = var.sqrt() / mean;
        assert!((0.9..1.1).contains(&cv), "coefficient of variation {cv}");
    }

    #[test]
    fn the_same_seed_gives_the_same_times_and_another_seed_others() {
        let a: Vec<_> = Schedule::new(500.0, Process::Poisson, 7)
            .take(100)
            .collect();
        let b: Vec<_> = Schedule::new(500.0, Process::Poisson, 7)
            .take(100)
            .collect();
        let c: Vec<_> = Schedule::new(500.0, Process::Poisson, 8)
            .take(100)
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn a_rate_that_is_not_positive_gives_no_times() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(Schedule::new(rate, Process::Constant, 0).next(), None);
            assert_eq!(Schedule::new(rate, Process::Poisson, 0).next(), None);
        }
    }
}
