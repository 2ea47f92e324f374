//! Slots against real processes: the toy model server, and small shell
//! scripts for the odd cases.

use std::time::Duration;

use bytes::Bytes;
use protocol::{ErrorKind, SlotSpec};

use super::*;
use crate::config::{ReadyProbe, ServiceConfig, SlotConfig, SwapConfig};
use crate::services::ServiceKind;

const CALL: Duration = Duration::from_secs(10);

/// The toy model server as a process: this test binary again, made to run
/// only [`toy_model_process`], with the toy model's flags after `--` (the
/// test harness reads them as more name filters, which match no test). So
/// the slots run a real server process without any binary built beforehand.
pub(crate) fn toy_model() -> Vec<String> {
    let exe = std::env::current_exe().expect("test binary path");
    let entry = module_path!()
        .split_once("::")
        .map_or(module_path!(), |(_, path)| path);
    vec![
        exe.display().to_string(),
        "--exact".into(),
        "--nocapture".into(),
        "--quiet".into(),
        "--".into(),
        format!("{entry}::toy_model_process"),
        TOY_MODEL_FLAGS.into(),
    ]
}

/// Where the toy model's flags start in a [`toy_model`] command line.
const TOY_MODEL_FLAGS: &str = "toy-model-flags:";

/// The toy model's process when this binary runs as [`toy_model`] starts
/// it: serves, then exits the process with the server's status. Run as a
/// test, it does nothing.
#[test]
fn toy_model_process() {
    let args: Vec<String> = std::env::args().collect();
    let Some(at) = args.iter().position(|a| a == TOY_MODEL_FLAGS) else {
        return;
    };
    let code = match switchyard_toy_model::Args::from_flags(&args[at + 1..]) {
        Ok(args) => switchyard_toy_model::run(args),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    std::process::exit(if code == std::process::ExitCode::SUCCESS {
        0
    } else {
        1
    });
}

/// A port nothing listens on (bound, then released).
pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A swappable `http` service run by the toy model on `port`, ready by URL
/// within 5 s.
pub(crate) fn toy(name: &str, port: u16, load_ms: u32, extra: &[&str]) -> ServiceConfig {
    let mut start = toy_model();
    start.extend([
        "--port".into(),
        port.to_string(),
        "--name".into(),
        name.into(),
        "--load-ms".into(),
        load_ms.to_string(),
    ]);
    start.extend(extra.iter().map(|s| (*s).to_string()));
    let mut swap = SwapConfig::new(
        start,
        ReadyProbe::Url(format!("http://127.0.0.1:{port}/health")),
    );
    swap.ready_timeout_s = 5;
    swap.load_ms = load_ms;
    ServiceConfig::new(name, ServiceKind::http(format!("http://127.0.0.1:{port}/"))).with_swap(swap)
}

/// A swappable `echo` service whose "server" is a shell script, ready once
/// `ready_command` succeeds.
fn script(name: &str, script: &str, ready_command: &[&str]) -> ServiceConfig {
    let ready = ReadyProbe::Command(ready_command.iter().map(|s| (*s).to_string()).collect());
    let mut swap = SwapConfig::new(["sh", "-c", script], ready);
    swap.ready_timeout_s = 5;
    ServiceConfig::new(name, ServiceKind::Echo).with_swap(swap)
}

fn setup(services: Vec<ServiceConfig>, slots: Vec<SlotConfig>) -> (Services, Slots, Reports) {
    let config = AgentConfig {
        slots,
        ..AgentConfig::new("127.0.0.1:4433", "ca.pem", "t", "n1", services)
    };
    config.validate().expect("valid config");
    let services = Services::with_slots(&config.services, &config.slots).expect("services");
    let (slots, reports) = Slots::new(&config, services.clone()).expect("slots");
    (services, slots, reports)
}

fn answers(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

async fn call(
    services: &Services,
    name: &str,
    payload: &'static str,
) -> Result<Bytes, ServiceError> {
    services
        .call(name, Bytes::from_static(payload.as_bytes()), CALL)
        .await
}

#[tokio::test]
async fn a_slot_loads_the_toy_model_and_calls_reach_it() {
    let port = free_port();
    let (services, slots, _reports) = setup(
        vec![toy("llama", port, 200, &[])],
        vec![SlotConfig::new("gpu0", ["llama"])],
    );
    assert_eq!(services.specs()[0].load_ms, 200);
    let err = call(&services, "llama", "hi")
        .await
        .expect_err("not loaded");
    assert_eq!(err.kind, ErrorKind::NoNodeAvailable);
    assert_eq!(
        err.message,
        "service llama is not loaded on this node (slot gpu0 is empty)"
    );

    let report = slots.swap("gpu0", "llama").await;
    assert_eq!(report.error, None);
    assert_eq!(report.loaded.as_deref(), Some("llama"));
    assert!(report.duration_ms >= 200, "{report:?}");
    assert_eq!(
        services.slot_specs(),
        [SlotSpec {
            name: "gpu0".into(),
            can_host: vec!["llama".into()],
            loaded: Some("llama".into()),
        }]
    );
    let body = call(&services, "llama", "hello").await.expect("call");
    assert_eq!(body, Bytes::from_static(b"llama: hello"));

    // Asking again for what the slot holds is done at once.
    let again = slots.swap("gpu0", "llama").await;
    assert_eq!(again.error, None);
    assert!(again.duration_ms < 100, "{again:?}");

    slots.shutdown().await;
    assert!(!answers(port), "the server is stopped at shutdown");
    assert_eq!(services.loaded("gpu0"), None);
}

#[tokio::test]
async fn swapping_stops_the_old_server_and_starts_the_new_one() {
    let (a, b) = (free_port(), free_port());
    let (services, slots, _reports) = setup(
        vec![toy("llama", a, 100, &[]), toy("mistral", b, 100, &[])],
        vec![SlotConfig::new("gpu0", ["llama", "mistral"])],
    );
    assert_eq!(slots.swap("gpu0", "llama").await.error, None);
    assert!(answers(a));
    let report = slots.swap("gpu0", "mistral").await;
    assert_eq!(report.error, None, "{report:?}");
    assert_eq!(report.loaded.as_deref(), Some("mistral"));
    assert!(!answers(a), "llama's server is stopped");
    let body = call(&services, "mistral", "x").await.expect("call");
    assert_eq!(body, Bytes::from_static(b"mistral: x"));
    let err = call(&services, "llama", "x").await.expect_err("unloaded");
    assert_eq!(
        err.message,
        "service llama is not loaded on this node (slot gpu0 holds mistral)"
    );
    slots.shutdown().await;
    assert!(!answers(b));
}

#[tokio::test]
async fn a_failing_start_reports_start_failed_and_leaves_the_slot_empty() {
    let port = free_port();
    let mut missing = toy("missing", free_port(), 0, &[]);
    if let Some(swap) = &mut missing.swap {
        swap.start = vec!["/nonexistent/model-server".into()];
    }
    let (services, slots, _reports) = setup(
        vec![toy("llama", port, 0, &["--fail"]), missing],
        vec![SlotConfig::new("gpu0", ["llama", "missing"])],
    );
    let report = slots.swap("gpu0", "llama").await;
    let error = report.error.expect("an error");
    assert!(
        error.starts_with("start failed: process exited with exit status 1"),
        "{error}"
    );
    assert!(error.contains("failing on purpose"), "stderr tail: {error}");
    assert_eq!(report.loaded, None);
    assert_eq!(services.loaded("gpu0"), None);

    let report = slots.swap("gpu0", "missing").await;
    let error = report.error.expect("an error");
    assert!(
        error.starts_with("start failed: cannot run /nonexistent/model-server"),
        "{error}"
    );
    assert_eq!(report.loaded, None);
}

#[tokio::test]
async fn a_server_not_ready_in_time_is_killed() {
    let port = free_port();
    let mut slow = toy("slow", port, 30_000, &[]);
    if let Some(swap) = &mut slow.swap {
        swap.ready_timeout_s = 1;
    }
    let (services, slots, _reports) = setup(vec![slow], vec![SlotConfig::new("gpu0", ["slow"])]);
    let report = slots.swap("gpu0", "slow").await;
    assert_eq!(report.error.as_deref(), Some("not ready within 1 s"));
    assert_eq!(report.loaded, None);
    assert!(report.duration_ms >= 1000, "{report:?}");
    assert!(!answers(port), "the server was killed");
    assert_eq!(services.loaded("gpu0"), None);
}

#[tokio::test]
async fn a_server_dying_on_its_own_is_reported() {
    let (services, slots, mut reports) = setup(
        vec![script(
            "short",
            "sleep 1; echo out of memory >&2; exit 3",
            &["true"],
        )],
        vec![SlotConfig::new("gpu0", ["short"])],
    );
    assert_eq!(slots.swap("gpu0", "short").await.error, None);
    let report = tokio::time::timeout(CALL, reports.next(1))
        .await
        .expect("a report");
    assert_eq!(
        report,
        SwapReport {
            swap_id: 0,
            slot: "gpu0".into(),
            loaded: None,
            error: Some("process exited with exit status 3: out of memory".into()),
            duration_ms: 0,
        }
    );
    assert_eq!(services.loaded("gpu0"), None);
    // Loading it again starts a new process.
    assert_eq!(slots.swap("gpu0", "short").await.error, None);
    slots.shutdown().await;
}

#[tokio::test]
async fn stdin_env_cwd_and_ready_command_apply() {
    let dir = tempfile::tempdir().expect("tempdir");
    // `cat` holds until stdin closes: the slot must keep it open.
    let mut service = script(
        "cat",
        "touch \"$MARK\"; cat; echo stdin closed >&2",
        &["test", "-e", "ready-mark"],
    );
    if let Some(swap) = &mut service.swap {
        swap.env.insert("MARK".into(), "ready-mark".into());
        swap.cwd = Some(dir.path().to_path_buf());
    }
    let (services, slots, mut reports) =
        setup(vec![service], vec![SlotConfig::new("gpu0", ["cat"])]);
    assert_eq!(slots.swap("gpu0", "cat").await.error, None);
    assert!(dir.path().join("ready-mark").exists());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        services.loaded("gpu0").as_deref(),
        Some("cat"),
        "still running"
    );
    reports.clear();
    slots.shutdown().await;
    assert_eq!(services.loaded("gpu0"), None);
    // A stop is not reported as a death.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(reports.events.try_recv().is_err());
}

#[tokio::test]
async fn calls_in_flight_hold_off_a_swap() {
    let (services, slots, _reports) = setup(
        vec![script("a", "cat", &["true"]), script("b", "cat", &["true"])],
        vec![SlotConfig::new("gpu0", ["a", "b"])],
    );
    assert_eq!(slots.swap("gpu0", "a").await.error, None);
    let held = services.acquire("a").expect("a call");
    let report = slots.swap("gpu0", "b").await;
    assert_eq!(
        report.error.as_deref(),
        Some("service a has 1 call in flight in slot gpu0")
    );
    assert_eq!(report.loaded.as_deref(), Some("a"), "a stays loaded");
    assert_eq!(services.loaded("gpu0").as_deref(), Some("a"));
    drop(held);
    assert_eq!(slots.swap("gpu0", "b").await.error, None);
    assert!(services.acquire("a").is_err());
    assert!(services.acquire("b").is_ok());
    slots.shutdown().await;
}

#[tokio::test]
async fn a_failing_stop_command_fails_the_swap_and_still_stops_the_server() {
    let port = free_port();
    let mut llama = toy("llama", port, 0, &[]);
    if let Some(swap) = &mut llama.swap {
        swap.stop = Some(vec![
            "sh".into(),
            "-c".into(),
            "echo no such container >&2; exit 2".into(),
        ]);
    }
    let (services, slots, _reports) = setup(
        vec![llama, script("b", "cat", &["true"])],
        vec![SlotConfig::new("gpu0", ["llama", "b"])],
    );
    assert_eq!(slots.swap("gpu0", "llama").await.error, None);
    let report = slots.swap("gpu0", "b").await;
    assert_eq!(
        report.error.as_deref(),
        Some("stop failed: sh exited with exit status 2: no such container")
    );
    assert_eq!(report.loaded, None);
    assert_eq!(services.loaded("gpu0"), None);
    assert!(!answers(port), "SIGTERM stopped it anyway");
    // The slot is usable again.
    assert_eq!(slots.swap("gpu0", "b").await.error, None);
    slots.shutdown().await;
}

#[tokio::test]
async fn requests_run_in_the_background_and_report_to_their_session() {
    let (_services, slots, mut reports) = setup(
        vec![script("a", "cat", &["true"])],
        vec![SlotConfig::new("gpu0", ["a"])],
    );
    let ask = |swap_id, slot: &str, service: &str| SwapRequest {
        swap_id,
        slot: slot.into(),
        service: service.into(),
    };
    slots.request(ask(7, "gpu0", "a"), 1);
    let report = tokio::time::timeout(CALL, reports.next(1))
        .await
        .expect("report");
    assert_eq!((report.swap_id, report.loaded.as_deref()), (7, Some("a")));
    // Asked for on session 1, reported on session 2: not this gateway's.
    slots.request(ask(8, "gpu9", "a"), 1);
    let report = tokio::time::timeout(CALL, reports.next(2))
        .await
        .expect("report");
    assert_eq!(report.swap_id, 0);
    assert_eq!(
        report.error.as_deref(),
        Some("this node has no slot named \"gpu9\"")
    );
    slots.request(ask(9, "gpu0", "zz"), 2);
    let report = tokio::time::timeout(CALL, reports.next(2))
        .await
        .expect("report");
    assert_eq!(report.swap_id, 9);
    assert_eq!(
        report.error.as_deref(),
        Some("slot gpu0 cannot host \"zz\"")
    );
    assert_eq!(
        report.loaded.as_deref(),
        Some("a"),
        "the slot still holds a"
    );
    slots.shutdown().await;
}

#[tokio::test]
async fn shutdown_kills_a_load_under_way() {
    let port = free_port();
    let (_services, slots, _reports) = setup(
        vec![toy("slow", port, 30_000, &[])],
        vec![SlotConfig::new("gpu0", ["slow"])],
    );
    slots.request(
        SwapRequest {
            swap_id: 1,
            slot: "gpu0".into(),
            service: "slow".into(),
        },
        1,
    );
    let started = std::time::Instant::now();
    while !answers(port) {
        assert!(started.elapsed() < CALL, "the toy model never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    slots.shutdown().await;
    // The supervisor kills the group once the aborted swap drops it.
    let started = std::time::Instant::now();
    while answers(port) {
        assert!(started.elapsed() < CALL, "the loading server still runs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
