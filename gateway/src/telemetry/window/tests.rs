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
    w.record_as("echo", "t", "a", 10.0, true, t0);
    w.record_as(
        "echo",
        "t",
        "b",
        30.0,
        false,
        t0 + Duration::from_millis(500),
    );
    w.record_as("echo", "t", "a", 20.0, true, t0 + Duration::from_secs(2));
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

    w.record_as(
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
        w.record_as("s", "t", "", i as f32, true, t0);
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
        w.record_as("echo", "team-a", "n", 1.0, i != 0, at);
        if i == 3 {
            w.record_as("echo", "team-b", "n", 1.0, false, at);
        }
    }
    let at = t0 + Duration::from_secs(5);
    w.record_as("echo", "team-b", "n", 1.0, true, at);
    w.record_as("other-svc", "team-b", "n", 1.0, true, at);
    let now = t0 + Duration::from_secs(5);
    assert_eq!(
        rates(&w, "echo", 10, now),
        [
            ("team-a".to_string(), 1.2, 0.2),
            ("team-b".to_string(), 0.4, 0.2),
        ]
    );
    assert_eq!(
        rates(&w, "other-svc", 10, now),
        [("team-b".to_string(), 0.2, 0.0)],
        "over the 5 s the gateway has run, not the 10 asked"
    );
    // Only the last 2 s (seconds 4 and 5, which has just begun: 1 s
    // covered): team-a 2 calls, team-b 1.
    assert_eq!(
        rates(&w, "echo", 2, now),
        [
            ("team-a".to_string(), 2.0, 0.0),
            ("team-b".to_string(), 1.0, 0.0),
        ]
    );
    // A tie in calls goes to more errors, then to the name.
    w.record_as("tie", "b", "n", 1.0, true, now);
    w.record_as("tie", "a", "n", 1.0, true, now);
    w.record_as("tie", "c", "n", 1.0, false, now);
    let names: Vec<String> = rates(&w, "tie", 1, now).into_iter().map(|r| r.0).collect();
    assert_eq!(names, ["c", "a", "b"]);
    // Long after, the window has forgotten them.
    let later = t0 + Duration::from_secs(WINDOW_S + 10);
    w.record_as("echo", "team-c", "n", 1.0, true, later);
    assert_eq!(
        rates(&w, "echo", 60, later),
        [("team-c".to_string(), 1.0 / 59.0, 0.0)],
        "seconds 251 to 310, the last just begun: 59 s covered"
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
        w.record_as("s", &format!("t{i:03}"), "", 1.0, true, t0);
    }
    w.record_as("s", "t000", "", 1.0, true, t0);
    w.record_as("s", "late", "", 1.0, false, t0);
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
            w.record_as("s", &format!("u{i:03}"), "", 1.0, true, t1);
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
    // 63 others' 1), over the 1 s covered (second 1 has just begun).
    assert_eq!((other.1, other.2), (76.0, 1.0));
    let total: f64 = listed.iter().map(|r| r.1).sum();
    assert_eq!(
        total,
        (TENANTS_PER_S as u64 * 4 + 12) as f64,
        "no call lost"
    );
}

#[test]
fn rates_divide_by_the_time_the_window_covers() {
    let t0 = Instant::now();
    let w = CallWindow::new(t0);
    // A steady 50 calls/s for 15 s.
    for i in 0..15 * 50u64 {
        w.record_as("s", "t", "n", 1.0, true, t0 + Duration::from_millis(i * 20));
    }
    let now = t0 + Duration::from_secs(15);
    assert_eq!(w.span_s(60, now), 15.0, "younger than the window: its age");
    assert_eq!(rates(&w, "s", 60, now), [("t".to_string(), 50.0, 0.0)]);
    let (calls, ..) = w.summary("s", 60, now);
    assert_eq!(calls as f64 / w.span_s(60, now), 50.0);
    // Older than the window: from the start of its first second.
    let old = t0 + Duration::from_millis(400_500);
    assert_eq!(w.span_s(60, old), 59.5);
    // The first moments count as 1 s, not as a tiny span.
    assert_eq!(w.span_s(60, t0 + Duration::from_millis(10)), 1.0);
}

#[test]
fn charts_list_the_busiest_services_and_fold_the_rest() {
    let t0 = Instant::now();
    let w = CallWindow::new(t0);
    for i in 0..3000 {
        w.record_as(&format!("flood-{i}"), "t", "", 5.0, false, t0);
    }
    for _ in 0..10 {
        w.record_as("busy", "t", "n", 1.0, true, t0 + Duration::from_secs(1));
    }
    let now = t0 + Duration::from_secs(1);
    let series = w.series(2, now);
    assert_eq!(series.len(), CHARTED_SERVICES + 1, "{:?}", series.keys());
    assert_eq!(
        series["busy"].iter().map(|p| p.calls).collect::<Vec<_>>(),
        [0, 10]
    );
    let other = &series[OTHER_SERVICES];
    let charted_floods = (CHARTED_SERVICES - 1) as u64;
    assert_eq!(
        (other[0].calls, other[0].errors, other[0].p99_ms),
        (3000 - charted_floods, 3000 - charted_floods, 5.0),
        "no call lost, only folded"
    );
    assert_eq!(other[1].calls, 0);
    let drawn: u64 = series.values().flatten().map(|p| p.calls).sum();
    assert_eq!(drawn, 3010);
    // A few services: each apart, no "(other)".
    let w = CallWindow::new(t0);
    w.record_as("a", "t", "", 1.0, true, t0);
    w.record_as("b", "t", "", 1.0, true, t0);
    let names: Vec<String> = w.series(1, t0).into_keys().collect();
    assert_eq!(names, ["a", "b"]);
}

#[test]
fn queue_depths_are_charted_over_the_window_and_bounded() {
    let t0 = Instant::now();
    let w = CallWindow::new(t0);
    w.record_queue("q", 3, t0);
    w.record_queue("q", 7, t0 + Duration::from_millis(500));
    w.record_queue("q", 2, t0 + Duration::from_secs(2));
    w.record_queue("empty", 0, t0 + Duration::from_secs(2));
    let now = t0 + Duration::from_secs(3);
    let series = w.queue_series(4, now);
    assert_eq!(
        series.keys().collect::<Vec<_>>(),
        ["q"],
        "an empty queue adds nothing"
    );
    let depths: Vec<(u64, u32)> = series["q"].iter().map(|p| (p.t, p.depth)).collect();
    assert_eq!(
        depths,
        [(0, 7), (1, 0), (2, 2), (3, 0)],
        "the deepest per second"
    );

    for i in 0..100u32 {
        w.record_queue(&format!("s{i:03}"), i + 1, now);
    }
    let series = w.queue_series(1, now);
    assert_eq!(series.len(), CHARTED_SERVICES + 1);
    assert_eq!(series["s099"][0].depth, 100, "the deepest are apart");
    let folded: u32 = (1..=100 - CHARTED_SERVICES as u32).sum();
    assert_eq!(series[OTHER_SERVICES][0].depth, folded);
}

#[test]
fn names_nobody_registered_share_one_entry() {
    use super::super::labels::{Kind, Known, UNKNOWN};
    let _known = Known::new(Kind::Service, ["window-known"]);
    let t0 = Instant::now();
    let w = CallWindow::new(t0);
    for i in 0..1000 {
        w.record(&format!("window-flood-{i}"), "t", "", 1.0, false, t0);
    }
    w.record("window-known", "t", "n", 1.0, true, t0);
    let buckets = w.buckets.lock().expect("lock");
    let mut names: Vec<&String> = buckets[0].services.keys().collect();
    names.sort();
    assert_eq!(names, [UNKNOWN, "window-known"]);
    assert_eq!(buckets[0].services[UNKNOWN].calls, 1000);
}
