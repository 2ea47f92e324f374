//! `gateway.toml`: every setting has a default, so an empty file (or none)
//! runs a gateway on `127.0.0.1:4433`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod cluster;
mod http;
mod jobs;
mod leases;
mod metrics;
mod outlier;
mod parent;
mod quic;
mod rebalance;
mod retry;
mod routing;
mod scale;
mod services;
pub(crate) mod tenants;

pub use cluster::ClusterConfig;
pub use http::{HttpConfig, TlsConfig};
pub use jobs::{JobsConfig, TemplateConfig};
pub use leases::LeasesConfig;
pub use metrics::MetricsConfig;
pub use outlier::OutlierConfig;
pub use parent::ParentConfig;
pub use quic::{AgentsConfig, QuicConfig};
pub use rebalance::RebalanceConfig;
pub use retry::{BreakerConfig, RetryConfig, RetryOn};
pub use routing::{DecisionsConfig, PrefixConfig};
pub use scale::ScaleConfig;
pub use services::{CacheConfig, NodeConfig, QueueConfig, ServiceConfig, SwapConfig};
pub use tenants::{ANONYMOUS, TenantConfig, check_anonymous};

/// The gateway's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// QUIC listen address (default `127.0.0.1:4433`; port 0 picks a free one).
    pub listen: SocketAddr,
    /// Newest wire version accepted from agents and clients (default 2):
    /// the QUIC handshake picks `switchyard/2` when the peer offers it,
    /// else `switchyard/1` (the first release's format). `1` speaks only
    /// the first release's format.
    pub max_wire_version: protocol::WireVersion,
    /// Admin HTTP address: `/metrics`, `/api`, the dashboard (default
    /// `127.0.0.1:4490`; port 0 picks a free one).
    pub admin_listen: SocketAddr,
    /// Whether the admin HTTP port is served (default true).
    pub admin_enabled: bool,
    /// Where the gateway keeps its generated certificate, key, CA and agent
    /// token (default `$XDG_DATA_HOME/switchyard`, else
    /// `~/.local/share/switchyard`, else `./.switchyard`).
    pub data_dir: PathBuf,
    /// TLS material; unset paths default to `cert.pem`, `key.pem` and
    /// `ca.pem` in `data_dir`, created on first start.
    pub tls: TlsConfig,
    /// Folder the gateway loads policy plugins (`*.wasm`) from
    /// (default `plugins/dist`).
    pub plugins_dir: PathBuf,
    /// Policy used for services with none configured (default `round-robin`).
    pub default_policy: String,
    /// Largest call payload accepted, bytes (default 16 MiB). Also bounds
    /// results relayed from nodes.
    pub max_payload_bytes: u64,
    /// Largest timeout a call may ask for, ms (default 600 000).
    pub max_timeout_ms: u32,
    /// The shared secret agents present when they register. Unset: a random
    /// token is generated into `data_dir/agent-token` on first start.
    pub agent_token: Option<String>,
    /// The shared secret admin requests (`switchyard policy set`) present.
    /// Unset: a random token is generated into `data_dir/admin-token`.
    pub admin_token: Option<String>,
    /// Worker threads of the gateway program's async runtime (default 1:
    /// everything on one thread, a current-thread runtime, as HAProxy's
    /// and nginx's single thread/worker). `make bench`'s `threads` section
    /// measured one thread at 1.2× the calls per CPU-second of one worker
    /// per core on 2 cores, at the same peak rate. Raise it (`0` = one
    /// worker per core) when the gateway keeps one core busy and others
    /// are idle.
    pub worker_threads: Option<usize>,
    /// How long one policy `pick` or `observe` may run, ms (default 5); past
    /// it the call traps and the pick falls back.
    pub pick_deadline_ms: u64,
    /// Whether compiled plugins are cached on disk in `data_dir/wasm-cache`,
    /// keyed by content hash, so restarts skip compilation (default true).
    pub plugin_cache: bool,
    /// Whether a pick that the policy fails (trap, deadline) falls back to the
    /// built-in round-robin (default true: fail open) instead of failing the
    /// call.
    pub fail_open: bool,
    /// Seed for the random numbers handed to policies and of the candidate
    /// sample (`max_candidates`); unset = from entropy.
    pub seed: Option<u64>,
    /// The most candidates a policy is offered per pick (default 0: every
    /// node with a free slot). Past it the policy sees a uniform random
    /// sample of that many free nodes (the power of d choices), so a pick
    /// costs the same with 1 000 nodes as with 10. `[services.NAME]
    /// max_candidates` overrides it.
    pub max_candidates: usize,
    /// Queueing when every node is busy (table `[queue]`).
    pub queue: QueueConfig,
    /// Swapping services on idle nodes' slots (table `[swap]`).
    pub swap: SwapConfig,
    /// Ejecting nodes whose calls keep failing (table `[outlier]`).
    pub outlier: OutlierConfig,
    /// Retries of idempotent services (table `[retry]`).
    pub retry: RetryConfig,
    /// Prompt prefix hashes for cache-aware policies (table `[prefix]`).
    pub prefix: PrefixConfig,
    /// The policies' decisions kept for "why this node" (table
    /// `[decisions]`).
    pub decisions: DecisionsConfig,
    /// Durable jobs: their store, defaults and limits (table `[jobs]`).
    pub jobs: JobsConfig,
    /// Look-aside leases: lifetimes, calls per lease, key rotation (table
    /// `[leases]`).
    pub leases: LeasesConfig,
    /// Pre-configured jobs a submit may name instead of a service (tables
    /// `[templates.NAME]`; more can be created over the API).
    pub templates: BTreeMap<String, TemplateConfig>,
    /// Circuit breakers of every service (table `[circuit_breakers]`;
    /// `[services.NAME]` overrides them).
    pub circuit_breakers: BreakerConfig,
    /// The result cache (table `[cache]`); a service is cached only with
    /// `[services.NAME] cache_ttl_s`.
    pub cache: CacheConfig,
    /// Per-service settings, by service name.
    pub services: BTreeMap<String, ServiceConfig>,
    /// Per-node settings, by node id (table `[nodes.ID]`).
    pub nodes: BTreeMap<String, NodeConfig>,
    /// The HTTP ingress: OpenAI-compatible routes and `/v1/call/{service}`
    /// (table `[http]`).
    pub http: HttpConfig,
    /// The Prometheus series of `/metrics`: how long idle ones live (table
    /// `[metrics]`).
    pub metrics: MetricsConfig,
    /// The autoscaling signals: target utilisation and measuring window
    /// (table `[scale]`, see [`ScaleConfig`]).
    pub scale: ScaleConfig,
    /// OpenTelemetry traces of calls over OTLP/HTTP (table `[tracing]`:
    /// `otlp_endpoint`; default off).
    pub tracing: otel::TracingConfig,
    /// Model name aliases for the OpenAI routes: `[models] "llama-3-8b" =
    /// "llama"` makes a request for model `llama-3-8b` call service
    /// `llama` (default none: a model names its service).
    pub models: BTreeMap<String, String>,
    /// The tenants, their API keys and limits (array `[[tenants]]`, see
    /// [`TenantConfig`]); default none: every caller is the anonymous
    /// tenant, with no limits.
    pub tenants: Vec<TenantConfig>,
    /// Whether a gateway with no `[[tenants]]` may listen on an address that
    /// is not loopback, serving anyone without a key (default false: it
    /// refuses to start, see [`check_anonymous`]).
    pub allow_anonymous: bool,
    /// The QUIC endpoint's limits and accept policy (table `[quic]`).
    pub quic: QuicConfig,
    /// Agents' identities and limits (table `[agents]`).
    pub agents: AgentsConfig,
    /// At shutdown (SIGTERM, Ctrl-C), how long calls in flight may take to
    /// finish, seconds (default 30), while new calls are answered
    /// `shutting down` (retry-safe); then connections close with the
    /// shutdown code (SDKs fail over at once). 0 closes at once.
    pub shutdown_grace_s: u32,
    /// Several gateways serving one fleet, their membership in etcd (table
    /// `[cluster]`, see [`ClusterConfig`]); default none: a cluster of one,
    /// no etcd.
    pub cluster: Option<ClusterConfig>,
    /// This gateway's id in a tree of gateways: its node id at its parent
    /// and its name in the topology (1..=256 bytes, no control
    /// characters). Default: `[cluster] name`, else the host name.
    pub id: Option<String>,
    /// The gateway above this one (table `[parent]`, see
    /// [`ParentConfig`]); default none: this gateway is a root.
    pub parent: Option<ParentConfig>,
    /// Moving waiting calls between child gateways (table `[rebalance]`,
    /// see [`RebalanceConfig`]).
    pub rebalance: RebalanceConfig,
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// The configuration is valid but unsafe to start with (e.g. anonymous
    /// access on a public address).
    #[error("refusing to start: {0}")]
    Refused(String),
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 4433)),
            max_wire_version: protocol::WireVersion::LATEST,
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 4490)),
            admin_enabled: true,
            data_dir: default_data_dir(),
            tls: TlsConfig::default(),
            plugins_dir: PathBuf::from("plugins/dist"),
            default_policy: "round-robin".into(),
            max_payload_bytes: u64::from(protocol::DEFAULT_MAX_FRAME_LEN),
            max_timeout_ms: 600_000,
            agent_token: None,
            admin_token: None,
            worker_threads: Some(1),
            pick_deadline_ms: 5,
            plugin_cache: true,
            fail_open: true,
            seed: None,
            max_candidates: 0,
            queue: QueueConfig::default(),
            swap: SwapConfig::default(),
            outlier: OutlierConfig::default(),
            retry: RetryConfig::default(),
            prefix: PrefixConfig::default(),
            decisions: DecisionsConfig::default(),
            jobs: JobsConfig::default(),
            leases: LeasesConfig::default(),
            templates: BTreeMap::new(),
            circuit_breakers: BreakerConfig::default(),
            cache: CacheConfig::default(),
            services: BTreeMap::new(),
            nodes: BTreeMap::new(),
            http: HttpConfig::default(),
            metrics: MetricsConfig::default(),
            scale: ScaleConfig::default(),
            tracing: otel::TracingConfig::default(),
            models: BTreeMap::new(),
            tenants: Vec::new(),
            allow_anonymous: false,
            quic: QuicConfig::default(),
            agents: AgentsConfig::default(),
            shutdown_grace_s: 30,
            cluster: None,
            id: None,
            parent: None,
            rebalance: RebalanceConfig::default(),
        }
    }
}

impl GatewayConfig {
    /// Parses a TOML document.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for bad TOML or unknown keys,
    /// [`ConfigError::Invalid`] for out-of-range values.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses `path`.
    ///
    /// # Errors
    /// As [`GatewayConfig::from_toml_str`], plus [`ConfigError::Read`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text)
    }

    /// This gateway's id in a tree of gateways: `id`, else `[cluster]
    /// name`, else the host name (`gateway` when it has none).
    pub fn gateway_id(&self) -> String {
        if let Some(id) = &self.id {
            return id.clone();
        }
        self.cluster
            .clone()
            .unwrap_or_else(|| ClusterConfig::with_etcd(Vec::new()))
            .member_name()
    }

    /// Checks value ranges, and the `[[tenants]]` rules (unique non-empty
    /// names, a key each, no key shared, positive finite limits, valid
    /// service globs; key files are read later, by
    /// the tenants when the gateway starts).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the bad value (and the tenant).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_payload_bytes == 0 || self.max_payload_bytes > 1 << 32 {
            return Err(ConfigError::Invalid(
                "max_payload_bytes must be in 1..=4 GiB".into(),
            ));
        }
        if self.max_timeout_ms == 0 {
            return Err(ConfigError::Invalid("max_timeout_ms must be > 0".into()));
        }
        self.prefix.check().map_err(ConfigError::Invalid)?;
        self.decisions.check().map_err(ConfigError::Invalid)?;
        self.jobs.check().map_err(ConfigError::Invalid)?;
        self.leases.check().map_err(ConfigError::Invalid)?;
        for (name, template) in &self.templates {
            if template.service.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "templates.{name}.service must name a service"
                )));
            }
        }
        if self.outlier.max_ejection_percent > 100 {
            return Err(ConfigError::Invalid(
                "outlier.max_ejection_percent must be in 0..=100".into(),
            ));
        }
        if self.agent_token.as_deref() == Some("") || self.admin_token.as_deref() == Some("") {
            return Err(ConfigError::Invalid(
                "agent_token and admin_token must not be empty".into(),
            ));
        }
        if !(1..=10_000).contains(&self.pick_deadline_ms) {
            return Err(ConfigError::Invalid(
                "pick_deadline_ms must be in 1..=10000".into(),
            ));
        }
        if self.queue.capacity > 1_000_000
            || self
                .services
                .values()
                .any(|s| s.queue_capacity.is_some_and(|c| c > 1_000_000))
        {
            return Err(ConfigError::Invalid(
                "queue capacities must be in 0..=1000000".into(),
            ));
        }
        if self.swap.queue_ratio == 0
            || !self.swap.cost_factor.is_finite()
            || self.swap.cost_factor < 0.0
            || self.swap.timeout_s == 0
        {
            return Err(ConfigError::Invalid(
                "swap: queue_ratio and timeout_s must be > 0, cost_factor finite and >= 0".into(),
            ));
        }
        self.validate_cache()?;
        if let Some(id) = &self.id {
            protocol::NodeSpec::validate_name("id", id)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        if let Some(parent) = &self.parent {
            parent.validate()?;
        }
        self.rebalance.validate()?;
        self.quic.validate(self.max_payload_bytes)?;
        self.agents.validate()?;
        self.retry.validate()?;
        self.http.validate()?;
        for (alias, service) in &self.models {
            if alias.is_empty() || service.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "models: alias {alias:?} = {service:?}: names must not be empty"
                )));
            }
        }
        tenants::validate(&self.tenants)?;
        self.scale.validate(
            self.services
                .iter()
                .map(|(name, s)| (name, s.target_utilisation)),
        )?;
        if let Some(cluster) = &self.cluster {
            cluster.validate(
                self.listen,
                self.http.enabled.then_some(self.http.listen),
                self.admin_enabled.then_some(self.admin_listen),
            )?;
        }
        if self.default_policy.is_empty() {
            return Err(ConfigError::Invalid(
                "default_policy must not be empty".into(),
            ));
        }
        Ok(())
    }

    fn validate_cache(&self) -> Result<(), ConfigError> {
        for (name, service) in &self.services {
            if service
                .cache_ttl_s
                .is_some_and(|ttl| !(1..=MAX_CACHE_TTL_S).contains(&ttl))
            {
                return Err(ConfigError::Invalid(format!(
                    "services.{name}.cache_ttl_s must be in 1..={MAX_CACHE_TTL_S}"
                )));
            }
            let hints = &service.cache_key_hints;
            if hints.len() > protocol::limits::MAX_HINTS
                || hints.iter().any(|h| h.is_empty() || h == "policy")
            {
                return Err(ConfigError::Invalid(format!(
                    "services.{name}.cache_key_hints: at most {} non-empty names, not `policy` \
                     (it only routes)",
                    protocol::limits::MAX_HINTS
                )));
            }
        }
        Ok(())
    }

    /// The service an OpenAI request for `model` calls: its alias in
    /// `[models]`, else the model name itself.
    pub fn service_for_model<'a>(&'a self, model: &'a str) -> &'a str {
        self.models.get(model).map_or(model, String::as_str)
    }

    /// How long `service`'s results are cached, or `None` when it is not
    /// cached (no `cache_ttl_s`).
    pub fn cache_ttl(&self, service: &str) -> Option<std::time::Duration> {
        self.services
            .get(service)
            .and_then(|s| s.cache_ttl_s)
            .map(|s| std::time::Duration::from_secs(u64::from(s)))
    }

    /// The policy configured for `service`, else the default policy.
    pub fn policy_for(&self, service: &str) -> &str {
        self.services
            .get(service)
            .and_then(|s| s.policy.as_deref())
            .unwrap_or(&self.default_policy)
    }

    /// Most calls of `service` that may wait in its queue.
    pub fn queue_capacity(&self, service: &str) -> u32 {
        self.services
            .get(service)
            .and_then(|s| s.queue_capacity)
            .unwrap_or(self.queue.capacity)
    }

    /// The swap cooldown of node `node_id`.
    pub fn node_swap_cooldown(&self, node_id: &str) -> std::time::Duration {
        let s = self
            .nodes
            .get(node_id)
            .and_then(|n| n.swap_cooldown_s)
            .unwrap_or(self.swap.swap_cooldown_s);
        std::time::Duration::from_secs(u64::from(s))
    }

    /// How long a slot that failed to load `service` on node `node_id`
    /// leaves it alone: the longest of the failure, node and service
    /// cooldowns.
    pub fn failed_swap_block(&self, node_id: &str, service: &str) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.swap.failure_cooldown_s))
            .max(self.node_swap_cooldown(node_id))
            .max(self.service_swap_cooldown(service))
    }

    /// The per-service swap cooldown of `service`.
    pub fn service_swap_cooldown(&self, service: &str) -> std::time::Duration {
        let s = self.services.get(service).map_or(0, |s| s.swap_cooldown_s);
        std::time::Duration::from_secs(u64::from(s))
    }

    /// Where the TLS files are, defaults filled in from `data_dir`.
    pub fn tls_files(&self) -> transport::TlsFiles {
        let dflt = transport::TlsFiles::in_dir(&self.data_dir);
        transport::TlsFiles {
            cert: self.tls.cert.clone().unwrap_or(dflt.cert),
            key: self.tls.key.clone().unwrap_or(dflt.key),
            ca: self.tls.ca.clone().unwrap_or(dflt.ca),
            ca_key: self.tls.ca_key.clone().unwrap_or(dflt.ca_key),
        }
    }
}

/// Longest `cache_ttl_s`: one year.
pub const MAX_CACHE_TTL_S: u32 = 365 * 24 * 3600;

/// The default data directory: `$XDG_DATA_HOME/switchyard`, else
/// `$HOME/.local/share/switchyard`, else `./.switchyard`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("switchyard");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".local/share/switchyard");
    }
    PathBuf::from(".switchyard")
}

#[cfg(test)]
mod tests;
