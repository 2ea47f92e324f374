//! Streamed chat completions: time to first chunk (TTFC) and chunks per
//! second per stream, p50 and p99, for a model server called directly and
//! through the gateway (`make bench-stream`, i.e. `cargo bench -p
//! switchyard-e2e --bench stream`).
//!
//! The model server is a real `switchyard-toy-model` server (1000 tokens/s,
//! one token per SSE event, no prefill), in this process but on its own
//! thread and runtime, as its own process would run it; each request asks
//! for 64 tokens, so a stream lasts ~64 ms. Three paths, each in the same run:
//! - "direct": reqwest to the toy's `/v1/chat/completions`;
//! - "HTTP ingress": reqwest to the gateway's `/v1/chat/completions` (an
//!   in-process gateway, an in-process agent with an `openai` service in
//!   front of the toy);
//! - "QUIC SDK": the SDK's `Call::stream` to the same service.
//!
//! TTFC runs from just before the request is sent to the arrival of the
//! first SSE event that carries a token (the role event before it does not
//! count); it includes the toy's one token interval (1 ms). Chunks/s of a
//! stream is its token events after the first over the time from the first
//! to the last, so it leaves TTFC out. Each stream is read to its end
//! (`data: [DONE]`, then the body's end) and must hold every token.
//!
//! Closed loop: each of N workers (N = 1, then 64) sends its next request as
//! soon as its previous stream ended, for a fixed time after a warm-up. The
//! agent's service takes 128 calls at once, so 64 streams never queue in the
//! gateway. Without `--bench` (`cargo test -p switchyard-e2e --bench stream`)
//! it only checks briefly that every path works.

mod common;

use std::time::{Duration, Instant};

use anyhow::Context;
use client::{Client, ClientConfig};
use futures_util::StreamExt;
use node_agent::{ServiceConfig, ServiceKind};
use tokio::task::JoinSet;

/// The service (and model) name.
const SERVICE: &str = "llama";
/// The toy model's token rate.
const TOKENS_PER_S: &str = "1000";
/// Tokens per answer (`max_tokens`).
const MAX_TOKENS: usize = 64;
/// The request body, the same on every path.
const BODY: &str = r#"{"model":"llama","stream":true,"max_tokens":64,"messages":[{"role":"user","content":"the quick brown fox jumps over the lazy dog"}]}"#;
/// Streams at once, per row.
const CONCURRENCY: [usize; 2] = [1, 64];
/// The agent's `max_concurrent` for the service: above the most streams, so
/// a call never waits for a slot freed a moment late.
const MAX_CONCURRENT: u32 = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Direct,
    Ingress,
    Quic,
}

impl Route {
    fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct (reqwest to the toy)",
            Self::Ingress => "gateway HTTP ingress (reqwest)",
            Self::Quic => "gateway QUIC (SDK Call::stream)",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Ingress => "ingress",
            Self::Quic => "QUIC",
        }
    }
}

/// One stream's figures.
struct Sample {
    ttfc: Duration,
    chunks_per_s: f64,
}

struct Row {
    route: Route,
    streams: usize,
    requests: usize,
    ttfc_p50_ms: f64,
    ttfc_p99_ms: f64,
    /// Chunks/s of the median stream.
    rate_p50: f64,
    /// Chunks/s that 99 % of streams reached (the slowest 1 % below it).
    rate_p99: f64,
}

/// How long a row runs.
struct Timing {
    warm_up: Duration,
    /// For one stream (fewer requests per second, so longer).
    one: Duration,
    /// For many streams.
    many: Duration,
}

fn main() -> anyhow::Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let timing = if full {
        Timing {
            warm_up: Duration::from_millis(500),
            one: Duration::from_secs(8),
            many: Duration::from_secs(4),
        }
    } else {
        Timing {
            warm_up: Duration::from_millis(50),
            one: Duration::from_millis(300),
            many: Duration::from_millis(300),
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(bench(&timing))
}

async fn bench(timing: &Timing) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .context("http client")?;
    let toy = Toy::start(&http).await?;

    let dir = tempfile::tempdir().context("tempdir")?;
    let mut llama = ServiceConfig::new(SERVICE, ServiceKind::openai(format!("{}/v1", toy.url)));
    llama.max_concurrent = MAX_CONCURRENT;
    let fleet = common::Fleet::start(common::gateway_config(dir.path())?, vec![llama]).await?;
    let ingress = fleet
        .gateway
        .http_url()
        .context("the HTTP ingress is off")?;

    let quic = Client::connect(ClientConfig::new(fleet.addr.clone(), fleet.ca.clone())).await?;
    let target = Target {
        http,
        quic: quic.clone(),
        direct: format!("{}/v1/chat/completions", toy.url),
        ingress: format!("{ingress}/v1/chat/completions"),
    };
    let mut rows = Vec::new();
    for streams in CONCURRENCY {
        let run_for = if streams == 1 {
            timing.one
        } else {
            timing.many
        };
        for route in [Route::Direct, Route::Ingress, Route::Quic] {
            measure(&target, route, streams, timing.warm_up).await?;
            rows.push(measure(&target, route, streams, run_for).await?);
        }
    }
    print(&rows);

    quic.close().await;
    fleet.stop().await?;
    drop(toy);
    Ok(())
}

/// Where the workers send their requests.
#[derive(Clone)]
struct Target {
    http: reqwest::Client,
    quic: Client,
    direct: String,
    ingress: String,
}

/// A `switchyard-toy-model` server on a free port, in this process but on
/// its own thread and runtime (as its own process would run it), stopped
/// when dropped.
struct Toy {
    _server: switchyard_toy_model::Server,
    url: String,
}

impl Toy {
    /// Starts the toy model (no load time, [`TOKENS_PER_S`]) and waits until
    /// it is healthy.
    async fn start(http: &reqwest::Client) -> anyhow::Result<Self> {
        let args = switchyard_toy_model::Args::from_flags([
            "--port",
            "0",
            "--name",
            SERVICE,
            "--load-ms",
            "0",
            "--tokens-per-s",
            TOKENS_PER_S,
        ])
        .map_err(anyhow::Error::msg)?;
        let server = switchyard_toy_model::Server::start(args).context("toy model starts")?;
        let toy = Self {
            url: server.url(),
            _server: server,
        };
        let health = format!("{}/health", toy.url);
        let started = Instant::now();
        loop {
            match http.get(&health).send().await {
                Ok(r) if r.status().is_success() => return Ok(toy),
                _ => anyhow::ensure!(
                    started.elapsed() < Duration::from_secs(10),
                    "toy model unhealthy"
                ),
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Reads a server-sent event stream as its chunks arrive: when the first
/// token event came, when the last, how many, and whether `[DONE]` did.
struct Events {
    began: Instant,
    pending: Vec<u8>,
    first: Option<Instant>,
    last: Option<Instant>,
    tokens: usize,
    done: bool,
}

impl Events {
    fn new(began: Instant) -> Self {
        Self {
            began,
            pending: Vec::new(),
            first: None,
            last: None,
            tokens: 0,
            done: false,
        }
    }

    /// Takes a body chunk that arrived `at`: every event it completes is
    /// counted as arrived then.
    fn feed(&mut self, chunk: &[u8], at: Instant) {
        self.pending.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(end) = find(&self.pending[start..], b"\n\n") {
            let event = &self.pending[start..start + end];
            if event.starts_with(b"data: [DONE]") {
                self.done = true;
            } else if carries_token(event) {
                self.first.get_or_insert(at);
                self.last = Some(at);
                self.tokens += 1;
            }
            start += end + 2;
        }
        self.pending.drain(..start);
    }

    /// The stream's figures once its body ended.
    fn sample(self) -> anyhow::Result<Sample> {
        anyhow::ensure!(self.done, "the stream ended without [DONE]");
        anyhow::ensure!(
            self.tokens == MAX_TOKENS,
            "{} token events, not {MAX_TOKENS}",
            self.tokens
        );
        let (Some(first), Some(last)) = (self.first, self.last) else {
            anyhow::bail!("no token event");
        };
        let span = last.duration_since(first).as_secs_f64();
        Ok(Sample {
            ttfc: first.duration_since(self.began),
            chunks_per_s: (self.tokens - 1) as f64 / span.max(f64::MIN_POSITIVE),
        })
    }
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Whether a `data:` event's delta has text (the toy's role event has
/// `"content":""`; a token's is never empty).
fn carries_token(event: &[u8]) -> bool {
    const KEY: &[u8] = br#""content":""#;
    find(event, KEY).is_some_and(|at| event.get(at + KEY.len()) != Some(&b'"'))
}

/// One streamed completion on `route`, read to its end.
async fn stream_once(target: &Target, route: Route) -> anyhow::Result<Sample> {
    let began = Instant::now();
    let mut events = Events::new(began);
    match route {
        Route::Direct | Route::Ingress => {
            let url = if route == Route::Direct {
                &target.direct
            } else {
                &target.ingress
            };
            let mut response = target
                .http
                .post(url)
                .header("content-type", "application/json")
                .body(BODY)
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "status {}",
                response.status()
            );
            while let Some(chunk) = response.chunk().await? {
                events.feed(&chunk, Instant::now());
            }
        }
        Route::Quic => {
            let mut stream = target
                .quic
                .call(SERVICE, BODY)
                .endpoint("/chat/completions")
                .stream()
                .await?;
            anyhow::ensure!(
                stream.meta.content_type.as_deref() == Some("text/event-stream"),
                "content type {:?}",
                stream.meta.content_type
            );
            while let Some(chunk) = stream.next().await {
                events.feed(&chunk?, Instant::now());
            }
        }
    }
    events.sample()
}

/// Runs `streams` workers on `route` for `run_for` and summarises their
/// streams.
async fn measure(
    target: &Target,
    route: Route,
    streams: usize,
    run_for: Duration,
) -> anyhow::Result<Row> {
    let until = Instant::now() + run_for;
    let mut workers = JoinSet::new();
    for _ in 0..streams {
        let target = target.clone();
        workers.spawn(async move {
            let mut samples = Vec::new();
            while Instant::now() < until {
                samples.push(stream_once(&target, route).await?);
            }
            Ok::<_, anyhow::Error>(samples)
        });
    }
    let mut samples = Vec::new();
    while let Some(done) = workers.join_next().await {
        samples.extend(done??);
    }
    let mut ttfc: Vec<f64> = samples
        .iter()
        .map(|s| s.ttfc.as_secs_f64() * 1000.0)
        .collect();
    ttfc.sort_unstable_by(f64::total_cmp);
    // Slowest first, so p99 is the rate 99 % of streams reached.
    let mut rates: Vec<f64> = samples.iter().map(|s| s.chunks_per_s).collect();
    rates.sort_unstable_by(|a, b| b.total_cmp(a));
    Ok(Row {
        route,
        streams,
        requests: samples.len(),
        ttfc_p50_ms: percentile(&ttfc, 50),
        ttfc_p99_ms: percentile(&ttfc, 99),
        rate_p50: percentile(&rates, 50),
        rate_p99: percentile(&rates, 99),
    })
}

/// The value `p` % of the way through sorted `samples` (0 when empty).
fn percentile(samples: &[f64], p: usize) -> f64 {
    samples
        .get((samples.len() * p / 100).min(samples.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

fn print(rows: &[Row]) {
    println!(
        "toy model at {TOKENS_PER_S} tokens/s, {MAX_TOKENS} tokens per stream; \
         TTFC = request sent to first token event; chunks/s p99 = reached by 99 % of streams"
    );
    println!(
        "| path | streams | requests | TTFC p50 ms | TTFC p99 ms | chunks/s p50 | chunks/s p99 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.0} | {:.0} |",
            r.route.name(),
            r.streams,
            r.requests,
            r.ttfc_p50_ms,
            r.ttfc_p99_ms,
            r.rate_p50,
            r.rate_p99
        );
    }
    let ratio = |a: f64, b: f64| a / b.max(f64::MIN_POSITIVE);
    for streams in CONCURRENCY {
        let find = |route| {
            rows.iter()
                .find(|r| r.route == route && r.streams == streams)
        };
        let Some(direct) = find(Route::Direct) else {
            continue;
        };
        for route in [Route::Ingress, Route::Quic] {
            if let Some(r) = find(route) {
                println!(
                    "{streams} streams: {}/direct: TTFC p50 {:.2}x ({:+.2} ms), p99 {:.2}x ({:+.2} ms); \
                     chunks/s p50 {:.2}x, p99 {:.2}x",
                    r.route.short(),
                    ratio(r.ttfc_p50_ms, direct.ttfc_p50_ms),
                    r.ttfc_p50_ms - direct.ttfc_p50_ms,
                    ratio(r.ttfc_p99_ms, direct.ttfc_p99_ms),
                    r.ttfc_p99_ms - direct.ttfc_p99_ms,
                    ratio(r.rate_p50, direct.rate_p50),
                    ratio(r.rate_p99, direct.rate_p99),
                );
            }
        }
    }
}
