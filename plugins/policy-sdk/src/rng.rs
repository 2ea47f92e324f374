//! Deterministic randomness: `SplitMix64` and power of two choices.

/// Steele, Lea and Flood's SplitMix64 generator ("Fast splittable
/// pseudorandom number generators", OOPSLA 2014): tiny, fast, and good enough
/// for load balancing. Policies seed one per pick from `request.random`, so a
/// pick is a pure function of its inputs and the policy's state.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    #[must_use]
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform index in `0..n` (Lemire's multiply-shift; the bias is below
    /// `n / 2^64`). Returns 0 when `n` is 0.
    pub fn below(&mut self, n: usize) -> usize {
        let n64 = n as u64; // usize is at most 64 bits on every target
        let high = (u128::from(self.next_u64()) * u128::from(n64)) >> 64;
        // `high < n`, so it fits `usize`.
        usize::try_from(high).unwrap_or(0)
    }

    /// A uniform float in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        // Exact: a 53-bit integer converts to f64 without rounding.
        #[allow(clippy::cast_precision_loss)]
        let bits = (self.next_u64() >> 11) as f64;
        bits * (1.0 / (1u64 << 53) as f64)
    }

    /// A standard normal sample (mean 0, variance 1), by the Box–Muller
    /// transform (Box & Muller, 1958) of two uniforms.
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // in (0, 1]: ln is finite
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Power of two choices (Mitzenmacher, "The Power of Two Choices in
/// Randomized Load Balancing", 2001): draws two distinct indices in `0..len`
/// uniformly (both when `len` is 2) and returns the one with the lower cost;
/// on a tie (or incomparable costs) the lower index. `cost` is called exactly
/// twice, or not at all when `len` < 2. Returns `None` when `len` is 0.
pub fn p2c<C: PartialOrd>(
    len: usize,
    rng: &mut SplitMix64,
    mut cost: impl FnMut(usize) -> C,
) -> Option<usize> {
    match len {
        0 => None,
        1 => Some(0),
        _ => {
            let a = rng.below(len);
            let mut b = rng.below(len - 1);
            if b >= a {
                b += 1;
            }
            let (lo, hi) = (a.min(b), a.max(b));
            Some(if cost(hi) < cost(lo) { hi } else { lo })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{SplitMix64, p2c};

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // First outputs for seed 1234567 of the reference C implementation.
        let mut rng = SplitMix64::new(1_234_567);
        assert_eq!(rng.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(rng.next_u64(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn below_and_floats_stay_in_range() {
        let mut rng = SplitMix64::new(7);
        let mut seen = [0u32; 5];
        for _ in 0..5000 {
            let i = rng.below(5);
            seen[i] += 1;
            let x = rng.next_f64();
            assert!((0.0..1.0).contains(&x));
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
        assert_eq!(rng.below(0), 0);
    }

    #[test]
    fn normal_has_unit_moments() {
        let mut rng = SplitMix64::new(42);
        let n = 20_000;
        let xs: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let mean = xs.iter().sum::<f64>() / f64::from(n);
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / f64::from(n);
        assert!(mean.abs() < 0.03, "{mean}");
        assert!((var - 1.0).abs() < 0.05, "{var}");
    }

    #[test]
    fn p2c_compares_two_distinct_indices() {
        assert_eq!(p2c(0, &mut SplitMix64::new(1), |_| 0), None);
        assert_eq!(p2c(1, &mut SplitMix64::new(1), |_| 0), Some(0));
        for seed in 0..200 {
            let mut asked = Vec::new();
            let got = p2c(2, &mut SplitMix64::new(seed), |i| {
                asked.push(i);
                [5, 1][i]
            });
            assert_eq!(got, Some(1));
            asked.sort_unstable();
            assert_eq!(asked, [0, 1]);
            // Ties go to the lower index.
            assert_eq!(p2c(2, &mut SplitMix64::new(seed), |_| 3), Some(0));
        }
        for seed in 0..200 {
            let mut asked = Vec::new();
            let got = p2c(10, &mut SplitMix64::new(seed), |i| {
                asked.push(i);
                i
            })
            .expect("non-empty");
            assert_eq!(asked.len(), 2);
            assert_ne!(asked[0], asked[1]);
            assert_eq!(got, asked[0].min(asked[1]));
        }
    }
}
