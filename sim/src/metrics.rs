//! What a run measures: per call, its time in system, waits, node time and
//! cost; per run, a [`Report`] and the table `switchyard-sim` prints.

use std::fmt::Write as _;

/// Relative width of a histogram bucket: percentiles are exact to 0.1 %.
const BUCKET_GROWTH: f64 = 1.001;
/// Smallest value the histogram tells apart, ms (1 µs).
const HIST_MIN_MS: f64 = 1e-3;
/// Batches for the standard error of the mean (batch means).
pub const BATCHES: usize = 20;

/// A log-bucketed histogram of durations, ms: constant memory however many
/// calls, percentiles within 0.1 %.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// Buckets from 1 µs to about 11.6 days.
    pub fn new() -> Self {
        // ln(1e12) / ln(1.001) buckets cover 1e-3 ms to 1e9 ms.
        let buckets = ((1e12f64).ln() / BUCKET_GROWTH.ln()).ceil() as usize + 2;
        Self {
            counts: vec![0; buckets],
            total: 0,
        }
    }

    fn bucket(&self, ms: f64) -> usize {
        if ms.is_nan() || ms <= HIST_MIN_MS {
            return 0;
        }
        let i = ((ms / HIST_MIN_MS).ln() / BUCKET_GROWTH.ln()).floor() as usize + 1;
        i.min(self.counts.len() - 1)
    }

    /// Counts one value, ms.
    pub fn record(&mut self, ms: f64) {
        let i = self.bucket(ms);
        self.counts[i] += 1;
        self.total += 1;
    }

    /// Values counted.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The `q` quantile (0..=1), ms: the middle of the bucket holding the
    /// value of rank ceil(q × n). 0 when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                if i == 0 {
                    return 0.0;
                }
                let low = HIST_MIN_MS * BUCKET_GROWTH.powi(i as i32 - 1);
                return low * BUCKET_GROWTH.sqrt();
            }
        }
        0.0
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered successfully.
    Ok,
    /// Answered with an error (a failure window).
    Failed,
    /// Its deadline passed (waiting, or cancelled on its node).
    TimedOut,
    /// Refused by the core or the policy.
    Rejected,
    /// Still in the system when the run stopped.
    Unfinished,
}

/// One call's figures, s and ms as named.
#[derive(Debug, Clone, Copy)]
pub struct CallFigures {
    /// When it arrived, s.
    pub arrived_s: f64,
    /// How it ended.
    pub outcome: Outcome,
    /// Arrival to end, ms.
    pub time_in_system_ms: f64,
    /// Whether it was answered successfully within its deadline.
    pub within_deadline: bool,
    /// Arrival to dispatch (the gateway's queue), ms.
    pub gateway_wait_ms: f64,
    /// Dispatch to start of service (the node's queue), ms.
    pub node_wait_ms: f64,
    /// The wait the core reported at dispatch, ms (`None`: not dispatched).
    pub core_wait_ms: Option<f64>,
    /// Node time (dispatch to answer), ms.
    pub node_ms: f64,
    /// Node time × the node's price.
    pub cost: f64,
    /// A chat call's time to first token (arrival to end of prefill), ms;
    /// `None` when it had none.
    pub ttft_ms: Option<f64>,
    /// A chat call's prompt tokens looked up in its node's KV cache
    /// (`None`: never looked up).
    pub prompt_tokens: Option<u64>,
    /// Of those, the ones found cached.
    pub cached_tokens: u64,
}

/// Sums over the counted calls of a run.
#[derive(Debug, Clone)]
pub struct Recorder {
    warmup_s: f64,
    duration_s: f64,
    hist: Histogram,
    calls: u64,
    outcomes: [u64; 5],
    within: u64,
    sum_tis: f64,
    sum_gateway_wait: f64,
    sum_node_wait: f64,
    sum_core_wait: f64,
    core_waits: u64,
    sum_cost: f64,
    ttft: Histogram,
    sum_ttft: f64,
    prompt_tokens: u64,
    cached_tokens: u64,
    batch_sum: [f64; BATCHES],
    batch_wait: [f64; BATCHES],
    batch_n: [u64; BATCHES],
}

impl Recorder {
    /// Counts calls arriving in `[warmup_s, duration_s)`.
    pub fn new(warmup_s: f64, duration_s: f64) -> Self {
        Self {
            warmup_s,
            duration_s,
            hist: Histogram::new(),
            calls: 0,
            outcomes: [0; 5],
            within: 0,
            sum_tis: 0.0,
            sum_gateway_wait: 0.0,
            sum_node_wait: 0.0,
            sum_core_wait: 0.0,
            core_waits: 0,
            sum_cost: 0.0,
            ttft: Histogram::new(),
            sum_ttft: 0.0,
            prompt_tokens: 0,
            cached_tokens: 0,
            batch_sum: [0.0; BATCHES],
            batch_wait: [0.0; BATCHES],
            batch_n: [0; BATCHES],
        }
    }

    /// Counts one call, if it arrived in the measured window.
    pub fn record(&mut self, c: &CallFigures) {
        if c.arrived_s < self.warmup_s || c.arrived_s >= self.duration_s {
            return;
        }
        self.calls += 1;
        self.outcomes[c.outcome as usize] += 1;
        self.within += u64::from(c.within_deadline);
        self.hist.record(c.time_in_system_ms);
        self.sum_tis += c.time_in_system_ms;
        self.sum_gateway_wait += c.gateway_wait_ms;
        self.sum_node_wait += c.node_wait_ms;
        if let Some(w) = c.core_wait_ms {
            self.sum_core_wait += w;
            self.core_waits += 1;
        }
        self.sum_cost += c.cost;
        if let Some(ttft) = c.ttft_ms {
            self.ttft.record(ttft);
            self.sum_ttft += ttft;
        }
        if let Some(prompt) = c.prompt_tokens {
            self.prompt_tokens += prompt;
            self.cached_tokens += c.cached_tokens;
        }
        let span = self.duration_s - self.warmup_s;
        let b = (((c.arrived_s - self.warmup_s) / span) * BATCHES as f64) as usize;
        let b = b.min(BATCHES - 1);
        self.batch_sum[b] += c.time_in_system_ms;
        self.batch_wait[b] += c.gateway_wait_ms + c.node_wait_ms;
        self.batch_n[b] += 1;
    }

    /// The report of a run of `policy`.
    pub fn report(&self, scenario: &str, policy: &str) -> Report {
        let n = self.calls.max(1) as f64;
        let mean = self.sum_tis / n;
        Report {
            scenario: scenario.to_string(),
            policy: policy.to_string(),
            calls: self.calls,
            ok: self.outcomes[Outcome::Ok as usize],
            failed: self.outcomes[Outcome::Failed as usize],
            timed_out: self.outcomes[Outcome::TimedOut as usize],
            rejected: self.outcomes[Outcome::Rejected as usize],
            unfinished: self.outcomes[Outcome::Unfinished as usize],
            within_deadline: self.within as f64 / n,
            mean_ms: mean,
            mean_se_ms: batch_se(&self.batch_sum, &self.batch_n),
            p50_ms: self.hist.quantile(0.5),
            p99_ms: self.hist.quantile(0.99),
            p999_ms: self.hist.quantile(0.999),
            mean_wait_ms: (self.sum_gateway_wait + self.sum_node_wait) / n,
            mean_wait_se_ms: batch_se(&self.batch_wait, &self.batch_n),
            mean_gateway_wait_ms: self.sum_gateway_wait / n,
            mean_node_wait_ms: self.sum_node_wait / n,
            core_wait_ms: self.sum_core_wait / self.core_waits.max(1) as f64,
            cost_per_call: self.sum_cost / n,
            ttft_calls: self.ttft.len(),
            ttft_mean_ms: self.sum_ttft / self.ttft.len().max(1) as f64,
            ttft_p50_ms: self.ttft.quantile(0.5),
            ttft_p99_ms: self.ttft.quantile(0.99),
            prompt_tokens: self.prompt_tokens,
            cached_tokens: self.cached_tokens,
            by_node: Vec::new(),
            passed_over: 0,
            swaps: 0,
            policy_failures: 0,
            events: 0,
            wall_s: 0.0,
        }
    }
}

/// The figures of one run (one scenario, one policy), over the calls that
/// arrived after the warm-up and before the end.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The scenario.
    pub scenario: String,
    /// The policy's name.
    pub policy: String,
    /// Calls counted.
    pub calls: u64,
    /// Answered successfully.
    pub ok: u64,
    /// Answered with an error.
    pub failed: u64,
    /// Past their deadline.
    pub timed_out: u64,
    /// Refused.
    pub rejected: u64,
    /// Still in the system at the end.
    pub unfinished: u64,
    /// Share answered successfully within the deadline (all successes when
    /// calls have none).
    pub within_deadline: f64,
    /// Mean time in system (arrival to answer, or to leaving), ms.
    pub mean_ms: f64,
    /// Standard error of `mean_ms` by batch means (20 batches by arrival).
    pub mean_se_ms: f64,
    /// Median time in system, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Mean wait before service (gateway queue + node queue), ms.
    pub mean_wait_ms: f64,
    /// Standard error of `mean_wait_ms` by batch means.
    pub mean_wait_se_ms: f64,
    /// Mean wait in the gateway's (the core's) queue, ms.
    pub mean_gateway_wait_ms: f64,
    /// Mean wait in the nodes' local queues, ms.
    pub mean_node_wait_ms: f64,
    /// Mean queue wait as the core reports it at dispatch, over dispatched
    /// calls, ms.
    pub core_wait_ms: f64,
    /// Node time × price per call.
    pub cost_per_call: f64,
    /// Chat calls with a first token.
    pub ttft_calls: u64,
    /// Their mean time to first token (arrival to end of prefill, waits
    /// included), ms.
    pub ttft_mean_ms: f64,
    /// Median time to first token, ms.
    pub ttft_p50_ms: f64,
    /// 99th percentile of the time to first token, ms.
    pub ttft_p99_ms: f64,
    /// Prompt tokens of chat calls, looked up in their nodes' KV caches.
    pub prompt_tokens: u64,
    /// Of those, the ones found cached.
    pub cached_tokens: u64,
    /// Counted calls dispatched to each node: (node id, calls), in the
    /// scenario's order of nodes.
    pub by_node: Vec<(String, u64)>,
    /// Counted calls dispatched to a node while a node earlier by id (byte
    /// order) had a free slot for them (loaded, fewer than `max_concurrent`
    /// calls of the service dispatched and not ended): 0 under
    /// `pick-first`.
    pub passed_over: u64,
    /// Slot loads over the whole run (the core's swaps and preloads).
    pub swaps: u64,
    /// Picks where the policy failed (trap, deadline, bad index).
    pub policy_failures: u64,
    /// Events the simulation handled.
    pub events: u64,
    /// Wall-clock time of the run, s.
    pub wall_s: f64,
}

/// The standard error of a mean from per-batch sums and counts (batch
/// means: batches long against the correlation time are about independent).
fn batch_se(sums: &[f64], counts: &[u64]) -> f64 {
    let means: Vec<f64> = sums
        .iter()
        .zip(counts)
        .filter(|(_, n)| **n > 0)
        .map(|(s, n)| s / *n as f64)
        .collect();
    if means.len() < 2 {
        return 0.0;
    }
    let k = means.len() as f64;
    let m = means.iter().sum::<f64>() / k;
    (means.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (k - 1.0) / k).sqrt()
}

/// The table `switchyard-sim SCENARIO.toml` prints: one row per policy.
pub fn table(reports: &[Report]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:>9} {:>10} {:>10} {:>10} {:>10} {:>9} {:>10} {:>6} {:>11}",
        "policy",
        "calls",
        "mean ms",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "in time",
        "wait ms",
        "swaps",
        "cost/call"
    );
    for r in reports {
        let _ = writeln!(
            out,
            "{:<20} {:>9} {:>10} {:>10} {:>10} {:>10} {:>8.2}% {:>10} {:>6} {:>11}",
            r.policy,
            r.calls,
            fmt_ms(r.mean_ms),
            fmt_ms(r.p50_ms),
            fmt_ms(r.p99_ms),
            fmt_ms(r.p999_ms),
            r.within_deadline * 100.0,
            fmt_ms(r.mean_wait_ms),
            r.swaps,
            format!("{:.3e}", r.cost_per_call),
        );
    }
    out
}

impl Report {
    /// The KV-cache hit ratio: cached prompt tokens / prompt tokens (0
    /// with none).
    pub fn kv_hit_ratio(&self) -> f64 {
        if self.prompt_tokens == 0 {
            0.0
        } else {
            self.cached_tokens as f64 / self.prompt_tokens as f64
        }
    }
}

/// The chat table `switchyard-sim` prints after [`table`] when a run had
/// chat calls: time to first token and KV-cache hits per policy.
pub fn ttft_table(reports: &[Report]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:>9} {:>13} {:>12} {:>12} {:>10} {:>13}",
        "policy", "turns", "TTFT mean ms", "TTFT p50 ms", "TTFT p99 ms", "KV hits", "reply mean ms"
    );
    for r in reports {
        let _ = writeln!(
            out,
            "{:<20} {:>9} {:>13} {:>12} {:>12} {:>9.1}% {:>13}",
            r.policy,
            r.ttft_calls,
            fmt_ms(r.ttft_mean_ms),
            fmt_ms(r.ttft_p50_ms),
            fmt_ms(r.ttft_p99_ms),
            r.kv_hit_ratio() * 100.0,
            fmt_ms(r.mean_ms),
        );
    }
    out
}

/// A duration in ms with 4 significant digits.
pub fn fmt_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{ms:.0}")
    } else if ms >= 100.0 {
        format!("{ms:.1}")
    } else if ms >= 10.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_a_tenth_of_a_percent() {
        let mut h = Histogram::new();
        for i in 1..=10_000 {
            h.record(f64::from(i));
        }
        for (q, want) in [(0.5, 5000.0), (0.99, 9900.0), (0.999, 9990.0)] {
            let got = h.quantile(q);
            assert!((got / want - 1.0).abs() < 1e-3, "q{q}: {got} vs {want}");
        }
        assert_eq!(Histogram::new().quantile(0.5), 0.0);
        h.record(0.0);
        assert_eq!(h.len(), 10_001);
    }

    #[test]
    fn only_calls_in_the_window_count() {
        let mut r = Recorder::new(10.0, 20.0);
        let call = |at: f64, ms: f64| CallFigures {
            arrived_s: at,
            outcome: Outcome::Ok,
            time_in_system_ms: ms,
            within_deadline: true,
            gateway_wait_ms: 1.0,
            node_wait_ms: 2.0,
            core_wait_ms: Some(1.0),
            node_ms: ms,
            cost: 0.5,
            ttft_ms: None,
            prompt_tokens: None,
            cached_tokens: 0,
        };
        for (at, ms) in [(5.0, 1e6), (10.0, 100.0), (15.0, 300.0), (20.0, 1e6)] {
            r.record(&call(at, ms));
        }
        let rep = r.report("s", "p");
        assert_eq!(rep.calls, 2);
        assert_eq!(rep.mean_ms, 200.0);
        assert_eq!(rep.mean_wait_ms, 3.0);
        assert_eq!(rep.cost_per_call, 0.5);
    }
}
