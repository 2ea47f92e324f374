//! `[jobs]` and `[templates.NAME]` of `gateway.toml`: durable jobs, where
//! they are stored, their defaults and limits, and the pre-configured
//! scripts (templates) a job may name instead of a service.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `[jobs]`: calls the gateway owns, stored until they end (durable
/// jobs: `docs/jobs.md`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Whether the job API is served and the store opened (default true).
    pub enabled: bool,
    /// Where jobs are stored: `sqlite://PATH` or `postgres://...` (default
    /// none: SQLite at `data_dir/jobs.db`, in WAL mode). Several gateways
    /// share one PostgreSQL database.
    pub database_url: Option<String>,
    /// How long a finished job and its log are kept, s (default 604 800:
    /// 7 days); then deleted.
    pub retention_s: u64,
    /// A job's watchdog when it names none, s (default 3600).
    pub default_watchdog_s: u32,
    /// The longest watchdog a job may ask, s (default 604 800: 7 days).
    pub max_watchdog_s: u32,
    /// Attempts when a job names none (default 1: a job lost with its node
    /// or gateway is not run again unless it asks).
    pub default_max_attempts: u32,
    /// The most attempts a job may ask (default 10).
    pub max_attempts: u32,
    /// How long a running job's node may stay silent on its control stream
    /// (stats are its heartbeat; at least two of the node's heartbeats)
    /// before the job's lease is lost and it moves on, s (default 10).
    pub lease_timeout_s: u32,
    /// The largest result stored, bytes (default 4 MiB); a longer result
    /// is cut there and the job notes it in its log.
    pub max_result_bytes: u64,
    /// The most log bytes stored per job, bytes (default 16 MiB); later
    /// lines are dropped with one note.
    pub max_log_bytes: u64,
    /// The most jobs waiting at once, all services (default 100 000);
    /// beyond it a submit is refused as overloaded (retry-safe).
    pub max_waiting: u64,
    /// Connections the store keeps open (default 8; SQLite: that many
    /// readers and 1 writer; PostgreSQL: one pool, half of it, at most 4,
    /// kept by the group-commit writer).
    pub max_connections: u32,
    /// The most jobs one node runs at once, every service together
    /// (default 0: no limit beyond the node's slots, its services'
    /// `max_concurrent`). The value at first start: once changed over the
    /// API (`PUT /api/job-settings`) the stored value rules.
    pub max_per_node: u32,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            database_url: None,
            retention_s: 7 * 24 * 3600,
            default_watchdog_s: 3600,
            max_watchdog_s: 7 * 24 * 3600,
            default_max_attempts: 1,
            max_attempts: 10,
            lease_timeout_s: 10,
            max_result_bytes: 4 << 20,
            max_log_bytes: 16 << 20,
            max_waiting: 100_000,
            max_connections: 8,
            max_per_node: 0,
        }
    }
}

impl JobsConfig {
    /// The first broken rule, if any.
    pub(super) fn check(&self) -> Result<(), String> {
        if self.default_watchdog_s == 0 || self.default_watchdog_s > self.max_watchdog_s {
            return Err("jobs.default_watchdog_s must be in 1..=jobs.max_watchdog_s".into());
        }
        // Watchdogs become call deadlines in ms (u32).
        if u64::from(self.max_watchdog_s) * 1000 > u64::from(u32::MAX) {
            return Err("jobs.max_watchdog_s must be at most 4294967 (49 days)".into());
        }
        if self.default_max_attempts == 0 || self.default_max_attempts > self.max_attempts {
            return Err("jobs.default_max_attempts must be in 1..=jobs.max_attempts".into());
        }
        if self.lease_timeout_s == 0 {
            return Err("jobs.lease_timeout_s must be > 0".into());
        }
        if self.max_connections == 0 {
            return Err("jobs.max_connections must be > 0".into());
        }
        if let Some(url) = &self.database_url
            && !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
        {
            return Err("jobs.database_url must start with sqlite: or postgres://".into());
        }
        Ok(())
    }
}

/// `[templates.NAME]`: a pre-configured job (a script with parameters). A job
/// naming the template runs `service` with `payload`, each `{param}` in it
/// replaced by the job's parameter or the template's default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateConfig {
    /// The service it runs.
    pub service: String,
    /// The payload pattern, with `{name}` placeholders (`{{` and `}}` for
    /// literal braces).
    #[serde(default)]
    pub payload: String,
    /// Values for placeholders a job leaves out.
    #[serde(default)]
    pub defaults: BTreeMap<String, String>,
    /// Its jobs' watchdog, s (default `[jobs] default_watchdog_s`).
    #[serde(default)]
    pub watchdog_s: Option<u32>,
    /// What it does, for listings.
    #[serde(default)]
    pub description: String,
}
