//! One bandit arm: a discounted Gaussian posterior over a node's log-latency.

use policy_sdk::SplitMix64;

/// Discount γ: every arm of a service is multiplied by it on each observe of
/// that service (Raj & Kalyani's discounted Thompson sampling).
pub const DISCOUNT: f64 = 0.95;

/// Prior standard deviation of an arm's log-latency: a factor of e either
/// way. What an arm's spread reverts to as its evidence fades.
pub const PRIOR_STD: f64 = 1.0;

/// The smallest posterior standard deviation (log units, about 2 %).
pub const STD_FLOOR: f64 = 0.02;

/// Weight of the prior in the arm's variance (pseudo-observations).
const PRIOR_WEIGHT: f64 = 1.0;

/// Discounted statistics of the samples `x` (log-latencies) of one arm.
///
/// Holds the same information as the discounted sums `n`, `Σx`, `Σx²` (mean =
/// `Σx / n`, variance = `Σx² / n - mean²`) in Welford's form, which stays
/// exact when `n` decays towards 0: discounting scales `n` and `m2` only.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arm {
    n: f64,
    mean: f64,
    m2: f64,
}

impl Arm {
    /// An arm holding one sample `x`.
    #[must_use]
    pub fn new(x: f64) -> Self {
        Self {
            n: 1.0,
            mean: x,
            m2: 0.0,
        }
    }

    /// Adds sample `x` with weight 1.
    pub fn add(&mut self, x: f64) {
        self.n += 1.0;
        let delta = x - self.mean;
        self.mean += delta / self.n;
        self.m2 += delta * (x - self.mean);
    }

    /// Fades the evidence: multiplies the weight (and the sum of squared
    /// deviations) by `gamma`.
    pub fn discount(&mut self, gamma: f64) {
        self.n *= gamma;
        self.m2 *= gamma;
    }

    /// The discounted weight of the samples (`n`).
    #[must_use]
    pub fn weight(&self) -> f64 {
        self.n
    }

    /// The discounted mean of the samples.
    #[must_use]
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// The posterior standard deviation of the mean: `σ / sqrt(n + 1)`, `σ²`
    /// the samples' variance shrunk towards `PRIOR_STD²`, at least
    /// [`STD_FLOOR`].
    #[must_use]
    pub fn posterior_std(&self) -> f64 {
        let variance =
            (self.m2.max(0.0) + PRIOR_WEIGHT * PRIOR_STD * PRIOR_STD) / (self.n + PRIOR_WEIGHT);
        (variance / (self.n + 1.0)).sqrt().max(STD_FLOOR)
    }

    /// A draw of the mean from the posterior `N(mean, posterior_std²)`.
    pub fn sample(&self, rng: &mut SplitMix64) -> f64 {
        self.mean + self.posterior_std() * rng.normal()
    }
}

#[cfg(test)]
mod tests {
    use super::{Arm, PRIOR_STD, STD_FLOOR};

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn matches_discounted_sums() {
        let xs = [2.0, 3.0, 2.5, 4.0];
        let gamma = 0.9;
        let mut arm = Arm::new(xs[0]);
        let (mut n, mut s, mut ss) = (1.0, xs[0], xs[0] * xs[0]);
        for &x in &xs[1..] {
            arm.discount(gamma);
            arm.add(x);
            (n, s, ss) = (n * gamma + 1.0, s * gamma + x, ss * gamma + x * x);
        }
        let mean = s / n;
        assert!(close(arm.weight(), n));
        assert!(close(arm.mean(), mean));
        let var = ss / n - mean * mean;
        let sigma2 = (n * var + PRIOR_STD * PRIOR_STD) / (n + 1.0);
        assert!(close(arm.posterior_std(), (sigma2 / (n + 1.0)).sqrt()));
    }

    #[test]
    fn fading_evidence_widens_the_posterior_to_the_prior() {
        let mut arm = Arm::new(3.0);
        for _ in 0..50 {
            arm.add(3.0);
        }
        let narrow = arm.posterior_std();
        assert!(narrow < 0.2, "{narrow}");
        for _ in 0..1000 {
            arm.discount(0.95);
        }
        assert!((arm.posterior_std() - PRIOR_STD).abs() < 1e-6);
        assert!(close(arm.mean(), 3.0));
        // A sample after complete fading sets the mean.
        for _ in 0..20_000 {
            arm.discount(0.95);
        }
        arm.add(1.0);
        assert!(close(arm.mean(), 1.0));
        let mut sure = Arm::new(1.0);
        for _ in 0..100_000 {
            sure.add(1.0);
        }
        assert!(close(sure.posterior_std(), STD_FLOOR));
    }
}
