//! A rolling window of finished calls and queue depths, per second and per
//! service, for the dashboard's charts: calls/s, errors/s, p50 and p99
//! latency and queue depth over the last [`WINDOW_S`] seconds, which node
//! served how many calls, and which tenant made them.
//!
//! Bounded: [`WINDOW_S`] buckets, each keeping at most [`SAMPLES_PER_S`]
//! latencies per service (later calls in the same second count, but only
//! every n-th latency is kept, so percentiles stay representative) and at
//! most [`TENANTS_PER_S`] tenants per service (later tenants in the same
//! second count under [`OTHER_TENANTS`]). Services are recorded under
//! their label value (`labels::service`: a name no node or configuration
//! knows counts as `_unknown`), so made-up names add no entry of their
//! own. Charts list at most [`CHARTED_SERVICES`] services apart, the
//! busiest; the rest are summed under [`OTHER_SERVICES`].
//!
//! Rates divide by the time the window covers ([`CallWindow::span_s`]):
//! while the gateway is younger than the window, that is its age.

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
/// Most services charted apart by [`CallWindow::series`] and
/// [`CallWindow::queue_series`]: the busiest (most calls, deepest queue).
pub(crate) const CHARTED_SERVICES: usize = 8;
/// The series the services past [`CHARTED_SERVICES`] are summed in.
pub(crate) const OTHER_SERVICES: &str = "(other)";

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
    /// The deepest queue seen per service in that second (none: empty).
    queues: HashMap<String, u32>,
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

/// One second of one service's queue, as the dashboard charts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct QueuePoint {
    /// Seconds since the gateway started.
    pub t: u64,
    /// The deepest the queue was when sampled in that second (calls
    /// waiting; 0 when not sampled non-empty).
    pub depth: u32,
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
    /// `total_ms`, served by `node` (empty when it never reached one). A
    /// service no node or configuration knows is recorded as `_unknown`.
    pub(crate) fn record(
        &self,
        service: &str,
        tenant: &str,
        node: &str,
        total_ms: f32,
        ok: bool,
        now: Instant,
    ) {
        let service = super::labels::service(service);
        self.record_as(&service, tenant, node, total_ms, ok, now);
    }

    /// [`Self::record`] under `service` as given (a label value already).
    fn record_as(
        &self,
        service: &str,
        tenant: &str,
        node: &str,
        total_ms: f32,
        ok: bool,
        now: Instant,
    ) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let Some(bucket) = self.bucket(&mut buckets, now) else {
            return;
        };
        if !bucket.services.contains_key(service) {
            bucket
                .services
                .insert(service.to_string(), ServiceBucket::default());
        }
        let Some(entry) = bucket.services.get_mut(service) else {
            return;
        };
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

    /// Records that `depth` calls of `service` waited at `now` (a sample;
    /// each second keeps the deepest). Empty queues are not stored.
    pub(crate) fn record_queue(&self, service: &str, depth: u32, now: Instant) {
        if depth == 0 {
            return;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let Some(bucket) = self.bucket(&mut buckets, now) else {
            return;
        };
        if let Some(deepest) = bucket.queues.get_mut(service) {
            *deepest = (*deepest).max(depth);
        } else {
            bucket.queues.insert(service.to_string(), depth);
        }
    }

    /// The bucket of `now`'s second, after dropping those older than the
    /// window. A late record for an older second lands in the newest.
    fn bucket<'a>(
        &self,
        buckets: &'a mut VecDeque<Bucket>,
        now: Instant,
    ) -> Option<&'a mut Bucket> {
        let second = now.saturating_duration_since(self.start).as_secs();
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
        buckets.back_mut()
    }

    /// The first and last second of the last `seconds` up to `now`.
    fn seconds(&self, seconds: u64, now: Instant) -> (u64, u64) {
        let last = now.saturating_duration_since(self.start).as_secs();
        (last.saturating_sub(seconds.saturating_sub(1)), last)
    }

    /// The time the last `seconds` up to `now` cover, s: from the start of
    /// their first second (never before the gateway started) to `now`, at
    /// least 1. Rates over the window divide by it, so a gateway younger
    /// than the window reports its true rate.
    pub(crate) fn span_s(&self, seconds: u64, now: Instant) -> f64 {
        let (first, _) = self.seconds(seconds, now);
        let age = now.saturating_duration_since(self.start).as_secs_f64();
        (age - first as f64).max(1.0)
    }

    /// Per service, one point per second of the last `seconds` up to `now`
    /// (seconds without calls included, as zeros). At most
    /// [`CHARTED_SERVICES`] services apart, those with the most calls in
    /// the span (then by name); the rest summed under [`OTHER_SERVICES`]
    /// (its percentiles over at most [`SAMPLES_PER_S`] of their latencies
    /// per second).
    pub(crate) fn series(&self, seconds: u64, now: Instant) -> BTreeMap<String, Vec<Point>> {
        let (first, last) = self.seconds(seconds, now);
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let span: Vec<&Bucket> = buckets.iter().filter(|b| b.second >= first).collect();
        let mut totals: HashMap<&str, u64> = HashMap::new();
        for bucket in &span {
            for (name, s) in &bucket.services {
                *totals.entry(name).or_default() += s.calls;
            }
        }
        let charted = busiest(totals);
        let mut out: BTreeMap<String, Vec<Point>> = charted
            .iter()
            .map(|name| (name.to_string(), Vec::new()))
            .collect();
        let folded = span
            .iter()
            .any(|b| b.services.keys().any(|n| !charted.contains(&n.as_str())));
        for t in first..=last {
            let bucket = span.iter().find(|b| b.second == t);
            for name in &charted {
                let s = bucket.and_then(|b| b.services.get(*name));
                let point = s.map_or_else(
                    || Point::zero(t),
                    |s| Point::of(t, s.calls, s.errors, &s.latencies_ms),
                );
                out.entry(name.to_string()).or_default().push(point);
            }
            if folded {
                let (mut calls, mut errors, mut samples) = (0, 0, Vec::new());
                for (name, s) in bucket.iter().flat_map(|b| &b.services) {
                    if charted.contains(&name.as_str()) {
                        continue;
                    }
                    calls += s.calls;
                    errors += s.errors;
                    let room = SAMPLES_PER_S.saturating_sub(samples.len());
                    samples.extend(s.latencies_ms.iter().take(room));
                }
                out.entry(OTHER_SERVICES.to_string())
                    .or_default()
                    .push(Point::of(t, calls, errors, &samples));
            }
        }
        out
    }

    /// Per service whose queue was sampled non-empty in the last `seconds`
    /// up to `now`, its deepest depth each second (zeros included). At
    /// most [`CHARTED_SERVICES`] services apart, the deepest queues; the
    /// rest summed under [`OTHER_SERVICES`].
    pub(crate) fn queue_series(
        &self,
        seconds: u64,
        now: Instant,
    ) -> BTreeMap<String, Vec<QueuePoint>> {
        let (first, last) = self.seconds(seconds, now);
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let span: Vec<&Bucket> = buckets.iter().filter(|b| b.second >= first).collect();
        let mut deepest: HashMap<&str, u64> = HashMap::new();
        for bucket in &span {
            for (name, depth) in &bucket.queues {
                let d = deepest.entry(name).or_default();
                *d = (*d).max(u64::from(*depth));
            }
        }
        let folded = deepest.len() > CHARTED_SERVICES;
        let charted = busiest(deepest);
        let mut out: BTreeMap<String, Vec<QueuePoint>> = BTreeMap::new();
        for t in first..=last {
            let queues = span.iter().find(|b| b.second == t).map(|b| &b.queues);
            for name in &charted {
                let depth = queues.and_then(|q| q.get(*name)).copied().unwrap_or(0);
                out.entry(name.to_string())
                    .or_default()
                    .push(QueuePoint { t, depth });
            }
            if folded {
                let depth = queues
                    .iter()
                    .flat_map(|q| q.iter())
                    .filter(|(name, _)| !charted.contains(&name.as_str()))
                    .fold(0u32, |sum, (_, d)| sum.saturating_add(*d));
                out.entry(OTHER_SERVICES.to_string())
                    .or_default()
                    .push(QueuePoint { t, depth });
            }
        }
        out
    }

    /// Over the last `seconds` up to `now`, for `service`: (calls, errors,
    /// p50 ms, p99 ms). Rates: divide by [`Self::span_s`].
    pub(crate) fn summary(
        &self,
        service: &str,
        seconds: u64,
        now: Instant,
    ) -> (u64, u64, f32, f32) {
        let (first, _) = self.seconds(seconds, now);
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
    /// divided by [`Self::span_s`]), highest calls/s first (then errors/s,
    /// then name). At most [`TENANTS_PER_S`] tenants per service are listed
    /// apart, the busiest; the rest are summed under [`OTHER_TENANTS`],
    /// sorted with them.
    pub(crate) fn tenant_rates(
        &self,
        seconds: u64,
        now: Instant,
    ) -> BTreeMap<String, Vec<TenantRate>> {
        let (first, _) = self.seconds(seconds, now);
        let span = self.span_s(seconds, now);
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
        let (first, _) = self.seconds(seconds, now);
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

impl Point {
    fn zero(t: u64) -> Self {
        Self::of(t, 0, 0, &[])
    }

    fn of(t: u64, calls: u64, errors: u64, latencies_ms: &[f32]) -> Self {
        Self {
            t,
            calls,
            errors,
            p50_ms: percentile(latencies_ms, 0.50),
            p99_ms: percentile(latencies_ms, 0.99),
        }
    }
}

/// The names of the [`CHARTED_SERVICES`] highest totals (ties by name),
/// in that order.
fn busiest(totals: HashMap<&str, u64>) -> Vec<&str> {
    let mut ranked: Vec<(&str, u64)> = totals.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    ranked.truncate(CHARTED_SERVICES);
    ranked.into_iter().map(|(name, _)| name).collect()
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
mod tests;
