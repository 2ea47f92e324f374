//! Section `python`: the Python package's client (`switchyard_fleet`,
//! installed into the project's virtualenv by `make python`) beside the
//! Rust SDK, against the suite's gateway and its `echo` service. Each is
//! its own process, closed loop, interleaved in each rep: the Rust SDK
//! through `switchyard bench` (the release CLI), the Python client through
//! `bench/python/client_load.py` (threads sharing one blocking `Client`,
//! or asyncio tasks sharing one `AsyncClient`). Goals: p50 at 1 in flight
//! within 50 µs of the Rust SDK's; at 16 in flight at least half its calls
//! per second.

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
/// Callers in the throughput runs.
const IN_FLIGHT: usize = 16;

/// One closed loop: who calls, how many at once.
struct Run {
    name: &'static str,
    path: &'static str,
    in_flight: usize,
    /// `None`: the Rust SDK (the CLI); else the script's `--mode`.
    python: Option<&'static str>,
}

const RUNS: [Run; 5] = [
    Run {
        name: "rust-sdk-1",
        path: "Rust SDK (`switchyard bench`) → gateway → agent echo, 1 in flight",
        in_flight: 1,
        python: None,
    },
    Run {
        name: "python-1",
        path: "Python `Client.call` → gateway → agent echo, 1 in flight",
        in_flight: 1,
        python: Some("threads"),
    },
    Run {
        name: "rust-sdk-16",
        path: "Rust SDK, 16 in flight",
        in_flight: IN_FLIGHT,
        python: None,
    },
    Run {
        name: "python-16-threads",
        path: "Python `Client.call` from 16 threads sharing one client",
        in_flight: IN_FLIGHT,
        python: Some("threads"),
    },
    Run {
        name: "python-16-asyncio",
        path: "Python `AsyncClient.call`, 16 asyncio tasks",
        in_flight: IN_FLIGHT,
        python: Some("asyncio"),
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
    let mut reps: Vec<Vec<BTreeMap<String, f64>>> = vec![Vec::new(); RUNS.len()];
    for rep in 0..timing.reps {
        for (i, run) in RUNS.iter().enumerate() {
            let figures = match run.python {
                None => rust_sdk(&cli, &gateway, &s.fleet.ca, run.in_flight, timing)?,
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
        if run.python.is_some() {
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
    ];
    Ok(section)
}

/// A closed loop of the Rust SDK through the release CLI's `bench`.
fn rust_sdk(
    cli: &Path,
    gateway: &str,
    ca: &Path,
    in_flight: usize,
    timing: &Timing,
) -> Result<BTreeMap<String, f64>> {
    let out = Command::new(cli)
        .arg("--gateway")
        .arg(gateway)
        .arg("--ca")
        .arg(ca)
        .args(["bench", "echo", "--json", "--concurrency"])
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
