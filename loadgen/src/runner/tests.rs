//! The runner in tokio's paused, virtual time, against targets that sleep:
//! exact counts, latencies measured from the intended send time.

use std::sync::atomic::AtomicU64;

use super::*;
use crate::{CallFailure, Process};

/// A service taking `service` per call; with `workers`, a server of that
/// many workers where calls wait their turn.
struct Sleepy {
    service: Duration,
    workers: Option<Semaphore>,
}

impl Sleepy {
    fn free(ms: u64) -> Self {
        Self {
            service: Duration::from_millis(ms),
            workers: None,
        }
    }

    fn server(ms: u64, workers: usize) -> Self {
        Self {
            service: Duration::from_millis(ms),
            workers: Some(Semaphore::new(workers)),
        }
    }
}

impl Target for Sleepy {
    async fn call(&self) -> Result<(), CallFailure> {
        let _worker = match &self.workers {
            Some(workers) => Some(workers.acquire().await.expect("open")),
            None => None,
        };
        tokio::time::sleep(self.service).await;
        Ok(())
    }
}

/// 1 ms per call; every 3rd call fails `overloaded`, every 5th `http-502`.
#[derive(Default)]
struct Flaky {
    n: AtomicU64,
}

impl Target for Flaky {
    async fn call(&self) -> Result<(), CallFailure> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let n = self.n.fetch_add(1, Ordering::Relaxed) + 1;
        match (n % 3, n % 5) {
            (0, _) => Err(CallFailure::new("overloaded")),
            (_, 0) => Err(CallFailure::new("http-502")),
            _ => Ok(()),
        }
    }
}

fn plan(arrival: Arrival, warm_up_ms: u64, duration_ms: u64) -> Plan {
    Plan {
        arrival,
        warm_up: Duration::from_millis(warm_up_ms),
        duration: Duration::from_millis(duration_ms),
        seed: 3,
    }
}

fn open(rate_per_s: f64, max_in_flight: usize) -> Arrival {
    Arrival::Open {
        rate_per_s,
        process: Process::Constant,
        max_in_flight,
    }
}

fn near(value: f64, expected: f64) -> bool {
    (value - expected).abs() <= expected * 0.01
}

#[tokio::test(start_paused = true)]
async fn closed_loop_counts_only_calls_after_the_warm_up() {
    let plan = plan(Arrival::Closed { concurrency: 4 }, 100, 1000);
    let report = run(Arc::new(Sleepy::free(10)), &plan, None).await;
    // Each caller starts a call every 10 ms; 100 of them start in the 1 s window.
    assert_eq!(report.calls, 400);
    assert_eq!(report.errors, 0);
    assert!(near(report.seconds, 1.0), "{report:?}");
    assert!(near(report.calls_per_s, 400.0), "{report:?}");
    let l = report.latency_us;
    assert!(near(l.p50, 10_000.0) && near(l.max, 10_000.0), "{l:?}");
    assert_eq!(report.arrival, "closed 4");
}

#[tokio::test(start_paused = true)]
async fn open_loop_below_capacity_sees_the_service_time() {
    let plan = plan(open(50.0, 100), 0, 1000);
    let report = run(Arc::new(Sleepy::free(10)), &plan, None).await;
    assert_eq!(report.calls, 50);
    assert!(near(report.latency_us.p99, 10_000.0), "{report:?}");
    assert_eq!(report.arrival, "open constant 50/s");
}

#[tokio::test(start_paused = true)]
async fn open_loop_above_capacity_measures_from_the_intended_time() {
    // One worker of 10 ms: 100 calls/s at most, offered 200/s for 1 s.
    let plan = plan(open(200.0, 1024), 0, 1000);
    let report = run(Arc::new(Sleepy::server(10, 1)), &plan, None).await;
    assert_eq!(report.calls, 200);
    // The queue grows by 5 ms per call: the last waits ~1 s.
    assert!(report.latency_us.p50 > 400_000.0, "{report:?}");
    assert!(report.latency_us.max > 900_000.0, "{report:?}");
    // The backlog drains after the window: the rate is the capacity.
    assert!(near(report.seconds, 2.0), "{report:?}");
    assert!(near(report.calls_per_s, 100.0), "{report:?}");

    // A closed loop on the same server sees only the service time.
    let closed = run(
        Arc::new(Sleepy::server(10, 1)),
        &self::plan(Arrival::Closed { concurrency: 1 }, 0, 1000),
        None,
    )
    .await;
    assert!(near(closed.latency_us.max, 10_000.0), "{closed:?}");
}

#[tokio::test(start_paused = true)]
async fn a_full_client_sends_late_and_counts_what_it_never_sent() {
    // One call in flight at most, each 10 ms, 200 due in 1 s.
    let plan = plan(open(200.0, 1), 0, 1000);
    let report = run(Arc::new(Sleepy::free(10)), &plan, None).await;
    let unsent = report.errors_by_kind[CLIENT_SATURATED];
    assert_eq!(report.calls + unsent, 200, "{report:?}");
    assert!((95..=105).contains(&report.calls), "{report:?}");
    assert_eq!(report.errors, unsent);
    // Sent late, measured from when they were due: up to ~0.5 s.
    assert!(report.latency_us.max > 400_000.0, "{report:?}");
}

#[tokio::test(start_paused = true)]
async fn errors_count_by_kind() {
    let plan = plan(Arrival::Closed { concurrency: 1 }, 0, 150);
    let report = run(Arc::new(Flaky::default()), &plan, None).await;
    // Calls 1..=150: 50 multiples of 3, 20 of 5 but not of 3.
    assert_eq!(report.calls + report.errors, 150, "{report:?}");
    assert_eq!(report.errors_by_kind["overloaded"], 50);
    assert_eq!(report.errors_by_kind["http-502"], 20);
    assert_eq!(report.errors, 70);
}

#[tokio::test(start_paused = true)]
async fn poisson_runs_repeat_with_their_seed() {
    let arrival = Arrival::Open {
        rate_per_s: 300.0,
        process: Process::Poisson,
        max_in_flight: 64,
    };
    let plan = plan(arrival, 0, 2000);
    let a = run(Arc::new(Sleepy::server(2, 2)), &plan, None).await;
    let b = run(Arc::new(Sleepy::server(2, 2)), &plan, None).await;
    assert_eq!(a, b);
    assert!((500..=700).contains(&a.calls), "{a:?}");
    assert_eq!(a.arrival, "open poisson 300/s");
}

#[tokio::test(start_paused = true)]
async fn progress_comes_every_second() {
    let seen = Mutex::new(Vec::new());
    let record = |p: &Progress| seen.lock().expect("lock").push(*p);
    let plan = plan(Arrival::Closed { concurrency: 2 }, 1500, 2000);
    let report = run(Arc::new(Sleepy::free(10)), &plan, Some(&record)).await;
    let seen = seen.into_inner().expect("lock");
    let at: Vec<f64> = seen.iter().map(|p| p.elapsed_s).collect();
    assert_eq!(at, [1.0, 2.0, 3.0]);
    assert!(seen[0].warming_up && !seen[1].warming_up);
    assert_eq!(seen[0].calls, 0);
    assert!(near(seen[1].calls_per_s, 200.0), "{seen:?}");
    assert!(seen[2].calls <= report.calls);
}
