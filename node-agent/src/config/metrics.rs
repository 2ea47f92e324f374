//! Model-server load scraping of `http` and `openai` services: the keys
//! `metrics_url`, `metrics`, `metric_waiting`, `metric_running` and
//! `metric_kv_cache` of a `[[services]]` entry.
//!
//! The agent reads the model server's Prometheus endpoint every stats
//! interval and reports three gauges per service (summed over their label
//! sets, as the agent's `model_load` module reads them): requests waiting,
//! requests running and KV-cache use.

/// vLLM's gauge of requests waiting.
pub const VLLM_WAITING: &str = "vllm:num_requests_waiting";
/// vLLM's gauge of requests running.
pub const VLLM_RUNNING: &str = "vllm:num_requests_running";
/// vLLM's gauge of KV-cache use, 0..=1.
pub const VLLM_KV_CACHE: &str = "vllm:gpu_cache_usage_perc";
/// The name newer vLLM releases (0.10 on) give the same gauge; read when
/// [`VLLM_KV_CACHE`] is the configured name and absent from the page.
pub const VLLM_KV_CACHE_NEW: &str = "vllm:kv_cache_usage_perc";
/// SGLang's gauge of requests waiting.
pub const SGLANG_WAITING: &str = "sglang:num_queue_reqs";
/// SGLang's gauge of requests running.
pub const SGLANG_RUNNING: &str = "sglang:num_running_reqs";
/// SGLang's gauge of KV-cache (token pool) use, 0..=1.
pub const SGLANG_KV_CACHE: &str = "sglang:token_usage";

/// Which model server's metric names are the defaults (TOML `metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelServer {
    /// `metrics = "vllm"` (the default).
    #[default]
    Vllm,
    /// `metrics = "sglang"`.
    Sglang,
}

impl ModelServer {
    /// Its (waiting, running, KV-cache) gauge names.
    pub fn names(self) -> [&'static str; 3] {
        match self {
            Self::Vllm => [VLLM_WAITING, VLLM_RUNNING, VLLM_KV_CACHE],
            Self::Sglang => [SGLANG_WAITING, SGLANG_RUNNING, SGLANG_KV_CACHE],
        }
    }
}

/// Where and what to scrape for one service's model-server load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsScrape {
    /// `http://` URL of the server's Prometheus endpoint, e.g.
    /// `http://127.0.0.1:8000/metrics` (TOML `metrics_url`).
    pub url: String,
    /// Whose names are the defaults (TOML `metrics`, default `vllm`).
    pub server: ModelServer,
    /// Gauge of requests waiting (TOML `metric_waiting`; default
    /// `vllm:num_requests_waiting`, SGLang `sglang:num_queue_reqs`).
    pub waiting: String,
    /// Gauge of requests running (TOML `metric_running`; default
    /// `vllm:num_requests_running`, SGLang `sglang:num_running_reqs`).
    pub running: String,
    /// Gauge of KV-cache use as a fraction 0..=1 (TOML `metric_kv_cache`;
    /// default `vllm:gpu_cache_usage_perc`, falling back to
    /// `vllm:kv_cache_usage_perc`; SGLang `sglang:token_usage`).
    pub kv_cache: String,
}

impl MetricsScrape {
    /// A scrape of `url` with `server`'s metric names.
    pub fn new(url: impl Into<String>, server: ModelServer) -> Self {
        let [waiting, running, kv_cache] = server.names().map(String::from);
        Self {
            url: url.into(),
            server,
            waiting,
            running,
            kv_cache,
        }
    }

    /// Builds a scrape from the TOML keys; `None` without `metrics_url`.
    ///
    /// # Errors
    /// A message when a `metric*` key is set without `metrics_url`, the URL
    /// is not plain `http`, or a name is not a Prometheus metric name.
    pub(crate) fn from_keys(
        url: Option<String>,
        server: Option<ModelServer>,
        waiting: Option<String>,
        running: Option<String>,
        kv_cache: Option<String>,
    ) -> Result<Option<Self>, String> {
        let Some(url) = url else {
            let stray =
                server.is_some() || waiting.is_some() || running.is_some() || kv_cache.is_some();
            return if stray {
                Err("metrics settings need metrics_url = \"http://...\"".into())
            } else {
                Ok(None)
            };
        };
        super::parse_url(&url).map_err(|e| format!("metrics_url: {e}"))?;
        let mut scrape = Self::new(url, server.unwrap_or_default());
        for (key, value, field) in [
            ("metric_waiting", waiting, &mut scrape.waiting),
            ("metric_running", running, &mut scrape.running),
            ("metric_kv_cache", kv_cache, &mut scrape.kv_cache),
        ] {
            if let Some(value) = value {
                if !is_metric_name(&value) {
                    return Err(format!(
                        "{key} {value:?} is not a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"
                    ));
                }
                *field = value;
            }
        }
        Ok(Some(scrape))
    }
}

/// Whether `name` is a Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub(crate) fn is_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}
