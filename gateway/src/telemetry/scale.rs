//! What the autoscaling signals are measured from, per service and for
//! this gateway alone: calls that arrived (`service_arrivals_total`), the
//! call slots its calls hold now and how long each hold lasted, and how
//! long calls waited in its queue, over a sliding window of whole seconds.
//!
//! The scheduler records an arrival when a call is admitted
//! ([`ScaleWindow::arrival`]) and takes a [`Hold`] with each slot it grants
//! ([`ScaleWindow::hold`]); dropping the hold ends it. The admin port reads
//! [`ScaleWindow::stats`] for `GET /api/scale` and the gauges of
//! `/metrics`.
//!
//! Services are keyed by their label value ([`labels::service`]): calls to
//! names the gateway does not know are counted in `service_arrivals_total`
//! under `_unknown` and kept out of the window, so no caller's input adds
//! an entry. A service with nothing running and nothing recorded in the
//! window is forgotten.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::SECONDS_BUCKETS;
use super::labels;

/// How many queue-wait buckets a second keeps: one per bound of
/// [`SECONDS_BUCKETS`] plus the overflow (`+Inf`).
pub(crate) const WAIT_BUCKETS: usize = SECONDS_BUCKETS.len() + 1;

/// One service's counts over one whole second.
#[derive(Debug, Clone)]
struct Second {
    /// Whole seconds since the window started.
    at: u64,
    arrivals: u64,
    holds: u64,
    held_s: f64,
    waits: [u64; WAIT_BUCKETS],
}

impl Second {
    fn new(at: u64) -> Self {
        Self {
            at,
            arrivals: 0,
            holds: 0,
            held_s: 0.0,
            waits: [0; WAIT_BUCKETS],
        }
    }
}

/// One service: its slots held now and its recent seconds.
#[derive(Debug)]
struct Track {
    /// When this entry was made: its rates cover the time since then
    /// while that is shorter than the window.
    since: Instant,
    running: u32,
    seconds: VecDeque<Second>,
}

/// Per service, the counts the autoscaling signals are computed from (see
/// the module's documentation).
#[derive(Debug)]
pub(crate) struct ScaleWindow {
    window: Duration,
    started: Instant,
    services: Mutex<HashMap<String, Track>>,
    /// The services whose gauges `/metrics` set, so that a service gone
    /// gets its gauges set to 0 once.
    exported: Mutex<BTreeSet<String>>,
}

/// One service's counts over the window, as [`ScaleWindow::stats`] reads
/// them (default: none).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct WindowStats {
    /// The time the counts cover, s: the window, or less for a service
    /// first seen more recently (at least 1).
    pub span_s: f64,
    /// Calls admitted.
    pub arrivals: u64,
    /// Slot holds that ended.
    pub holds: u64,
    /// Their total time, s.
    pub held_s: f64,
    /// Slots this gateway's calls hold now.
    pub running: u32,
    /// Queue waits of calls that queued and then got a slot, counted per
    /// bucket of [`SECONDS_BUCKETS`] (not cumulative), the last one past
    /// the highest bound.
    pub waits: [u64; WAIT_BUCKETS],
}

/// A call slot held by one of this gateway's calls, from its grant until
/// it is dropped: counted as running meanwhile, its time recorded then.
#[derive(Debug)]
pub(crate) struct Hold {
    window: Arc<ScaleWindow>,
    /// The service's label value; `None` for a name not known.
    service: Option<String>,
    since: Instant,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The key of `service` in the window: its label value, `None` for a name
/// the gateway does not know.
fn key(service: &str) -> Option<String> {
    let label = labels::service(service);
    (label != labels::UNKNOWN).then_some(label)
}

impl ScaleWindow {
    /// An empty window of `window` (at least 1 s).
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window: window.max(Duration::from_secs(1)),
            started: Instant::now(),
            services: Mutex::default(),
            exported: Mutex::default(),
        }
    }

    /// The window's length.
    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started).as_secs()
    }

    /// Updates the current second of `service` (made as needed), dropping
    /// the seconds that left the window.
    fn record(&self, service: &str, now: Instant, f: impl FnOnce(&mut u32, Option<&mut Second>)) {
        let at = self.second(now);
        let oldest = at.saturating_sub(self.window.as_secs().saturating_sub(1));
        let mut services = lock(&self.services);
        let track = services
            .entry(service.to_string())
            .or_insert_with(|| Track {
                since: now,
                running: 0,
                seconds: VecDeque::new(),
            });
        while track.seconds.front().is_some_and(|s| s.at < oldest) {
            track.seconds.pop_front();
        }
        if track.seconds.back().is_none_or(|s| s.at < at) {
            track.seconds.push_back(Second::new(at));
        }
        f(&mut track.running, track.seconds.back_mut());
    }

    /// A call of `service` was admitted: counts it in
    /// `service_arrivals_total{service}` and in the window.
    pub(crate) fn arrival(&self, service: &str) {
        let label = labels::service(service);
        metrics::counter!("service_arrivals_total", "service" => label.clone()).increment(1);
        if label != labels::UNKNOWN {
            self.record(&label, Instant::now(), |_, second| {
                if let Some(second) = second {
                    second.arrivals += 1;
                }
            });
        }
    }

    /// A call of `service` got a slot after waiting `waited` in the queue
    /// (`None`: it never queued): running until the returned hold drops.
    pub(crate) fn hold(self: &Arc<Self>, service: &str, waited: Option<Duration>) -> Hold {
        let service = key(service);
        if let Some(name) = &service {
            self.record(name, Instant::now(), |running, second| {
                *running += 1;
                if let (Some(second), Some(waited)) = (second, waited) {
                    second.waits[wait_bucket(waited)] += 1;
                }
            });
        }
        Hold {
            window: self.clone(),
            service,
            since: Instant::now(),
        }
    }

    /// Every service's counts over the window at `now`, by label value;
    /// services with nothing running and nothing recorded in the window are
    /// forgotten.
    pub(crate) fn stats(&self, now: Instant) -> BTreeMap<String, WindowStats> {
        let at = self.second(now);
        let oldest = at.saturating_sub(self.window.as_secs().saturating_sub(1));
        let mut services = lock(&self.services);
        services.retain(|_, track| {
            while track.seconds.front().is_some_and(|s| s.at < oldest) {
                track.seconds.pop_front();
            }
            track.running > 0 || !track.seconds.is_empty()
        });
        services
            .iter()
            .map(|(name, track)| {
                let mut stats = WindowStats {
                    span_s: now
                        .saturating_duration_since(track.since)
                        .min(self.window)
                        .as_secs_f64()
                        .max(1.0),
                    arrivals: 0,
                    holds: 0,
                    held_s: 0.0,
                    running: track.running,
                    waits: [0; WAIT_BUCKETS],
                };
                for second in &track.seconds {
                    stats.arrivals += second.arrivals;
                    stats.holds += second.holds;
                    stats.held_s += second.held_s;
                    for (sum, n) in stats.waits.iter_mut().zip(second.waits) {
                        *sum += n;
                    }
                }
                (name.clone(), stats)
            })
            .collect()
    }

    /// Remembers `now_exported` as the services whose gauges are set and
    /// returns those set before and no longer (their gauges go to 0).
    pub(crate) fn exported(&self, now_exported: BTreeSet<String>) -> Vec<String> {
        let mut exported = lock(&self.exported);
        let gone = exported.difference(&now_exported).cloned().collect();
        *exported = now_exported;
        gone
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let Some(service) = &self.service else {
            return;
        };
        let now = Instant::now();
        let held = now.saturating_duration_since(self.since).as_secs_f64();
        self.window.record(service, now, |running, second| {
            *running = running.saturating_sub(1);
            if let Some(second) = second {
                second.holds += 1;
                second.held_s += held;
            }
        });
    }
}

/// Help text of `service_arrivals_total`.
pub(crate) fn describe_metrics() {
    metrics::describe_counter!(
        "service_arrivals_total",
        "Calls admitted to the scheduler (a slot or the queue), by service."
    );
}

/// The bucket of [`SECONDS_BUCKETS`] a wait falls in (`le`: the first
/// bound at or above it; the last index past the highest).
fn wait_bucket(waited: Duration) -> usize {
    let s = waited.as_secs_f64();
    SECONDS_BUCKETS
        .iter()
        .position(|bound| s <= *bound)
        .unwrap_or(SECONDS_BUCKETS.len())
}

/// The `q` quantile (`0.0..=1.0`) of waits counted per bucket of
/// [`SECONDS_BUCKETS`] (as [`WindowStats::waits`]), s, interpolated
/// linearly within its bucket as Prometheus's `histogram_quantile` does
/// (the first bucket from 0; one past the highest bound is that bound).
/// `None` without waits.
pub(crate) fn wait_quantile(waits: &[u64], q: f64) -> Option<f64> {
    let total: u64 = waits.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (i, &n) in waits.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let Some(&upper) = SECONDS_BUCKETS.get(i) else {
                return SECONDS_BUCKETS.last().copied();
            };
            let lower = if i == 0 { 0.0 } else { SECONDS_BUCKETS[i - 1] };
            let within = (rank - below as f64) / n as f64;
            return Some(lower + (upper - lower) * within);
        }
        below += n;
    }
    SECONDS_BUCKETS.last().copied()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::telemetry::labels::{Kind, Known};

    #[test]
    fn arrivals_holds_and_waits_are_counted_per_known_service() {
        let _known = Known::new(Kind::Service, ["scale-known"]);
        let window = Arc::new(ScaleWindow::new(Duration::from_secs(60)));
        for _ in 0..3 {
            window.arrival("scale-known");
        }
        window.arrival("scale-made-up");
        let first = window.hold("scale-known", None);
        let second = window.hold("scale-known", Some(Duration::from_millis(30)));
        let stranger = window.hold("scale-made-up", Some(Duration::from_secs(1)));
        let stats = window.stats(Instant::now());
        assert_eq!(stats.len(), 1, "unknown names make no entry: {stats:?}");
        let known = &stats["scale-known"];
        assert_eq!((known.arrivals, known.running, known.holds), (3, 2, 0));
        assert_eq!(known.span_s, 1.0, "a new service's span is at least 1 s");
        // 30 ms falls in the (0.025, 0.05] bucket.
        let bucket = SECONDS_BUCKETS.iter().position(|b| *b == 0.05).unwrap();
        assert_eq!(known.waits[bucket], 1);
        assert_eq!(
            known.waits.iter().sum::<u64>(),
            1,
            "the call that never queued is not a wait"
        );
        std::thread::sleep(Duration::from_millis(20));
        drop((first, second, stranger));
        let known = &window.stats(Instant::now())["scale-known"];
        assert_eq!((known.running, known.holds), (0, 2));
        assert!(
            known.held_s >= 0.04,
            "two holds of 20 ms or more: {}",
            known.held_s
        );
    }

    #[test]
    fn seconds_leave_the_window_and_idle_services_are_forgotten() {
        let _known = Known::new(Kind::Service, ["scale-old"]);
        let window = Arc::new(ScaleWindow::new(Duration::from_secs(2)));
        window.arrival("scale-old");
        let held = window.hold("scale-old", None);
        let later = Instant::now() + Duration::from_secs(5);
        let stats = window.stats(later);
        assert_eq!(
            stats["scale-old"].arrivals, 0,
            "the arrival left the window"
        );
        assert_eq!(stats["scale-old"].running, 1, "still running: kept");
        assert_eq!(stats["scale-old"].span_s, 2.0, "the span is the window");
        drop(held);
        assert!(window.stats(later + Duration::from_secs(5)).is_empty());
    }

    #[test]
    fn exported_services_that_are_gone_are_told_once() {
        let window = ScaleWindow::new(Duration::from_secs(60));
        let set = |names: &[&str]| names.iter().map(|n| (*n).to_string()).collect();
        assert!(window.exported(set(&["a", "b"])).is_empty());
        assert_eq!(window.exported(set(&["b"])), vec!["a".to_string()]);
        assert!(window.exported(set(&["b"])).is_empty());
    }

    #[test]
    fn wait_quantiles_interpolate_within_buckets() {
        let mut waits = [0u64; WAIT_BUCKETS];
        assert_eq!(wait_quantile(&waits, 0.9), None);
        // 10 waits in (0.1, 0.25]: the p90 is 90 % of the way up.
        let i = SECONDS_BUCKETS.iter().position(|b| *b == 0.25).unwrap();
        waits[i] = 10;
        let p90 = wait_quantile(&waits, 0.9).unwrap();
        assert!((p90 - (0.1 + 0.15 * 0.9)).abs() < 1e-9, "{p90}");
        // 9 fast ones and 1 past the highest bound: the p90 stays fast, the
        // p99 is the highest bound.
        waits[i] = 0;
        waits[0] = 9;
        waits[WAIT_BUCKETS - 1] = 1;
        assert!(wait_quantile(&waits, 0.9).unwrap() <= 0.001);
        assert_eq!(wait_quantile(&waits, 0.99), Some(300.0));
        assert_eq!(wait_bucket(Duration::from_millis(1)), 0);
        assert_eq!(wait_bucket(Duration::from_secs(1000)), WAIT_BUCKETS - 1);
    }
}
