//! The hostile test plugins of `plugins/tests/`, written in Rust and built
//! like the real plugins (`make plugins-test-wasm` installs them into
//! `plugins/dist-test/`): each one must be contained, and must leave the
//! host, and the policy itself, healthy.
//!
//! Every plugin behaves (routes to candidate 0) until a request carries the
//! hint `evil=1`, so a test can check that the same `Policy` answers again
//! after its instance was rebuilt.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_policy_host::types::{Candidate, Candidates, Decision, Outcome, Request};
use switchyard_policy_host::{
    EngineConfig, NoNodes, Policy, PolicyEngine, PolicyError, TrapReason, load_dir,
};

/// Where `make plugins-test-wasm` installs the test plugins.
fn dist_test() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist-test")
}

/// The built component of test plugin `name`; fails the test when missing.
fn plugin_path(name: &str) -> PathBuf {
    let path = dist_test().join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run `make plugins-test-wasm` first",
        path.display()
    );
    path
}

/// Where the engines cache compiled components, so that the tests (and later
/// runs) compile each plugin once: a debug build of Cranelift takes seconds.
fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("sandbox-plugins-cache")
}

/// An engine with a short deadline (50 ms; memory as by default), for the
/// plugin that only a deadline stops.
///
/// Not the 5 ms default: a deadline also bounds each instantiation, and a
/// Rust component runs start-up code when instantiated. That takes about
/// 1 ms in a debug build, but a test thread descheduled for a few
/// milliseconds on a loaded machine then fails the load or the rebuild.
fn quick_engine() -> Result<PolicyEngine, PolicyError> {
    PolicyEngine::new(EngineConfig {
        pick_deadline: Duration::from_millis(50),
        cache_dir: Some(cache_dir()),
        ..EngineConfig::default()
    })
}

/// An engine whose deadline is far longer than any of these tests needs, so
/// that the limit under test (memory, stack) is what stops a plugin even on a
/// loaded machine, rather than the clock.
fn patient_engine() -> Result<PolicyEngine, PolicyError> {
    PolicyEngine::new(EngineConfig {
        pick_deadline: Duration::from_secs(2),
        cache_dir: Some(cache_dir()),
        ..EngineConfig::default()
    })
}

/// Loads test plugin `name` and checks that it reports that name.
fn load(engine: &PolicyEngine, name: &str) -> Result<Policy, PolicyError> {
    let path = plugin_path(name);
    let policy = engine.load(&path, Arc::new(NoNodes))?;
    assert_eq!(policy.name(), name);
    assert_eq!(policy.path(), Some(path.as_path()));
    Ok(policy)
}

fn request(hints: &[(&str, &str)]) -> Request {
    Request {
        service: "svc".to_owned(),
        payload_bytes: 64,
        hints: hints
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        now_ms: 1,
        random: 7,
    }
}

/// A request asking the plugin to misbehave.
fn evil() -> Request {
    request(&[("evil", "1")])
}

/// A request the plugin answers normally.
fn benign() -> Request {
    request(&[("optimize", "latency")])
}

fn candidates(n: u32) -> Candidates {
    (0..n)
        .map(|node| Candidate {
            node,
            in_flight: 0,
            max_concurrent: 4,
            node_in_flight: 0,
            cpu_pct: 10.0,
            mem_used_mib: 1024,
            mem_total_mib: 8192,
            gpu_count: 1,
            gpu_util_pct: 5.0,
            gpu_mem_free_mib: 70_000,
            gpu_mem_total_mib: 80_000,
            latency_ms: 0.0,
            latency_samples: 0,
            cost_per_hour: 1.5,
            model_load: None,
            prefix_matched: 0,
        })
        .collect()
}

/// The trap reason of `result`, which must be a trap of policy `name`.
fn trap_reason(result: Result<Decision, PolicyError>, name: &str) -> TrapReason {
    match result {
        Err(PolicyError::Trap { policy, reason }) => {
            assert_eq!(policy, name);
            reason
        }
        other => panic!("expected {name} to trap, got {other:?}"),
    }
}

/// The reason of a `reject` decision.
fn rejection(result: Result<Decision, PolicyError>) -> String {
    match result {
        Ok(Decision::Reject(reason)) => reason,
        other => panic!("expected a reject, got {other:?}"),
    }
}

/// One well-behaved pick and one `observe`, both of which must succeed.
fn assert_healthy(policy: &Policy) -> Result<(), PolicyError> {
    assert_eq!(policy.pick(&benign(), &candidates(3))?, Decision::Route(0));
    policy.observe(&Outcome {
        service: "svc".to_owned(),
        node: 0,
        latency_ms: 3.0,
        ok: true,
        now_ms: 2,
    })
}

#[test]
fn spin_hits_the_deadline_and_recovers() -> Result<(), PolicyError> {
    let engine = quick_engine()?;
    let policy = load(&engine, "spin")?;
    assert_healthy(&policy)?;
    for round in 1..=3 {
        let start = Instant::now();
        let reason = trap_reason(policy.pick(&evil(), &candidates(3)), "spin");
        let took = start.elapsed();
        assert_eq!(reason, TrapReason::Deadline);
        // Without the deadline the plugin spins forever; the bound is loose
        // because other tests of this binary (the Python and JavaScript
        // components' compilation) may hold both cores meanwhile.
        assert!(took < Duration::from_secs(5), "the deadline took {took:?}");
        assert_eq!(policy.traps_total(), round);
        assert_healthy(&policy)?;
    }
    assert_eq!(policy.picks_total(), 7);
    assert_eq!(policy.traps_total(), 3);
    Ok(())
}

#[test]
fn memory_bomb_hits_the_memory_limit_and_recovers() -> Result<(), PolicyError> {
    let engine = patient_engine()?;
    let policy = load(&engine, "memory-bomb")?;
    assert_healthy(&policy)?;
    for round in 1..=2 {
        let reason = trap_reason(policy.pick(&evil(), &candidates(3)), "memory-bomb");
        assert_eq!(reason, TrapReason::Memory);
        assert_eq!(policy.traps_total(), round);
        assert_healthy(&policy)?;
    }
    assert_eq!(policy.picks_total(), 5);
    Ok(())
}

#[test]
fn deep_recursion_overflows_the_stack_and_recovers() -> Result<(), PolicyError> {
    let engine = patient_engine()?;
    let policy = load(&engine, "deep-recursion")?;
    assert_healthy(&policy)?;
    for round in 1..=2 {
        let reason = trap_reason(policy.pick(&evil(), &candidates(3)), "deep-recursion");
        assert_eq!(reason, TrapReason::StackOverflow);
        assert_eq!(policy.traps_total(), round);
        assert_healthy(&policy)?;
    }
    assert_eq!(policy.picks_total(), 5);
    Ok(())
}

#[test]
fn panic_traps_and_the_rebuilt_instance_starts_fresh() -> Result<(), PolicyError> {
    let engine = patient_engine()?;
    let policy = load(&engine, "panic-trap")?;
    let report = request(&[("report", "1")]);
    let cands = candidates(3);
    for _ in 0..3 {
        assert_eq!(policy.pick(&benign(), &cands)?, Decision::Route(0));
    }
    assert_eq!(rejection(policy.pick(&report, &cands)), "picks=3");

    match trap_reason(policy.pick(&evil(), &cands), "panic-trap") {
        // `panic = "abort"`: the panic ends in `unreachable`.
        TrapReason::Other(msg) => assert!(msg.contains("unreachable"), "{msg}"),
        other => panic!("expected an `unreachable` trap, got {other:?}"),
    }
    assert_eq!(policy.traps_total(), 1);

    // A fresh store and instance: the count starts over.
    assert_eq!(rejection(policy.pick(&report, &cands)), "picks=0");
    assert_eq!(policy.pick(&benign(), &cands)?, Decision::Route(0));
    assert_eq!(rejection(policy.pick(&report, &cands)), "picks=2");
    assert_eq!(policy.picks_total(), 8);
    assert_eq!(policy.traps_total(), 1);
    Ok(())
}

/// The summary entries `snoop` must report as `denied(...)`.
const SNOOP_DENIED: [&str; 11] = [
    "fs.read",
    "fs.read_dir",
    "fs.write",
    "fs.metadata",
    "stdin",
    "tcp.connect",
    "tcp.listen",
    "udp.bind",
    "udp.send",
    "dns",
    "process",
];

#[test]
fn snoop_is_denied_every_ambient_authority() -> Result<(), Box<dyn std::error::Error>> {
    // Real listeners the plugin is told about: nothing may reach them.
    let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    tcp.set_nonblocking(true)?;
    let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    udp.set_nonblocking(true)?;
    let tcp_port = tcp.local_addr()?.port().to_string();
    let udp_port = udp.local_addr()?.port().to_string();

    let engine = patient_engine()?;
    let policy = load(&engine, "snoop")?;
    assert_healthy(&policy)?;
    let req = request(&[
        ("evil", "1"),
        ("tcp_port", &tcp_port),
        ("udp_port", &udp_port),
    ]);
    let summary = rejection(policy.pick(&req, &candidates(3)));
    eprintln!("snoop summary: {summary}");
    assert!(!summary.contains("ALLOWED"), "{summary}");

    let entries: Vec<(&str, &str)> = summary
        .split("; ")
        .map(|entry| entry.split_once('=').unwrap_or((entry, "")))
        .collect();
    let value = |key: &str| {
        entries
            .iter()
            .find_map(|&(k, v)| (k == key).then_some(v))
            .unwrap_or_else(|| panic!("no `{key}` in {summary}"))
    };
    for key in SNOOP_DENIED {
        let v = value(key);
        assert!(v.starts_with("denied("), "{key}={v}");
    }
    assert_eq!(value("env"), "0", "the environment must be empty");
    assert_eq!(value("args"), "0", "the arguments must be empty");
    assert_eq!(value("time"), "ok", "the wall clock is granted");
    assert_eq!(entries.len(), SNOOP_DENIED.len() + 3, "{summary}");

    // Give a connection that got through time to land, then look.
    std::thread::sleep(Duration::from_millis(50));
    match tcp.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the TCP listener saw a connection: {other:?}"),
    }
    let mut buf = [0_u8; 64];
    match udp.recv_from(&mut buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the UDP socket received a datagram: {other:?}"),
    }

    assert_eq!(policy.traps_total(), 0);
    assert_healthy(&policy)?;
    Ok(())
}

#[test]
fn evil_import_fails_to_link_naming_the_import() -> Result<(), PolicyError> {
    let engine = PolicyEngine::new(EngineConfig::default())?;
    let path = plugin_path("evil-import");
    match engine.load(&path, Arc::new(NoNodes)) {
        Err(PolicyError::Link { reason }) => {
            assert!(reason.contains("evil:net/socket"), "{reason}");
            assert!(reason.contains("evil-import.wasm"), "{reason}");
            eprintln!("evil-import: {reason}");
        }
        other => panic!("expected a link error, got {other:?}"),
    }
    Ok(())
}

#[test]
fn load_dir_keeps_the_good_plugins_beside_the_bad_one() -> Result<(), PolicyError> {
    let engine = patient_engine()?;
    // Checks that the folder holds every plugin first.
    let expected = [
        "deep-recursion",
        "evil-import",
        "memory-bomb",
        "panic-trap",
        "snoop",
        "spin",
    ];
    for name in expected {
        plugin_path(name);
    }
    let loaded = load_dir(&engine, &dist_test(), Arc::new(NoNodes));
    for (path, result) in &loaded {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        match result {
            Ok(policy) => {
                assert_ne!(stem, "evil-import");
                assert_eq!(policy.name(), stem);
            }
            Err(PolicyError::Link { reason }) => {
                assert_eq!(stem, "evil-import", "{reason}");
            }
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
    let stems: Vec<_> = loaded
        .iter()
        .filter_map(|(path, _)| path.file_stem().and_then(|s| s.to_str()))
        .collect();
    for name in expected {
        assert!(stems.contains(&name), "{name} not loaded: {stems:?}");
    }
    Ok(())
}

/// What one Tokio task saw: the policy name, and the trap reasons of its
/// hostile picks.
type TaskReport = (String, Vec<TrapReason>);

/// Alternates hostile and benign picks on `policy`, on the calling thread.
fn abuse(policy: &Policy, rounds: usize) -> Result<TaskReport, PolicyError> {
    let cands = candidates(3);
    let mut reasons = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        reasons.push(trap_reason(policy.pick(&evil(), &cands), policy.name()));
        assert_eq!(policy.pick(&benign(), &cands)?, Decision::Route(0));
    }
    Ok((policy.name().to_owned(), reasons))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_plugins_on_tokio_workers_leave_the_host_healthy()
-> Result<(), Box<dyn std::error::Error>> {
    let quick = quick_engine()?;
    let patient = patient_engine()?;
    let policies = [
        Arc::new(load(&quick, "spin")?),
        Arc::new(load(&patient, "memory-bomb")?),
        Arc::new(load(&patient, "deep-recursion")?),
        Arc::new(load(&patient, "panic-trap")?),
    ];
    const ROUNDS: usize = 3;
    const TASKS_PER_POLICY: usize = 2;

    // Two tasks per policy, so that calls on one policy also contend for its
    // instance; each task runs its picks on a Tokio worker thread.
    let mut tasks = tokio::task::JoinSet::new();
    for policy in &policies {
        for _ in 0..TASKS_PER_POLICY {
            let policy = Arc::clone(policy);
            tasks.spawn(async move { abuse(&policy, ROUNDS) });
        }
    }
    // Meanwhile the runtime keeps serving other work.
    let heartbeat = tokio::spawn(async {
        let mut beats = 0_u32;
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            beats += 1;
        }
        beats
    });

    let mut reports = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        // A `JoinError` here would be a panic on a worker thread.
        reports.push(joined??);
    }
    assert_eq!(heartbeat.await?, 5);

    for (name, reasons) in &reports {
        assert_eq!(reasons.len(), ROUNDS);
        for reason in reasons {
            let expected = match name.as_str() {
                "spin" => matches!(reason, TrapReason::Deadline),
                "memory-bomb" => matches!(reason, TrapReason::Memory),
                "deep-recursion" => matches!(reason, TrapReason::StackOverflow),
                "panic-trap" => {
                    matches!(reason, TrapReason::Other(msg) if msg.contains("unreachable"))
                }
                _ => false,
            };
            assert!(expected, "{name}: unexpected trap {reason:?}");
        }
    }
    let calls = u64::try_from(ROUNDS * TASKS_PER_POLICY)?;
    for policy in &policies {
        assert_eq!(policy.traps_total(), calls, "{}", policy.name());
        assert_eq!(policy.picks_total(), 2 * calls, "{}", policy.name());
        // And once more from inside a worker thread, after all that.
        let again = Arc::clone(policy);
        let decision = tokio::spawn(async move { again.pick(&benign(), &candidates(2)) }).await??;
        assert_eq!(decision, Decision::Route(0));
    }
    Ok(())
}
