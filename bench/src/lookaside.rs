//! Section `lookaside`: look-aside calls (the gateway grants a lease on a
//! node, the SDK calls the node's direct port itself) beside proxied calls
//! and HAProxy, in one run on the same backends. Two tables: the gateway's
//! CPU per call and the latency at 1 in flight (a lease per call, sessions
//! of [`SESSION_CALLS`] calls, long-held leases as the direct baseline), and
//! 16 MiB payloads and long streams through each mode.

mod fleet;
mod targets;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use client::{CallOptions, Client, ClientConfig};
use loadgen::{Arrival, Plan, QuicTarget};

use crate::report::{Section, col};
use crate::scenarios::{
    AnyTarget, IN_FLIGHT, Step, System, SystemResult, Timing, measure, median, medians,
};
use crate::sections::{Setup, http, payload, system};
use fleet::{LookAsideFleet, MAX_LEASE_CALLS, MAX_PAYLOAD};
pub use targets::LookAside;
use targets::{LeasePool, Route, StreamTarget};

/// The service of the CPU and latency table: an `http` service posting to
/// the static backends HAProxy forwards to.
const SERVICE: &str = "http";
/// Calls per lease of the `session-10` row.
pub const SESSION_CALLS: u32 = 10;
/// The large payload, bytes (16 MiB), echoed back.
pub const LARGE: usize = 16 * 1024 * 1024;
/// Tokens (one streamed chunk each) of a long stream.
pub const STREAM_TOKENS: u32 = 1000;
/// The CPU goal: calls per gateway-CPU-second of a leased call at least
/// this many times HAProxy's calls per CPU-second with TLS.
pub const CPU_GOAL: f64 = 2.0;
/// The latency goal: the p50 at 1 in flight of a leased call after its
/// lease at most this many times the direct baseline's.
pub const LATENCY_GOAL: f64 = 1.10;
/// The ttl of the pooled leases of the `leased` and `session-10` rows.
const TTL: Duration = Duration::from_secs(30);
/// The ttl of the long-held leases of the `direct` row.
const LONG_TTL: Duration = Duration::from_secs(300);

/// The rows of the first table, by name.
const HAPROXY: &str = "haproxy-tls";
const PROXIED: &str = "proxied";
const LEASED: &str = "leased";
const SESSION: &str = "session-10";
const DIRECT: &str = "direct";
const AFTER_PROXIED: &str = "direct-after-proxied";

/// Section `lookaside`: its two tables; what could not be measured is said
/// in the first one's notes.
pub async fn section(s: &Setup<'_>, timing: &Timing) -> Vec<Section> {
    let mut cpu = Section {
        id: "lookaside".into(),
        title: "Look-aside: gateway CPU and latency per call".into(),
        timing: *timing,
        clk_tck: crate::procs::clock_ticks(),
        notes: Vec::new(),
        systems: Vec::new(),
        columns: vec![
            col("max calls/s", "max.calls_per_s", 0),
            col("calls/CPU-s proxy", "max.calls_per_cpu_s_proxy", 0),
            col("÷ HAProxy", "cpu_vs_haproxy", 2),
            col("proxy CPU µs/call", "max.cpu_us_per_call_proxy", 1),
            col("all CPU µs/call", "max.cpu_us_per_call_all", 1),
            col("1 in flight p50 µs", "one.p50_us", 0),
            col("p99 µs", "one.p99_us", 0),
            col("p50 ÷ direct", "p50_vs_direct", 3),
            col("call after lease p50 µs", "one.direct_p50_us", 0),
            col("call after lease ÷ direct", "call_vs_direct", 3),
            col("first call on a lease p50 µs", "one.first_p50_us", 0),
            col("errors", "max.errors", 0),
        ],
    };
    let mut large = Section {
        id: "lookaside-large".into(),
        title: "Look-aside: 16 MiB payloads and long streams".into(),
        timing: short(timing),
        clk_tck: crate::procs::clock_ticks(),
        notes: Vec::new(),
        systems: Vec::new(),
        columns: vec![
            col("calls/s", "one.calls_per_s", 1),
            col("MiB/s each way", "mib_per_s", 0),
            col("p50 ms", "p50_ms", 2),
            col("p99 ms", "p99_ms", 2),
            col("chunks/stream", "one.chunks_per_call", 0),
            col("gateway CPU µs/call", "one.cpu_us_per_call_proxy", 0),
            col("all CPU µs/call", "one.cpu_us_per_call_all", 0),
            col("errors", "one.errors", 0),
        ],
    };
    if let Err(e) = measured(s, timing, &mut cpu, &mut large).await {
        cpu.notes.push(format!("Not measured: {e:#}"));
        return vec![cpu];
    }
    vec![cpu, large]
}

/// The second table's timing: windows of at most 1.5 s after at most
/// 0.3 s of warm-up (a 16 MiB call takes tens of ms).
fn short(timing: &Timing) -> Timing {
    Timing {
        warm_up_s: timing.warm_up_s.min(0.3),
        duration_s: timing.duration_s.min(1.5),
        reps: timing.reps,
    }
}

/// A client of the section's gateway taking results up to the fleet's
/// payload limit.
async fn client(fleet: &LookAsideFleet) -> Result<Client> {
    let mut config = ClientConfig::new(fleet.quic_addr(), &fleet.ca);
    config.max_result_bytes = MAX_PAYLOAD;
    Client::connect(config).await.context("SDK connect")
}

fn look_aside(t: LookAside) -> Arc<AnyTarget> {
    Arc::new(AnyTarget::LookAside(t))
}

async fn pool(
    fleet: &LookAsideFleet,
    service: &str,
    payload: Bytes,
    max_calls: u32,
    ttl: Duration,
) -> Result<Arc<AnyTarget>> {
    let c = client(fleet).await?;
    Ok(look_aside(LookAside::Leases(Box::new(LeasePool::new(
        c, service, payload, max_calls, ttl,
    )))))
}

/// As [`pool`] on leases held throughout, each direct call after a
/// proxied one ([`LeasePool::after_proxied`]).
async fn after_proxied(
    fleet: &LookAsideFleet,
    service: &str,
    payload: Bytes,
) -> Result<Arc<AnyTarget>> {
    let c = client(fleet).await?;
    let pool = LeasePool::new(c, service, payload, MAX_LEASE_CALLS, LONG_TTL).after_proxied();
    Ok(look_aside(LookAside::Leases(Box::new(pool))))
}

async fn proxied(fleet: &LookAsideFleet, service: &str, payload: Bytes) -> Result<Arc<AnyTarget>> {
    let c = client(fleet).await?;
    Ok(Arc::new(AnyTarget::Quic(QuicTarget::new(
        c,
        service.to_string(),
        payload,
        CallOptions::default(),
    ))))
}

/// A chat completion request streaming [`STREAM_TOKENS`] tokens.
fn stream_request() -> Bytes {
    Bytes::from(
        serde_json::json!({
            "model": "toy",
            "messages": [{"role": "user", "content": "stream a long answer please"}],
            "max_tokens": STREAM_TOKENS,
            "stream": true,
        })
        .to_string(),
    )
}

/// Checks that the fleet serves a leased call on the node of its grant.
async fn check(fleet: &LookAsideFleet) -> Result<()> {
    let c = client(fleet).await?;
    let lease = c.lease(SERVICE).await.context("a first lease")?;
    let result = lease
        .call(payload())
        .await
        .with_context(|| format!("a direct call to {}", lease.direct()))?;
    if result.meta.node_id != lease.node_id() {
        bail!(
            "the direct call ran on {}, the lease is on {}",
            result.meta.node_id,
            lease.node_id()
        );
    }
    Ok(())
}

async fn measured(
    s: &Setup<'_>,
    timing: &Timing,
    cpu: &mut Section,
    large: &mut Section,
) -> Result<()> {
    let toy = crate::llm::fleet::toy_binary(s.bin_dir)?;
    let dir = s.scratch.join("lookaside");
    let fleet = LookAsideFleet::start(s.bin_dir, s.plugins_dir, &toy, s.backends, &dir)?;
    check(&fleet).await?;
    let (gw, all) = (vec![fleet.gateway_pid()], fleet.all_pids());
    let haproxy = vec![s.haproxy.proc.pid()];
    let ca = Some(s.certs.ca.as_path());
    let both = [Step::Max, Step::One];
    let rows = vec![
        (
            system(
                HAPROXY,
                "HTTPS → haproxy → backends",
                http(format!("https://localhost:{}/", s.haproxy.tls), ca, vec![])?,
                haproxy.clone(),
                haproxy,
            ),
            &[Step::Max][..],
        ),
        (
            system(
                PROXIED,
                "SDK → gateway → agent → backend",
                proxied(&fleet, SERVICE, payload()).await?,
                gw.clone(),
                all.clone(),
            ),
            &both[..],
        ),
        (
            system(
                LEASED,
                "SDK: lease (gateway), then the call → agent's direct port → backend",
                pool(&fleet, SERVICE, payload(), 1, TTL).await?,
                gw.clone(),
                all.clone(),
            ),
            &both[..],
        ),
        (
            system(
                SESSION,
                "as `leased`, each lease serving 10 calls",
                pool(&fleet, SERVICE, payload(), SESSION_CALLS, TTL).await?,
                gw.clone(),
                all.clone(),
            ),
            &both[..],
        ),
        (
            system(
                DIRECT,
                "SDK → agent's direct port → backend, on leases held throughout",
                pool(&fleet, SERVICE, payload(), MAX_LEASE_CALLS, LONG_TTL).await?,
                gw.clone(),
                all.clone(),
            ),
            &both[..],
        ),
        (
            system(
                AFTER_PROXIED,
                "as `direct`, each direct call right after a proxied call (not timed)",
                after_proxied(&fleet, SERVICE, payload()).await?,
                gw.clone(),
                all.clone(),
            ),
            &[Step::One][..],
        ),
    ];
    let reps = run_rows("lookaside", &rows, timing).await;
    for (row, _) in &rows {
        if let AnyTarget::LookAside(LookAside::Leases(p)) = &*row.target {
            p.release_all().await;
        }
    }
    let mut results = medians_of(&rows, &reps);
    ratio(
        &mut results,
        &reps,
        HAPROXY,
        "max.calls_per_cpu_s_proxy",
        "cpu_vs_haproxy",
    );
    ratio(&mut results, &reps, DIRECT, "one.p50_us", "p50_vs_direct");
    ratio_to(
        &mut results,
        &reps,
        DIRECT,
        "one.direct_p50_us",
        "one.p50_us",
        "call_vs_direct",
    );
    cpu.notes = cpu_notes(&results);
    cpu.systems = results;

    let big = || Bytes::from(vec![b'x'; LARGE]);
    let one = [Step::One];
    let rows = vec![
        (
            system(
                "16mib-proxied",
                "SDK → gateway → agent `echo` → back, 16 MiB each way",
                proxied(&fleet, "echo", big()).await?,
                gw.clone(),
                all.clone(),
            ),
            &one[..],
        ),
        (
            system(
                "16mib-leased",
                "SDK: lease, then the call → agent's direct port `echo` → back, 16 MiB each way",
                pool(&fleet, "echo", big(), 1, TTL).await?,
                gw.clone(),
                all.clone(),
            ),
            &one[..],
        ),
        (
            system(
                "stream-proxied",
                "SDK → gateway → agent `stream` (toy model), 1000 chunks",
                look_aside(LookAside::Streams(StreamTarget::new(
                    client(&fleet).await?,
                    "stream",
                    stream_request(),
                    Route::Proxied,
                ))),
                gw.clone(),
                all.clone(),
            ),
            &one[..],
        ),
        (
            system(
                "stream-leased",
                "SDK: lease, then the call → agent's direct port `stream`, 1000 chunks",
                look_aside(LookAside::Streams(StreamTarget::new(
                    client(&fleet).await?,
                    "stream",
                    stream_request(),
                    Route::LookAside,
                ))),
                gw,
                all,
            ),
            &one[..],
        ),
    ];
    let short = short(timing);
    let reps = run_rows("lookaside-large", &rows, &short).await;
    let mut results = medians_of(&rows, &reps);
    for (i, r) in results.iter_mut().enumerate() {
        let m = &mut r.medians;
        let get = |m: &BTreeMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
        if i < 2 {
            let mib = get(m, "one.calls_per_s") * (LARGE as f64) / (1024.0 * 1024.0);
            m.insert("mib_per_s".into(), mib);
        }
        let (p50, p99) = (get(m, "one.p50_us"), get(m, "one.p99_us"));
        m.insert("p50_ms".into(), p50 / 1000.0);
        m.insert("p99_ms".into(), p99 / 1000.0);
    }
    large.notes = large_notes(&results, &short);
    large.systems = results;
    drop(fleet);
    Ok(())
}

/// Measures each row's steps, interleaved over `timing.reps` as
/// [`crate::scenarios::interleaved`] does, a look-aside target's own
/// records reset after the warm-up; returns each row's figures per rep.
async fn run_rows(
    label: &str,
    rows: &[(System, &[Step])],
    timing: &Timing,
) -> Vec<Vec<BTreeMap<String, f64>>> {
    let mut figures = vec![Vec::new(); rows.len()];
    let measured = Timing {
        warm_up_s: 0.0,
        ..*timing
    };
    for rep in 0..timing.reps {
        for (i, (system, steps)) in rows.iter().enumerate() {
            let mut f = BTreeMap::new();
            for step in *steps {
                let arrival = match step {
                    Step::Max => Arrival::Closed {
                        concurrency: IN_FLIGHT,
                    },
                    _ => Arrival::Closed { concurrency: 1 },
                };
                let seed = (rep * 100 + i) as u64;
                let warm = Plan {
                    arrival,
                    warm_up: Duration::ZERO,
                    duration: Duration::from_secs_f64(timing.warm_up_s),
                    seed,
                };
                loadgen::run(system.target.clone(), &warm, None).await;
                let la = match &*system.target {
                    AnyTarget::LookAside(t) => Some(t),
                    _ => None,
                };
                if let Some(t) = la {
                    t.reset();
                }
                let m = measure(system, arrival, &measured, seed).await;
                let key = step.key();
                m.figures(key, &mut f);
                match la {
                    Some(LookAside::Leases(p)) => {
                        if let Some(us) = p.direct_quantile_us(0.5) {
                            f.insert(format!("{key}.direct_p50_us"), us);
                        }
                        if let Some(us) = p.first_quantile_us(0.5) {
                            f.insert(format!("{key}.first_p50_us"), us);
                        }
                    }
                    Some(LookAside::Streams(t)) => {
                        if let Some(n) = t.chunks_per_call() {
                            f.insert(format!("{key}.chunks_per_call"), n);
                        }
                    }
                    None => {}
                }
                let r = &m.report;
                println!(
                    "[{label} {}/{}] {:<16} {:<4} {:>9.1} calls/s  p50 {:>8.0} µs  p99 {:>8.0} µs  proxy CPU {:>7.1} µs/call  errors {} {:?}",
                    rep + 1,
                    timing.reps,
                    system.name,
                    key,
                    r.calls_per_s,
                    r.latency_us.p50,
                    r.latency_us.p99,
                    m.cpu_proxy_s * 1e6 / r.calls.max(1) as f64,
                    r.errors,
                    r.errors_by_kind
                );
            }
            figures[i].push(f);
        }
    }
    figures
}

/// Each row's medians over the reps.
fn medians_of(
    rows: &[(System, &[Step])],
    reps: &[Vec<BTreeMap<String, f64>>],
) -> Vec<SystemResult> {
    rows.iter()
        .zip(reps)
        .map(|((s, _), f)| SystemResult {
            name: s.name.clone(),
            path: s.path.clone(),
            medians: medians(f),
            reps: Vec::new(),
        })
        .collect()
}

/// Adds `out` to every row but `base`: the median over the reps of the
/// row's `key` ÷ `base`'s `key` in the same rep.
fn ratio(
    results: &mut [SystemResult],
    reps: &[Vec<BTreeMap<String, f64>>],
    base: &str,
    key: &str,
    out: &str,
) {
    ratio_to(results, reps, base, key, key, out);
}

/// Adds `out` to every row but `base` that has `key`: the median over the
/// reps of the row's `key` ÷ `base`'s `base_key` in the same rep.
fn ratio_to(
    results: &mut [SystemResult],
    reps: &[Vec<BTreeMap<String, f64>>],
    base: &str,
    key: &str,
    base_key: &str,
    out: &str,
) {
    let Some(b) = results.iter().position(|r| r.name == base) else {
        return;
    };
    for (i, r) in results.iter_mut().enumerate() {
        if i == b {
            continue;
        }
        let pairs: Vec<f64> = reps[i]
            .iter()
            .zip(&reps[b])
            .filter_map(|(mine, theirs)| {
                let (m, t) = (mine.get(key)?, theirs.get(base_key)?);
                (*t > 0.0).then(|| m / t)
            })
            .collect();
        if !pairs.is_empty() {
            r.medians.insert(out.to_string(), median(&pairs));
        }
    }
}

/// The figure `key` of row `name`.
fn figure(results: &[SystemResult], name: &str, key: &str) -> Option<f64> {
    results
        .iter()
        .find(|r| r.name == name)?
        .medians
        .get(key)
        .copied()
}

/// "met" or "not met" for `value` against `goal` (`at_least` or at most).
fn verdict(value: Option<f64>, goal: f64, at_least: bool) -> String {
    match value {
        Some(v) if (at_least && v >= goal) || (!at_least && v <= goal) => format!("{v:.2}: met"),
        Some(v) => format!("{v:.2}: not met"),
        None => "not measured".into(),
    }
}

fn cpu_notes(results: &[SystemResult]) -> Vec<String> {
    let cpu = |name| verdict(figure(results, name, "cpu_vs_haproxy"), CPU_GOAL, true);
    let lat = verdict(
        figure(results, LEASED, "call_vs_direct"),
        LATENCY_GOAL,
        false,
    );
    vec![
        format!(
            "A gateway of its own for this section (release build, `worker_threads = 1`, as HAProxy's `nbthread 1`; `[leases] max_calls = {MAX_LEASE_CALLS}`) and two agents, each with a direct port (`[direct]` on loopback, its certificate issued from the gateway's CA by `transport::identity::issue_direct_cert`) and an `http` service posting 64-byte payloads to one of the two static nginx backends HAProxy forwards to (policy least-request). HAProxy is the suite's: HTTPS front, `balance leastconn`, keep-alive to the backends."
        ),
        format!(
            "Rows: `proxied` is the SDK's call through the gateway; `leased` asks the gateway for a lease of one call (`Client::lease`), then calls the node's direct port with its token (`Lease::call`); `session-10` takes leases of {SESSION_CALLS} calls, the callers sharing them (one call on a lease at a time; a lease older than half its 30 s ttl is released, not used); `direct` calls on leases held throughout (up to {MAX_LEASE_CALLS} calls, 300 s), so nothing but the direct call is measured: it stands for the SDK calling the node directly, the closest real thing (the direct port serves only calls with a token); `direct-after-proxied` is `direct` with a proxied call of the same service (not timed) before each direct call: the gateway, an agent and a backend have just worked, as they have after a grant, but without a lease, so its call after lease ÷ direct says how much of the first call's extra time any gateway round trip before it costs. Direct connections are pooled per node by the SDK, as the gateway's."
        ),
        "max = closed loop, 16 in flight; 1 in flight = closed loop, 1 caller. calls/CPU-s proxy = calls ÷ (utime+stime of HAProxy's process, or of the gateway's, in the window; /proc/PID/stat); all adds both agents (which now run the calls' TLS and framing themselves). ÷ HAProxy = that figure over HAProxy's in the same rep, median over the reps. p50 ÷ direct: the row's p50 at 1 in flight over `direct`'s in the same rep (for `leased`: lease + call). Call after lease: the direct call's own latency, timed by the SDK caller from after the grant to the end of the result, at 1 in flight; ÷ direct as before. First call on a lease: the same of each lease's first call alone (for `leased` every call is its lease's first and last; for `session-10` the first of 10 runs right after the grant but does not end its lease).".into(),
        format!(
            "Goals: calls per gateway-CPU-second at least {CPU_GOAL}× HAProxy's with TLS: `leased` {}, `session-10` {}. The p50 at 1 in flight of a leased call after its lease within {:.0}% of the direct baseline: {}.",
            cpu(LEASED),
            cpu(SESSION),
            (LATENCY_GOAL - 1.0) * 100.0,
            lat
        ),
    ]
}

fn large_notes(results: &[SystemResult], timing: &Timing) -> Vec<String> {
    let chunks = |name| {
        figure(results, name, "one.chunks_per_call")
            .map_or("–".to_string(), |n| format!("{n:.0}"))
    };
    vec![
        format!(
            "The same fleet: `16mib-*` call the built-in `echo` with a 16 MiB payload (it returns it: 16 MiB each way; the gateway's and the agents' `max_payload_bytes` are 32 MiB), `stream-*` call `stream`, an `openai` service in front of one toy model (`switchyard-e2e-toy-model --tokens-per-s 1000000`), with a chat completion of `max_tokens` {STREAM_TOKENS} and `\"stream\": true`, read to its end (`Lease::call(..).stream()` / `Client::call(..).stream()`; chunks/stream: {} proxied, {} leased). Look-aside rows take a lease of one call per call, its time included. One caller at a time, windows of {} s after {} s of warm-up, medians over {} reps.",
            chunks("stream-proxied"),
            chunks("stream-leased"),
            timing.duration_s,
            timing.warm_up_s,
            timing.reps
        ),
        "MiB/s each way = calls/s × 16 MiB. gateway CPU µs/call: the gateway's CPU in the window per call (a proxied call's bytes cross it twice; a leased one's never do); all adds both agents.".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, pairs: &[(&str, f64)]) -> SystemResult {
        SystemResult {
            name: name.into(),
            path: String::new(),
            medians: pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            reps: Vec::new(),
        }
    }

    fn rep(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn ratios_are_per_rep_then_the_median() {
        let mut results = vec![row("base", &[]), row("a", &[])];
        let reps = vec![
            vec![rep(&[("k", 10.0)]), rep(&[("k", 20.0)]), rep(&[("k", 5.0)])],
            vec![
                rep(&[("k", 30.0)]),
                rep(&[("k", 20.0)]),
                rep(&[("k", 20.0)]),
            ],
        ];
        ratio(&mut results, &reps, "base", "k", "r");
        assert_eq!(results[1].medians["r"], 3.0);
        assert!(!results[0].medians.contains_key("r"));
        ratio_to(&mut results, &reps, "base", "missing", "k", "none");
        assert!(!results[1].medians.contains_key("none"));
    }

    #[test]
    fn verdicts_say_met_or_not() {
        assert_eq!(verdict(Some(2.5), CPU_GOAL, true), "2.50: met");
        assert_eq!(verdict(Some(1.5), CPU_GOAL, true), "1.50: not met");
        assert_eq!(verdict(Some(1.05), LATENCY_GOAL, false), "1.05: met");
        assert_eq!(verdict(Some(1.2), LATENCY_GOAL, false), "1.20: not met");
        assert_eq!(verdict(None, CPU_GOAL, true), "not measured");
    }

    #[test]
    fn short_windows_never_exceed_the_suite_s() {
        let t = Timing {
            warm_up_s: 0.5,
            duration_s: 2.5,
            reps: 5,
        };
        let s = short(&t);
        assert_eq!((s.warm_up_s, s.duration_s, s.reps), (0.3, 1.5, 5));
        let quick = Timing {
            warm_up_s: 0.2,
            duration_s: 0.5,
            reps: 2,
        };
        assert_eq!(short(&quick).duration_s, 0.5);
    }

    #[test]
    fn the_stream_request_asks_for_the_long_stream() {
        let v: serde_json::Value = serde_json::from_slice(&stream_request()).expect("json");
        assert_eq!(v["max_tokens"], STREAM_TOKENS);
        assert_eq!(v["stream"], true);
    }
}
