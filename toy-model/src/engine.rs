//! The simulated engine around the completions: admission (at most
//! `--max-running` at once, the rest waiting), the KV cache ([`KvCache`])
//! that decides how much of a prompt needs a prefill, and `GET /metrics`,
//! which shows both with vLLM's metric names.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::Toy;
use crate::kv::KvCache;

/// Tokens per KV-cache block (vLLM's default block size).
pub const BLOCK_TOKENS: usize = 16;

/// Admission, the KV cache and their counters, shared by every completion.
#[derive(Debug)]
pub(crate) struct Engine {
    /// The cache (`--kv-cache-tokens`).
    cache: Mutex<KvCache>,
    /// Prefill time per uncached prompt token (`--prefill-us-per-token`).
    per_token: Duration,
    /// One permit per running request (`--max-running`); `None`: no limit.
    slots: Option<Arc<Semaphore>>,
    /// Requests taken but not yet prefilling.
    waiting: AtomicU64,
    /// Requests prefilling or decoding.
    running: AtomicU64,
    /// Prompt tokens looked up in the cache.
    queries: AtomicU64,
    /// Of those, the tokens found there.
    hits: AtomicU64,
}

impl Engine {
    /// An engine with a cache of `cache_tokens` tokens, a prefill of
    /// `per_token` per uncached token, and at most `max_running` requests
    /// running at once (`None`: any number).
    pub(crate) fn new(
        cache_tokens: usize,
        per_token: Duration,
        max_running: Option<usize>,
    ) -> Self {
        Self {
            cache: Mutex::new(KvCache::new(cache_tokens, BLOCK_TOKENS)),
            per_token,
            slots: max_running.map(|n| Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS)))),
            waiting: AtomicU64::new(0),
            running: AtomicU64::new(0),
            queries: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        }
    }

    /// The cache, even if a panicking holder poisoned its lock (its state
    /// is always whole between two calls).
    fn cache(&self) -> MutexGuard<'_, KvCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a request whose prompt is `prompt`: counts it as waiting until
    /// a running slot frees, then as running, and looks its prompt up in the
    /// cache. The [`Running`] it gives counts it as running until dropped.
    pub(crate) async fn admit(self: &Arc<Self>, prompt: &[String]) -> Running {
        let mut waited = false;
        let permit = match &self.slots {
            None => None,
            Some(slots) => match Arc::clone(slots).try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    waited = true;
                    let _waiting = Count::up(&self.waiting);
                    // The semaphore is never closed; were it, run anyway.
                    Arc::clone(slots).acquire_owned().await.ok()
                }
            },
        };
        self.running.fetch_add(1, Ordering::Relaxed);
        let cached = self.cache().lookup(prompt);
        let total = prompt.len();
        self.queries.fetch_add(total as u64, Ordering::Relaxed);
        self.hits.fetch_add(cached as u64, Ordering::Relaxed);
        let uncached = u32::try_from(total - cached).unwrap_or(u32::MAX);
        Running {
            engine: Arc::clone(self),
            _permit: permit,
            waited,
            cached: u32::try_from(cached).unwrap_or(u32::MAX),
            prefill: self.per_token.saturating_mul(uncached),
        }
    }

    /// Records that `prompt` has been prefilled: its blocks are now cached.
    pub(crate) fn prefilled(&self, prompt: &[String]) {
        self.cache().insert(prompt);
    }

    /// The metrics in Prometheus' text format, labelled `model_name`.
    pub(crate) fn metrics(&self, model_name: &str) -> String {
        let usage = self.cache().usage();
        let label = format!("{{model_name=\"{}\"}}", escape(model_name));
        let mut text = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, sample: &str, value: String| {
            let _ = write!(
                text,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{sample}{label} {value}\n"
            );
        };
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed).to_string();
        metric(
            "vllm:num_requests_running",
            "gauge",
            "Number of requests in model execution batches.",
            "vllm:num_requests_running",
            load(&self.running),
        );
        metric(
            "vllm:num_requests_waiting",
            "gauge",
            "Number of requests waiting to be processed.",
            "vllm:num_requests_waiting",
            load(&self.waiting),
        );
        for name in ["vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc"] {
            metric(
                name,
                "gauge",
                "KV-cache usage. 1 means 100 percent usage.",
                name,
                usage.to_string(),
            );
        }
        metric(
            "vllm:prefix_cache_queries",
            "counter",
            "Prefix cache queries, in terms of number of queried tokens.",
            "vllm:prefix_cache_queries_total",
            load(&self.queries),
        );
        metric(
            "vllm:prefix_cache_hits",
            "counter",
            "Prefix cache hits, in terms of number of cached tokens.",
            "vllm:prefix_cache_hits_total",
            load(&self.hits),
        );
        text
    }
}

/// A request admitted to run: counted as running until dropped, holding
/// its `--max-running` slot.
#[derive(Debug)]
pub(crate) struct Running {
    /// The engine, for its running count.
    engine: Arc<Engine>,
    /// Its slot, given back when dropped.
    _permit: Option<OwnedSemaphorePermit>,
    /// Whether it had to wait for the slot.
    pub(crate) waited: bool,
    /// How many of its prompt's tokens were cached.
    pub(crate) cached: u32,
    /// How long prefilling the rest takes.
    pub(crate) prefill: Duration,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.engine.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One more in a gauge, until dropped.
struct Count<'a>(&'a AtomicU64);

impl<'a> Count<'a> {
    /// Adds one to `gauge`.
    fn up(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(gauge)
    }
}

impl Drop for Count<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A label value as Prometheus' text format writes it: `\`, `"` and line
/// feeds escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `GET /metrics`: [`Engine::metrics`] (even while loading).
pub(crate) async fn metrics(State(toy): State<Arc<Toy>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        toy.engine.metrics(&toy.name),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("w{i}")).collect()
    }

    /// The value of `sample` in `text`.
    fn value(text: &str, sample: &str) -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(sample))
            .and_then(|rest| rest.strip_prefix("{model_name=\"m\"} "))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {sample} in {text}"))
    }

    #[tokio::test]
    async fn admission_counts_running_and_cache_hits() {
        let engine = Arc::new(Engine::new(64, Duration::from_micros(10), None));
        let p = prompt(40);
        let first = engine.admit(&p).await;
        assert_eq!(
            (first.cached, first.prefill),
            (0, Duration::from_micros(400))
        );
        assert!(!first.waited);
        engine.prefilled(&p);
        let second = engine.admit(&p).await;
        assert_eq!(
            (second.cached, second.prefill),
            (32, Duration::from_micros(80))
        );
        let text = engine.metrics("m");
        assert_eq!(value(&text, "vllm:num_requests_running"), 2.0);
        assert_eq!(value(&text, "vllm:num_requests_waiting"), 0.0);
        assert_eq!(value(&text, "vllm:gpu_cache_usage_perc"), 0.5);
        assert_eq!(value(&text, "vllm:prefix_cache_queries_total"), 80.0);
        assert_eq!(value(&text, "vllm:prefix_cache_hits_total"), 32.0);
        assert!(text.contains("# TYPE vllm:prefix_cache_hits counter\n"));
        drop((first, second));
        assert_eq!(
            value(&engine.metrics("m"), "vllm:num_requests_running"),
            0.0
        );
    }

    #[tokio::test]
    async fn past_max_running_requests_wait() {
        let engine = Arc::new(Engine::new(0, Duration::ZERO, Some(1)));
        let p = prompt(3);
        let first = engine.admit(&p).await;
        let waiter = {
            let engine = Arc::clone(&engine);
            let p = p.clone();
            tokio::spawn(async move { engine.admit(&p).await.waited })
        };
        while engine.waiting.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        let text = engine.metrics("m");
        assert_eq!(value(&text, "vllm:num_requests_waiting"), 1.0);
        assert_eq!(value(&text, "vllm:num_requests_running"), 1.0);
        drop(first);
        assert!(waiter.await.expect("joined"), "it waited");
        let text = engine.metrics("m");
        assert_eq!(value(&text, "vllm:num_requests_waiting"), 0.0);
        assert_eq!(value(&text, "vllm:num_requests_running"), 0.0);
    }

    #[test]
    fn label_values_are_escaped() {
        let engine = Engine::new(0, Duration::ZERO, None);
        let text = engine.metrics("a\"b\\c\nd");
        assert!(
            text.contains("{model_name=\"a\\\"b\\\\c\\nd\"} 0\n"),
            "{text}"
        );
    }
}
