//! A rolling window of finished calls, per second and per service, for the
//! dashboard's charts: calls/s, errors/s, p50 and p99 latency over the last
//! [`WINDOW_S`] seconds, which node served how many calls, and which tenant
//! made them.
//!
//! Bounded: [`WINDOW_S`] buckets, each keeping at most [`SAMPLES_PER_S`]
//! latencies per service (later calls in the same second count, but only
//! every n-th latency is kept, so percentiles stay representative) and at
//! most [`TENANTS_PER_S`] tenants per service (later tenants in the same
//! second count under [`OTHER_TENANTS`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

/// Seconds of history kept.
pub(super) const WINDOW_S: u64 = 300;
/// Most latency samples kept per service and second.
pub(super) const SAMPLES_PER_S: usize = 512;
/// Most tenants counted apart per service and second, and listed apart per
/// service by [`CallWindow::tenant_rates`].
pub(super) const TENANTS_PER_S: usize = 64;
/// Where the calls of tenants past [`TENANTS_PER_S`] are counted. The
/// parentheses keep it apart from a tenant's name in practice (a tenant may
/// be named anything non-empty, so they are no guarantee).
pub(super) const OTHER_TENANTS: &str = "(other)";

/// The window; cheap to record into from every call task.
#[derive(Debug)]
pub(crate) struct CallWindow {
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
    /// Per tenant: (calls, errors); at most [`TENANTS_PER_S`] + 1 keys.
    tenants: HashMap<String, (u64, u64)>,
}

impl ServiceBucket {
    /// Counts a call of `tenant`, under [`OTHER_TENANTS`] once
    /// [`TENANTS_PER_S`] others are counted this second.
    fn count_tenant(&mut self, tenant: &str, ok: bool) {
        let apart = self.tenants.len() - usize::from(self.tenants.contains_key(OTHER_TENANTS));
        let key = if apart < TENANTS_PER_S || self.tenants.contains_key(tenant) {
            tenant
        } else {
            OTHER_TENANTS
        };
        let error = u64::from(!ok);
        if let Some(counts) = self.tenants.get_mut(key) {
            counts.0 += 1;
            counts.1 += error;
        } else {
            self.tenants.insert(key.to_string(), (1, error));
        }
    }
}

/// One tenant's calls of one service over a span of seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct TenantRate {
    /// The tenant's name (`anonymous` without `[[tenants]]`;
    /// [`OTHER_TENANTS`] for those past [`TENANTS_PER_S`]).
    pub tenant: String,
    /// Calls of the tenant finished per second, averaged over the span.
    pub calls_per_s: f64,
    /// Of which failed, per second, averaged over the span.
    pub errors_per_s: f64,
}

/// One second of one service, as the dashboard charts it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Point {
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
    pub(crate) fn new(start: Instant) -> Self {
        Self {
            start,
            buckets: Mutex::new(VecDeque::new()),
        }
    }

    /// Records a call of `service` by `tenant` that finished at `now` after
    /// `total_ms`, served by `node` (empty when it never reached one).
    pub(crate) fn record(
        &self,
        service: &str,
        tenant: &str,
        node: &str,
        total_ms: f32,
        ok: bool,
        now: Instant,
    ) {
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
        entry.count_tenant(tenant, ok);
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
    pub(crate) fn series(&self, seconds: u64, now: Instant) -> BTreeMap<String, Vec<Point>> {
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
    pub(crate) fn summary(
        &self,
        service: &str,
        seconds: u64,
        now: Instant,
    ) -> (u64, u64, f32, f32) {
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

    /// Over the last `seconds` up to `now` (`seconds` > 0), for every service
    /// with a call in that span: each tenant's calls/s and errors/s (counts
    /// divided by `seconds`), highest calls/s first (then errors/s, then
    /// name). At most [`TENANTS_PER_S`] tenants per service are listed
    /// apart, the busiest; the rest are summed under [`OTHER_TENANTS`],
    /// sorted with them.
    pub(crate) fn tenant_rates(
        &self,
        seconds: u64,
        now: Instant,
    ) -> BTreeMap<String, Vec<TenantRate>> {
        let last = now.saturating_duration_since(self.start).as_secs();
        let first = last.saturating_sub(seconds.saturating_sub(1));
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let mut counts: BTreeMap<&str, HashMap<&str, (u64, u64)>> = BTreeMap::new();
        for bucket in buckets.iter().filter(|b| b.second >= first) {
            for (service, s) in &bucket.services {
                let per_tenant = counts.entry(service).or_default();
                for (tenant, (calls, errors)) in &s.tenants {
                    let sum = per_tenant.entry(tenant).or_default();
                    sum.0 += calls;
                    sum.1 += errors;
                }
            }
        }
        let span = seconds.max(1) as f64;
        counts
            .into_iter()
            .map(|(service, per_tenant)| {
                let mut listed: Vec<(&str, (u64, u64))> = per_tenant
                    .iter()
                    .filter(|(tenant, _)| **tenant != OTHER_TENANTS)
                    .map(|(tenant, counts)| (*tenant, *counts))
                    .collect();
                listed.sort_by(by_rate);
                let mut other = per_tenant.get(OTHER_TENANTS).copied();
                for (_, (calls, errors)) in listed.drain(listed.len().min(TENANTS_PER_S)..) {
                    let sum = other.get_or_insert((0, 0));
                    sum.0 += calls;
                    sum.1 += errors;
                }
                listed.extend(other.map(|counts| (OTHER_TENANTS, counts)));
                listed.sort_by(by_rate);
                let rates = listed
                    .into_iter()
                    .map(|(tenant, (calls, errors))| TenantRate {
                        tenant: tenant.to_string(),
                        calls_per_s: calls as f64 / span,
                        errors_per_s: errors as f64 / span,
                    })
                    .collect();
                (service.to_string(), rates)
            })
            .collect()
    }

    /// Calls each node served in the last `seconds` up to `now`.
    pub(crate) fn node_share(&self, seconds: u64, now: Instant) -> BTreeMap<String, u64> {
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

/// Highest (calls, errors) first, then by name.
fn by_rate(a: &(&str, (u64, u64)), b: &(&str, (u64, u64))) -> std::cmp::Ordering {
    b.1.cmp(&a.1).then(a.0.cmp(b.0))
}

/// The `q` quantile (0..=1) of `samples` by nearest rank; 0 when empty.
pub(super) fn percentile(samples: &[f32], q: f64) -> f32 {
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
        w.record("echo", "t", "a", 10.0, true, t0);
        w.record(
            "echo",
            "t",
            "b",
            30.0,
            false,
            t0 + Duration::from_millis(500),
        );
        w.record("echo", "t", "a", 20.0, true, t0 + Duration::from_secs(2));
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
            "t",
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
            w.record("s", "t", "", i as f32, true, t0);
        }
        let buckets = w.buckets.lock().expect("lock");
        let s = &buckets[0].services["s"];
        assert_eq!(s.calls, 10_000);
        assert_eq!(s.latencies_ms.len(), SAMPLES_PER_S);
    }

    fn rates(w: &CallWindow, service: &str, seconds: u64, now: Instant) -> Vec<(String, f64, f64)> {
        w.tenant_rates(seconds, now)
            .remove(service)
            .unwrap_or_default()
            .into_iter()
            .map(|r| (r.tenant, r.calls_per_s, r.errors_per_s))
            .collect()
    }

    #[test]
    fn tenant_rates_are_per_service_and_sorted_by_rate() {
        let t0 = Instant::now();
        let w = CallWindow::new(t0);
        // In time order (a late record lands in the newest second).
        for i in 0..6 {
            let at = t0 + Duration::from_secs(i);
            w.record("echo", "team-a", "n", 1.0, i != 0, at);
            if i == 3 {
                w.record("echo", "team-b", "n", 1.0, false, at);
            }
        }
        let at = t0 + Duration::from_secs(5);
        w.record("echo", "team-b", "n", 1.0, true, at);
        w.record("other-svc", "team-b", "n", 1.0, true, at);
        let now = t0 + Duration::from_secs(5);
        assert_eq!(
            rates(&w, "echo", 10, now),
            [
                ("team-a".to_string(), 0.6, 0.1),
                ("team-b".to_string(), 0.2, 0.1),
            ]
        );
        assert_eq!(
            rates(&w, "other-svc", 10, now),
            [("team-b".to_string(), 0.1, 0.0)]
        );
        // Only the last 2 s (seconds 4 and 5): team-a 2 calls, team-b 1.
        assert_eq!(
            rates(&w, "echo", 2, now),
            [
                ("team-a".to_string(), 1.0, 0.0),
                ("team-b".to_string(), 0.5, 0.0),
            ]
        );
        // A tie in calls goes to more errors, then to the name.
        w.record("tie", "b", "n", 1.0, true, now);
        w.record("tie", "a", "n", 1.0, true, now);
        w.record("tie", "c", "n", 1.0, false, now);
        let names: Vec<String> = rates(&w, "tie", 1, now).into_iter().map(|r| r.0).collect();
        assert_eq!(names, ["c", "a", "b"]);
        // Long after, the window has forgotten them.
        let later = t0 + Duration::from_secs(WINDOW_S + 10);
        w.record("echo", "team-c", "n", 1.0, true, later);
        assert_eq!(
            rates(&w, "echo", 60, later),
            [("team-c".to_string(), 1.0 / 60.0, 0.0)]
        );
        assert!(!w.tenant_rates(60, later).contains_key("other-svc"));
    }

    #[test]
    fn tenants_per_second_are_bounded() {
        let t0 = Instant::now();
        let w = CallWindow::new(t0);
        // TENANTS_PER_S + 10 tenants in second 0, one call each; then the
        // first of them calls again, and a late one fails.
        for i in 0..TENANTS_PER_S + 10 {
            w.record("s", &format!("t{i:03}"), "", 1.0, true, t0);
        }
        w.record("s", "t000", "", 1.0, true, t0);
        w.record("s", "late", "", 1.0, false, t0);
        {
            let buckets = w.buckets.lock().expect("lock");
            let s = &buckets[0].services["s"];
            assert_eq!(s.tenants.len(), TENANTS_PER_S + 1);
            assert_eq!(s.tenants["t000"], (2, 0), "a counted tenant stays apart");
            assert_eq!(s.tenants[OTHER_TENANTS], (11, 1));
            assert_eq!(s.calls, TENANTS_PER_S as u64 + 12);
        }
        let listed = rates(&w, "s", 1, t0);
        assert_eq!(listed.len(), TENANTS_PER_S + 1);
        assert_eq!(listed[0], (OTHER_TENANTS.to_string(), 11.0, 1.0));
        assert_eq!(listed[1], ("t000".to_string(), 2.0, 0.0));

        // Across seconds each second keeps its own TENANTS_PER_S, but the
        // query lists at most TENANTS_PER_S apart too: the busiest.
        let t1 = t0 + Duration::from_secs(1);
        for i in 0..TENANTS_PER_S {
            for _ in 0..3 {
                w.record("s", &format!("u{i:03}"), "", 1.0, true, t1);
            }
        }
        let listed = rates(&w, "s", 2, t1);
        assert_eq!(listed.len(), TENANTS_PER_S + 1);
        let other = &listed[0];
        assert_eq!(other.0, OTHER_TENANTS, "sorted by rate like the rest");
        assert!(
            listed[1..].iter().all(|r| r.0.starts_with('u')),
            "{listed:?}"
        );
        // 11 calls already under "(other)", plus every t-tenant (t000's 2,
        // 63 others' 1), over 2 s.
        assert_eq!((other.1, other.2), (38.0, 0.5));
        let total: f64 = listed.iter().map(|r| r.1).sum();
        assert_eq!(
            total * 2.0,
            (TENANTS_PER_S as u64 * 4 + 12) as f64,
            "no call lost"
        );
    }
}
