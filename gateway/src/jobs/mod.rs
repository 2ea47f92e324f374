//! Durable jobs (issue 13): calls the gateway owns instead of their caller.
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

use protocol::{ErrorKind, JobFilter, JobPage, JobSpec, JobView, LogEntry};

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
            Self::Disabled | Self::Store(_) => ErrorKind::Internal,
        }
    }

    /// The HTTP status the HTTP routes answer with.
    pub(crate) fn status(&self) -> u16 {
        match self {
            Self::NotFound(_) => 404,
            Self::Invalid(_) => 400,
            Self::Forbidden(_) => 403,
            Self::Conflict { .. } => 409,
            Self::Full(_) | Self::Disabled | Self::Store(_) => 503,
        }
    }
}

pub(crate) mod quic;
pub(crate) mod store;

/// The gateway's jobs: the store, the waiting queue, the running attempts.
pub(crate) struct Jobs {
    _private: (),
}

/// A follower of a job's log: batches of new lines, then `None` once the
/// job has ended and every line was given.
pub(crate) type LogFollow = tokio::sync::mpsc::Receiver<Result<Vec<LogEntry>, JobError>>;

impl Jobs {
    /// Stores a job and queues it (a realtime one runs now or ends
    /// `occupied`); returns it once committed.
    ///
    /// # Errors
    /// `Invalid` (unknown template, service not hosted by any node is
    /// fine: it waits), `Forbidden` (tenant's services), `Full`, `Store`.
    pub(crate) async fn submit(&self, access: &Access, spec: JobSpec) -> Result<JobView, JobError> {
        let _ = (access, spec);
        Err(JobError::Disabled)
    }

    /// One job with its history and position.
    ///
    /// # Errors
    /// `NotFound` (also another tenant's job), `Store`.
    pub(crate) async fn get(&self, access: &Access, id: &str) -> Result<JobView, JobError> {
        let _ = (access, id);
        Err(JobError::Disabled)
    }

    /// Jobs, newest first; a tenant sees only its own (`filter.tenant` is
    /// honoured for the admin only).
    ///
    /// # Errors
    /// `Store`.
    pub(crate) async fn list(
        &self,
        access: &Access,
        filter: JobFilter,
    ) -> Result<JobPage, JobError> {
        let _ = (access, filter);
        Err(JobError::Disabled)
    }

    /// Cancels a waiting or running job (a running one's process is killed
    /// on its node); a final job is returned as it is.
    ///
    /// # Errors
    /// `NotFound`, `Store`.
    pub(crate) async fn cancel(&self, access: &Access, id: &str) -> Result<JobView, JobError> {
        let _ = (access, id);
        Err(JobError::Disabled)
    }

    /// Starts a job again as a new attempt (a running one is cancelled
    /// first); it waits again at its priority.
    ///
    /// # Errors
    /// `NotFound`, `Store`.
    pub(crate) async fn restart(&self, access: &Access, id: &str) -> Result<JobView, JobError> {
        let _ = (access, id);
        Err(JobError::Disabled)
    }

    /// Removes a job, its history and its log (a running one is cancelled
    /// first).
    ///
    /// # Errors
    /// `NotFound`, `Store`.
    pub(crate) async fn delete(&self, access: &Access, id: &str) -> Result<(), JobError> {
        let _ = (access, id);
        Err(JobError::Disabled)
    }

    /// Log lines after `after` (at most `limit`, at most 10 000).
    ///
    /// # Errors
    /// `NotFound`, `Store`.
    pub(crate) async fn log(
        &self,
        access: &Access,
        id: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<LogEntry>, JobError> {
        let _ = (access, id, after, limit);
        Err(JobError::Disabled)
    }

    /// Follows a job's log from `after`: stored lines first, then new ones
    /// as they are written, until the job ends.
    ///
    /// # Errors
    /// `NotFound`, `Store`.
    pub(crate) async fn follow(
        &self,
        access: &Access,
        id: &str,
        after: u64,
    ) -> Result<LogFollow, JobError> {
        let _ = (access, id, after);
        Err(JobError::Disabled)
    }

    /// The stored result and its content type.
    ///
    /// # Errors
    /// `NotFound`, `Conflict` when the job has no result yet, `Store`.
    pub(crate) async fn result(
        &self,
        access: &Access,
        id: &str,
    ) -> Result<(Vec<u8>, Option<String>), JobError> {
        let _ = (access, id);
        Err(JobError::Disabled)
    }
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

impl Jobs {
    /// Every template: `gateway.toml`'s and those created over the API.
    ///
    /// # Errors
    /// `Store`.
    pub(crate) async fn templates(&self) -> Result<Vec<TemplateView>, JobError> {
        Err(JobError::Disabled)
    }

    /// Creates (or replaces) a template over the API; admin only, and a
    /// name from `gateway.toml` cannot be replaced.
    ///
    /// # Errors
    /// `Forbidden` for a tenant, `Invalid`, `Store`.
    pub(crate) async fn put_template(
        &self,
        access: &Access,
        name: &str,
        template: crate::config::TemplateConfig,
    ) -> Result<TemplateView, JobError> {
        let _ = (access, name, template);
        Err(JobError::Disabled)
    }
}
