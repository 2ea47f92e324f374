//! Which stats samples go to the gateway. A sample that says nothing new
//! is kept back until the heartbeat, so an idle fleet sends a report (and
//! gets an ACK) every heartbeat instead of every interval, as the kubelet
//! computes its node status every `nodeStatusUpdateFrequency` but posts it
//! only when it changed or `nodeStatusReportFrequency` passed.

use std::time::{Duration, Instant};

use protocol::{GpuStats, NodeStats};

/// Decides, sample by sample, whether a stats report goes out.
#[derive(Debug)]
pub(crate) struct Quiet {
    /// The longest silence.
    heartbeat: Duration,
    /// Slack for a sample taken a little early: half an interval.
    slack: Duration,
    /// How far a figure moves before it counts (see [`changed`]).
    change_pct: f32,
    /// The last report sent, and when.
    last: Option<(NodeStats, Instant)>,
}

impl Quiet {
    /// Samples taken every `interval`; a report at least every
    /// `heartbeat`; a figure counts as changed past `change_pct`.
    pub(crate) fn new(interval: Duration, heartbeat: Duration, change_pct: f32) -> Self {
        Self {
            heartbeat,
            slack: interval / 2,
            change_pct,
            last: None,
        }
    }

    /// Whether `sample`, taken at `now`, goes out: the first one, one that
    /// [`changed`] from the last report, or one a heartbeat (less half an
    /// interval, for a tick that fired a little early) after it. A sample
    /// that goes out becomes the one later samples are compared with.
    pub(crate) fn due(&mut self, sample: &NodeStats, now: Instant) -> bool {
        let due = match &self.last {
            None => true,
            Some((last, at)) => {
                now.saturating_duration_since(*at) + self.slack >= self.heartbeat
                    || changed(last, sample, self.change_pct)
            }
        };
        if due {
            self.last = Some((sample.clone(), now));
        }
        due
    }
}

/// Whether `new` says something `old` did not: calls in flight, health,
/// the model servers' queues or the GPUs' set changed at all, or a figure
/// moved by at least `pct`: CPU, GPU and KV-cache utilisation by `pct`
/// points, memory by `pct`% of its total, a GPU's temperature and power by
/// `pct`% of their last value. With `pct` 0 any difference counts.
pub(crate) fn changed(old: &NodeStats, new: &NodeStats, pct: f32) -> bool {
    let points = |a: f32, b: f32| moved(a, b, pct, 100.0);
    let share = |a: u64, b: u64, total: u64| {
        #[allow(clippy::cast_precision_loss)]
        let (a, b, total) = (a as f32, b as f32, total as f32);
        moved(a, b, pct, total)
    };
    old.in_flight != new.in_flight
        || old.unhealthy != new.unhealthy
        || old.mem_total_mib != new.mem_total_mib
        || points(old.cpu_pct, new.cpu_pct)
        || share(old.mem_used_mib, new.mem_used_mib, new.mem_total_mib)
        || old.model_load.len() != new.model_load.len()
        || old.model_load.iter().zip(&new.model_load).any(|(a, b)| {
            a.service != b.service
                || a.waiting != b.waiting
                || a.running != b.running
                || points(a.kv_cache_pct, b.kv_cache_pct)
        })
        || old.gpus.len() != new.gpus.len()
        || old
            .gpus
            .iter()
            .zip(&new.gpus)
            .any(|(a, b)| gpu_changed(a, b, pct))
}

fn gpu_changed(a: &GpuStats, b: &GpuStats, pct: f32) -> bool {
    #[allow(clippy::cast_precision_loss)]
    let (used_a, used_b, total) = (
        a.mem_used_mib as f32,
        b.mem_used_mib as f32,
        b.mem_total_mib as f32,
    );
    let relative = |x: f32, y: f32| moved(x, y, pct, x.abs().max(1.0));
    a.index != b.index
        || a.name != b.name
        || a.mem_total_mib != b.mem_total_mib
        || moved(a.util_pct, b.util_pct, pct, 100.0)
        || moved(used_a, used_b, pct, total)
        || relative(a.temperature_c, b.temperature_c)
        || relative(a.power_w, b.power_w)
}

/// Whether `a` and `b` differ by at least `pct`% of `scale` (by anything
/// with `pct` 0); NaN on either side counts as a change.
fn moved(a: f32, b: f32, pct: f32, scale: f32) -> bool {
    let delta = (a - b).abs();
    if delta.is_nan() {
        return !(a.is_nan() && b.is_nan());
    }
    if pct <= 0.0 {
        return delta > 0.0;
    }
    delta >= pct / 100.0 * scale
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use protocol::{GpuStats, NodeStats, ServiceLoad};

    use super::{Quiet, changed};

    /// One change to a sample.
    type Change = fn(&mut NodeStats);

    fn idle() -> NodeStats {
        NodeStats {
            cpu_pct: 10.0,
            mem_used_mib: 4000,
            mem_total_mib: 16_000,
            gpus: vec![GpuStats {
                index: 0,
                name: "gpu".into(),
                util_pct: 0.0,
                mem_used_mib: 1000,
                mem_total_mib: 80_000,
                temperature_c: 40.0,
                power_w: 60.0,
            }],
            in_flight: vec![("echo".into(), 0)],
            ..NodeStats::default()
        }
    }

    #[test]
    fn small_moves_are_no_news() {
        let old = idle();
        let mut new = idle();
        new.cpu_pct = 14.9;
        new.mem_used_mib = 4000 + 799; // 5% of 16 000 is 800
        new.gpus[0].util_pct = 4.0;
        new.gpus[0].mem_used_mib = 1000 + 3999; // 5% of 80 000 is 4 000
        new.gpus[0].temperature_c = 41.9; // 5% of 40 is 2
        new.gpus[0].power_w = 62.9; // 5% of 60 is 3
        assert!(!changed(&old, &new, 5.0));
        assert!(changed(&old, &new, 0.0), "0 counts any difference");
    }

    #[test]
    fn each_figure_past_its_threshold_is_news() {
        let old = idle();
        let cases: Vec<(&str, Change)> = vec![
            ("cpu", |s| s.cpu_pct = 15.0),
            ("memory", |s| s.mem_used_mib = 3200),
            ("memory total", |s| s.mem_total_mib = 16_001),
            ("in flight", |s| s.in_flight[0].1 = 1),
            ("health", |s| s.unhealthy = vec!["echo".into()]),
            ("gpu util", |s| s.gpus[0].util_pct = 5.0),
            ("gpu memory", |s| s.gpus[0].mem_used_mib = 5000),
            ("gpu temperature", |s| s.gpus[0].temperature_c = 42.0),
            ("gpu power", |s| s.gpus[0].power_w = 57.0),
            ("gpu name", |s| s.gpus[0].name = "other".into()),
            ("gpu gone", |s| s.gpus.clear()),
            ("cpu NaN", |s| s.cpu_pct = f32::NAN),
            ("model load", |s| {
                s.model_load = vec![ServiceLoad {
                    service: "echo".into(),
                    ..ServiceLoad::default()
                }];
            }),
        ];
        for (what, change) in cases {
            let mut new = idle();
            change(&mut new);
            assert!(changed(&old, &new, 5.0), "{what}");
        }
        let mut loaded = idle();
        loaded.model_load = vec![ServiceLoad {
            service: "echo".into(),
            waiting: 0,
            running: 2,
            kv_cache_pct: 30.0,
        }];
        let mut fuller = loaded.clone();
        fuller.model_load[0].kv_cache_pct = 34.0;
        assert!(!changed(&loaded, &fuller, 5.0), "4 points of KV cache");
        fuller.model_load[0].waiting = 1;
        assert!(changed(&loaded, &fuller, 5.0), "a request waits");
    }

    #[test]
    fn an_unchanged_node_reports_every_heartbeat() {
        let second = Duration::from_secs(1);
        let mut quiet = Quiet::new(second, 2 * second, 5.0);
        let t0 = Instant::now();
        let sent: Vec<u64> = (0..7u64)
            .filter(|&k| {
                // Ticks a few ms late or early, as a real interval fires.
                let jitter = Duration::from_millis(if k % 2 == 0 { 3 } else { 0 });
                quiet.due(
                    &idle(),
                    t0 + second * u32::try_from(k).expect("small") + jitter,
                )
            })
            .collect();
        assert_eq!(sent, [0, 2, 4, 6], "the first sample, then every heartbeat");
    }

    #[test]
    fn a_change_goes_out_at_once_and_is_the_new_reference() {
        let second = Duration::from_secs(1);
        let mut quiet = Quiet::new(second, 10 * second, 5.0);
        let t0 = Instant::now();
        assert!(quiet.due(&idle(), t0));
        let mut busy = idle();
        busy.in_flight[0].1 = 3;
        assert!(quiet.due(&busy, t0 + second), "a call came");
        assert!(!quiet.due(&busy, t0 + 2 * second), "no news");
        assert!(quiet.due(&idle(), t0 + 3 * second), "it ended");
        // Drift below the threshold each step is compared with the last
        // report, not the last sample: it adds up to news.
        let mut drift = idle();
        let mut sent = 0;
        for k in 1..=6u8 {
            drift.cpu_pct = 10.0 + 2.0 * f32::from(k);
            sent += u32::from(quiet.due(&drift, t0 + u32::from(3 + k) * second));
        }
        assert_eq!(sent, 2, "at +6 and +12 points");
    }

    #[test]
    fn heartbeat_equal_to_the_interval_sends_every_sample() {
        let second = Duration::from_secs(1);
        let mut quiet = Quiet::new(second, second, 5.0);
        let t0 = Instant::now();
        assert!((0..5).all(|k| quiet.due(&idle(), t0 + second * k)));
    }
}
