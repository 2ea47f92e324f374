//! Latency estimates: linkerd2-proxy's peak-EWMA and a plain EWMA.

/// The RTT assumed for a node with no samples, ms (linkerd2-proxy's default).
pub const DEFAULT_RTT_MS: f64 = 30.0;

/// The peak-EWMA decay window τ, ms (linkerd2-proxy's default: 10 s).
pub const DEFAULT_DECAY_MS: f64 = 10_000.0;

/// Peak-EWMA latency estimate, as in linkerd2-proxy (tower's
/// `load::PeakEwma`): a sample above the estimate replaces it at once (so a
/// node that slows down is avoided immediately); a sample below it pulls the
/// estimate towards it with weight `1 - w`, `w = exp(-Δt/τ)`, `Δt` the time
/// since the previous sample (so recovery is believed over about τ).
///
/// Reading the estimate at a later time ([`PeakEwma::estimate_at`]) decays it
/// towards 0 by the same `exp(-Δt/τ)`, as tower's `load()` does: a node that
/// stopped being picked because it was slow looks cheaper as time passes, and
/// is eventually probed again. The read does not change the state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeakEwma {
    estimate_ms: f64,
    updated_ms: u64,
    decay_ms: f64,
}

impl PeakEwma {
    /// An estimate starting at the first sample `sample_ms`, taken at
    /// `now_ms`, with decay window `decay_ms` (τ, ms; floored at 1 ms).
    #[must_use]
    pub fn new(sample_ms: f64, now_ms: u64, decay_ms: f64) -> Self {
        Self {
            estimate_ms: sample_ms.max(0.0),
            updated_ms: now_ms,
            decay_ms: decay_ms.max(1.0),
        }
    }

    /// Feeds one sample `sample_ms` taken at `now_ms`.
    pub fn observe(&mut self, sample_ms: f64, now_ms: u64) {
        let sample_ms = sample_ms.max(0.0);
        if sample_ms > self.estimate_ms {
            self.estimate_ms = sample_ms;
        } else {
            let w = self.weight(now_ms);
            self.estimate_ms = self.estimate_ms * w + sample_ms * (1.0 - w);
        }
        self.updated_ms = self.updated_ms.max(now_ms);
    }

    /// The estimate as of the last sample, ms.
    #[must_use]
    pub fn estimate(&self) -> f64 {
        self.estimate_ms
    }

    /// The estimate read at `now_ms`: decayed towards 0 by `exp(-Δt/τ)` since
    /// the last sample, ms.
    #[must_use]
    pub fn estimate_at(&self, now_ms: u64) -> f64 {
        self.estimate_ms * self.weight(now_ms)
    }

    /// `exp(-Δt/τ)` for `Δt` = `now_ms` minus the last sample's time (0 when
    /// the clock is behind it).
    #[allow(clippy::cast_precision_loss)] // Δt in ms is far below 2^53
    fn weight(&self, now_ms: u64) -> f64 {
        let elapsed = now_ms.saturating_sub(self.updated_ms) as f64;
        (-elapsed / self.decay_ms).exp()
    }
}

/// A plain exponentially weighted moving average: `value += alpha × (sample -
/// value)`, starting at the first sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ewma {
    value: f64,
    alpha: f64,
}

impl Ewma {
    /// An average starting at `first`, weight `alpha` (0..=1) on each new
    /// sample.
    #[must_use]
    pub fn new(first: f64, alpha: f64) -> Self {
        Self {
            value: first,
            alpha: alpha.clamp(0.0, 1.0),
        }
    }

    /// Feeds one sample.
    pub fn observe(&mut self, sample: f64) {
        self.value += self.alpha * (sample - self.value);
    }

    /// The current average.
    #[must_use]
    pub fn value(&self) -> f64 {
        self.value
    }
}

/// The latency sample a failed call counts as, ms: `max(latency_ms, 5 ×
/// estimate_ms, 1000)`. A failure is at least as bad as a one-second call and
/// five times the node's current estimate, so a node that fails fast does not
/// look fast (the gateway retries elsewhere, paying the failed attempt).
#[must_use]
pub fn failure_penalty_ms(latency_ms: f64, estimate_ms: f64) -> f64 {
    latency_ms.max(5.0 * estimate_ms).max(1000.0)
}

#[cfg(test)]
mod tests {
    use super::{DEFAULT_DECAY_MS, Ewma, PeakEwma, failure_penalty_ms};

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let mut e = PeakEwma::new(10.0, 0, DEFAULT_DECAY_MS);
        e.observe(100.0, 5); // above: jump
        assert!(close(e.estimate(), 100.0));
        e.observe(10.0, 10_005); // below, Δt = τ: w = 1/e
        let w = (-1.0_f64).exp();
        assert!(close(e.estimate(), 100.0 * w + 10.0 * (1.0 - w)));
        e.observe(5.0, 10_005); // Δt = 0: w = 1, no change
        assert!(close(e.estimate(), 100.0 * w + 10.0 * (1.0 - w)));
    }

    #[test]
    fn reads_decay_towards_zero_without_changing_state() {
        let e = PeakEwma::new(200.0, 1000, DEFAULT_DECAY_MS);
        assert!(close(e.estimate_at(1000), 200.0));
        assert!(close(e.estimate_at(21_000), 200.0 * (-2.0_f64).exp()));
        assert!(close(e.estimate_at(0), 200.0)); // clock behind: no decay
        assert!(close(e.estimate(), 200.0));
    }

    #[test]
    fn ewma_and_penalty() {
        let mut e = Ewma::new(100.0, 0.3);
        e.observe(0.0);
        assert!(close(e.value(), 70.0));
        assert!(close(failure_penalty_ms(20.0, 30.0), 1000.0));
        assert!(close(failure_penalty_ms(20.0, 300.0), 1500.0));
        assert!(close(failure_penalty_ms(4000.0, 300.0), 4000.0));
    }
}
