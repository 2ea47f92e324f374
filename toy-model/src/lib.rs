//! `switchyard-toy-model`: a stand-in for a real model server (vLLM, SGLang,
//! llama.cpp's server, ...) for the tests, the benches and the demo. It is
//! not part of the gateway or the agent. The binary's whole work is
//! [`main`]; tests and benches serve it in their own process with
//! [`Server`] instead.
//!
//! It listens on `127.0.0.1:PORT` over plain HTTP/1.1:
//! - `GET /health` answers 503 `loading` for `--load-ms` after start, then
//!   200 `ok`, as a model server does while it loads its weights;
//! - `POST /v1/chat/completions` and `POST /v1/completions` speak OpenAI's
//!   API. The answer's text is made from the prompt, with no randomness: it
//!   cycles through the words of the last `user` message (chat) or of
//!   `prompt`, each token a word and a space (`token ` when there is no
//!   word). It is `max_tokens` tokens long (or `max_completion_tokens`;
//!   default 16) and ends with `finish_reason` `length`, or earlier with
//!   `stop` just before a word equal to one of `stop`'s strings. Time: the
//!   first token comes the prefill (`--work-ms`, plus
//!   `--prefill-us-per-token` µs per prompt token not in the KV cache, see
//!   below) plus one token interval (1 / `--tokens-per-s`) after the request
//!   arrived (or, past `--max-running`, after it began to run), then one
//!   token every interval. `usage.prompt_tokens` counts the prompt's words
//!   (all messages' contents) and `usage.prompt_tokens_details.cached_tokens`
//!   those found in the KV cache. Under `"stream": true` the answer is `text/event-stream`, one
//!   `data: {json}` event per chunk (`chat.completion.chunk`: the role first,
//!   then one token per chunk, then one with `finish_reason`;
//!   `text_completion` chunks for `/v1/completions`), a usage chunk under
//!   `stream_options.include_usage`, then `data: [DONE]`; otherwise one
//!   `chat.completion` / `text_completion` JSON body once the last token is
//!   due. A body that is not what OpenAI's API takes answers 400 with
//!   OpenAI's error shape `{"error": {"message", "type", "code"}}`;
//! - `POST /v1/embeddings` (`input`: a string or an array of strings) waits
//!   `--work-ms`, then answers one unit vector of `--embedding-dim` floats
//!   per input, computed from a hash of its text (the same text, the same
//!   vector); `"encoding_format": "base64"` gives them as little-endian f32;
//! - `GET /v1/models` lists one model, `--name`;
//! - `GET /metrics` answers Prometheus' text format with vLLM's names, each
//!   labelled `model_name="NAME"` (`--name`): the gauges
//!   `vllm:num_requests_waiting` (completions taken but not yet running, past
//!   `--max-running`), `vllm:num_requests_running` (prefilling or decoding)
//!   and `vllm:gpu_cache_usage_perc` (also as vLLM's newer
//!   `vllm:kv_cache_usage_perc`: the KV cache's blocks in use over its
//!   capacity, 0 to 1), and the counters `vllm:prefix_cache_queries_total`
//!   and `vllm:prefix_cache_hits_total` (prompt tokens looked up in the
//!   cache, and of those found there);
//! - `GET /stats` answers `{"requests", "completed", "cancelled",
//!   "in_flight"}`: the completions (streamed or not) taken, finished,
//!   given up by their client before the end (the connection closed; each
//!   also logged on stderr with how many of its tokens had gone out), and
//!   under way;
//! - any other request (e.g. `POST /`) waits `--work-ms`, then answers
//!   `NAME: BODY` (the request body as text) or `NAME: N bytes` when the body
//!   is not UTF-8.
//!
//! While loading, the `/v1/` routes answer 503 (OpenAI's error shape) and
//! the catch-all `NAME: still loading`.
//!
//! Flags: `--port` (required), `--name` (default `toy`), `--load-ms`
//! (default 500), `--work-ms` (default 0), `--tokens-per-s` (default 50,
//! from 0.01 to 1000000), `--embedding-dim` (default 8, at most 65536),
//! `--kv-cache-tokens` (default 0: no cache), `--prefill-us-per-token`
//! (default 0), `--max-running` (default: no limit), `--fail`,
//! `--ignore-stdin`.
//!
//! The KV cache ([`kv::KvCache`]) is simulated as vLLM's automatic prefix
//! caching works: a prompt's tokens (whitespace-split words: a chat's
//! messages' contents in order, or the completion's `prompt`) are cut into
//! blocks of [`BLOCK_TOKENS`] (16), each named by a chained hash of itself
//! and every block before it; the cache holds `--kv-cache-tokens / 16`
//! blocks, least recently used evicted first. When a completion begins to
//! run, its cached prefix is its longest run of leading blocks in the cache;
//! the rest is "prefilled" (a sleep, not blocking the server) at
//! `--prefill-us-per-token`, after which all its blocks are put in (or
//! touched in) the cache. At most `--max-running` completions run at once;
//! the others wait in arrival order. With the defaults nothing is cached,
//! the prefill is `--work-ms` alone and nothing waits: the toy model times
//! its answers as it did before the cache.
//!
//! It exits when its stdin reaches end of file (so it dies with the agent
//! that started it, even when the agent is killed), on SIGTERM or Ctrl-C,
//! and at once with status 1 under `--fail` (a start that fails).
//!
//! [`Server`] runs the same server inside the caller's process, on a thread
//! and runtime of its own as the process would have (`--port 0` takes a free
//! port), quiet, until it is dropped; it ignores `--fail` and stdin.

use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::serve::ListenerExt as _;
use clap::Parser;

/// A stand-in model server: loads for a while, then answers requests with
/// its name and the request body, and OpenAI's API under `/v1/`.
#[derive(Debug, Clone, Parser)]
#[command(name = "switchyard-toy-model", version)]
pub struct Args {
    /// TCP port to listen on, on 127.0.0.1 (0: any free port).
    #[arg(long)]
    port: u16,
    /// The model's name, put in front of every answer.
    #[arg(long, default_value = "toy")]
    name: String,
    /// How long it "loads", ms: /health answers 503 until then.
    #[arg(long, default_value_t = 500)]
    load_ms: u64,
    /// How long each request takes, ms (for a completion: before its first
    /// token, as a prefill).
    #[arg(long, default_value_t = 0)]
    work_ms: u64,
    /// How fast the /v1/ completions' tokens come, per second (one token per
    /// streamed chunk).
    #[arg(long, default_value_t = 50.0, value_parser = tokens_per_s)]
    tokens_per_s: f64,
    /// How many floats in each /v1/embeddings vector.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=65536))]
    embedding_dim: u32,
    /// The simulated KV cache's size, in prompt tokens (whole blocks of 16);
    /// 0: nothing is ever cached.
    #[arg(long, default_value_t = 0)]
    kv_cache_tokens: usize,
    /// Prefill time per prompt token not found in the KV cache, µs (added to
    /// `--work-ms` before a completion's first token).
    #[arg(long, default_value_t = 0)]
    prefill_us_per_token: u64,
    /// At most this many completions run (prefill or decode) at once; the
    /// others wait, in arrival order. Default: no limit.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_running: Option<u64>,
    /// Exits at once with status 1 and a message on stderr (a failing start).
    #[arg(long)]
    fail: bool,
    /// Keeps running when stdin closes (for running it by hand in a shell).
    #[arg(long)]
    ignore_stdin: bool,
}

impl Args {
    /// The settings the command line `switchyard-toy-model FLAGS...` gives.
    ///
    /// # Errors
    /// Clap's message when a flag is unknown, missing or out of range.
    pub fn from_flags<I, S>(flags: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString> + Clone,
    {
        let program = std::iter::once(std::ffi::OsString::from("switchyard-toy-model"));
        Self::try_parse_from(program.chain(flags.into_iter().map(Into::into)))
            .map_err(|e| e.to_string())
    }
}

/// A line on stderr; errors are ignored (`eprintln!` would panic once the
/// agent reading our stderr is gone, and we must still exit cleanly).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod engine;
pub mod kv;
mod openai;

pub use engine::BLOCK_TOKENS;

/// Parses `--tokens-per-s`: from 0.01 (one token every 100 s) to a million.
fn tokens_per_s(arg: &str) -> Result<f64, String> {
    let rate: f64 = arg.parse().map_err(|e| format!("not a number: {e}"))?;
    if (0.01..=1_000_000.0).contains(&rate) {
        Ok(rate)
    } else {
        Err("must be from 0.01 to 1000000".to_string())
    }
}

/// The server's settings and counters, shared by every handler.
struct Toy {
    /// `--name`.
    name: String,
    /// When it is done loading (start + `--load-ms`).
    ready_at: Instant,
    /// `--work-ms`.
    work: Duration,
    /// The time between two tokens (1 / `--tokens-per-s`).
    token_interval: Duration,
    /// `--embedding-dim`.
    embedding_dim: usize,
    /// Admission and the KV cache (`--kv-cache-tokens`,
    /// `--prefill-us-per-token`, `--max-running`).
    engine: Arc<engine::Engine>,
    /// The completions' counters, for `GET /stats`.
    stats: openai::Stats,
    /// Numbers the completions' ids.
    next_id: AtomicU64,
    /// Whether it says what happens on stderr (the process does; a
    /// [`Server`] in a test's process keeps quiet).
    verbose: bool,
}

impl Toy {
    /// A server named `name` that is ready at `ready_at`.
    fn new(
        name: String,
        ready_at: Instant,
        work: Duration,
        tokens_per_s: f64,
        embedding_dim: u32,
        engine: engine::Engine,
    ) -> Self {
        Self {
            name,
            ready_at,
            work,
            token_interval: Duration::from_secs_f64(1.0 / tokens_per_s),
            embedding_dim: embedding_dim as usize,
            engine: Arc::new(engine),
            stats: openai::Stats::default(),
            next_id: AtomicU64::new(1),
            verbose: true,
        }
    }

    /// The server `args` describe, loading from now on.
    fn from_args(args: &Args) -> Self {
        Self::new(
            args.name.clone(),
            Instant::now() + Duration::from_millis(args.load_ms),
            Duration::from_millis(args.work_ms),
            args.tokens_per_s,
            args.embedding_dim,
            engine::Engine::new(
                args.kv_cache_tokens,
                Duration::from_micros(args.prefill_us_per_token),
                args.max_running
                    .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            ),
        )
    }

    /// Whether it is still loading.
    fn loading(&self) -> bool {
        Instant::now() < self.ready_at
    }
}

/// The `switchyard-toy-model` program: [`run`] with the command line's
/// settings.
pub fn main() -> ExitCode {
    run(Args::parse())
}

/// The toy model as a process: fails at once under `--fail`, else serves
/// until stdin closes, SIGTERM or Ctrl-C, and exits the process.
pub fn run(args: Args) -> ExitCode {
    let name = args.name.clone();
    if args.fail {
        say!("toy-model {name}: failing on purpose (--fail)");
        return ExitCode::FAILURE;
    }
    if !args.ignore_stdin {
        // A plain thread: a blocking read would hold up the async runtime's
        // shutdown. EOF (or a read error) means whoever started us is gone.
        std::thread::spawn(move || {
            let mut sink = [0u8; 1024];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            say!("toy-model {name}: stdin closed, exiting");
            std::process::exit(0);
        });
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            say!("toy-model {}: cannot start the runtime: {e}", args.name);
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(serve(args));
    // Do not wait for the stdin thread.
    std::process::exit(if code == ExitCode::SUCCESS { 0 } else { 1 });
}

async fn serve(args: Args) -> ExitCode {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            say!("toy-model {}: cannot listen on {addr}: {e}", args.name);
            return ExitCode::FAILURE;
        }
    };
    say!(
        "toy-model {}: listening on {addr}, loading for {} ms",
        args.name,
        args.load_ms
    );
    let toy = Arc::new(Toy::from_args(&args));
    tokio::select! {
        served = serve_on(listener, toy) => match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                say!("toy-model {}: serving failed: {e}", args.name);
                ExitCode::FAILURE
            }
        },
        signal = terminated() => {
            say!("toy-model {}: {signal}, exiting", args.name);
            ExitCode::SUCCESS
        }
    }
}

/// Serves `toy` on `listener`.
async fn serve_on(listener: tokio::net::TcpListener, toy: Arc<Toy>) -> std::io::Result<()> {
    // Each streamed token goes out as it is due, as real model servers do
    // (asyncio's transports, under vLLM and SGLang, set TCP_NODELAY): with
    // Nagle's algorithm a token written while the previous write is not yet
    // acknowledged waits for the peer's delayed ACK (~40 ms on Linux).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(engine::metrics))
        .merge(openai::routes())
        .fallback(work)
        .with_state(toy);
    axum::serve(listener, app).await
}

/// A toy model served in this process (for tests and benches): on a thread
/// with a current-thread runtime of its own, as the process runs it, so it
/// neither waits for nor slows down the caller's runtime. Stops when
/// dropped.
#[derive(Debug)]
pub struct Server {
    /// Where it listens.
    addr: SocketAddr,
    /// Ends the serving.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The server's thread, joined on drop.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Starts serving what `args` describe; it listens when this returns
    /// (`--port 0`: on a free port, see [`Server::url`]).
    ///
    /// # Errors
    /// When the port cannot be bound or the thread not started.
    pub fn start(args: Args) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, args.port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut toy = Toy::from_args(&args);
        toy.verbose = false;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("toy-model {}", args.name))
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = serve_on(listener, Arc::new(toy)) => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime ends every connection, as the
                // process's exit would.
            })?;
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Its address, `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn health(State(toy): State<Arc<Toy>>) -> (StatusCode, &'static str) {
    if !toy.loading() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "loading")
    }
}

async fn work(State(toy): State<Arc<Toy>>, body: Bytes) -> (StatusCode, String) {
    if toy.loading() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}: still loading", toy.name),
        );
    }
    tokio::time::sleep(toy.work).await;
    let answer = match std::str::from_utf8(&body) {
        Ok(text) => format!("{}: {text}", toy.name),
        Err(_) => format!("{}: {} bytes", toy.name, body.len()),
    };
    (StatusCode::OK, answer)
}

/// Completes on SIGTERM or Ctrl-C, naming which.
async fn terminated() -> &'static str {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => "ctrl-c",
        () = term => "SIGTERM",
    }
}
