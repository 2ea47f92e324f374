//! The sections of the suite: what each measures and its table's columns.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use client::{CallOptions, Client, ClientConfig};
use loadgen::{HttpTarget, HttpTargetConfig, QuicTarget};

use crate::echo::EchoProc;
use crate::fleet::{BUILTIN, Fleet};
use crate::peers::{Certs, Peer};
use crate::procs::{cpu_seconds, rss_mib};
use crate::report::{Section, col};
use crate::scenarios::{
    AnyTarget, Step, System, SystemResult, Timing, add_added_latency, interleaved,
};

/// The workload's payload: 64 bytes.
pub(crate) fn payload() -> Bytes {
    Bytes::from(vec![b'x'; 64])
}

/// Everything the sections measure, started once.
pub struct Setup<'a> {
    /// The static backends' ports.
    pub backends: &'a [u16],
    /// The nginx proxy.
    pub nginx: &'a Peer,
    /// HAProxy.
    pub haproxy: &'a Peer,
    /// The peers' TLS material.
    pub certs: &'a Certs,
    /// Switchyard.
    pub fleet: &'a Fleet,
    /// The policies with an `echo-NAME` service.
    pub policies: &'a [String],
    /// Folder of the release binaries (for the fleet program).
    pub bin_dir: &'a Path,
    /// The policy plugins.
    pub plugins_dir: &'a Path,
    /// The run's scratch folder.
    pub scratch: &'a Path,
}

pub(crate) fn http(
    url: String,
    ca: Option<&Path>,
    headers: Vec<(String, String)>,
) -> Result<Arc<AnyTarget>> {
    let target = HttpTarget::new(HttpTargetConfig {
        url,
        payload: payload(),
        headers,
        ca: ca.map(Path::to_path_buf),
        http2: false,
        connections: crate::scenarios::HALF_MAX_IN_FLIGHT,
    })?;
    Ok(Arc::new(AnyTarget::Http(target)))
}

pub(crate) async fn quic(
    fleet: &Fleet,
    service: &str,
    options: CallOptions,
) -> Result<Arc<AnyTarget>> {
    let config = ClientConfig::new(format!("127.0.0.1:{}", fleet.ports.quic), &fleet.ca);
    quic_to(config, service, options).await
}

async fn quic_to(
    config: ClientConfig,
    service: &str,
    options: CallOptions,
) -> Result<Arc<AnyTarget>> {
    let client = Client::connect(config).await.context("SDK connect")?;
    Ok(Arc::new(AnyTarget::Quic(QuicTarget::new(
        client,
        service.to_string(),
        payload(),
        options,
    ))))
}

pub(crate) fn system(
    name: &str,
    path: &str,
    target: Arc<AnyTarget>,
    proxy: Vec<u32>,
    all: Vec<u32>,
) -> System {
    System {
        name: name.into(),
        path: path.into(),
        target,
        proxy_pids: proxy,
        all_pids: all,
    }
}

fn peer_system(name: &str, path: &str, target: Arc<AnyTarget>, peer: &Peer) -> System {
    system(
        name,
        path,
        target,
        vec![peer.proc.pid()],
        vec![peer.proc.pid()],
    )
}

/// Section 1: Switchyard beside nginx and HAProxy, TLS and plain fronts.
///
/// # Errors
/// A target cannot be built.
pub async fn peers(s: &Setup<'_>, timing: &Timing) -> Result<Section> {
    let f = s.fleet;
    let (gw, all) = (vec![f.gateway_pid()], f.all_pids());
    let ca = Some(s.certs.ca.as_path());
    let systems = vec![
        system(
            "direct",
            "client → nginx backend (no proxy)",
            http(format!("http://127.0.0.1:{}/", s.backends[0]), None, vec![])?,
            vec![],
            vec![],
        ),
        peer_system(
            "haproxy-tls",
            "HTTPS → haproxy → backends",
            http(format!("https://localhost:{}/", s.haproxy.tls), ca, vec![])?,
            s.haproxy,
        ),
        peer_system(
            "haproxy-plain",
            "HTTP → haproxy → backends",
            http(
                format!("http://127.0.0.1:{}/", s.haproxy.plain),
                None,
                vec![],
            )?,
            s.haproxy,
        ),
        peer_system(
            "nginx-tls",
            "HTTPS → nginx → backends",
            http(format!("https://localhost:{}/", s.nginx.tls), ca, vec![])?,
            s.nginx,
        ),
        peer_system(
            "nginx-plain",
            "HTTP → nginx → backends",
            http(format!("http://127.0.0.1:{}/", s.nginx.plain), None, vec![])?,
            s.nginx,
        ),
        system(
            "switchyard-quic",
            "SDK, QUIC+TLS → gateway → agent → backend",
            quic(f, "http", CallOptions::default()).await?,
            gw.clone(),
            all.clone(),
        ),
        system(
            "switchyard-http",
            "HTTP → gateway ingress → agent → backend",
            http(
                format!("http://127.0.0.1:{}/v1/call/http", f.ports.http),
                None,
                vec![],
            )?,
            gw,
            all,
        ),
    ];
    let mut results = interleaved(
        "peers",
        &systems,
        &[Step::Max, Step::One, Step::Half],
        timing,
    )
    .await;
    add_added_latency(&mut results, "direct");
    Ok(Section {
        id: "peers".into(),
        title: "1. Switchyard beside HAProxy and nginx".into(),
        timing: *timing,
        clk_tck: crate::procs::clock_ticks(),
        notes: vec![
            "64-byte POSTs; two static nginx backends (one process, two ports). HAProxy: `nbthread 1`, `balance leastconn`, `http-reuse always`; nginx: `worker_processes 1`, `least_conn`, `keepalive 64`. Switchyard: the `least-request` policy, each agent's `http` service posting to one backend; its gateway runs on one thread (`worker_threads = 1`, as HAProxy's and nginx's single thread/worker) and its agents on their default, one thread each.".into(),
            "max = closed loop, 16 in flight; 1 in flight = closed loop, 1 caller; 50% = open loop (Poisson) at half the system's own max of the same rep, latency from the intended send time. Added latency = the system's median p50/p99 (at 1 in flight, and at 50% of its max) minus the backend's own at 1 in flight (`direct`, no proxy). At 50% at most 64 calls are outstanding (the HTTP clients keep 64 connections); calls due past that are sent late and counted from when they were due, and calls never sent in the window count as `client-saturated` errors (column `errors 50%`): where they appear, the client could not drive that rate. calls/CPU-s of the proxy = calls ÷ (utime+stime of the proxy's processes in the window); Switchyard's `all` adds both agents. The load generator runs in the same process as the suite on the same 2 cores, for every system alike.".into(),
            "Switchyard's HTTP ingress is measured plain (`http.tls` off on loopback); its QUIC front is always TLS 1.3.".into(),
        ],
        systems: results,
        columns: vec![
            col("max calls/s", "max.calls_per_s", 0),
            col("calls/CPU-s proxy", "max.calls_per_cpu_s_proxy", 0),
            col("calls/CPU-s all", "max.calls_per_cpu_s_all", 0),
            col("1 in flight p50 µs", "one.p50_us", 0),
            col("p99 µs", "one.p99_us", 0),
            col("added p50 µs", "added.one.p50_us", 0),
            col("added p99 µs", "added.one.p99_us", 0),
            col("50% p50 µs", "half.p50_us", 0),
            col("50% p99 µs", "half.p99_us", 0),
            col("added 50% p50 µs", "added.half.p50_us", 0),
            col("added 50% p99 µs", "added.half.p99_us", 0),
            col("errors max", "max.errors", 0),
            col("errors 50%", "half.errors", 0),
        ],
    })
}

/// Section 2: what the gateway adds.
///
/// # Errors
/// A target cannot be built.
pub async fn overhead(s: &Setup<'_>, timing: &Timing) -> Result<Section> {
    let f = s.fleet;
    let (gw, all) = (vec![f.gateway_pid()], f.all_pids());
    let program = std::env::current_exe().context("the suite's own program")?;
    let echo = EchoProc::start(&program, s.scratch)?;
    let echo_pid = vec![echo.proc.pid()];
    let systems = vec![
        system(
            "direct-backend",
            "client → nginx backend",
            http(format!("http://127.0.0.1:{}/", s.backends[0]), None, vec![])?,
            vec![],
            vec![],
        ),
        system(
            "sdk-direct-echo",
            "SDK → echo server (no gateway, no agent)",
            quic_to(
                ClientConfig::new(echo.addr.to_string(), &echo.ca),
                "echo",
                CallOptions::default(),
            )
            .await?,
            echo_pid.clone(),
            echo_pid,
        ),
        system(
            "sdk-echo",
            "SDK → gateway → agent → echo (built-in)",
            quic(f, "echo", CallOptions::default()).await?,
            gw.clone(),
            all.clone(),
        ),
        system(
            "sdk-http",
            "SDK → gateway → agent → nginx backend",
            quic(f, "http", CallOptions::default()).await?,
            gw.clone(),
            all.clone(),
        ),
        system(
            "ingress-echo",
            "HTTP → gateway ingress → agent → echo",
            http(
                format!("http://127.0.0.1:{}/v1/call/echo", f.ports.http),
                None,
                vec![],
            )?,
            gw,
            all,
        ),
    ];
    let results = interleaved("overhead", &systems, &[Step::Max, Step::One], timing).await;
    Ok(Section {
        id: "overhead".into(),
        title: "2. Gateway overhead".into(),
        timing: *timing,
        clk_tck: crate::procs::clock_ticks(),
        notes: vec![
            "`sdk-direct-echo` is the SDK calling an echo server directly: `switchyard-bench-suite echo-server`, a stand-alone quinn server built on the gateway's own `protocol` and `transport` crates (same ALPN, TLS 1.3, framing, `Call` → `Result` + `Data`), on one thread as the gateway, run as its own process. It stands for SDK → agent with nothing between (the agent has no direct-call listener). `sdk-echo` minus `sdk-direct-echo` is what the gateway hop adds to an echo call: its latency, and in CPU the gateway and agent against the echo server alone.".into(),
            "server CPU µs/call: the CPU (utime+stime from /proc) of the process the SDK talks to, per call at max: the gateway for the Switchyard rows, the echo server for `sdk-direct-echo`; all: the gateway and both agents, or the echo server alone. `direct-backend` (HTTP to nginx, no Switchyard) is the loopback floor of the HTTP rows.".into(),
        ],
        systems: results,
        columns: vec![
            col("max calls/s", "max.calls_per_s", 0),
            col("server CPU µs/call", "max.cpu_us_per_call_proxy", 1),
            col("all CPU µs/call", "max.cpu_us_per_call_all", 1),
            col("1 in flight p50 µs", "one.p50_us", 0),
            col("p99 µs", "one.p99_us", 0),
            col("max p50 µs", "max.p50_us", 0),
            col("max p99 µs", "max.p99_us", 0),
        ],
    })
}

/// Section 3: each wasm policy against the built-in round-robin.
///
/// # Errors
/// A target cannot be built.
pub async fn policies(s: &Setup<'_>, timing: &Timing) -> Result<Section> {
    let f = s.fleet;
    let (gw, all) = (vec![f.gateway_pid()], f.all_pids());
    let mut systems = Vec::new();
    for p in s.policies {
        let service = format!("echo-{p}");
        let served = f.served_policy(&service).unwrap_or_else(|| "?".into());
        let path = if p == BUILTIN {
            format!("built-in round-robin (native; calls report policy `{served}`)")
        } else {
            format!("{p}.wasm (calls report policy `{served}`)")
        };
        systems.push(system(
            p,
            &path,
            quic(f, &service, CallOptions::default()).await?,
            gw.clone(),
            all.clone(),
        ));
    }
    let results = interleaved("policies", &systems, &[Step::Max], timing).await;
    Ok(Section {
        id: "policies".into(),
        title: "3. Policy cost".into(),
        timing: *timing,
        clk_tck: crate::procs::clock_ticks(),
        notes: vec!["SDK → gateway → agent `echo-POLICY` (built-in echo), 16 in flight; each service has its own policy, the built-in round-robin one names no plugin.".into()],
        systems: results,
        columns: vec![
            col("calls/s", "max.calls_per_s", 0),
            col("gateway CPU µs/call", "max.cpu_us_per_call_proxy", 1),
            col("p50 µs", "max.p50_us", 0),
            col("p99 µs", "max.p99_us", 0),
            col("errors", "max.errors", 0),
        ],
    })
}

/// Section 4: cache hits against forwarded calls.
///
/// # Errors
/// A target cannot be built.
pub async fn cache(s: &Setup<'_>, timing: &Timing) -> Result<Section> {
    let f = s.fleet;
    let (gw, all) = (vec![f.gateway_pid()], f.all_pids());
    let forwarded = CallOptions {
        no_cache: true,
        ..CallOptions::default()
    };
    let systems = vec![
        system(
            "hit",
            "SDK → gateway cache (same payload)",
            quic(f, "cached", CallOptions::default()).await?,
            gw.clone(),
            all.clone(),
        ),
        system(
            "forwarded",
            "SDK → gateway → agent → backend (no-cache)",
            quic(f, "cached", forwarded).await?,
            gw.clone(),
            all.clone(),
        ),
        system(
            "hit-http",
            "HTTP ingress → gateway cache",
            http(
                format!("http://127.0.0.1:{}/v1/call/cached", f.ports.http),
                None,
                vec![],
            )?,
            gw.clone(),
            all.clone(),
        ),
        system(
            "forwarded-http",
            "HTTP ingress → agent → backend (no-cache)",
            http(
                format!("http://127.0.0.1:{}/v1/call/cached", f.ports.http),
                None,
                vec![("x-switchyard-no-cache".into(), "true".into())],
            )?,
            gw,
            all,
        ),
    ];
    let results = interleaved("cache", &systems, &[Step::Max, Step::One], timing).await;
    Ok(Section {
        id: "cache".into(),
        title: "4. Cache: hits vs forwarded calls".into(),
        timing: *timing,
        clk_tck: crate::procs::clock_ticks(),
        notes: vec!["The `cached` service: idempotent `http` to the backends, `cache_ttl_s = 3600`; every call has the same 64-byte payload, so after the first all are hits unless the call says no-cache.".into()],
        systems: results,
        columns: vec![
            col("max calls/s", "max.calls_per_s", 0),
            col("gateway CPU µs/call", "max.cpu_us_per_call_proxy", 1),
            col("gateway+agents CPU µs/call", "max.cpu_us_per_call_all", 1),
            col("1 in flight p50 µs", "one.p50_us", 0),
            col("p99 µs", "one.p99_us", 0),
        ],
    })
}

/// Section 6: CPU and memory of a gateway and agents with nothing to do.
pub async fn idle(s: &Setup<'_>, timing: &Timing) -> Section {
    let f = s.fleet;
    let window = timing.duration_s.max(2.0);
    let mut reps = Vec::new();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for rep in 0..timing.reps {
        let (g0, a0) = (
            cpu_seconds(&[f.gateway_pid()]),
            cpu_seconds(&f.agent_pids()),
        );
        tokio::time::sleep(Duration::from_secs_f64(window)).await;
        let (g1, a1) = (
            cpu_seconds(&[f.gateway_pid()]),
            cpu_seconds(&f.agent_pids()),
        );
        let mut m = BTreeMap::new();
        m.insert("gateway_cpu_pct".to_string(), (g1 - g0) / window * 100.0);
        m.insert(
            "agents_cpu_pct".to_string(),
            (a1 - a0) / window * 100.0 / f.agents.len().max(1) as f64,
        );
        m.insert("gateway_rss_mib".to_string(), rss_mib(&[f.gateway_pid()]));
        m.insert(
            "agents_rss_mib".to_string(),
            rss_mib(&f.agent_pids()) / f.agents.len().max(1) as f64,
        );
        println!("[idle {}/{}] {m:?}", rep + 1, timing.reps);
        reps.push(m);
    }
    Section {
        id: "idle".into(),
        title: "6. Idle".into(),
        timing: *timing,
        clk_tck: crate::procs::clock_ticks(),
        notes: vec![format!(
            "Nothing calls; windows of {window} s after the load sections. Agents report stats every second. CPU % of one core; an agent's figures are the mean of the {} agents.",
            f.agents.len()
        )],
        systems: vec![SystemResult {
            name: "switchyard".into(),
            path: format!(
                "gateway + {} agents, {} plugins loaded",
                f.agents.len(),
                s.policies.len().saturating_sub(1)
            ),
            medians: crate::scenarios::medians(&reps),
            reps: Vec::new(),
        }],
        columns: vec![
            col("gateway CPU %", "gateway_cpu_pct", 2),
            col("agent CPU %", "agents_cpu_pct", 2),
            col("gateway RSS MiB", "gateway_rss_mib", 1),
            col("agent RSS MiB", "agents_rss_mib", 1),
        ],
    }
}
