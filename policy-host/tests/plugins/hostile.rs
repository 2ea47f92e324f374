//! Hostile components, written in component WAT: the host must contain them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_policy_host::types::{
    Candidate, Candidates, Decision, Gpu, NodeInfo, Outcome, Request,
};
use switchyard_policy_host::{
    EngineConfig, NoNodes, NodeDirectory, PolicyEngine, PolicyError, TrapReason,
};

/// A component exporting the `policy` world by hand (canonical ABI lowered
/// manually). `pick` behaves according to `req.random`:
/// 0 → `route(0)`; 1 → loops forever; 2 → grows memory until refused, then
/// traps; 3 → recurses forever; 4 → `route(99)`; 5 → `unreachable`;
/// 6 → `route(1)` if `host.node-info(7)` is some, else `route(0)`.
/// It also counts picks in a global: 7 → `route(picks so far)`;
/// 8 → sleeps for an hour (`monotonic-clock.subscribe-duration` + `block`);
/// 9 → `route(n)`, one past the last candidate.
///
/// `pick` flattens to 2 + 14 × 2 + ... > 16 core parameters, so the canonical
/// ABI passes its arguments through memory: the host allocates a
/// `(request, candidates)` tuple with the guest's `cabi_realloc` and passes
/// one pointer. Layout (align 8): `request` at 0 (`service` ptr/len at 0/4,
/// `payload-bytes` at 8, `hints` ptr/len at 16/20, `now-ms` at 24, `random`
/// at 32; size 40), then `candidates` at 40: 14 lists of ptr/len pairs, the
/// first (`node`) with its length n at 44.
const HOSTILE: &str = r#"
(component
  (import "switchyard:policy/host@1.0.0" (instance $host
    (type $gpu (record
      (field "index" u32) (field "name" string) (field "util-pct" f32)
      (field "mem-used-mib" u64) (field "mem-total-mib" u64)
      (field "temperature-c" f32) (field "power-w" f32)))
    (export "gpu" (type $gpu-e (eq $gpu)))
    (type $node-info (record
      (field "id" string) (field "region" string)
      (field "labels" (list (tuple string string))) (field "gpus" (list $gpu-e))))
    (export "node-facts" (type $nf (eq $node-info)))
    (export "node-info" (func (param "node" u32) (result (option $nf))))))
  (import "wasi:io/poll@0.2.0" (instance $poll
    (export "pollable" (type (sub resource)))
    (export "[method]pollable.block" (func (param "self" (borrow 0))))))
  (alias export $poll "pollable" (type $pollable))
  (import "wasi:clocks/monotonic-clock@0.2.0" (instance $clock
    (alias outer 1 $pollable (type $p))
    (export "pollable" (type $pe (eq $p)))
    (export "subscribe-duration" (func (param "when" u64) (result (own $pe))))))
  (alias export $poll "[method]pollable.block" (func $block))
  (alias export $clock "subscribe-duration" (func $subscribe))
  (core func $block-core (canon lower (func $block)))
  (core func $subscribe-core (canon lower (func $subscribe)))

  ;; Memory and a bump allocator, in their own module so that the import can
  ;; be lowered before the main module is instantiated.
  (core module $libc
    (memory (export "memory") 1)
    (global $heap (export "heap") (mut i32) (i32.const 1024))
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get 2))))
      (global.set $heap (i32.add (local.get $p) (local.get 3)))
      (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
        (then
          (if (i32.eq (memory.grow (i32.add (i32.const 1) (i32.shr_u
                (i32.sub (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
                (i32.const 16))))
              (i32.const -1))
            (then unreachable))))
      (local.get $p)))
  (core instance $libc-i (instantiate $libc))
  (alias export $host "node-info" (func $node-info))
  (core func $node-info-core (canon lower (func $node-info)
    (memory (core memory $libc-i "memory")) (realloc (core func $libc-i "cabi_realloc"))))

  (core module $m
    (import "libc" "memory" (memory 1))
    (import "libc" "heap" (global $heap (mut i32)))
    (import "host" "node-info" (func $node-info (param i32 i32)))
    (import "host" "block" (func $block (param i32)))
    (import "host" "subscribe" (func $subscribe (param i64) (result i32)))
    (global $picks (mut i32) (i32.const 0))
    (data (i32.const 0) "\10\00\00\00\07\00\00\00")
    (data (i32.const 16) "hostile")
    (func (export "name") (result i32) (i32.const 0))
    (func $route (param $i i32) (result i32)
      (i32.store8 (i32.const 32) (i32.const 0))
      (i32.store (i32.const 36) (local.get $i))
      (i32.const 32))
    (func $recurse (param i32) (result i32)
      (i32.add (call $recurse (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))
    (func (export "pick") (param $args i32) (result i32)
      (local $mode i64)
      (local $n i32)
      ;; Read the arguments before resetting the heap: later allocations (the
      ;; `node-info` result) may reuse their memory.
      (local.set $mode (i64.load offset=32 (local.get $args)))
      (local.set $n (i32.load offset=44 (local.get $args)))
      (global.set $heap (i32.const 1024))
      (global.set $picks (i32.add (global.get $picks) (i32.const 1)))
      (if (i64.eq (local.get $mode) (i64.const 1))
        (then (loop $spin (br $spin))))
      (if (i64.eq (local.get $mode) (i64.const 2))
        (then
          (loop $grow
            (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
          unreachable))
      (if (i64.eq (local.get $mode) (i64.const 3))
        (then (drop (call $recurse (i32.const 0)))))
      (if (i64.eq (local.get $mode) (i64.const 4))
        (then (return (call $route (i32.const 99)))))
      (if (i64.eq (local.get $mode) (i64.const 5))
        (then unreachable))
      (if (i64.eq (local.get $mode) (i64.const 6))
        (then
          (call $node-info (i32.const 7) (i32.const 64))
          (return (call $route (i32.load8_u (i32.const 64))))))
      (if (i64.eq (local.get $mode) (i64.const 8))
        (then (call $block (call $subscribe (i64.const 3600000000000)))))
      (if (i64.eq (local.get $mode) (i64.const 7))
        (then (return (call $route (i32.sub (global.get $picks) (i32.const 1))))))
      (if (i64.eq (local.get $mode) (i64.const 9))
        (then (return (call $route (local.get $n)))))
      (call $route (i32.const 0)))
    (func (export "observe") (param i32 i32 i32 f32 i32 i64)))
  (core instance $i (instantiate $m
    (with "libc" (instance $libc-i))
    (with "host" (instance
      (export "node-info" (func $node-info-core))
      (export "block" (func $block-core))
      (export "subscribe" (func $subscribe-core))))))

  (type $candidates (record
    (field "node" (list u32)) (field "in-flight" (list u32))
    (field "max-concurrent" (list u32)) (field "node-in-flight" (list u32))
    (field "cpu-pct" (list f32)) (field "mem-used-mib" (list u64))
    (field "mem-total-mib" (list u64)) (field "gpu-count" (list u32))
    (field "gpu-util-pct" (list f32)) (field "gpu-mem-free-mib" (list u64))
    (field "gpu-mem-total-mib" (list u64)) (field "latency-ms" (list f32))
    (field "latency-samples" (list u32)) (field "cost-per-hour" (list f32))))
  (type $request (record
    (field "service" string) (field "payload-bytes" u64)
    (field "hints" (list (tuple string string))) (field "now-ms" u64) (field "random" u64)))
  (type $decision (variant (case "route" u32) (case "reject" string)))
  (type $outcome (record
    (field "service" string) (field "node" u32) (field "latency-ms" f32)
    (field "ok" bool) (field "now-ms" u64)))
  (export $candidates-e "candidates" (type $candidates))
  (export $request-e "request" (type $request))
  (export $decision-e "decision" (type $decision))
  (export $outcome-e "outcome" (type $outcome))

  (func (export "name") (result string)
    (canon lift (core func $i "name") (memory (core memory $libc-i "memory"))))
  (func (export "pick")
    (param "req" $request-e) (param "candidates" $candidates-e) (result $decision-e)
    (canon lift (core func $i "pick")
      (memory (core memory $libc-i "memory")) (realloc (core func $libc-i "cabi_realloc"))))
  (func (export "observe") (param "outcome" $outcome-e)
    (canon lift (core func $i "observe")
      (memory (core memory $libc-i "memory")) (realloc (core func $libc-i "cabi_realloc"))))
)
"#;

/// A component importing an interface the host does not offer.
const UNKNOWN_IMPORT: &str = r#"
(component
  (import "evil:net/socket" (instance
    (export "connect" (func (param "port" u32) (result u32))))))
"#;

fn request(mode: u64) -> Request {
    Request {
        service: "svc".to_owned(),
        payload_bytes: 0,
        hints: vec![("k".to_owned(), "v".to_owned())],
        now_ms: 0,
        random: mode,
    }
}

fn candidates(n: u32) -> Candidates {
    (0..n)
        .map(|node| Candidate {
            node,
            in_flight: 0,
            max_concurrent: 1,
            node_in_flight: 0,
            cpu_pct: 0.0,
            mem_used_mib: 0,
            mem_total_mib: 0,
            gpu_count: 0,
            gpu_util_pct: 0.0,
            gpu_mem_free_mib: 0,
            gpu_mem_total_mib: 0,
            latency_ms: 0.0,
            latency_samples: 0,
            cost_per_hour: 0.0,
            model_load: None,
            prefix_matched: 0,
        })
        .collect()
}

/// The hostile component under a 100 ms pick deadline: traps other than the
/// deadline must not turn into deadline traps when a loaded (2-core CI)
/// machine deschedules the thread.
fn load_hostile(
    nodes: Arc<dyn NodeDirectory>,
) -> Result<switchyard_policy_host::Policy, PolicyError> {
    load_hostile_with(
        EngineConfig {
            pick_deadline: Duration::from_millis(100),
            ..EngineConfig::default()
        },
        nodes,
    )
}

fn load_hostile_with(
    config: EngineConfig,
    nodes: Arc<dyn NodeDirectory>,
) -> Result<switchyard_policy_host::Policy, PolicyError> {
    let engine = PolicyEngine::new(config)?;
    engine.load_bytes(HOSTILE.as_bytes(), "hostile.wat", nodes)
}

fn assert_trap(result: Result<Decision, PolicyError>, want: &TrapReason) {
    match result {
        Err(PolicyError::Trap { policy, reason }) => {
            assert_eq!(policy, "hostile");
            assert_eq!(&reason, want);
        }
        other => panic!("expected a {want:?} trap, got {other:?}"),
    }
}

#[test]
fn hostile_component_loads_and_answers() -> Result<(), PolicyError> {
    let policy = load_hostile(Arc::new(NoNodes))?;
    assert_eq!(policy.name(), "hostile");
    assert_eq!(policy.path(), None);
    assert_eq!(
        policy.pick(&request(0), &candidates(3))?,
        Decision::Route(0)
    );
    policy.observe(&Outcome {
        service: "svc".to_owned(),
        node: 0,
        latency_ms: 1.0,
        ok: true,
        now_ms: 0,
    })?;
    Ok(())
}

#[test]
fn infinite_loop_hits_the_deadline_and_policy_recovers() -> Result<(), PolicyError> {
    // The default deadline (5 ms).
    let policy = load_hostile_with(EngineConfig::default(), Arc::new(NoNodes))?;
    let cands = candidates(3);
    for _ in 0..3 {
        let start = Instant::now();
        assert_trap(policy.pick(&request(1), &cands), &TrapReason::Deadline);
        let took = start.elapsed();
        // Loose: without the deadline it loops forever (and other tests of
        // this binary may hold the cores meanwhile).
        assert!(took < Duration::from_secs(5), "deadline took {took:?}");
        assert_eq!(policy.pick(&request(0), &cands)?, Decision::Route(0));
    }
    assert_eq!(policy.traps_total(), 3);
    assert_eq!(policy.picks_total(), 6);
    Ok(())
}

#[test]
fn memory_bomb_is_refused() -> Result<(), PolicyError> {
    let policy = load_hostile(Arc::new(NoNodes))?;
    let cands = candidates(3);
    assert_trap(policy.pick(&request(2), &cands), &TrapReason::Memory);
    assert_eq!(policy.pick(&request(0), &cands)?, Decision::Route(0));
    assert_eq!(policy.traps_total(), 1);
    Ok(())
}

#[test]
fn deep_recursion_overflows_the_stack() -> Result<(), PolicyError> {
    let policy = load_hostile(Arc::new(NoNodes))?;
    let cands = candidates(3);
    assert_trap(policy.pick(&request(3), &cands), &TrapReason::StackOverflow);
    assert_eq!(policy.pick(&request(0), &cands)?, Decision::Route(0));
    Ok(())
}

#[test]
fn out_of_range_route_is_a_bad_decision() -> Result<(), PolicyError> {
    let policy = load_hostile(Arc::new(NoNodes))?;
    match policy.pick(&request(4), &candidates(3)) {
        Err(PolicyError::BadDecision { policy, index, len }) => {
            assert_eq!((policy.as_str(), index, len), ("hostile", 99, 3));
        }
        other => panic!("expected a bad decision, got {other:?}"),
    }
    assert_eq!(policy.traps_total(), 0);
    Ok(())
}

#[test]
fn route_to_n_is_a_bad_decision() -> Result<(), PolicyError> {
    let policy = load_hostile(Arc::new(NoNodes))?;
    for n in [1, 5, 100] {
        match policy.pick(&request(9), &candidates(n)) {
            Err(PolicyError::BadDecision { index, len, .. }) => {
                assert_eq!((index, len), (n, n as usize));
            }
            other => panic!("expected a bad decision, got {other:?}"),
        }
    }
    assert_eq!(
        policy.pick(&request(0), &candidates(5))?,
        Decision::Route(0)
    );
    Ok(())
}

#[test]
fn ragged_or_empty_candidates_never_reach_the_guest() -> Result<(), PolicyError> {
    let policy = load_hostile(Arc::new(NoNodes))?;
    let mut ragged = candidates(3);
    ragged.cost_per_hour.push(1.0);
    let mut short = candidates(3);
    short.gpu_mem_free_mib.pop();
    for (cands, what) in [
        (ragged, "cost-per-hour"),
        (short, "gpu-mem-free-mib"),
        (candidates(0), "no candidates"),
    ] {
        // Mode 7 routes to the guest's pick count: it shows whether the
        // guest ran.
        match policy.pick(&request(7), &cands) {
            Err(PolicyError::BadInput { policy, reason }) => {
                assert_eq!(policy, "hostile");
                assert!(reason.contains(what), "{reason}");
            }
            other => panic!("expected bad input, got {other:?}"),
        }
    }
    assert_eq!(
        policy.pick(&request(7), &candidates(3))?,
        Decision::Route(0)
    );
    assert_eq!(policy.traps_total(), 0);
    Ok(())
}

#[test]
fn trap_rebuilds_the_instance_with_fresh_state() -> Result<(), PolicyError> {
    let policy = load_hostile(Arc::new(NoNodes))?;
    let cands = candidates(10);
    assert_eq!(policy.pick(&request(7), &cands)?, Decision::Route(0));
    assert_eq!(policy.pick(&request(7), &cands)?, Decision::Route(1));
    match policy.pick(&request(5), &cands) {
        Err(PolicyError::Trap {
            reason: TrapReason::Other(msg),
            ..
        }) => assert!(msg.contains("unreachable"), "{msg}"),
        other => panic!("expected an `unreachable` trap, got {other:?}"),
    }
    assert_eq!(policy.pick(&request(7), &cands)?, Decision::Route(0));
    Ok(())
}

#[test]
fn a_trap_rebuilds_in_the_background_and_calls_meanwhile_fail_at_once() -> Result<(), PolicyError> {
    let policy = load_hostile_with(
        EngineConfig {
            pick_deadline: Duration::from_millis(100),
            rebuild_in_background: true,
            ..EngineConfig::default()
        },
        Arc::new(NoNodes),
    )?;
    let cands = candidates(10);
    assert_eq!(policy.pick(&request(7), &cands)?, Decision::Route(0));
    assert_eq!(policy.pick(&request(7), &cands)?, Decision::Route(1));
    assert!(matches!(
        policy.pick(&request(5), &cands),
        Err(PolicyError::Trap { .. })
    ));
    // Until the new instance is in, calls answer at once without the guest.
    let start = Instant::now();
    let fresh = loop {
        match policy.pick(&request(7), &cands) {
            Err(PolicyError::Rebuilding { .. }) => {
                assert!(start.elapsed() < Duration::from_secs(10), "never rebuilt");
                std::thread::sleep(Duration::from_millis(5));
            }
            other => break other?,
        }
    };
    assert_eq!(
        fresh,
        Decision::Route(0),
        "the rebuilt instance starts fresh"
    );
    assert_eq!(policy.traps_total(), 1);
    Ok(())
}

/// A component built before `ranker` existed (it exports only the `policy`
/// world) still loads, and `rank` asks its `pick`.
#[test]
fn a_plugin_without_a_ranker_is_ranked_by_its_pick() -> Result<(), PolicyError> {
    use switchyard_policy_host::types::Ranking;
    let policy = load_hostile(Arc::new(NoNodes))?;
    assert!(!policy.ranks());
    assert_eq!(
        policy.rank(&request(0), &candidates(3))?,
        Ranking::Order(vec![0])
    );
    assert!(matches!(
        policy.rank(&request(4), &candidates(3)),
        Err(PolicyError::BadDecision { index: 99, .. })
    ));
    Ok(())
}

/// Knows node 7 only, and records the keys asked for.
#[derive(Default)]
struct OneNode {
    asked: std::sync::Mutex<Vec<u32>>,
}

impl NodeDirectory for OneNode {
    fn node_info(&self, key: u32) -> Option<NodeInfo> {
        self.asked.lock().map(|mut a| a.push(key)).ok()?;
        (key == 7).then(|| NodeInfo {
            id: "node-7".to_owned(),
            region: "eu-west".to_owned(),
            labels: vec![("tier".to_owned(), "premium".to_owned())],
            gpus: vec![Gpu {
                index: 0,
                name: "NVIDIA H100 80GB HBM3".to_owned(),
                util_pct: 12.0,
                mem_used_mib: 1000,
                mem_total_mib: 81_559,
                temperature_c: 40.0,
                power_w: 120.0,
            }],
        })
    }
}

#[test]
fn node_info_import_answers_from_the_directory() -> Result<(), PolicyError> {
    let nodes = Arc::new(OneNode::default());
    let policy = load_hostile(nodes.clone())?;
    assert_eq!(
        policy.pick(&request(6), &candidates(2))?,
        Decision::Route(1)
    );
    assert_eq!(*nodes.asked.lock().expect("lock"), [7]);

    let policy = load_hostile(Arc::new(NoNodes))?;
    assert_eq!(
        policy.pick(&request(6), &candidates(2))?,
        Decision::Route(0)
    );
    Ok(())
}

#[test]
fn unknown_import_fails_to_link_naming_it() -> Result<(), PolicyError> {
    let engine = PolicyEngine::new(EngineConfig::default())?;
    match engine.load_bytes(UNKNOWN_IMPORT.as_bytes(), "evil.wat", Arc::new(NoNodes)) {
        Err(PolicyError::Link { reason }) => {
            assert!(reason.contains("evil:net/socket"), "{reason}");
            assert!(reason.contains("evil.wat"), "{reason}");
        }
        other => panic!("expected a link error, got {other:?}"),
    }
    Ok(())
}

#[test]
fn missing_exports_fail_to_link() -> Result<(), PolicyError> {
    let engine = PolicyEngine::new(EngineConfig::default())?;
    let result = engine.load_bytes(b"(component)", "empty.wat", Arc::new(NoNodes));
    assert!(
        matches!(result, Err(PolicyError::Link { .. })),
        "{result:?}"
    );
    Ok(())
}

#[test]
fn garbage_fails_to_compile() -> Result<(), PolicyError> {
    let engine = PolicyEngine::new(EngineConfig::default())?;
    let result = engine.load_bytes(b"\0asm garbage", "junk.wasm", Arc::new(NoNodes));
    assert!(matches!(result, Err(PolicyError::Compile { ref path, .. }) if path == "junk.wasm"));
    Ok(())
}

#[test]
fn a_core_module_or_a_text_file_is_not_a_component() -> Result<(), PolicyError> {
    let engine = PolicyEngine::new(EngineConfig::default())?;
    for (bytes, origin) in [
        (&b"\0asm\x01\0\0\0"[..], "core.wasm"),
        (&b"policy = round-robin\n"[..], "notes.wasm"),
    ] {
        let error = engine
            .load_bytes(bytes, origin, Arc::new(NoNodes))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.starts_with(&format!(
                "failed to compile policy {origin}: not a WebAssembly component"
            )),
            "{error}"
        );
    }
    Ok(())
}

#[test]
fn memory_limit_below_initial_memory_fails_instantiation() -> Result<(), PolicyError> {
    let engine = PolicyEngine::new(EngineConfig {
        memory_limit_bytes: 32 << 10,
        ..EngineConfig::default()
    })?;
    let result = engine.load_bytes(HOSTILE.as_bytes(), "hostile.wat", Arc::new(NoNodes));
    assert!(
        matches!(result, Err(PolicyError::Instantiate { .. })),
        "{result:?}"
    );
    Ok(())
}

#[test]
fn waiting_on_wasi_traps_instead_of_blocking() -> Result<(), PolicyError> {
    let policy = load_hostile(Arc::new(NoNodes))?;
    let cands = candidates(3);
    let start = Instant::now();
    match policy.pick(&request(8), &cands) {
        Err(PolicyError::Trap {
            reason: TrapReason::Other(msg),
            ..
        }) => assert!(msg.contains("blocked"), "{msg}"),
        other => panic!("expected a blocked trap, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(policy.pick(&request(0), &cands)?, Decision::Route(0));
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn calls_work_on_a_tokio_runtime_thread() -> Result<(), PolicyError> {
    let policy = load_hostile(Arc::new(NoNodes))?;
    let cands = candidates(3);
    assert_eq!(policy.pick(&request(0), &cands)?, Decision::Route(0));
    assert!(matches!(
        policy.pick(&request(8), &cands),
        Err(PolicyError::Trap { .. })
    ));
    assert_trap(policy.pick(&request(1), &cands), &TrapReason::Deadline);
    assert_eq!(policy.pick(&request(0), &cands)?, Decision::Route(0));
    Ok(())
}
