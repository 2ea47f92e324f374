//! The Python package (`switchyard-fleet`, built and installed into the
//! project's virtualenv by `make python`) against a real gateway and
//! agent: its pytest suite (python/tests) runs with the gateway's address,
//! CA and admin token in its environment.

use std::path::Path;
use std::process::Command;

use crate::common::{ADMIN, Fleet, TOKEN, service};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_package_passes_its_pytest_suite_against_a_real_gateway() {
    let mut fleet = Fleet::start(|_| {}).await;
    let services = [
        service("echo", "echo", "max_concurrent = 64"),
        service("sleep", "sleep", "max_concurrent = 64"),
        service("fail", "command", r#"command = ["sh", "-c", "exit 3"]"#),
        service(
            "lines",
            "command",
            r#"command = ["sh", "-c", "echo one; sleep 0.5; echo two"]"#,
        ),
        service(
            "partial",
            "command",
            r#"command = ["sh", "-c", "echo partial; sleep 0.1; exit 3"]"#,
        ),
        service(
            "forever",
            "command",
            "command = [\"sh\", \"-c\", \"echo started; sleep 30\"]\nmax_concurrent = 1",
        ),
        crate::jobs::shell(4),
    ]
    .concat();
    fleet.spawn_agent("node-a", TOKEN, &services);
    fleet.wait_nodes(1).await;

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    let installed = python.exists()
        && Command::new(&python)
            .args(["-c", "import switchyard_fleet"])
            .output()
            .is_ok_and(|o| o.status.success());
    assert!(
        installed,
        "switchyard_fleet is not installed in {}: run `make python` (part of `make setup`)",
        python.display()
    );
    let (addr, ca) = (fleet.addr.clone(), fleet.ca());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .arg(root.join("python/tests"))
            .env("SWITCHYARD_GATEWAY", addr)
            .env("SWITCHYARD_CA", ca)
            .env("SWITCHYARD_ADMIN_TOKEN", ADMIN)
            .output()
            .expect("pytest runs")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "pytest failed:\n{stdout}\n{stderr}\n{}",
        fleet.agent(0).log_text()
    );
    assert!(stdout.contains(" passed"), "{stdout}");
    assert!(!stdout.contains("skipped"), "{stdout}");
}
