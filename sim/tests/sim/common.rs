//! What the tests share: the plugins folder and small scenarios.

use std::path::{Path, PathBuf};

use switchyard_sim::{Report, Run, Scenario, run_all};

/// `plugins/dist`, built by `make plugins`.
pub fn plugins() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist");
    assert!(
        dir.join("random.wasm").exists(),
        "{} has no random.wasm: run `make plugins` first",
        dir.display()
    );
    dir
}

/// This file's `data/` folder (trace files).
pub fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sim/data")
}

/// A scenario from TOML, trace files relative to `data/`.
pub fn scenario(toml: &str) -> Scenario {
    Scenario::parse(toml, "test", &data()).expect("scenario")
}

/// Runs `scenario` with `policy` (a file of plugins/dist).
pub fn run(scenario: &Scenario, policy: &str) -> Report {
    let runs = [Run {
        scenario: scenario.clone(),
        policy: plugins().join(policy),
    }];
    run_all(&runs, 1).pop().expect("one result").expect("run")
}

/// A scenario of one node of one service with the given extra TOML.
pub fn one_node(node: &str, rest: &str) -> Scenario {
    scenario(&format!(
        r#"
duration_s = 100.0
policies = ["round-robin.wasm"]
[core]
swap = false
[[services]]
name = "svc"
service_time = {{ kind = "fixed", ms = 1000.0 }}
[[nodes]]
id = "n"
services = ["svc"]
{node}
{rest}
"#
    ))
}
