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
    // A direct port too: the package's leases call the node there.
    fleet.spawn_direct_agent("node-a", &services);
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
            .env("SWITCHYARD_AGENT_TOKEN", TOKEN)
            .output()
            .expect("pytest runs")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "pytest failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(" passed"), "{stdout}");
    assert!(!stdout.contains("skipped"), "{stdout}");
}

/// The wheel `make python` built (into the target folder's `wheels/`)
/// installs into a fresh virtualenv with nothing else and imports there.
#[test]
fn the_wheel_installs_into_a_fresh_virtualenv() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), std::path::PathBuf::from);
    let wheels = target.join("wheels");
    let wheel = std::fs::read_dir(&wheels)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("switchyard_fleet-") && n.ends_with(".whl"))
        });
    let Some(wheel) = wheel else {
        panic!(
            "no switchyard_fleet wheel in {}: run `make python`",
            wheels.display()
        );
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let venv = dir.path().join("venv");
    let run = |program: &Path, args: &[&std::ffi::OsStr]| {
        let out = Command::new(program).args(args).output().expect("runs");
        assert!(
            out.status.success(),
            "{} {args:?}: {}\n{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(
        &root.join(".venv/bin/python"),
        &["-m".as_ref(), "venv".as_ref(), venv.as_os_str()],
    );
    run(
        &venv.join("bin/pip"),
        &[
            "install".as_ref(),
            "--quiet".as_ref(),
            "--no-index".as_ref(),
            wheel.as_os_str(),
        ],
    );
    let check = "import switchyard_fleet as sf; print(sf.Client.__name__, sf.Node.__name__, sf.Overloaded.__mro__[1].__name__, sf._native.__file__)";
    let out = run(&venv.join("bin/python"), &["-c".as_ref(), check.as_ref()]);
    assert!(out.starts_with("Client Node SwitchyardError "), "{out}");
    assert!(
        out.contains(&venv.display().to_string()),
        "imported from elsewhere: {out}"
    );
}
