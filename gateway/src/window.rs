//! A rolling window of finished calls, per second and per service, for the
//! dashboard's charts: calls/s, errors/s, p50 and p99 latency over the last
//! [`WINDOW_S`] seconds, and which node served how many calls.
//!
//! Bounded: [`WINDOW_S`] buckets, each keeping at most [`SAMPLES_PER_S`]
//! latencies per service (later calls in the same second count, but only
//! every n-th latency is kept, so percentiles stay representative).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

/// Seconds of history kept.
pub const WINDOW_S: u64 = 300;
/// Most latency samples kept per service and second.
pub const SAMPLES_PER_S: usize = 512;

/// The window; cheap to record into from every call task.
#[derive(Debug)]
pub struct CallWindow {
    start: Instant,
    buckets: Mutex<VecDeque<Bucket>>,
}

#[derive(Debug, Default)]
struct Bucket {
    second: u64,
    services: HashMap<String, ServiceBucket>,
    nodes: HashMap<String, u64>,
}

#[derive(Debug, Default)]
struct ServiceBucket {
    calls: u64,
    errors: u64,
    latencies_ms: Vec<f32>,
}

/// One second of one service, as the dashboard charts it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// Seconds since the gateway started.
    pub t: u64,
    /// Calls finished in that second.
    pub calls: u64,
    /// Of which failed.
    pub errors: u64,
    /// Median call latency, ms (0 with no call).
    pub p50_ms: f32,
    /// 99th percentile call latency, ms (0 with no call).
    pub p99_ms: f32,
}

impl CallWindow {
    /// An empty window whose second 0 is `start`.
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            buckets: Mutex::new(VecDeque::new()),
        }
    }

    /// Records a call of `service` that finished at `now` after `total_ms`,
    /// served by `node` (empty when it never reached one).
    pub fn record(&self, service: &str, node: &str, total_ms: f32, ok: bool, now: Instant) {
        let second = now.saturating_duration_since(self.start).as_secs();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.back().is_none_or(|b| b.second < second) {
            buckets.push_back(Bucket {
                second,
                ..Bucket::default()
            });
        }
        while buckets
            .front()
            .is_some_and(|b| b.second + WINDOW_S <= second)
        {
            buckets.pop_front();
        }
        // A late record for an older second lands in the newest bucket.
        let Some(bucket) = buckets.back_mut() else {
            return;
        };
        let entry = bucket.services.entry(service.to_string()).or_default();
        entry.calls += 1;
        if !ok {
            entry.errors += 1;
        }
        if total_ms.is_finite() {
            if entry.latencies_ms.len() < SAMPLES_PER_S {
                entry.latencies_ms.push(total_ms);
            } else if entry.calls % (entry.calls / SAMPLES_PER_S as u64 + 1) == 0 {
                let at = (entry.calls as usize) % SAMPLES_PER_S;
                entry.latencies_ms[at] = total_ms;
            }
        }
        if !node.is_empty() {
            *bucket.nodes.entry(node.to_string()).or_default() += 1;
        }
    }

    /// Per service, one point per second of the last `seconds` up to `now`
    /// (seconds without calls included, as zeros).
    pub fn series(&self, seconds: u64, now: Instant) -> BTreeMap<String, Vec<Point>> {
        let last = now.saturating_duration_since(self.start).as_secs();
        let first = last.saturating_sub(seconds.saturating_sub(1));
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: BTreeMap<String, Vec<Point>> = BTreeMap::new();
        for name in buckets.iter().flat_map(|b| b.services.keys()) {
            out.entry(name.clone()).or_default();
        }
        for (name, points) in &mut out {
            for t in first..=last {
                let point = buckets
                    .iter()
                    .find(|b| b.second == t)
                    .and_then(|b| b.services.get(name))
                    .map_or(
                        Point {
                            t,
                            calls: 0,
                            errors: 0,
                            p50_ms: 0.0,
                            p99_ms: 0.0,
                        },
                        |s| Point {
                            t,
                            calls: s.calls,
                            errors: s.errors,
                            p50_ms: percentile(&s.latencies_ms, 0.50),
                            p99_ms: percentile(&s.latencies_ms, 0.99),
                        },
                    );
                points.push(point);
            }
        }
        out
    }

    /// Over the last `seconds` up to `now`, for `service`: (calls, errors,
    /// p50 ms, p99 ms).
    pub fn summary(&self, service: &str, seconds: u64, now: Instant) -> (u64, u64, f32, f32) {
        let last = now.saturating_duration_since(self.start).as_secs();
        let first = last.saturating_sub(seconds.saturating_sub(1));
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (mut calls, mut errors, mut samples) = (0, 0, Vec::new());
        for bucket in buckets.iter().filter(|b| b.second >= first) {
            if let Some(s) = bucket.services.get(service) {
                calls += s.calls;
                errors += s.errors;
                samples.extend_from_slice(&s.latencies_ms);
            }
        }
        (
            calls,
            errors,
            percentile(&samples, 0.50),
            percentile(&samples, 0.99),
        )
    }

    /// Calls each node served in the last `seconds` up to `now`.
    pub fn node_share(&self, seconds: u64, now: Instant) -> BTreeMap<String, u64> {
        let last = now.saturating_duration_since(self.start).as_secs();
        let first = last.saturating_sub(seconds.saturating_sub(1));
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = BTreeMap::new();
        for bucket in buckets.iter().filter(|b| b.second >= first) {
            for (node, calls) in &bucket.nodes {
                *out.entry(node.clone()).or_default() += calls;
            }
        }
        out
    }
}

/// The `q` quantile (0..=1) of `samples` by nearest rank; 0 when empty.
pub fn percentile(samples: &[f32], q: f64) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f32::total_cmp);
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f32> = (1..=100).map(|n| n as f32).collect();
        assert_eq!(percentile(&samples, 0.5), 50.0);
        assert_eq!(percentile(&samples, 0.99), 99.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn seconds_are_bucketed_and_old_ones_dropped() {
        let t0 = Instant::now();
        let w = CallWindow::new(t0);
        w.record("echo", "a", 10.0, true, t0);
        w.record("echo", "b", 30.0, false, t0 + Duration::from_millis(500));
        w.record("echo", "a", 20.0, true, t0 + Duration::from_secs(2));
        let series = w.series(3, t0 + Duration::from_secs(2));
        let echo = &series["echo"];
        assert_eq!(echo.len(), 3);
        assert_eq!(
            (echo[0].calls, echo[0].errors, echo[0].p99_ms),
            (2, 1, 30.0)
        );
        assert_eq!(echo[1].calls, 0, "a quiet second is a zero");
        assert_eq!(echo[2].p50_ms, 20.0);
        let share = w.node_share(60, t0 + Duration::from_secs(2));
        assert_eq!(share.get("a"), Some(&2));
        assert_eq!(share.get("b"), Some(&1));

        w.record(
            "echo",
            "a",
            1.0,
            true,
            t0 + Duration::from_secs(WINDOW_S + 5),
        );
        let share = w.node_share(WINDOW_S, t0 + Duration::from_secs(WINDOW_S + 5));
        assert_eq!(share.get("b"), None, "dropped after {WINDOW_S} s");
    }

    #[test]
    fn samples_per_second_are_bounded() {
        let t0 = Instant::now();
        let w = CallWindow::new(t0);
        for i in 0..10_000 {
            w.record("s", "", i as f32, true, t0);
        }
        let buckets = w.buckets.lock().expect("lock");
        let s = &buckets[0].services["s"];
        assert_eq!(s.calls, 10_000);
        assert_eq!(s.latencies_ms.len(), SAMPLES_PER_S);
    }
}
