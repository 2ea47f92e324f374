//! What a run measured: a [`Recorder`] per caller (an HDR histogram of
//! latencies in µs and errors by kind), merged into a [`Report`].

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Lowest latency the histogram tells apart, µs.
const LOWEST_US: u64 = 1;
/// Highest latency recorded, µs (60 s); longer ones count as 60 s.
const HIGHEST_US: u64 = 60_000_000;
/// Significant decimal digits kept (0.1% resolution).
const DIGITS: u8 = 3;

/// One caller's measurements: successful calls' latencies (HDR histogram,
/// 1 µs to 60 s, 3 significant digits) and failed calls by kind.
#[derive(Debug, Clone)]
pub struct Recorder {
    latency: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        // The bounds are constants that hdrhistogram accepts (low >= 1,
        // high >= 2 * low, digits <= 5); `new` is the fallback it cannot
        // need.
        let latency = Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, DIGITS)
            .or_else(|_| Histogram::new(DIGITS))
            .unwrap_or_else(|_| unreachable!("3 significant digits are valid"));
        Self {
            latency,
            errors: BTreeMap::new(),
        }
    }

    /// Records a successful call that took `latency`.
    pub fn success(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency
            .saturating_record(us.clamp(LOWEST_US, HIGHEST_US));
    }

    /// Records a failed call of kind `kind`.
    pub fn failure(&mut self, kind: &str) {
        self.failures(kind, 1);
    }

    /// Records `n` failed calls of kind `kind`.
    pub fn failures(&mut self, kind: &str, n: u64) {
        if n == 0 {
            return;
        }
        match self.errors.get_mut(kind) {
            Some(count) => *count += n,
            None => {
                self.errors.insert(kind.to_string(), n);
            }
        }
    }

    /// Adds `other`'s calls to these.
    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds on both sides: `add` cannot fail.
        let _ = self.latency.add(&other.latency);
        for (kind, n) in &other.errors {
            self.failures(kind, *n);
        }
    }

    /// Successful calls recorded.
    pub fn calls(&self) -> u64 {
        self.latency.len()
    }

    /// Failed calls recorded.
    pub fn errors(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The report of these calls over a window of `seconds` s, arrival
    /// described as `arrival`.
    pub fn report(&self, seconds: f64, arrival: String) -> Report {
        let calls = self.calls();
        Report {
            calls,
            errors: self.errors(),
            errors_by_kind: self.errors.clone(),
            seconds,
            calls_per_s: if seconds > 0.0 {
                calls as f64 / seconds
            } else {
                0.0
            },
            latency_us: Latency::of(&self.latency),
            arrival,
        }
    }
}

/// Latency percentiles of the successful calls, µs (all 0 when none).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        // Values equivalent at 3 digits read as the bucket's highest one.
        let at = |q: f64| h.value_at_quantile(q) as f64;
        Self {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: h.max() as f64,
            mean: h.mean(),
        }
    }
}

/// What a run measured.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Report {
    /// Successful calls in the measured window.
    pub calls: u64,
    /// Failed calls in the measured window.
    pub errors: u64,
    /// Failed calls by kind ([`crate::CallFailure::kind`]).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// The measured window, s: from the warm-up's end to the later of the
    /// planned end and the last recorded call's end.
    pub seconds: f64,
    /// Successful calls per second over the window.
    pub calls_per_s: f64,
    /// Latencies of the successful calls, µs.
    pub latency_us: Latency,
    /// How calls arrived: `closed 16`, `open poisson 5000/s`.
    pub arrival: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut r = Recorder::new();
        for us in 1..=1000u64 {
            r.success(Duration::from_micros(us));
        }
        let report = r.report(2.0, "closed 1".into());
        assert_eq!(report.calls, 1000);
        assert_eq!(report.calls_per_s, 500.0);
        let l = report.latency_us;
        assert_eq!(
            (l.p50, l.p90, l.p99, l.p999, l.max),
            (500.0, 900.0, 990.0, 999.0, 1000.0)
        );
        assert!((l.mean - 500.5).abs() < 0.5, "{}", l.mean);
    }

    #[test]
    fn resolution_is_three_digits_and_the_range_is_clamped() {
        let mut r = Recorder::new();
        r.success(Duration::from_micros(123_456));
        r.success(Duration::from_secs(3600));
        r.success(Duration::ZERO);
        let l = r.report(1.0, String::new()).latency_us;
        assert!((l.p50 - 123_456.0).abs() / 123_456.0 < 0.001, "{}", l.p50);
        assert!((l.max - 60e6).abs() / 60e6 < 0.001, "{}", l.max);
        assert_eq!(r.calls(), 3);
    }

    #[test]
    fn merging_adds_calls_and_errors_by_kind() {
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        a.success(Duration::from_millis(1));
        a.failure("timeout");
        b.success(Duration::from_millis(3));
        b.failure("timeout");
        b.failures("http-502", 2);
        b.failures("none", 0);
        a.merge(&b);
        let report = a.report(1.0, String::new());
        assert_eq!(report.calls, 2);
        assert_eq!(report.errors, 4);
        assert_eq!(
            report.errors_by_kind,
            BTreeMap::from([("http-502".to_string(), 2), ("timeout".to_string(), 2)])
        );
        assert!(report.latency_us.max >= 2999.0, "{:?}", report.latency_us);
    }

    #[test]
    fn an_empty_run_reports_zeros_and_round_trips_as_json() {
        let report = Recorder::new().report(0.0, "open constant 10/s".into());
        assert_eq!(report.calls_per_s, 0.0);
        assert_eq!(report.latency_us, Latency::default());
        let json = serde_json::to_string(&report).expect("serializes");
        let back: Report = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, report);
    }
}
