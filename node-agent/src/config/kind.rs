//! What runs a service, and its TOML form.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::{
    DEFAULT_MAX_CONCURRENT, HealthCheck, MetricsScrape, ModelServer, ServiceConfig, SwapConfig,
    parse_url,
};

/// Default bound on a command's stdout or an HTTP response body, bytes
/// (16 MiB).
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 16 * 1024 * 1024;

/// Default `Content-Type` of HTTP service requests.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// What runs a service (TOML key `kind`).
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceKind {
    /// `kind = "command"`: an external program per call; payload on stdin,
    /// result from stdout.
    Command(CommandConfig),
    /// `kind = "http"`: an HTTP POST of the payload per call; the response
    /// body is the result, streamed as it arrives.
    Http(HttpConfig),
    /// `kind = "openai"`: an OpenAI-compatible model server (vLLM, SGLang,
    /// llama.cpp's server, TGI, Ollama): the payload (an OpenAI request
    /// body) is POSTed to `base_url` + the call's endpoint
    /// (`/chat/completions`, `/completions`, `/embeddings`); streamed
    /// responses (`"stream": true`) are relayed event by event.
    OpenAi(OpenAiConfig),
    /// `kind = "echo"`: returns the payload.
    Echo,
    /// `kind = "sleep"`: payload is milliseconds as decimal text; sleeps that
    /// long and returns `slept N ms`.
    Sleep,
    /// `kind = "sum-up"`: payload is N as decimal text (N <= 10^12); returns
    /// the sum 1 + 2 + ... + N, computed the slow way (real CPU work).
    SumUp,
    /// Code the program embedding the agent supplies (a Python function
    /// served by the `switchyard-fleet` package): the handler given for
    /// the service's name to [`crate::run_hosting`] answers each call. Not
    /// in TOML.
    Hosted,
}

/// An external command service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandConfig {
    /// Program and arguments, run directly (no shell); the program is looked
    /// up on `PATH` (TOML `command`).
    pub argv: Vec<String>,
    /// Extra environment variables (TOML `env`, default none).
    pub env: BTreeMap<String, String>,
    /// Working directory (TOML `cwd`, default the agent's).
    pub cwd: Option<PathBuf>,
    /// Most stdout bytes a call may produce (TOML `max_output_bytes`,
    /// default 16 MiB); more fails the call.
    pub max_output_bytes: u64,
}

/// A local HTTP service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// `http://` URL the payload is POSTed to (TOML `url`).
    pub url: String,
    /// Request `Content-Type` (TOML `content_type`, default
    /// `application/octet-stream`).
    pub content_type: String,
    /// Most response body bytes (TOML `max_output_bytes`, default 16 MiB).
    pub max_output_bytes: u64,
}

/// An OpenAI-compatible model server.
#[derive(Clone, PartialEq, Eq)]
pub struct OpenAiConfig {
    /// The server's `http://` API base, e.g. `http://127.0.0.1:8000/v1`
    /// (TOML `base_url`).
    pub base_url: String,
    /// Key sent upstream as `Authorization: Bearer` (TOML `api_key`, default
    /// none), for servers started with one (vLLM's `--api-key`).
    pub api_key: Option<String>,
    /// Most response body bytes (TOML `max_output_bytes`, default 16 MiB).
    pub max_output_bytes: u64,
}

impl std::fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("max_output_bytes", &self.max_output_bytes)
            .finish()
    }
}

impl ServiceKind {
    /// A command service running `argv` with defaults for the rest.
    pub fn command<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> Self {
        Self::Command(CommandConfig {
            argv: argv.into_iter().map(Into::into).collect(),
            env: BTreeMap::new(),
            cwd: None,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
        })
    }

    /// An HTTP service posting to `url` with defaults for the rest.
    pub fn http(url: impl Into<String>) -> Self {
        Self::Http(HttpConfig {
            url: url.into(),
            content_type: DEFAULT_CONTENT_TYPE.into(),
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
        })
    }

    /// An OpenAI-compatible service at `base_url` with defaults for the rest.
    pub fn openai(base_url: impl Into<String>) -> Self {
        Self::OpenAi(OpenAiConfig {
            base_url: base_url.into(),
            api_key: None,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
        })
    }

    /// The TOML name of the kind, e.g. `sum-up`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Command(_) => "command",
            Self::Http(_) => "http",
            Self::OpenAi(_) => "openai",
            Self::Echo => "echo",
            Self::Sleep => "sleep",
            Self::SumUp => "sum-up",
            Self::Hosted => "hosted",
        }
    }

    /// Checks the kind's settings.
    ///
    /// # Errors
    /// A message naming the broken rule: an empty command, an unparsable or
    /// non-`http` URL, a zero output bound, a bad content type.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::Command(c) => {
                if c.argv.first().is_none_or(String::is_empty) {
                    return Err("command must name a program".into());
                }
                if c.max_output_bytes == 0 {
                    return Err("max_output_bytes must be > 0".into());
                }
                if c.env
                    .keys()
                    .any(|k| k.is_empty() || k.contains(['=', '\0']))
                {
                    return Err("env names must be non-empty, without '=' or NUL".into());
                }
            }
            Self::Http(h) => {
                parse_url(&h.url)?;
                reqwest::header::HeaderValue::from_str(&h.content_type).map_err(|_| {
                    format!("content_type {:?} is not a header value", h.content_type)
                })?;
                if h.max_output_bytes == 0 {
                    return Err("max_output_bytes must be > 0".into());
                }
            }
            Self::OpenAi(o) => {
                parse_url(&o.base_url)?;
                if o.max_output_bytes == 0 {
                    return Err("max_output_bytes must be > 0".into());
                }
                if o.api_key.as_ref().is_some_and(|k| {
                    reqwest::header::HeaderValue::from_str(&format!("Bearer {k}")).is_err()
                }) {
                    return Err("api_key is not a header value".into());
                }
            }
            Self::Echo | Self::Sleep | Self::SumUp | Self::Hosted => {}
        }
        Ok(())
    }
}

/// The TOML shape of `[[services]]`, turned into a [`ServiceConfig`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    name: String,
    kind: RawKind,
    max_concurrent: Option<u32>,
    policy: Option<String>,
    #[serde(default)]
    idempotent: bool,
    command: Option<Vec<String>>,
    env: Option<BTreeMap<String, String>>,
    cwd: Option<PathBuf>,
    max_output_bytes: Option<u64>,
    url: Option<String>,
    content_type: Option<String>,
    base_url: Option<String>,
    api_key: Option<String>,
    swap: Option<SwapConfig>,
    health_url: Option<String>,
    health_interval_ms: Option<u64>,
    health_timeout_ms: Option<u64>,
    healthy_threshold: Option<u32>,
    unhealthy_threshold: Option<u32>,
    metrics_url: Option<String>,
    metrics: Option<ModelServer>,
    metric_waiting: Option<String>,
    metric_running: Option<String>,
    metric_kv_cache: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RawKind {
    Command,
    Http,
    #[serde(rename = "openai")]
    OpenAi,
    Echo,
    Sleep,
    SumUp,
}

/// The health check and model-server metrics keys, which only `http` and
/// `openai` services take.
const HEALTH_KEYS: [&str; 10] = [
    "health_url",
    "health_interval_ms",
    "health_timeout_ms",
    "healthy_threshold",
    "unhealthy_threshold",
    "metrics_url",
    "metrics",
    "metric_waiting",
    "metric_running",
    "metric_kv_cache",
];

impl RawKind {
    /// The kind's TOML name.
    fn name(self) -> &'static str {
        match self {
            Self::Command => "command",
            Self::Http => "http",
            Self::OpenAi => "openai",
            Self::Echo => "echo",
            Self::Sleep => "sleep",
            Self::SumUp => "sum-up",
        }
    }

    /// The kind-specific keys it takes.
    fn keys(self) -> &'static [&'static str] {
        match self {
            Self::Command => &["command", "env", "cwd", "max_output_bytes"],
            Self::Http => &[
                "url",
                "content_type",
                "max_output_bytes",
                HEALTH_KEYS[0],
                HEALTH_KEYS[1],
                HEALTH_KEYS[2],
                HEALTH_KEYS[3],
                HEALTH_KEYS[4],
                HEALTH_KEYS[5],
                HEALTH_KEYS[6],
                HEALTH_KEYS[7],
                HEALTH_KEYS[8],
                HEALTH_KEYS[9],
            ],
            Self::OpenAi => &[
                "base_url",
                "api_key",
                "max_output_bytes",
                HEALTH_KEYS[0],
                HEALTH_KEYS[1],
                HEALTH_KEYS[2],
                HEALTH_KEYS[3],
                HEALTH_KEYS[4],
                HEALTH_KEYS[5],
                HEALTH_KEYS[6],
                HEALTH_KEYS[7],
                HEALTH_KEYS[8],
                HEALTH_KEYS[9],
            ],
            Self::Echo | Self::Sleep | Self::SumUp => &[],
        }
    }
}

impl RawService {
    /// Every kind-specific key and whether the entry sets it.
    fn set_keys(&self) -> [(&'static str, bool); 18] {
        [
            (HEALTH_KEYS[0], self.health_url.is_some()),
            (HEALTH_KEYS[1], self.health_interval_ms.is_some()),
            (HEALTH_KEYS[2], self.health_timeout_ms.is_some()),
            (HEALTH_KEYS[3], self.healthy_threshold.is_some()),
            (HEALTH_KEYS[4], self.unhealthy_threshold.is_some()),
            (HEALTH_KEYS[5], self.metrics_url.is_some()),
            (HEALTH_KEYS[6], self.metrics.is_some()),
            (HEALTH_KEYS[7], self.metric_waiting.is_some()),
            (HEALTH_KEYS[8], self.metric_running.is_some()),
            (HEALTH_KEYS[9], self.metric_kv_cache.is_some()),
            ("command", self.command.is_some()),
            ("env", self.env.is_some()),
            ("cwd", self.cwd.is_some()),
            ("max_output_bytes", self.max_output_bytes.is_some()),
            ("url", self.url.is_some()),
            ("content_type", self.content_type.is_some()),
            ("base_url", self.base_url.is_some()),
            ("api_key", self.api_key.is_some()),
        ]
    }
}

impl TryFrom<RawService> for ServiceConfig {
    type Error = String;

    fn try_from(raw: RawService) -> Result<Self, String> {
        if let Some((key, _)) = raw
            .set_keys()
            .into_iter()
            .find(|(key, set)| *set && !raw.kind.keys().contains(key))
        {
            return Err(format!(
                "service {}: `{key}` does not apply to kind \"{}\"",
                raw.name,
                raw.kind.name()
            ));
        }
        let name = raw.name;
        let health = HealthCheck::from_keys(
            raw.health_url,
            raw.health_interval_ms,
            raw.health_timeout_ms,
            raw.healthy_threshold,
            raw.unhealthy_threshold,
        )
        .map_err(|e| format!("service {name}: {e}"))?;
        let metrics = MetricsScrape::from_keys(
            raw.metrics_url,
            raw.metrics,
            raw.metric_waiting,
            raw.metric_running,
            raw.metric_kv_cache,
        )
        .map_err(|e| format!("service {name}: {e}"))?;
        let max_output_bytes = raw.max_output_bytes.unwrap_or(DEFAULT_MAX_OUTPUT_BYTES);
        let kind = match raw.kind {
            RawKind::Command => {
                let Some(argv) = raw.command else {
                    return Err(format!(
                        "service {name}: kind \"command\" needs command = [\"program\", \"arg\", ...]"
                    ));
                };
                ServiceKind::Command(CommandConfig {
                    argv,
                    env: raw.env.unwrap_or_default(),
                    cwd: raw.cwd,
                    max_output_bytes,
                })
            }
            RawKind::Http => {
                let Some(url) = raw.url else {
                    return Err(format!(
                        "service {name}: kind \"http\" needs url = \"http://...\""
                    ));
                };
                ServiceKind::Http(HttpConfig {
                    url,
                    content_type: raw
                        .content_type
                        .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.into()),
                    max_output_bytes,
                })
            }
            RawKind::OpenAi => {
                let Some(base_url) = raw.base_url else {
                    return Err(format!(
                        "service {name}: kind \"openai\" needs base_url = \"http://host:port/v1\""
                    ));
                };
                ServiceKind::OpenAi(OpenAiConfig {
                    base_url,
                    api_key: raw.api_key,
                    max_output_bytes,
                })
            }
            RawKind::Echo => ServiceKind::Echo,
            RawKind::Sleep => ServiceKind::Sleep,
            RawKind::SumUp => ServiceKind::SumUp,
        };
        Ok(Self {
            name,
            kind,
            max_concurrent: raw.max_concurrent.unwrap_or(DEFAULT_MAX_CONCURRENT),
            swap: raw.swap,
            health,
            metrics,
            policy: raw.policy,
            idempotent: raw.idempotent,
        })
    }
}
