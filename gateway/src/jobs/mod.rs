//! Durable jobs: calls the gateway owns instead of their caller.
//!
//! A job is stored (`store`) before it is acknowledged, waits in the
//! gateway's job queue (priority, then submission order), runs as a call on
//! the same scheduler, policies and agents as any other (asking the agent
//! for its output as it runs, kept as the job's log), and ends in a final
//! state with its result. Every state change is a fenced update of the
//! stored row (the attempt number it belongs to), so a late answer from an
//! attempt that lost its lease changes nothing.
//!
//! Entry points for the front ends (QUIC `Job` frames, the HTTP routes
//! `/v1/jobs`, the dashboard's `/api/jobs`): the methods of [`Jobs`], each
//! taking the caller's [`Access`].

use std::sync::Arc;

use protocol::{ErrorKind, JobState, LogEntry};

use crate::tenants::Tenant;

/// Who is asking: the admin (every job) or a tenant (its own jobs; the
/// anonymous tenant when no tenants are configured).
#[derive(Debug, Clone)]
pub(crate) enum Access {
    /// The admin token: every tenant's jobs.
    Admin,
    /// A tenant's API key (or the anonymous tenant).
    Tenant(Arc<Tenant>),
}

impl Access {
    /// The tenant's name, `None` for the admin.
    pub(crate) fn tenant(&self) -> Option<&str> {
        match self {
            Self::Admin => None,
            Self::Tenant(t) => Some(t.name()),
        }
    }
}

/// Why a job operation failed: which side, and whether a retry is safe.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JobError {
    /// No such job (or not the caller's).
    #[error("no job {0}")]
    NotFound(String),
    /// The request is wrong (unknown service or template, bad option);
    /// the client's fault, not retry-safe.
    #[error("bad job request: {0}")]
    Invalid(String),
    /// The caller may not do this (a tenant's service patterns, another
    /// tenant's job).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The job is not in a state that allows it (e.g. the result of a job
    /// still running).
    #[error("job {id} is {state}: {why}")]
    Conflict {
        /// The job.
        id: String,
        /// Its state now.
        state: protocol::JobState,
        /// What was asked.
        why: &'static str,
    },
    /// Too many jobs are waiting (`[jobs] max_waiting`); retry-safe.
    #[error("too many jobs waiting (at most {0})")]
    Full(u64),
    /// The change goes through the cluster's etcd, which does not take it
    /// now (the gateway is degraded, or etcd failed); nothing changed
    /// anywhere, retry-safe.
    #[error("cluster degraded: {0}")]
    Degraded(String),
    /// Jobs are off (`[jobs] enabled = false`).
    #[error("jobs are disabled on this gateway")]
    Disabled,
    /// The store failed; the gateway's side, retry-safe (nothing was
    /// acknowledged).
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

impl JobError {
    /// The protocol error kind a QUIC client sees.
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound(_) => ErrorKind::UnknownService,
            Self::Invalid(_) | Self::Conflict { .. } => ErrorKind::BadRequest,
            Self::Forbidden(_) => ErrorKind::Forbidden,
            Self::Full(_) => ErrorKind::Overloaded,
            Self::Degraded(_) | Self::Disabled | Self::Store(_) => ErrorKind::Internal,
        }
    }

    /// The HTTP status the HTTP routes answer with.
    pub(crate) fn status(&self) -> u16 {
        match self {
            Self::NotFound(_) => 404,
            Self::Invalid(_) => 400,
            Self::Forbidden(_) => 403,
            Self::Conflict { .. } => 409,
            Self::Full(_) | Self::Degraded(_) | Self::Disabled | Self::Store(_) => 503,
        }
    }

    /// The `code` of the HTTP error answer, for the errors that have one.
    pub(crate) fn code(&self) -> Option<&'static str> {
        match self {
            Self::Degraded(_) => Some("cluster_degraded"),
            _ => None,
        }
    }
}

impl From<crate::cluster::ClusterError> for JobError {
    fn from(error: crate::cluster::ClusterError) -> Self {
        Self::Degraded(error.to_string())
    }
}

mod api;
mod dispatch;
pub(crate) mod http;
mod queue;
pub(crate) mod quic;
mod runner;
mod settings;
pub(crate) mod shared;
pub(crate) mod store;
mod template;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, Weak};

use tokio::sync::{Notify, broadcast, oneshot};

use crate::Shared;
use crate::config::{JobsConfig, TemplateConfig};
use store::{Change, JobStore};

/// The gateway's jobs: the store, the waiting queue, the running attempts.
pub(crate) struct Jobs {
    shared: Weak<Shared>,
    store: JobStore,
    config: JobsConfig,
    /// `[templates.NAME]` of `gateway.toml`.
    templates: BTreeMap<String, TemplateConfig>,
    /// This gateway's id in the store's leases (kept in `data_dir`).
    owner: String,
    inner: Mutex<Inner>,
    /// Wakes the dispatcher: a job waits, a slot freed.
    wake: Notify,
    /// The id of each job whose state or log changed (log followers).
    changed: broadcast::Sender<String>,
}

/// What the dispatcher and the runners share.
#[derive(Default)]
struct Inner {
    waiting: queue::Waiting,
    running: HashMap<String, Running>,
    /// Per service: job calls handed to the scheduler, not yet on a node.
    admitting: HashMap<String, u32>,
}

/// A running attempt.
struct Running {
    stop: Option<oneshot::Sender<runner::Stop>>,
}

/// A follower of a job's log: batches of new lines, then the channel
/// closes once the job has ended and every line was given.
pub(crate) type LogFollow = tokio::sync::mpsc::Receiver<Result<Vec<LogEntry>, JobError>>;

/// Help texts of the job metrics, shown as `# HELP` lines.
pub(crate) fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("jobs", "Stored jobs, by service and state.");
    describe_counter!("jobs_submitted_total", "Jobs stored, by service.");
    describe_counter!(
        "jobs_finished_total",
        "Jobs that reached a final state, by service and state."
    );
    describe_histogram!(
        "job_duration_seconds",
        "Time from a job's submission to its final state, s, by service and state."
    );
    describe_histogram!(
        "job_queue_wait_seconds",
        "Time from a job's submission to the start of each attempt, s, by service."
    );
    describe_counter!(
        "jobs_retries_total",
        "Jobs put back to waiting for a new attempt (their node lost), by service."
    );
    describe_counter!(
        "jobs_redelivered_total",
        "Idempotent jobs put back to waiting without spending an attempt because their gateway was lost (restarted, or its lease expired), by service."
    );
    describe_counter!(
        "jobs_watchdog_kills_total",
        "Jobs killed by their watchdog, by service."
    );
    describe_counter!(
        "jobs_late_results_total",
        "Answers of attempts that had lost their job (discarded)."
    );
    describe_histogram!(
        "jobs_store_commit_writes",
        "Writes of jobs (submits, state changes, ends, log lines) committed together in one transaction of the store."
    );
    describe_histogram!(
        "jobs_store_commit_seconds",
        "Time to apply and commit one such transaction, s."
    );
    describe_gauge!(
        "jobs_max_per_node",
        "The most jobs one node runs at once (0: no limit beyond its slots)."
    );
}

impl Jobs {
    /// Checks that the job store answers within `limit`; the error says
    /// why not.
    pub(crate) async fn store_reachable(&self, limit: std::time::Duration) -> Result<(), String> {
        match tokio::time::timeout(limit, self.store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {} ms", limit.as_millis())),
        }
    }
}

/// Now, ms since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A fenced change of job `id` from one of `from` to `to` at `at_ms`,
/// touching nothing else until the caller sets more.
fn change(id: &str, from: &[JobState], to: JobState, at_ms: u64) -> Change {
    Change::new(id, from, to, at_ms)
}
/// A template as listed: its name and settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct TemplateView {
    /// Its name.
    pub(crate) name: String,
    /// The service it runs.
    pub(crate) service: String,
    /// The payload pattern with `{param}` placeholders.
    pub(crate) payload: String,
    /// Default parameter values.
    pub(crate) defaults: std::collections::BTreeMap<String, String>,
    /// Its jobs' watchdog, s.
    pub(crate) watchdog_s: Option<u32>,
    /// What it does.
    pub(crate) description: String,
    /// `config` (from `gateway.toml`) or `api` (created over the API).
    pub(crate) source: &'static str,
}
