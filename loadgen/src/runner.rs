//! Running a [`Plan`]: the closed loop's callers, the open loop's scheduler,
//! progress once a second, the merged report.
//!
//! Time is tokio's clock ([`tokio::time::Instant`]), so tests can run a plan
//! in paused, virtual time.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::{Arrival, CLIENT_SATURATED, Plan, Recorder, Report, Schedule, Target};

/// How often `progress` is called.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Where a run stands, as [`run`] tells its `progress` callback about once
/// a second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Since the run started (warm-up included), s.
    pub elapsed_s: f64,
    /// Whether the warm-up is still on (its calls are not counted).
    pub warming_up: bool,
    /// Successful calls recorded so far (after the warm-up).
    pub calls: u64,
    /// Calls per second (successful or not) completed since the last
    /// progress.
    pub calls_per_s: f64,
    /// Failed calls recorded so far (after the warm-up).
    pub errors: u64,
}

/// The window's bounds and the counters progress reads.
struct Window {
    start: Instant,
    /// End of the warm-up: calls started (closed) or due (open) before it
    /// are not recorded.
    measure_from: Instant,
    /// No call is started (closed) or due (open) from here on.
    end: Instant,
    calls: AtomicU64,
    errors: AtomicU64,
    /// Completed calls, warm-up included (for the rate).
    done: AtomicU64,
    /// When the last recorded call ended, µs after `measure_from`.
    last_end_us: AtomicU64,
}

impl Window {
    fn new(plan: &Plan) -> Self {
        let start = Instant::now();
        let measure_from = start + plan.warm_up;
        Self {
            start,
            measure_from,
            end: measure_from + plan.duration,
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            done: AtomicU64::new(0),
            last_end_us: AtomicU64::new(0),
        }
    }

    /// Makes one call started (or due) at `from` and records it in `rec`
    /// unless `from` is in the warm-up.
    async fn call<T: Target>(&self, target: &T, from: Instant, rec: &Mutex<Recorder>) {
        let result = target.call().await;
        let now = Instant::now();
        self.done.fetch_add(1, Ordering::Relaxed);
        if from < self.measure_from {
            return;
        }
        let mut rec = rec
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match result {
            Ok(()) => {
                rec.success(now - from);
                self.calls.fetch_add(1, Ordering::Relaxed);
            }
            Err(failure) => {
                rec.failure(&failure.kind);
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(rec);
        let since = u64::try_from((now - self.measure_from).as_micros()).unwrap_or(u64::MAX);
        self.last_end_us.fetch_max(since, Ordering::Relaxed);
    }

    /// The measured window, s: from the warm-up's end to the later of the
    /// planned end and the last recorded call's end.
    fn seconds(&self) -> f64 {
        let planned = (self.end - self.measure_from).as_secs_f64();
        let last = self.last_end_us.load(Ordering::Relaxed) as f64 / 1e6;
        planned.max(last)
    }
}

/// Runs the plan against `target` and reports what it measured; `progress`
/// (if any) is called about once a second with calls so far, calls/s and
/// errors. Returns once every call sent has ended (each bounded by the
/// target's own timeout).
pub async fn run<T: Target>(
    target: Arc<T>,
    plan: &Plan,
    progress: Option<&(dyn Fn(&Progress) + Sync)>,
) -> Report {
    let window = Arc::new(Window::new(plan));
    let work = async {
        match plan.arrival {
            Arrival::Closed { concurrency } => closed(&target, &window, concurrency).await,
            Arrival::Open {
                rate_per_s,
                process,
                max_in_flight,
            } => {
                let schedule = Schedule::new(rate_per_s, process, plan.seed);
                open(&target, &window, schedule, max_in_flight).await
            }
        }
    };
    let recorder = match progress {
        None => work.await,
        Some(progress) => report_progress(work, &window, progress).await,
    };
    recorder.report(window.seconds(), plan.arrival.describe())
}

/// Awaits `work`, calling `progress` every second meanwhile.
async fn report_progress(
    work: impl Future<Output = Recorder>,
    window: &Window,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Recorder {
    tokio::pin!(work);
    let mut ticks = tokio::time::interval_at(window.start + PROGRESS_EVERY, PROGRESS_EVERY);
    let (mut last_at, mut last_done) = (window.start, 0);
    loop {
        tokio::select! {
            recorder = &mut work => return recorder,
            now = ticks.tick() => {
                let done = window.done.load(Ordering::Relaxed);
                let dt = (now - last_at).as_secs_f64();
                progress(&Progress {
                    elapsed_s: (now - window.start).as_secs_f64(),
                    warming_up: now < window.measure_from,
                    calls: window.calls.load(Ordering::Relaxed),
                    calls_per_s: if dt > 0.0 { (done - last_done) as f64 / dt } else { 0.0 },
                    errors: window.errors.load(Ordering::Relaxed),
                });
                (last_at, last_done) = (now, done);
            }
        }
    }
}

/// `concurrency` callers, each with its own recorder, merged at the end.
async fn closed<T: Target>(target: &Arc<T>, window: &Arc<Window>, concurrency: usize) -> Recorder {
    let mut callers = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (target, window) = (target.clone(), window.clone());
        callers.spawn(async move {
            // Only this caller takes this lock: it is never contended.
            let rec = Mutex::new(Recorder::new());
            loop {
                let from = Instant::now();
                if from >= window.end {
                    break;
                }
                window.call(&*target, from, &rec).await;
            }
            rec.into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        });
    }
    merge_all(callers).await
}

/// Sends a call at each time of `schedule` inside the window, at most
/// `max_in_flight` out at once; calls record into shards (call number
/// modulo the shard count), merged at the end.
async fn open<T: Target>(
    target: &Arc<T>,
    window: &Arc<Window>,
    schedule: Schedule,
    max_in_flight: usize,
) -> Recorder {
    let shard_count = std::thread::available_parallelism().map_or(4, |n| n.get() * 4);
    let shards: Arc<Vec<Mutex<Recorder>>> = Arc::new(
        (0..shard_count)
            .map(|_| Mutex::new(Recorder::new()))
            .collect(),
    );
    let slots = Arc::new(Semaphore::new(
        max_in_flight.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let mut calls = JoinSet::new();
    let mut unsent = 0u64;
    let mut times = schedule.map(|offset| window.start + offset);
    for (n, due) in times.by_ref().enumerate() {
        if due >= window.end {
            break;
        }
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        // Full: this call goes late, measured from `due` all the same.
        let permit = tokio::select! {
            biased;
            permit = slots.clone().acquire_owned() => permit.ok(),
            () = tokio::time::sleep_until(window.end) => None,
        };
        let Some(permit) = permit else {
            // The window closed while every slot was taken.
            if due >= window.measure_from {
                unsent += 1;
            }
            break;
        };
        let (target, window, shards) = (target.clone(), window.clone(), shards.clone());
        calls.spawn(async move {
            let shard = &shards[n % shards.len()];
            window.call(&*target, due, shard).await;
            drop(permit);
        });
        // Reap finished calls now and then so the set stays small.
        while calls.try_join_next().is_some() {}
    }
    // Every call due in the window but never sent shows as an error.
    unsent += times
        .take_while(|due| *due < window.end)
        .filter(|due| *due >= window.measure_from)
        .count() as u64;
    while calls.join_next().await.is_some() {}
    let mut all = Recorder::new();
    for shard in shards.iter() {
        all.merge(
            &shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
    }
    all.failures(CLIENT_SATURATED, unsent);
    window.errors.fetch_add(unsent, Ordering::Relaxed);
    all
}

async fn merge_all(mut set: JoinSet<Recorder>) -> Recorder {
    let mut all = Recorder::new();
    while let Some(done) = set.join_next().await {
        // A caller that panicked (a target's bug) loses its calls.
        if let Ok(rec) = done {
            all.merge(&rec);
        }
    }
    all
}
#[cfg(test)]
mod tests;
