//! Scoring a node's free resources, each score in 0..=1 (1 = all free).

use policy_sdk::{Candidate, Hints};

/// The weights of the four scores (hints `w_gpu`, `w_cpu`, `w_mem`,
/// `w_load`; default 1 each).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    /// Weight of [`gpu_score`].
    pub gpu: f64,
    /// Weight of [`cpu_score`].
    pub cpu: f64,
    /// Weight of [`mem_score`].
    pub mem: f64,
    /// Weight of [`load_score`].
    pub load: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            gpu: 1.0,
            cpu: 1.0,
            mem: 1.0,
            load: 1.0,
        }
    }
}

impl Weights {
    /// The weights the hints set (absent ones 1).
    ///
    /// # Errors
    /// A weight that is not a number `>= 0`, or all four 0.
    pub fn from_hints(hints: Hints<'_>) -> Result<Self, String> {
        let get = |key| hints.get_non_negative(key).map(|w| w.unwrap_or(1.0));
        let w = Self {
            gpu: get("w_gpu")?,
            cpu: get("w_cpu")?,
            mem: get("w_mem")?,
            load: get("w_load")?,
        };
        if w.sum() > 0.0 {
            Ok(w)
        } else {
            Err("hints w_gpu, w_cpu, w_mem and w_load are all 0: at least one weight must be above 0"
                .to_owned())
        }
    }

    fn sum(&self) -> f64 {
        self.gpu + self.cpu + self.mem + self.load
    }

    /// The weighted mean of the four scores of `c`, in 0..=1.
    #[must_use]
    pub fn score(&self, c: &Candidate) -> f64 {
        (self.gpu * gpu_score(c)
            + self.cpu * cpu_score(c)
            + self.mem * mem_score(c)
            + self.load * load_score(c))
            / self.sum()
    }
}

/// A fraction clamped to 0..=1 (NaN counts as 0).
fn unit(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

/// GPU score: the mean of the free memory fraction of the freest GPU (its
/// free MiB over one GPU's memory, `gpu_mem_total_mib / gpu_count`) and the
/// idle fraction `(100 - gpu_util_pct) / 100`; 0.5 (neutral) with no GPU.
#[must_use]
#[allow(clippy::cast_precision_loss)] // MiB counts are far below 2^53
pub fn gpu_score(c: &Candidate) -> f64 {
    if c.gpu_count == 0 || c.gpu_mem_total_mib == 0 {
        return 0.5;
    }
    let per_gpu_mib = c.gpu_mem_total_mib as f64 / f64::from(c.gpu_count);
    let free = unit(c.gpu_mem_free_mib as f64 / per_gpu_mib);
    let idle = unit((100.0 - f64::from(c.gpu_util_pct)) / 100.0);
    (free + idle) / 2.0
}

/// CPU score: `(100 - cpu_pct) / 100`.
#[must_use]
pub fn cpu_score(c: &Candidate) -> f64 {
    unit((100.0 - f64::from(c.cpu_pct)) / 100.0)
}

/// Memory score: `mem_free / mem_total`; 0.5 (neutral) when the total is 0.
#[must_use]
#[allow(clippy::cast_precision_loss)] // MiB counts are far below 2^53
pub fn mem_score(c: &Candidate) -> f64 {
    if c.mem_total_mib == 0 {
        return 0.5;
    }
    unit(c.mem_free_mib() as f64 / c.mem_total_mib as f64)
}

/// Load score: `1 - in_flight / max_concurrent` (0 with no capacity).
#[must_use]
pub fn load_score(c: &Candidate) -> f64 {
    unit(1.0 - c.load())
}

#[cfg(test)]
mod tests {
    use policy_sdk::{Candidate, Hints};

    use super::{Weights, cpu_score, gpu_score, load_score, mem_score};

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn scores() {
        let c = Candidate {
            in_flight: 1,
            max_concurrent: 4,
            cpu_pct: 25.0,
            mem_used_mib: 3000,
            mem_total_mib: 4000,
            gpu_count: 2,
            gpu_util_pct: 40.0,
            gpu_mem_free_mib: 20_000,
            gpu_mem_total_mib: 80_000,
            ..Candidate::default()
        };
        assert!(close(gpu_score(&c), (0.5 + 0.6) / 2.0));
        assert!(close(cpu_score(&c), 0.75));
        assert!(close(mem_score(&c), 0.25));
        assert!(close(load_score(&c), 0.75));
        assert!(close(
            Weights::default().score(&c),
            (0.55 + 0.75 + 0.25 + 0.75) / 4.0
        ));
        let bare = Candidate::default();
        assert!(close(gpu_score(&bare), 0.5));
        assert!(close(mem_score(&bare), 0.5));
        assert!(close(load_score(&bare), 0.0));
        let odd = Candidate {
            cpu_pct: 130.0,
            gpu_count: 1,
            gpu_mem_total_mib: 10,
            gpu_mem_free_mib: 20,
            ..bare
        };
        assert!(close(cpu_score(&odd), 0.0));
        assert!(close(gpu_score(&odd), 1.0));
    }

    #[test]
    fn weights_from_hints() {
        let pairs = |l: &[(&str, &str)]| -> Vec<(String, String)> {
            l.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let p = pairs(&[("w_gpu", "3"), ("w_mem", "0")]);
        assert_eq!(
            Weights::from_hints(Hints::new(&p)),
            Ok(Weights {
                gpu: 3.0,
                cpu: 1.0,
                mem: 0.0,
                load: 1.0
            })
        );
        let p = pairs(&[("w_cpu", "x")]);
        assert_eq!(
            Weights::from_hints(Hints::new(&p)),
            Err("bad hint w_cpu=\"x\": expected a number >= 0".to_owned())
        );
        let p = pairs(&[
            ("w_gpu", "0"),
            ("w_cpu", "0"),
            ("w_mem", "0"),
            ("w_load", "0"),
        ]);
        assert_eq!(
            Weights::from_hints(Hints::new(&p)),
            Err("hints w_gpu, w_cpu, w_mem and w_load are all 0: at least one weight must be above 0".to_owned())
        );
    }
}
