//! The agent's configuration: a TOML file, parsed strictly and validated.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use reqwest::Url;
use serde::Deserialize;

mod direct;
mod health;
mod kind;
mod metrics;
mod parse;
mod reconnect;
mod stats;
mod swap;

pub use direct::{DEFAULT_DIRECT_MAX_CONNECTIONS, DirectConfig};
pub use health::{
    DEFAULT_HEALTH_INTERVAL_MS, DEFAULT_HEALTH_TIMEOUT_MS, DEFAULT_HEALTHY_THRESHOLD,
    DEFAULT_UNHEALTHY_THRESHOLD, HealthCheck, MAX_HEALTH_MS,
};
pub(crate) use kind::RawService;
pub use kind::{
    CommandConfig, DEFAULT_CONTENT_TYPE, DEFAULT_MAX_OUTPUT_BYTES, HttpConfig, OpenAiConfig,
    ServiceKind,
};
pub(crate) use metrics::is_metric_name;
pub use metrics::{
    MetricsScrape, ModelServer, SGLANG_KV_CACHE, SGLANG_RUNNING, SGLANG_WAITING, VLLM_KV_CACHE,
    VLLM_KV_CACHE_NEW, VLLM_RUNNING, VLLM_WAITING,
};
use parse::parse_error;
pub use reconnect::ReconnectConfig;
pub use stats::{DEFAULT_STATS_CHANGE_PCT, DEFAULT_STATS_INTERVAL_MS};
pub use swap::{
    DEFAULT_LOAD_MS, DEFAULT_READY_TIMEOUT_S, MAX_READY_TIMEOUT_S, ReadyProbe, SlotConfig,
    SwapConfig,
};

/// Default TLS server name the agent expects on the gateway's certificate.
pub const DEFAULT_SERVER_NAME: &str = "localhost";
/// Default largest call payload the agent accepts, bytes (16 MiB).
pub const DEFAULT_MAX_PAYLOAD_BYTES: u64 = 16 * 1024 * 1024;
/// Default most concurrent calls of one service.
pub const DEFAULT_MAX_CONCURRENT: u32 = 4;
/// Call streams the agent accepts beyond the sum of its services'
/// `max_concurrent` and a quarter of it (see
/// [`AgentConfig::max_call_streams`]).
pub const CALL_STREAM_MARGIN: u32 = 16;

/// A commented example configuration, as `--print-example-config` prints it.
pub const EXAMPLE_CONFIG: &str = include_str!("example-agent.toml");
/// Largest token file the agent reads, bytes (4 KiB).
pub const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The text is not valid TOML or does not match the schema.
    #[error("invalid config at line {line}, column {column}: {message}")]
    Parse {
        /// 1-based line of the error (0 when unknown).
        line: usize,
        /// 1-based column of the error (0 when unknown).
        column: usize,
        /// What the parser said, on one line.
        message: String,
    },
    /// The values parse but break a rule.
    #[error("invalid config: {0}")]
    Invalid(String),
    /// The token file could not be read, is empty or is too large.
    #[error("cannot read the agent token from {path}: {why}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
}

/// The whole agent configuration.
///
/// TOML keys are the field names; unknown keys are errors.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The gateway's QUIC address, `host:port` (e.g. `127.0.0.1:4433`,
    /// `gw.example:4433`, `[::1]:4433`); resolved again at each reconnect.
    /// With a cluster of gateways, where the agent starts: it registers
    /// with every live member the gateway's member list names.
    pub gateway: String,
    /// More gateways of the same cluster to start from, `host:port` each
    /// (default none): the agent dials these and `gateway` until a member
    /// list arrives, and again whenever every member is unreachable.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Most gateways the agent registers with at once (default 0: every
    /// live member). Past it, the agent keeps a stable subset, chosen by
    /// rendezvous hashing of its node id with each member's name.
    #[serde(default)]
    pub max_gateways: u32,
    /// The name the gateway's certificate must carry (default `localhost`).
    #[serde(default = "default_server_name")]
    pub server_name: String,
    /// PEM file of the CA the agent trusts for the gateway: the gateway's
    /// `ca.pem` (in its `data_dir`). In a file read by
    /// [`AgentConfig::load`], a relative path is relative to the file's
    /// folder and `~/` is the home directory.
    pub ca: PathBuf,
    /// The shared agent token the gateway is configured with (its
    /// `agent_token`, or the `agent-token` file it generates). Give this or
    /// `token_file` (default empty).
    #[serde(default)]
    pub token: String,
    /// A file holding the agent token (surrounding whitespace trimmed, at
    /// most [`MAX_TOKEN_FILE_BYTES`]), e.g. the gateway's
    /// `~/.local/share/switchyard/agent-token`; default none. Read by
    /// [`AgentConfig::load`] and [`run`](crate::run) into `token` (it is then
    /// `None`).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// PEM file of this node's client certificate (`gateway cert issue
    /// --node ID`), presented to the gateway (mTLS); its common name must be
    /// `node_id`. Default none; required by a gateway with `[agents]
    /// require_client_cert = true`. Set with `client_key`.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// PEM file of the client certificate's private key (with `client_cert`).
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Unique node id, e.g. `gpu-node-1` (1..=256 bytes).
    pub node_id: String,
    /// Region, e.g. `eu-west` (default empty).
    #[serde(default)]
    pub region: String,
    /// Free-form labels, e.g. `tier = "premium"` (default none).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// What running the node costs per hour (default 0).
    #[serde(default)]
    pub cost_per_hour: f32,
    /// Worker threads of the agent program's async runtime (default 1: a
    /// current-thread runtime, every task on one thread, which halved the
    /// agent's CPU per forwarded call against one worker per core). More
    /// spread its calls over cores.
    #[serde(default = "default_worker_threads")]
    pub worker_threads: Option<usize>,
    /// How often the agent samples its stats, ms (default 1000). A sample
    /// that changed ([`Self::stats_change_pct`]) goes to the gateway at
    /// once; one that did not waits for the heartbeat.
    #[serde(default = "stats::default_interval_ms")]
    pub stats_interval_ms: u32,
    /// The longest the agent stays silent when its stats do not change,
    /// ms (default twice `stats_interval_ms`; at least it, at most 60 000).
    /// The gateway drops the node after three heartbeats without a report.
    /// Equal to `stats_interval_ms`, every sample is sent.
    #[serde(default)]
    pub stats_heartbeat_ms: Option<u32>,
    /// How far a figure must move for a sample to count as changed
    /// (default 5): CPU and GPU utilisation by that many points, memory by
    /// that share (%) of its total, a GPU's temperature and power by that
    /// share of their last value. Calls in flight, health and model-server
    /// queues count at any change. 0 sends every sample that differs.
    #[serde(default = "stats::default_change_pct")]
    pub stats_change_pct: f32,
    /// Largest call payload the agent accepts, bytes (default 16 MiB).
    #[serde(default = "default_max_payload_bytes")]
    pub max_payload_bytes: u64,
    /// Reconnect backoff (table `[reconnect]`).
    #[serde(default)]
    pub reconnect: ReconnectConfig,
    /// The services this node hosts (at least one; `[[services]]` tables).
    pub services: Vec<ServiceConfig>,
    /// Swappable slots, e.g. one per GPU (`[[slots]]` tables, default none):
    /// each holds at most one of its services at a time.
    #[serde(default)]
    pub slots: Vec<SlotConfig>,
    /// Newest wire version the agent offers the gateway (default 2): it
    /// offers `switchyard/2` and `switchyard/1` and speaks the one the
    /// gateway picks; `1` speaks only the first release's format.
    #[serde(default)]
    pub max_wire_version: protocol::WireVersion,
    /// At shutdown (SIGTERM, Ctrl-C), how long the calls in flight may
    /// take to finish, seconds (default 30): the agent tells the gateway it
    /// drains (no new calls), waits for its calls, then closes. 0 closes
    /// at once.
    #[serde(default = "default_shutdown_grace_s")]
    pub shutdown_grace_s: u32,
    /// OpenTelemetry traces of the calls this node runs, over OTLP/HTTP
    /// (table `[tracing]`: `otlp_endpoint`; default off).
    #[serde(default)]
    pub tracing: otel::TracingConfig,
    /// The direct port for look-aside calls (table `[direct]`, default
    /// none: no direct calls).
    #[serde(default)]
    pub direct: Option<DirectConfig>,
}

fn default_shutdown_grace_s() -> u32 {
    30
}

/// One hosted service.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawService")]
pub struct ServiceConfig {
    /// Service name, e.g. `sha256` (1..=256 bytes, unique on the node).
    pub name: String,
    /// What runs the service.
    pub kind: ServiceKind,
    /// Most calls of this service at once (default 4, at least 1).
    pub max_concurrent: u32,
    /// How to start and stop the server behind a swappable service (TOML
    /// `[services.swap]`, default none: the service is always loaded). A
    /// service with one must be in exactly one of [`AgentConfig::slots`].
    pub swap: Option<SwapConfig>,
    /// Active health check of an `http` or `openai` service (TOML
    /// `health_url` and friends, default none: always healthy).
    pub health: Option<HealthCheck>,
    /// Scraping of the model server's Prometheus endpoint for its load
    /// (queue, running requests, KV-cache use) of an `http` or `openai`
    /// service (TOML `metrics_url` and friends, default none: no load
    /// reported).
    pub metrics: Option<MetricsScrape>,
    /// The policy the gateway should pick this service's nodes with, when
    /// its operator set none (TOML `policy`, e.g. `"latency"`; default
    /// none: the gateway's default policy).
    pub policy: Option<String>,
    /// Running a call twice is safe: the gateway may retry a failed call
    /// on another node (TOML `idempotent`, default false).
    pub idempotent: bool,
}

impl ServiceConfig {
    /// A service with the default concurrency (4).
    pub fn new(name: impl Into<String>, kind: ServiceKind) -> Self {
        Self {
            name: name.into(),
            kind,
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            swap: None,
            health: None,
            metrics: None,
            policy: None,
            idempotent: false,
        }
    }

    /// The same service, swappable: `swap` tells how to start and stop it
    /// (it must then be put in a slot).
    #[must_use]
    pub fn with_swap(mut self, swap: SwapConfig) -> Self {
        self.swap = Some(swap);
        self
    }
}

fn default_server_name() -> String {
    DEFAULT_SERVER_NAME.into()
}
fn default_worker_threads() -> Option<usize> {
    Some(1)
}

fn default_max_payload_bytes() -> u64 {
    DEFAULT_MAX_PAYLOAD_BYTES
}

impl AgentConfig {
    /// A configuration with every optional field at its default (no slots).
    pub fn new(
        gateway: impl Into<String>,
        ca: impl Into<PathBuf>,
        token: impl Into<String>,
        node_id: impl Into<String>,
        services: Vec<ServiceConfig>,
    ) -> Self {
        Self {
            gateway: gateway.into(),
            gateways: Vec::new(),
            max_gateways: 0,
            server_name: default_server_name(),
            ca: ca.into(),
            token: token.into(),
            token_file: None,
            client_cert: None,
            client_key: None,
            node_id: node_id.into(),
            region: String::new(),
            labels: BTreeMap::new(),
            cost_per_hour: 0.0,
            worker_threads: default_worker_threads(),
            stats_interval_ms: DEFAULT_STATS_INTERVAL_MS,
            stats_heartbeat_ms: None,
            stats_change_pct: DEFAULT_STATS_CHANGE_PCT,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            shutdown_grace_s: default_shutdown_grace_s(),
            tracing: otel::TracingConfig::default(),
            direct: None,
            reconnect: ReconnectConfig::default(),
            services,
            slots: Vec::new(),
            max_wire_version: protocol::WireVersion::LATEST,
        }
    }

    /// Most call streams the gateway may have open to this agent at once:
    /// S + S/4 + [`CALL_STREAM_MARGIN`], where S is the sum of every
    /// service's `max_concurrent`. The agent's QUIC endpoint advertises it
    /// as its bidirectional stream limit, so QUIC itself stops a gateway
    /// from opening more (the gateway's stream open waits for one to
    /// close). The room above S is for streams whose call has ended but
    /// whose close is still crossing the network, and because QUIC (quinn)
    /// hands freed streams back to the opener in batches of an eighth of
    /// the limit; with it, the gateway's own admission (at most S calls)
    /// is what binds.
    pub fn max_call_streams(&self) -> u32 {
        let slots = self
            .services
            .iter()
            .map(|s| s.max_concurrent)
            .fold(0u32, u32::saturating_add);
        slots
            .saturating_add(slots / 4)
            .saturating_add(CALL_STREAM_MARGIN)
    }

    /// Parses and validates a TOML configuration.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for bad TOML, unknown keys or wrong types;
    /// [`ConfigError::Invalid`] for values that break a rule.
    pub fn from_toml_str(s: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(s).map_err(|e| parse_error(s, &e))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates the TOML file at `path`, then reads the
    /// token from `token_file` if one is named. Relative paths in it (`ca`,
    /// `token_file`, `client_cert`, `client_key`, `[direct]`'s `cert` and
    /// `key`, a command's `cwd`, a swap's `cwd`) are taken relative to the
    /// file's folder; those files may also start with `~/`, the home
    /// directory (`$HOME`).
    ///
    /// # Errors
    /// [`ConfigError::Read`] when the file cannot be read, else as
    /// [`AgentConfig::from_toml_str`] and [`AgentConfig::read_token_file`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::from_toml_str(&text)?;
        let home = std::env::var_os("HOME");
        for path in [&mut config.client_cert, &mut config.client_key]
            .into_iter()
            .chain([&mut config.token_file])
            .flatten()
            .chain([&mut config.ca])
        {
            *path = expand_home(path, home.as_deref());
        }
        if let Some(direct) = &mut config.direct {
            direct.resolve_paths(path.parent(), home.as_deref());
        }
        // Relative paths in a file mean "next to this file".
        if let Some(dir) = path.parent() {
            config.ca = dir.join(&config.ca);
            for path in [
                &mut config.client_cert,
                &mut config.client_key,
                &mut config.token_file,
            ]
            .into_iter()
            .flatten()
            {
                *path = dir.join(&*path);
            }
            for service in &mut config.services {
                if let ServiceKind::Command(command) = &mut service.kind
                    && let Some(cwd) = &mut command.cwd
                {
                    *cwd = dir.join(&*cwd);
                }
                if let Some(cwd) = service.swap.as_mut().and_then(|s| s.cwd.as_mut()) {
                    *cwd = dir.join(&*cwd);
                }
            }
        }
        config.read_token_file()?;
        Ok(config)
    }

    /// Reads the token from `token_file`, if one is named, into `token`
    /// (whitespace around it trimmed) and sets `token_file` to `None`.
    /// Nothing to do without one.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when `token` is given too;
    /// [`ConfigError::TokenFile`] when the file cannot be read, is larger
    /// than [`MAX_TOKEN_FILE_BYTES`], is not UTF-8 or holds only
    /// whitespace.
    pub fn read_token_file(&mut self) -> Result<(), ConfigError> {
        let Some(path) = self.token_file.take() else {
            return Ok(());
        };
        if !self.token.is_empty() {
            return Err(ConfigError::Invalid(
                "token and token_file are both given: keep one".into(),
            ));
        }
        let fail = |why: String| ConfigError::TokenFile {
            path: path.clone(),
            why,
        };
        let len = std::fs::metadata(&path)
            .map_err(|e| fail(e.to_string()))?
            .len();
        if len > MAX_TOKEN_FILE_BYTES {
            return Err(fail(format!(
                "{len} bytes, more than {MAX_TOKEN_FILE_BYTES}"
            )));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(fail("the file is empty".into()));
        }
        self.token = token.to_owned();
        Ok(())
    }

    /// Checks every rule a parsed configuration must also meet (`run` calls
    /// this too, for configurations built in code).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first broken rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        for gateway in std::iter::once(&self.gateway).chain(&self.gateways) {
            if let Err(e) = split_host_port(gateway) {
                return invalid(e);
            }
        }
        if self.server_name.is_empty() {
            return invalid("server_name must not be empty".into());
        }
        match (self.token.is_empty(), &self.token_file) {
            (true, None) => {
                return invalid(
                    "token or token_file is required (the gateway's agent token)".into(),
                );
            }
            (false, Some(_)) => {
                return invalid("token and token_file are both given: keep one".into());
            }
            _ => {}
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return invalid("client_cert and client_key go together".into());
        }
        check_name("node_id", &self.node_id)?;
        if self.labels.keys().any(String::is_empty) {
            return invalid("label keys must not be empty".into());
        }
        if !self.cost_per_hour.is_finite() || self.cost_per_hour < 0.0 {
            return invalid("cost_per_hour must be a finite number >= 0".into());
        }
        self.check_stats().map_err(ConfigError::Invalid)?;
        if self.max_payload_bytes == 0 {
            return invalid("max_payload_bytes must be > 0".into());
        }
        let ReconnectConfig { initial_ms, max_ms } = self.reconnect;
        if initial_ms == 0 || max_ms < initial_ms {
            return invalid(format!(
                "reconnect needs 0 < initial_ms <= max_ms, got {initial_ms} and {max_ms}"
            ));
        }
        if self.services.is_empty() {
            return invalid("at least one [[services]] entry is required".into());
        }
        if self.services.len() > protocol::limits::MAX_SERVICES {
            return invalid(format!(
                "at most {} services allowed",
                protocol::limits::MAX_SERVICES
            ));
        }
        let mut seen = BTreeSet::new();
        for service in &self.services {
            check_name("service name", &service.name)?;
            if let Some(policy) = &service.policy {
                check_name("policy", policy)?;
            }
            if !seen.insert(service.name.as_str()) {
                return invalid(format!("service {} is listed twice", service.name));
            }
            if service.max_concurrent == 0 {
                return invalid(format!(
                    "service {}: max_concurrent must be >= 1",
                    service.name
                ));
            }
            service
                .kind
                .validate()
                .and_then(|()| service.swap.as_ref().map_or(Ok(()), SwapConfig::validate))
                .map_err(|e| ConfigError::Invalid(format!("service {}: {e}", service.name)))?;
        }
        swap::validate_slots(&self.services, &self.slots)?;
        if self.direct.is_some() && self.max_wire_version < protocol::WireVersion::V2 {
            return invalid("[direct] needs max_wire_version 2 (direct calls are v2 only)".into());
        }
        self.direct.as_ref().map_or(Ok(()), DirectConfig::validate)
    }
}

/// Parses the URL of a local server (a service, its health check, its
/// metrics, a swap's readiness probe); only plain `http` is supported.
pub(crate) fn parse_url(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url).map_err(|e| format!("url {url:?} does not parse: {e}"))?;
    match parsed.scheme() {
        "http" => Ok(parsed),
        "https" => Err(format!(
            "url {url:?}: https is not supported (the agent's http client speaks plain http to local servers)"
        )),
        other => Err(format!("url {url:?}: scheme {other:?} is not http")),
    }
}

/// `path` with a leading `~/` replaced by `home` (unchanged without a
/// home or a `~/`).
pub fn expand_home(path: &Path, home: Option<&OsStr>) -> PathBuf {
    match (path.strip_prefix("~"), home) {
        (Ok(rest), Some(home)) if !home.is_empty() => Path::new(home).join(rest),
        _ => path.to_path_buf(),
    }
}

/// Splits `host:port` (IPv6 hosts in brackets).
pub(crate) fn split_host_port(address: &str) -> Result<(&str, u16), String> {
    let bad = || format!("gateway must be host:port, got {address:?}");
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(bad());
    }
    Ok((host, port))
}

fn check_name(what: &str, name: &str) -> Result<(), ConfigError> {
    let max = protocol::limits::MAX_NAME_LEN;
    if name.is_empty() || name.len() > max {
        return Err(ConfigError::Invalid(format!(
            "{what} must be 1..={max} bytes, got {}",
            name.len()
        )));
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ConfigError::Invalid(format!(
            "{what} {name:?} holds whitespace or a control character"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
