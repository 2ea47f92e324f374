//! Section `threads`: the gateway on one thread against the gateway on
//! one worker per core, on the forwarded `http` path (HTTP ingress and
//! QUIC SDK) and the OpenAI path, measured interleaved in one run. Its
//! figures decide the gateway's default `worker_threads`.

use anyhow::Result;
use client::CallOptions;

use crate::fleet::{Fleet, FleetSpec};
use crate::report::{Section, col};
use crate::scenarios::{Step, System, Timing, interleaved};
use crate::sections::{Setup, http, quic, system};

/// The three paths through `fleet`, named with `label`.
async fn paths(fleet: &Fleet, label: &str) -> Result<Vec<System>> {
    let (gw, all) = (vec![fleet.gateway_pid()], fleet.all_pids());
    Ok(vec![
        system(
            &format!("openai-{label}"),
            "OpenAI client → gateway ingress → agent `openai` → backend",
            crate::routers::post(fleet.ports.http)?,
            gw.clone(),
            all.clone(),
        ),
        system(
            &format!("http-{label}"),
            "HTTP → gateway ingress → agent `http` → backend",
            http(
                format!("http://127.0.0.1:{}/v1/call/http", fleet.ports.http),
                None,
                vec![],
            )?,
            gw.clone(),
            all.clone(),
        ),
        system(
            &format!("quic-{label}"),
            "SDK, QUIC+TLS → gateway → agent `http` → backend",
            quic(fleet, "http", CallOptions::default()).await?,
            gw,
            all,
        ),
    ])
}

/// Section `threads`: the suite's one-thread fleet against a second fleet
/// whose gateway has `worker_threads` = the core count.
///
/// # Errors
/// The second fleet does not start, or a target cannot be built.
pub async fn section(s: &Setup<'_>, timing: &Timing) -> Result<Section> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let spec = FleetSpec {
        bin_dir: s.bin_dir.to_path_buf(),
        plugins_dir: s.plugins_dir.to_path_buf(),
        policies: s.policies.to_vec(),
        backends: s.backends.to_vec(),
        gateway_threads: Some(cores),
    };
    let many = Fleet::start(&spec, &s.scratch.join("threads"))?;
    let mut systems = paths(s.fleet, "1-thread").await?;
    systems.extend(paths(&many, &format!("{cores}-threads")).await?);
    // Interleave the settings path by path: 1 thread, then per core.
    let order = [0, 3, 1, 4, 2, 5];
    let systems: Vec<System> = order.iter().map(|&i| systems[i].clone()).collect();
    let results = interleaved("threads", &systems, &[Step::Max, Step::One], timing).await;
    Ok(Section {
        id: "threads".into(),
        title: "8. The gateway's worker threads: one, or one per core".into(),
        timing: *timing,
        clk_tck: crate::procs::clock_ticks(),
        notes: vec![
            format!("Two fleets side by side, each a gateway and two agents (one thread each) in front of the same nginx backends: the gateway with `worker_threads = 1` (a current-thread runtime) and with `worker_threads = {cores}` (one worker per core, tokio's multi-thread runtime). Systems interleaved, medians; max = closed loop, 16 in flight; 1 in flight = one caller."),
            "Paths: `openai` posts a one-message chat completion (`model = \"chat\"`) to the ingress's `/v1/chat/completions`, relayed by each agent's `openai` service to a backend that answers a fixed completion with `usage`; `http` posts 64 bytes to `/v1/call/http`; `quic` calls the same `http` service with the SDK. calls/CPU-s gateway = calls ÷ the gateway's utime+stime in the window; all adds both agents. The load generator runs in the suite's process on the same cores.".into(),
        ],
        systems: results,
        columns: vec![
            col("max calls/s", "max.calls_per_s", 0),
            col("calls/CPU-s gateway", "max.calls_per_cpu_s_proxy", 0),
            col("calls/CPU-s all", "max.calls_per_cpu_s_all", 0),
            col("max p50 µs", "max.p50_us", 0),
            col("max p99 µs", "max.p99_us", 0),
            col("1 in flight p50 µs", "one.p50_us", 0),
            col("p99 µs", "one.p99_us", 0),
            col("errors max", "max.errors", 0),
        ],
    })
}
