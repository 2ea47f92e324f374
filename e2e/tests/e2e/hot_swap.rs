//! Hot-swap under load, runtime policy changes, and hostile plugins through
//! the gateway: no call may be lost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::{ADMIN, Fleet, TOKEN, built_plugin, plugin_copies, service};
use client::{Client, ErrorKind};
use gateway::config::ServiceConfig;
use tokio::sync::Mutex;

/// Installs `bytes` as `dir/name` the documented way: write, then rename.
fn install(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// Calls `echo` in a loop on 4 tasks until stopped; records each call's
/// picking policy, and every failure.
struct Load {
    stop: Arc<AtomicBool>,
    policies: Arc<Mutex<Vec<String>>>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(client: Arc<Client>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let policies = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..4)
            .map(|_| {
                let (client, stop) = (client.clone(), stop.clone());
                let (policies, failures) = (policies.clone(), failures.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match client.call("echo", "ping").await {
                            Ok(r) => policies.lock().await.push(r.meta.policy),
                            Err(e) => failures.lock().await.push(e.to_string()),
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            policies,
            failures,
            tasks,
        }
    }

    /// Waits until the latest calls are picked by `policy`.
    async fn wait_for(&self, policy: &str) {
        let start = Instant::now();
        loop {
            let seen = self.policies.lock().await;
            if seen.len() >= 8 && seen[seen.len() - 8..].iter().all(|p| p == policy) {
                return;
            }
            drop(seen);
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{policy} never became active"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn calls(&self) -> usize {
        self.policies.lock().await.len()
    }

    async fn finish(self) -> (Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let policies = self.policies.lock().await.clone();
        let failures = self.failures.lock().await.clone();
        (policies, failures)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_load_loses_no_call() {
    let mut fleet = Fleet::start(|c| {
        c.plugins_dir = plugin_copies(c.data_dir.parent().unwrap(), &["round-robin"]);
        c.services.insert(
            "echo".into(),
            ServiceConfig {
                policy: Some("latency".into()),
                ..ServiceConfig::default()
            },
        );
    })
    .await;
    let plugins = fleet.gateway.policies().clone();
    let dir = fleet.dir.path().join("plugins");
    fleet.spawn_agent("node-a", TOKEN, &service("echo", "echo", ""));
    fleet.spawn_agent("node-b", TOKEN, &service("echo", "echo", ""));
    fleet.wait_nodes(2).await;
    let client = Arc::new(fleet.client().await);
    let load = Load::start(client.clone());

    // `latency` is configured for echo but not loaded: the default picks.
    load.wait_for("round-robin").await;

    // 1. A new plugin file appears: echo switches to it, calls keep flowing.
    install(
        &dir,
        "active.wasm",
        &std::fs::read(built_plugin("latency")).unwrap(),
    );
    load.wait_for("latency").await;

    // 2. The file is replaced by garbage: refused, the loaded version stays.
    install(&dir, "active.wasm", b"\0asm but not really a component");
    let start = Instant::now();
    while client.policies().await.unwrap().rejected.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "broken file never rejected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = load.calls().await;
    while load.calls().await < before + 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    load.wait_for("latency").await;
    let table = client.policies().await.unwrap();
    assert!(table.rejected[0].file.ends_with("active.wasm"), "{table:?}");
    assert!(plugins.is_loaded("latency"));

    // 3. The file is removed: echo falls back to the default policy.
    std::fs::remove_file(dir.join("active.wasm")).unwrap();
    load.wait_for("round-robin").await;
    assert!(!plugins.is_loaded("latency"));

    let (policies, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "no call failed during the swaps: {failures:?}"
    );
    assert!(
        policies.len() > 50,
        "the load kept running: {} calls",
        policies.len()
    );
    assert!(
        policies
            .iter()
            .all(|p| p == "round-robin" || p == "latency"),
        "never the fallback"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_are_listed_and_changed_at_runtime() {
    let mut fleet = Fleet::start(|c| {
        c.plugins_dir = plugin_copies(
            c.data_dir.parent().unwrap(),
            &["round-robin", "least-request"],
        );
    })
    .await;
    fleet.spawn_agent("node-a", TOKEN, &service("echo", "echo", ""));
    fleet.wait_nodes(1).await;
    let client = fleet.client().await;
    assert_eq!(
        client.call("echo", "x").await.unwrap().meta.policy,
        "round-robin"
    );

    let table = client.policies().await.unwrap();
    let names: Vec<_> = table.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["least-request", "round-robin"]);
    let rr = &table.policies[1];
    assert!(
        rr.file.ends_with("round-robin.wasm") && rr.content_hash.len() == 64,
        "{rr:?}"
    );
    assert_eq!(rr.picks_total, 1);
    assert_eq!(table.services[0].service, "echo");
    assert_eq!(table.services[0].active, "round-robin");

    let e = client
        .set_policy("wrong", "echo", "least-request")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Unauthorized), "{e}");
    let e = client.set_policy(ADMIN, "echo", "nope").await.unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::BadRequest), "{e}");
    assert!(
        e.to_string().contains("least-request, round-robin"),
        "lists what is loaded: {e}"
    );

    let ack = client
        .set_policy(ADMIN, "echo", "least-request")
        .await
        .unwrap();
    assert!(ack.contains("least-request"), "{ack}");
    assert_eq!(
        client.call("echo", "x").await.unwrap().meta.policy,
        "least-request"
    );
    let table = client.policies().await.unwrap();
    assert_eq!(
        table.services[0].configured.as_deref(),
        Some("least-request")
    );

    let e = client.call("echo", "x").policy("nope").await.unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::BadRequest), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_leave_the_gateway_healthy() {
    let hostile = ["spin", "memory-bomb", "deep-recursion", "panic-trap"];
    let mut fleet = Fleet::start(|c| {
        let mut names = vec!["round-robin", "tests/snoop", "tests/evil-import"];
        names.extend([
            "tests/spin",
            "tests/memory-bomb",
            "tests/deep-recursion",
            "tests/panic-trap",
        ]);
        c.plugins_dir = plugin_copies(c.data_dir.parent().unwrap(), &names);
    })
    .await;
    fleet.spawn_agent("node-a", TOKEN, &service("echo", "echo", ""));
    fleet.wait_nodes(1).await;
    let client = fleet.client().await;

    for name in hostile {
        let r = client
            .call("echo", "x")
            .policy(name)
            .hint("evil", "1")
            .await
            .expect("fail-open: the call is served");
        assert_eq!(
            r.meta.policy, "builtin-round-robin",
            "{name} trapped, the fallback picked"
        );
        // The trapped policy is rebuilt off the hot path: until its fresh
        // instance is in, the fallback serves its calls.
        let start = std::time::Instant::now();
        loop {
            let r = client.call("echo", "x").policy(name).await.unwrap();
            if r.meta.policy == name {
                break;
            }
            assert_eq!(
                r.meta.policy, "builtin-round-robin",
                "{name} is being rebuilt"
            );
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "{name} never recovered in a fresh instance"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let e = client
        .call("echo", "x")
        .policy("snoop")
        .hint("evil", "1")
        .hint("tcp_port", port)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Rejected), "{e}");
    let report = e.to_string();
    assert!(!report.contains("ALLOWED"), "every access denied: {report}");
    assert!(
        report.contains("env=0") && report.contains("args=0"),
        "{report}"
    );
    assert!(listener.accept().is_err(), "no connection reached the host");

    let table = client.policies().await.unwrap();
    for name in hostile {
        let p = table.policies.iter().find(|p| p.name == name).unwrap();
        assert_eq!(p.traps_total, 1, "{name}");
    }
    let rejected = &table.rejected;
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(rejected[0].file.ends_with("evil-import.wasm"));
    assert!(
        rejected[0].reason.contains("evil:net/socket"),
        "{}",
        rejected[0].reason
    );
    assert_eq!(
        client.call("echo", "still fine").await.unwrap().meta.policy,
        "round-robin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_turns_a_trap_into_an_error() {
    let mut fleet = Fleet::start(|c| {
        c.plugins_dir = plugin_copies(
            c.data_dir.parent().unwrap(),
            &["round-robin", "tests/panic-trap"],
        );
        c.fail_open = false;
    })
    .await;
    fleet.spawn_agent("node-a", TOKEN, &service("echo", "echo", ""));
    fleet.wait_nodes(1).await;
    let client = fleet.client().await;
    let e = client
        .call("echo", "x")
        .policy("panic-trap")
        .hint("evil", "1")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Internal), "{e}");
    assert!(e.to_string().contains("panic-trap"), "{e}");
    // The trapped policy is rebuilt off the hot path; failing closed, its
    // calls meanwhile fail (`internal`, "being rebuilt"), then it serves.
    let start = std::time::Instant::now();
    let r = loop {
        match client.call("echo", "x").policy("panic-trap").await {
            Ok(r) => break r,
            Err(e) => {
                assert_eq!(e.kind(), Some(ErrorKind::Internal), "{e}");
                assert!(e.to_string().contains("rebuilt"), "{e}");
                assert!(
                    start.elapsed() < std::time::Duration::from_secs(10),
                    "never rebuilt"
                );
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    };
    assert_eq!(r.meta.policy, "panic-trap");
}
