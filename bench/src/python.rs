//! Section `python`: the Python package's client (`switchyard_fleet`,
//! installed into the project's virtualenv by `make python`) beside the
//! Rust SDK, against the suite's gateway and its `echo` service. Each is
//! its own process, closed loop, interleaved in each rep: the Rust SDK
//! through `switchyard bench` (the release CLI), the Python client through
//! `bench/python/client_load.py` (threads sharing one blocking `Client`,
//! or asyncio tasks sharing one `AsyncClient`). Goals: p50 at 1 in flight
//! within 50 µs of the Rust SDK's; at 16 in flight at least half its calls
//! per second. Last, a Python node (`bench/python/node_serve.py`: the
//! package's `Node` serving `py_echo`, a function returning its payload)
//! under the Rust SDK at 16 in flight, beside the same load on the agent's
//! built-in `echo`; goal: at least 5 000 calls/s.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::report::{Section, col};
use crate::scenarios::{SystemResult, Timing, median, medians};
use crate::sections::Setup;

/// The virtualenv's Python, relative to the suite's working folder (the
/// repository's root under `make bench`).
const PYTHON: &str = ".venv/bin/python";
/// The load script, relative to the same folder.
const SCRIPT: &str = "bench/python/client_load.py";
/// The Python node's script, relative to the same folder.
const NODE_SCRIPT: &str = "bench/python/node_serve.py";
/// The Python node's goal, calls per second.
const NODE_GOAL: f64 = 5000.0;
/// Callers in the throughput runs.
const IN_FLIGHT: usize = 16;

/// One closed loop: who calls, how many at once.
struct Run {
    name: &'static str,
    path: &'static str,
    /// The service called.
    service: &'static str,
    in_flight: usize,
    /// `None`: the Rust SDK (the CLI); else the script's `--mode`.
    python: Option<&'static str>,
}

const RUNS: [Run; 6] = [
    Run {
        name: "rust-sdk-1",
        path: "Rust SDK (`switchyard bench`) → gateway → agent echo, 1 in flight",
        service: "echo",
        in_flight: 1,
        python: None,
    },
    Run {
        name: "python-1",
        path: "Python `Client.call` → gateway → agent echo, 1 in flight",
        service: "echo",
        in_flight: 1,
        python: Some("threads"),
    },
    Run {
        name: "rust-sdk-16",
        path: "Rust SDK, 16 in flight",
        service: "echo",
        in_flight: IN_FLIGHT,
        python: None,
    },
    Run {
        name: "python-16-threads",
        path: "Python `Client.call` from 16 threads sharing one client",
        service: "echo",
        in_flight: IN_FLIGHT,
        python: Some("threads"),
    },
    Run {
        name: "python-16-asyncio",
        path: "Python `AsyncClient.call`, 16 asyncio tasks",
        service: "echo",
        in_flight: IN_FLIGHT,
        python: Some("asyncio"),
    },
    Run {
        name: "python-node-16",
        path: "Rust SDK, 16 in flight → gateway → a Python node's `py_echo` (switchyard_fleet.Node)",
        service: "py_echo",
        in_flight: IN_FLIGHT,
        python: None,
    },
];

/// The section: a note instead of figures when the package is missing.
///
/// # Errors
/// A load run fails or prints no report.
pub fn section(s: &Setup<'_>, timing: &Timing) -> Result<Section> {
    let mut section = Section {
        id: "python".into(),
        title: "Python client: switchyard_fleet beside the Rust SDK".into(),
        timing: *timing,
        clk_tck: crate::procs::clock_ticks(),
        notes: Vec::new(),
        systems: Vec::new(),
        columns: vec![
            col("calls/s", "calls_per_s", 0),
            col("p50 µs", "p50_us", 0),
            col("p99 µs", "p99_us", 0),
            col("p50 − Rust SDK's µs (goal ≤ 50)", "added_p50_us", 0),
            col("calls/s ÷ Rust SDK's (goal ≥ 0.5)", "ratio", 2),
            col("errors", "errors", 0),
        ],
    };
    let installed = Path::new(PYTHON).exists()
        && Command::new(PYTHON)
            .args(["-c", "import switchyard_fleet"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !installed {
        section.notes.push(format!(
            "Not run: switchyard_fleet is not importable from {PYTHON} (`make python` builds and installs it)."
        ));
        return Ok(section);
    }
    let gateway = format!("127.0.0.1:{}", s.fleet.ports.quic);
    let cli = s.bin_dir.join("switchyard");
    let _node = PythonNode::start(&cli, &gateway, &s.fleet.ca)?;
    let mut reps: Vec<Vec<BTreeMap<String, f64>>> = vec![Vec::new(); RUNS.len()];
    for rep in 0..timing.reps {
        for (i, run) in RUNS.iter().enumerate() {
            let figures = match run.python {
                None => rust_sdk(
                    &cli,
                    &gateway,
                    &s.fleet.ca,
                    run.service,
                    run.in_flight,
                    timing,
                )?,
                Some(mode) => python(mode, &gateway, &s.fleet.ca, run.in_flight, timing)?,
            };
            println!("[python {} rep {rep}] {figures:?}", run.name);
            reps[i].push(figures);
        }
    }
    // Per rep, against the Rust SDK's run at the same in-flight.
    let against = |i: usize, base: usize, key: &str, f: fn(f64, f64) -> f64| {
        let per_rep: Vec<f64> = reps[i]
            .iter()
            .zip(&reps[base])
            .map(|(p, r)| f(p[key], r[key]))
            .collect();
        median(&per_rep)
    };
    for (i, run) in RUNS.iter().enumerate() {
        let mut figures = medians(&reps[i]);
        if run.service != "echo" {
            figures.insert("ratio".into(), against(i, 2, "calls_per_s", |p, r| p / r));
        } else if run.python.is_some() {
            if run.in_flight == 1 {
                figures.insert("added_p50_us".into(), against(i, 0, "p50_us", |p, r| p - r));
            } else {
                figures.insert("ratio".into(), against(i, 2, "calls_per_s", |p, r| p / r));
            }
        }
        section.systems.push(SystemResult {
            name: run.name.into(),
            path: run.path.into(),
            medians: figures,
            reps: Vec::new(),
        });
    }
    let figure = |name: &str, key: &str| {
        section
            .systems
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.medians.get(key).copied())
            .unwrap_or(f64::NAN)
    };
    let added = figure("python-1", "added_p50_us");
    let threads = figure("python-16-threads", "ratio");
    let tasks = figure("python-16-asyncio", "ratio");
    let node = figure("python-node-16", "calls_per_s");
    let node_ratio = figure("python-node-16", "ratio");
    section.notes = vec![
        format!(
            "The suite's gateway and agents, service `echo` (64-byte payloads). Each run is a process of its own: the Rust SDK through the release `switchyard bench echo --concurrency N` (loadgen), the Python client through `{SCRIPT}` with the package `make python` installed (threads sharing one blocking `Client`, whose calls release the interpreter; or asyncio tasks sharing one `AsyncClient`); closed loops, interleaved in each rep. p50 − Rust SDK's and the ratio are per rep against the Rust SDK's run at the same in-flight, then their median."
        ),
        format!(
            "Goals: p50 at 1 in flight within 50 µs of the Rust SDK's: {added:.0} µs ({}); at {IN_FLIGHT} in flight at least half the Rust SDK's calls per second: threads {threads:.2}, asyncio {tasks:.2} ({}).",
            if added <= 50.0 { "met" } else { "not met" },
            if threads.max(tasks) >= 0.5 {
                "met"
            } else {
                "not met"
            }
        ),
        format!(
            "A Python node (`{NODE_SCRIPT}`: `Node` serving `py_echo`, which returns its payload, max_concurrent {IN_FLIGHT}) under the Rust SDK at {IN_FLIGHT} in flight: {node:.0} calls/s, {node_ratio:.2}× the agent's built-in `echo` under the same load (goal ≥ {NODE_GOAL:.0} calls/s: {}).",
            if node >= NODE_GOAL { "met" } else { "not met" }
        ),
    ];
    Ok(section)
}

/// The Python node process, killed when dropped.
struct PythonNode(std::process::Child);

impl PythonNode {
    /// Starts the node and waits (at most 30 s) until a call of
    /// `py_echo` through the gateway succeeds.
    fn start(cli: &Path, gateway: &str, ca: &Path) -> Result<Self> {
        let child = Command::new(PYTHON)
            .arg(NODE_SCRIPT)
            .args([gateway, &ca.display().to_string(), crate::fleet::TOKEN])
            .arg(IN_FLIGHT.to_string())
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("starting the Python node")?;
        let node = Self(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let called = Command::new(cli)
                .arg("--gateway")
                .arg(gateway)
                .arg("--ca")
                .arg(ca)
                .args(["call", "py_echo", "--data", "ready"])
                .output()
                .is_ok_and(|o| o.status.success());
            if called {
                return Ok(node);
            }
            if std::time::Instant::now() > deadline {
                bail!("the Python node did not serve py_echo within 30 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

impl Drop for PythonNode {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A closed loop of the Rust SDK through the release CLI's `bench`.
fn rust_sdk(
    cli: &Path,
    gateway: &str,
    ca: &Path,
    service: &str,
    in_flight: usize,
    timing: &Timing,
) -> Result<BTreeMap<String, f64>> {
    let out = Command::new(cli)
        .arg("--gateway")
        .arg(gateway)
        .arg("--ca")
        .arg(ca)
        .args(["bench", service, "--json", "--concurrency"])
        .arg(in_flight.to_string())
        .arg("--duration-s")
        .arg(timing.duration_s.to_string())
        .arg("--warm-up-s")
        .arg(timing.warm_up_s.to_string())
        .output()
        .with_context(|| format!("running {}", cli.display()))?;
    if !out.status.success() {
        bail!(
            "switchyard bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("switchyard bench's JSON report")?;
    let get = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    Ok(BTreeMap::from([
        ("calls_per_s".into(), get(&report["calls_per_s"])),
        ("p50_us".into(), get(&report["latency_us"]["p50"])),
        ("p99_us".into(), get(&report["latency_us"]["p99"])),
        ("errors".into(), get(&report["errors"])),
    ]))
}

/// A closed loop of the Python client through the load script.
fn python(
    mode: &str,
    gateway: &str,
    ca: &Path,
    in_flight: usize,
    timing: &Timing,
) -> Result<BTreeMap<String, f64>> {
    let out = Command::new(PYTHON)
        .args([SCRIPT, "--gateway", gateway, "--mode", mode, "--ca"])
        .arg(ca)
        .arg("--in-flight")
        .arg(in_flight.to_string())
        .arg("--seconds")
        .arg(timing.duration_s.to_string())
        .arg("--warm-up")
        .arg(timing.warm_up_s.to_string())
        .output()
        .context("running the Python load script")?;
    if !out.status.success() {
        bail!("{SCRIPT} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("the Python load script's JSON")?;
    let get = |key: &str| report[key].as_f64().unwrap_or(f64::NAN);
    Ok(BTreeMap::from([
        ("calls_per_s".into(), get("calls_per_s")),
        ("p50_us".into(), get("p50_us")),
        ("p99_us".into(), get("p99_us")),
        ("errors".into(), get("errors")),
    ]))
}
