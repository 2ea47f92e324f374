//! The per-tenant rate limit: a token bucket computed as GCRA, with the
//! time passed in.

use std::time::{Duration, Instant};

/// Longest span the rate limiter computes with (100 years): a smaller
/// `calls_per_s` counts as one call per 100 years, and a larger
/// `burst / calls_per_s` is capped, so no setting overflows the clock.
const MAX_SPAN: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A token bucket of `burst` tokens refilled at `calls_per_s`, computed as
/// GCRA, the generic cell rate algorithm (ITU-T I.371, "virtual scheduling";
/// the algorithm behind the `governor` crate, which we do not use since it
/// reads its own clock): instead of a token count it keeps the *theoretical
/// arrival time* (TAT) of the next call. A call at `now` is allowed when
/// `TAT - tolerance <= now`, and then moves the TAT to `max(TAT, now) +
/// interval`, with `interval = 1 / calls_per_s` and `tolerance = (burst - 1)
/// × interval`. A full bucket lets `burst` calls through at once; after that
/// one every `interval`.
#[derive(Debug)]
pub(super) struct Gcra {
    interval: Duration,
    tolerance: Duration,
    /// `None`: the bucket is full (no call yet).
    tat: Option<Instant>,
}

impl Gcra {
    pub(super) fn new(calls_per_s: f64, burst: u32) -> Self {
        let mut gcra = Self {
            interval: Duration::ZERO,
            tolerance: Duration::ZERO,
            tat: None,
        };
        gcra.set_rate(calls_per_s, burst);
        gcra
    }

    /// Refills at `calls_per_s` with a bucket of `burst` from now on; the
    /// calls already admitted stay counted (the TAT is kept).
    pub(super) fn set_rate(&mut self, calls_per_s: f64, burst: u32) {
        let interval = Duration::try_from_secs_f64(1.0 / calls_per_s)
            .unwrap_or(MAX_SPAN)
            .min(MAX_SPAN);
        let tolerance = interval
            .checked_mul(burst.saturating_sub(1))
            .unwrap_or(MAX_SPAN)
            .min(MAX_SPAN);
        self.interval = interval;
        self.tolerance = tolerance;
    }

    /// Takes a token at `now`, or says how long until there is one.
    pub(super) fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let tat = self.tat.map_or(now, |tat| tat.max(now));
        let ahead = tat.saturating_duration_since(now);
        if ahead > self.tolerance {
            return Err(ahead - self.tolerance);
        }
        self.tat = Some(tat + self.interval);
        Ok(())
    }
}
