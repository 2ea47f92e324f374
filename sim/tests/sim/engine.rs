//! The event loop against hand-computed timelines: node queues and workers,
//! deadlines in the core's queue and on a node, speed and windows, swaps
//! planned by the core, the oracle's preloads, determinism.

use crate::common::{one_node, run, scenario};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6 * b.abs().max(1.0)
}

#[test]
fn a_node_serves_workers_at_once_and_queues_the_rest_fifo() {
    // Three calls at 0 on a node admitting 10 with one worker: they end at
    // 1, 2 and 3 s, waiting 0, 1 and 2 s on the node, none in the core.
    let arrivals = r#"
[[arrivals]]
service = "svc"
process = { kind = "trace", file = "three-at-once.txt" }
"#;
    let r = run(
        &one_node("workers = 1\nmax_concurrent = 10", arrivals),
        "round-robin.wasm",
    );
    assert_eq!((r.calls, r.ok), (3, 3));
    assert!(close(r.mean_ms, 2000.0), "{r:?}");
    assert!(
        close(r.mean_node_wait_ms, 1000.0) && r.mean_gateway_wait_ms == 0.0,
        "{r:?}"
    );
    // Unlimited workers: all at once.
    let r = run(
        &one_node("max_concurrent = 10", arrivals),
        "round-robin.wasm",
    );
    assert!(close(r.mean_ms, 1000.0), "{r:?}");
    // max_concurrent 1: they wait in the core's queue instead.
    let r = run(
        &one_node("max_concurrent = 1", arrivals),
        "round-robin.wasm",
    );
    assert!(
        close(r.mean_ms, 2000.0) && close(r.mean_gateway_wait_ms, 1000.0),
        "{r:?}"
    );
    assert!(
        close(r.core_wait_ms, 1000.0),
        "the core measured the same wait: {r:?}"
    );
}

#[test]
fn deadlines_end_calls_waiting_in_the_core_and_cancel_running_ones() {
    // Service 1 s, one call at a time. A0 (no deadline) runs 0–1. B0 (0.1,
    // deadline 0.5 s) waits and leaves at 0.6. B1 (1.2) runs at once and is
    // cancelled at 1.7, which frees the node for A1 (1.3, waiting), done
    // at 2.7.
    let s = one_node(
        "max_concurrent = 1\nworkers = 1\ncost_per_hour = 3600.0",
        r#"
[[arrivals]]
service = "svc"
process = { kind = "trace", file = "deadline-a.txt" }
[[arrivals]]
service = "svc"
process = { kind = "trace", file = "deadline-b.txt" }
timeout_ms = 500
"#,
    );
    let r = run(&s, "least-request.wasm");
    assert_eq!((r.calls, r.ok, r.timed_out), (4, 2, 2), "{r:?}");
    assert!(close(r.within_deadline, 0.5));
    // In system: 1.0 + 0.5 + 0.5 + 1.4 s.
    assert!(close(r.mean_ms, 850.0), "{r:?}");
    // Waits before service: 0 + 0.5 + 0 + 0.4 s.
    assert!(close(r.mean_wait_ms, 225.0), "{r:?}");
    // Node time at 1 per second: 1 + 0.5 (cancelled) + 1 s over 4 calls.
    assert!(close(r.cost_per_call, 2.5 / 4.0), "{r:?}");
}

#[test]
fn speed_factors_and_windows_change_service_times() {
    let arrivals = r#"
[[arrivals]]
service = "svc"
process = { kind = "trace", file = "spread.txt" }
"#;
    // Calls at 0, 10, 20, 30 s; the window 10–20 s triples service times,
    // 20–30 s makes them fail after 50 ms.
    let windows = r#"windows = [
  { from_s = 10.0, until_s = 20.0, factor = 3.0 },
  { from_s = 20.0, until_s = 30.0, fail = 1.0, fail_after_ms = 50.0 },
]"#;
    let r = run(
        &one_node(
            &format!("max_concurrent = 1\nspeed = 2.0\n{windows}"),
            arrivals,
        ),
        "round-robin.wasm",
    );
    assert_eq!((r.calls, r.ok, r.failed), (4, 3, 1), "{r:?}");
    // 2 s, 6 s, 0.05 s, 2 s.
    assert!(close(r.mean_ms, 10_050.0 / 4.0), "{r:?}");
    assert!(close(r.within_deadline, 0.75));
}

const SWAP: &str = r#"
duration_s = 100.0
drain_s = 100.0
policies = ["round-robin.wasm"]
[core]
node_cooldown_s = 0.0
[[services]]
name = "a"
service_time = { kind = "fixed", ms = 1000.0 }
load_ms = 10000
[[services]]
name = "b"
service_time = { kind = "fixed", ms = 1000.0 }
load_ms = 10000
[[nodes]]
id = "gpu"
max_concurrent = 1
workers = 1
slots = [{ name = "gpu0", can_host = ["a", "b"], loaded = "a" }]
[[arrivals]]
service = "b"
process = { kind = "trace", file = "deadline-a.txt" }
"#;

#[test]
fn the_core_swaps_a_slot_and_the_simulated_load_takes_its_time() {
    // b arrives at 0 on a node holding a: the core asks for a swap, the
    // load takes 10 s, the call runs 10–11 s; the second (1.3 s) follows.
    let r = run(&scenario(SWAP), "round-robin.wasm");
    assert_eq!((r.calls, r.ok, r.swaps), (2, 2, 1), "{r:?}");
    assert!(close(r.mean_ms, (11_000.0 + 10_700.0) / 2.0), "{r:?}");
}

#[test]
fn a_failed_load_is_reported_and_the_call_is_not_served() {
    let text = SWAP.replace(
        "loaded = \"a\" }]",
        "loaded = \"a\" }]\nwindows = [{ from_s = 0.0, until_s = 1000.0, fail = 1.0 }]",
    );
    let r = run(&scenario(&text), "round-robin.wasm");
    assert_eq!((r.calls, r.ok), (2, 0), "{r:?}");
    assert!(r.swaps >= 1 && r.unfinished == 2, "{r:?}");
}

#[test]
fn the_oracle_preloads_a_slot_and_tells_the_core() {
    // Core swaps off; the simulator loads b at 5 s (ready at 15 s).
    let text = SWAP.replace("node_cooldown_s = 0.0", "swap = false")
        + "[[preloads]]\nat_s = 5.0\nnode = \"gpu\"\nslot = \"gpu0\"\nservice = \"b\"\n";
    let r = run(&scenario(&text), "round-robin.wasm");
    assert_eq!((r.calls, r.ok, r.swaps), (2, 2, 1), "{r:?}");
    // Call at 0 runs 15–16 s, call at 1.3 s runs 16–17 s.
    assert!(close(r.mean_ms, (16_000.0 + 15_700.0) / 2.0), "{r:?}");
}

#[test]
fn the_same_scenario_and_seed_give_the_same_figures() {
    let s = scenario(
        r#"
duration_s = 30.0
seed = 9
stats_interval_ms = 1000
policies = ["adaptive.wasm"]
[[services]]
name = "svc"
service_time = { kind = "log_normal", median_ms = 50.0, sigma = 0.8 }
[[nodes]]
id = "n"
count = 5
workers = 2
max_concurrent = 4
gpus = 1
gpu_mem_mib = 1000
services = ["svc"]
[[arrivals]]
service = "svc"
process = { kind = "poisson", rate_per_s = 100.0 }
timeout_ms = 400
"#,
    );
    let clean = |mut r: switchyard_sim::Report| {
        r.wall_s = 0.0;
        r
    };
    let first = clean(run(&s, "adaptive.wasm"));
    assert!(
        first.calls > 2500 && first.policy_failures == 0,
        "{first:?}"
    );
    assert_eq!(first, clean(run(&s, "adaptive.wasm")));
    let mut other = s.clone();
    other.seed = 10;
    assert_ne!(
        first,
        clean(run(&other, "adaptive.wasm")),
        "the seed matters"
    );
}
