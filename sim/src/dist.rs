//! Random durations (service times) and arrival processes, from a
//! scenario's settings, drawn from a seeded [`StdRng`].

use std::sync::Arc;

use rand::Rng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Exp, LogNormal};

use crate::scenario::{Dist, Process, Scenario, ScenarioError, read_numbers};

/// The standard normal's 99th percentile: a log-normal's sigma from its
/// median and p99 is ln(p99 / median) / this.
pub const Z99: f64 = 2.326_347_874_040_841;

/// Draws durations, ms.
#[derive(Debug, Clone)]
pub struct Sampler {
    draw: Draw,
    mean_ms: f64,
}

#[derive(Debug, Clone)]
enum Draw {
    Exponential(Exp<f64>),
    LogNormal(LogNormal<f64>),
    Fixed(f64),
    Trace(Arc<Vec<f64>>),
}

impl Sampler {
    /// The sampler of `dist` (trace files read relative to `scenario`).
    ///
    /// # Errors
    /// A trace file that cannot be read, or parameters out of range.
    pub fn new(dist: &Dist, scenario: &Scenario) -> Result<Self, ScenarioError> {
        let bad = |message: String| ScenarioError::Invalid {
            scenario: scenario.name.clone(),
            message,
        };
        Ok(match dist {
            Dist::Exponential { mean_ms } => Self {
                draw: Draw::Exponential(
                    Exp::new(1.0 / mean_ms).map_err(|e| bad(format!("exponential: {e}")))?,
                ),
                mean_ms: *mean_ms,
            },
            Dist::LogNormal {
                median_ms,
                sigma,
                p99_ms,
            } => {
                let sigma = match (sigma, p99_ms) {
                    (Some(s), _) => *s,
                    (None, Some(p99)) => (p99 / median_ms).ln() / Z99,
                    (None, None) => return Err(bad("log_normal needs sigma or p99_ms".into())),
                };
                Self {
                    draw: Draw::LogNormal(
                        LogNormal::new(median_ms.ln(), sigma)
                            .map_err(|e| bad(format!("log_normal: {e}")))?,
                    ),
                    mean_ms: median_ms * (sigma * sigma / 2.0).exp(),
                }
            }
            Dist::Fixed { ms } => Self {
                draw: Draw::Fixed(*ms),
                mean_ms: *ms,
            },
            Dist::Trace { file } => {
                let values = read_numbers(&scenario.path_of(file))?;
                let mean_ms = values.iter().sum::<f64>() / values.len() as f64;
                Self {
                    draw: Draw::Trace(Arc::new(values)),
                    mean_ms,
                }
            }
        })
    }

    /// One duration, ms.
    pub fn sample_ms(&self, rng: &mut StdRng) -> f64 {
        match &self.draw {
            Draw::Exponential(d) => d.sample(rng),
            Draw::LogNormal(d) => d.sample(rng),
            Draw::Fixed(ms) => *ms,
            Draw::Trace(values) => values[rng.random_range(0..values.len())],
        }
    }

    /// The distribution's mean, ms.
    pub fn mean_ms(&self) -> f64 {
        self.mean_ms
    }
}

/// When the calls of one stream arrive, s from the start.
#[derive(Debug, Clone)]
pub enum Arrivals {
    /// Poisson at a fixed rate.
    Poisson {
        /// Calls per second.
        rate: f64,
    },
    /// Poisson at a rate alternating between on and off periods.
    OnOff {
        /// Rate while on.
        on_rate: f64,
        /// Rate while off.
        off_rate: f64,
        /// Length of "on".
        on_s: f64,
        /// Length of "off".
        off_s: f64,
        /// Start of the first "on".
        offset_s: f64,
    },
    /// Bursts of calls at once.
    Burst {
        /// The current burst's time, s.
        at: f64,
        /// Calls per burst.
        calls: u32,
        /// Repeat period, s.
        every: Option<f64>,
        /// Calls of the current burst handed out.
        emitted: u32,
    },
    /// Recorded times.
    Trace {
        /// The times, s, sorted.
        times: Arc<Vec<f64>>,
        /// The next one to hand out.
        next: usize,
    },
}

impl Arrivals {
    /// The process of `process` (trace files read relative to `scenario`).
    ///
    /// # Errors
    /// A trace file that cannot be read or is not sorted.
    pub fn new(process: &Process, scenario: &Scenario) -> Result<Self, ScenarioError> {
        Ok(match process {
            Process::Poisson { rate_per_s } => Self::Poisson { rate: *rate_per_s },
            // The turns' arrival times; the engine gives each to a
            // conversation.
            Process::Chat(chat) => Self::Poisson {
                rate: chat.rate_per_s,
            },
            Process::OnOff {
                rate_per_s,
                off_rate_per_s,
                on_s,
                off_s,
                offset_s,
            } => Self::OnOff {
                on_rate: *rate_per_s,
                off_rate: *off_rate_per_s,
                on_s: *on_s,
                off_s: *off_s,
                offset_s: *offset_s,
            },
            Process::Burst {
                at_s,
                calls,
                every_s,
            } => Self::Burst {
                at: *at_s,
                calls: *calls,
                every: *every_s,
                emitted: 0,
            },
            Process::Trace { file } => {
                let path = scenario.path_of(file);
                let times = read_numbers(&path)?;
                if times.windows(2).any(|w| w[1] < w[0]) {
                    return Err(ScenarioError::Trace {
                        path,
                        line: 0,
                        message: "arrival times are not sorted".into(),
                    });
                }
                Self::Trace {
                    times: Arc::new(times),
                    next: 0,
                }
            }
        })
    }

    /// The rate at `t` and when it next changes (on-off), s.
    fn phase(&self, t: f64) -> (f64, f64) {
        match self {
            Self::Poisson { rate } => (*rate, f64::INFINITY),
            Self::OnOff {
                on_rate,
                off_rate,
                on_s,
                off_s,
                offset_s,
            } => {
                if t < *offset_s {
                    return (*off_rate, *offset_s);
                }
                let period = on_s + off_s;
                let start = offset_s + ((t - offset_s) / period).floor() * period;
                if t < start + on_s {
                    (*on_rate, start + on_s)
                } else {
                    (*off_rate, start + period)
                }
            }
            Self::Burst { .. } | Self::Trace { .. } => (0.0, f64::INFINITY),
        }
    }

    /// The first arrival after `t`, s, or `None` when no more come.
    pub fn next_after(&mut self, t: f64, rng: &mut StdRng) -> Option<f64> {
        if let Self::Trace { times, next } = self {
            let at = times.get(*next).copied()?;
            *next += 1;
            return Some(at.max(t));
        }
        if let Self::Burst {
            at,
            calls,
            every,
            emitted,
        } = self
        {
            if *calls == 0 {
                return None;
            }
            if *emitted == *calls {
                *at += (*every)?;
                *emitted = 0;
            }
            *emitted += 1;
            return Some(at.max(t));
        }
        if let Self::OnOff {
            on_rate, off_rate, ..
        } = self
            && *on_rate <= 0.0
            && *off_rate <= 0.0
        {
            return None;
        }
        let mut t = t;
        loop {
            let (rate, boundary) = self.phase(t);
            let boundary = if boundary > t { boundary } else { t + 1e-9 };
            if rate > 0.0 {
                let gap = Exp::new(rate).ok()?.sample(rng);
                if t + gap < boundary {
                    return Some(t + gap);
                }
            }
            if !boundary.is_finite() {
                return None;
            }
            // Memoryless: start afresh at the boundary with its rate.
            t = boundary;
        }
    }

    /// The mean rate over `[0, duration_s)`, calls/s.
    pub fn mean_rate(&self, duration_s: f64) -> f64 {
        match self {
            Self::Poisson { rate } => *rate,
            Self::Trace { times, .. } => {
                times.iter().filter(|t| **t < duration_s).count() as f64 / duration_s
            }
            Self::Burst {
                at, calls, every, ..
            } => {
                let bursts = match every {
                    Some(e) if *at < duration_s => ((duration_s - at) / e).ceil(),
                    _ => f64::from(u8::from(*at < duration_s)),
                };
                bursts * f64::from(*calls) / duration_s
            }
            Self::OnOff { .. } => {
                // Integrate the piecewise-constant rate.
                let (mut t, mut calls) = (0.0, 0.0);
                while t < duration_s {
                    let (rate, boundary) = self.phase(t);
                    let end = boundary.min(duration_s).max(t + 1e-9);
                    calls += rate * (end - t);
                    t = end;
                }
                calls / duration_s
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn on_off_alternates_and_keeps_its_mean_rate() {
        let mut a = Arrivals::OnOff {
            on_rate: 10.0,
            off_rate: 1.0,
            on_s: 100.0,
            off_s: 100.0,
            offset_s: 50.0,
        };
        assert_eq!(a.phase(10.0), (1.0, 50.0));
        assert_eq!(a.phase(60.0), (10.0, 150.0));
        assert_eq!(a.phase(160.0), (1.0, 250.0));
        // 50 s off, 100 on, 100 off, 100 on, 100 off: 2250 calls in 450 s.
        assert!((a.mean_rate(450.0) - 5.0).abs() < 1e-9);
        let mut rng = StdRng::seed_from_u64(1);
        let (mut t, mut on, mut off) = (0.0, 0, 0);
        while let Some(next) = a.next_after(t, &mut rng) {
            if next >= 50_050.0 {
                break;
            }
            if a.phase(next).0 > 5.0 {
                on += 1
            } else {
                off += 1
            }
            t = next;
        }
        // 250 on periods of 100 s at 10/s, 250 off at 1/s.
        assert!((240_000..260_000).contains(&on), "{on}");
        assert!((23_000..27_000).contains(&off), "{off}");
    }

    #[test]
    fn log_normal_from_p99_has_that_p99() {
        let scenario = Scenario::parse(
            r#"duration_s = 1.0
policies = ["x.wasm"]
[[services]]
name = "s"
service_time = { kind = "fixed", ms = 1.0 }
[[nodes]]
id = "n"
max_concurrent = 1
services = ["s"]
[[arrivals]]
service = "s"
process = { kind = "poisson", rate_per_s = 1.0 }
"#,
            "t",
            Path::new("."),
        )
        .unwrap();
        let s = Sampler::new(
            &Dist::LogNormal {
                median_ms: 100.0,
                sigma: None,
                p99_ms: Some(400.0),
            },
            &scenario,
        )
        .unwrap();
        let mut rng = StdRng::seed_from_u64(2);
        let mut xs: Vec<f64> = (0..100_000).map(|_| s.sample_ms(&mut rng)).collect();
        xs.sort_by(f64::total_cmp);
        assert!((xs[50_000] - 100.0).abs() < 3.0, "{}", xs[50_000]);
        assert!((xs[99_000] - 400.0).abs() < 20.0, "{}", xs[99_000]);
    }

    use std::path::Path;
}
