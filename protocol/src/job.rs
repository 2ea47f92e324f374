//! Durable jobs: calls the gateway owns instead of their caller, stored
//! until they end and kept with their log.
//!
//! A client asks with one [`JobRequest`] frame on its own stream and gets
//! one [`JobReply`] (or an `Error`); `JobOp::Log { follow: true }` gets a
//! `JobReply::Log` frame per batch of new lines until the job ends, then
//! `End`. An agent running a call whose dispatch asked for its log
//! ([`crate::DispatchHead::log`]) sends [`LogChunk`] frames beside the
//! result's `Data`. All three frames came with v2; a v1 peer neither sends
//! nor knows them.

use std::collections::BTreeMap;

use minicbor::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::CodecError;
use crate::message::check_name;

/// Largest payload a job may carry: 1 MiB (larger inputs by reference are
/// out of scope).
pub const MAX_JOB_PAYLOAD: usize = 1024 * 1024;
/// Most labels or template parameters on one job.
pub const MAX_LABELS: usize = 64;
/// Longest job id, bytes.
pub const MAX_JOB_ID_LEN: usize = 64;
/// Longest log chunk an agent sends in one [`LogChunk`], bytes.
pub const MAX_LOG_CHUNK: usize = 64 * 1024;
/// Most jobs one list answer holds.
pub const MAX_PAGE: u32 = 1000;

/// Where a job is in its life. Lower case on the HTTP API
/// (`"timed_out"`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Encode, Decode,
)]
#[serde(rename_all = "snake_case")]
#[cbor(index_only)]
pub enum JobState {
    /// Stored, waiting for a free slot.
    #[n(0)]
    Waiting,
    /// Dispatched to a node (its `node`, `attempt` and `started_ms` set).
    #[n(1)]
    Running,
    /// The service answered; the result is stored.
    #[n(2)]
    Succeeded,
    /// The service failed, the node was lost with no attempt left, or the
    /// gateway restarted under a job that is not idempotent.
    #[n(3)]
    Failed,
    /// The watchdog killed it (`watchdog_s` passed).
    #[n(4)]
    TimedOut,
    /// Cancelled by a user.
    #[n(5)]
    Cancelled,
    /// A realtime job that found no free slot.
    #[n(6)]
    Occupied,
}

impl JobState {
    /// Every state, in their wire order.
    pub const ALL: [JobState; 7] = [
        Self::Waiting,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::TimedOut,
        Self::Cancelled,
        Self::Occupied,
    ];

    /// The lower-case name (`"timed_out"`), as stored and on the HTTP API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
            Self::Occupied => "occupied",
        }
    }

    /// The state named `name` ([`Self::as_str`]).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// True for the states a job never leaves by itself (all but `waiting`
    /// and `running`); a restart starts such a job again.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Waiting | Self::Running)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job to submit: a service and payload, or a template and its
/// parameters, with the options of a call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct JobSpec {
    /// The service to run; `None` when `template` names one.
    #[n(0)]
    pub service: Option<String>,
    /// A template (`[templates.NAME]` or created over the API) whose
    /// payload pattern `params` fill in.
    #[n(1)]
    pub template: Option<String>,
    /// The template's `{param}` values (over its defaults).
    #[n(2)]
    pub params: BTreeMap<String, String>,
    /// The payload, at most [`MAX_JOB_PAYLOAD`] bytes (a template's
    /// pattern replaces it).
    #[cbor(n(3), with = "minicbor::bytes")]
    pub payload: Vec<u8>,
    /// Hints for the policy, as a call's.
    #[n(4)]
    pub hints: BTreeMap<String, String>,
    /// Higher runs first among waiting jobs (default 0).
    #[n(5)]
    pub priority: i32,
    /// With no free slot now, end as `occupied` instead of waiting.
    #[n(6)]
    pub realtime: bool,
    /// Kill the job after this many seconds of running (default: the
    /// template's, else `[jobs] default_watchdog_s`).
    #[n(7)]
    pub watchdog_s: Option<u32>,
    /// Attempts in all, at least 1 (default `[jobs] default_max_attempts`).
    #[n(8)]
    pub max_attempts: Option<u32>,
    /// Safe to run again: a job lost with its node or its gateway starts a
    /// new attempt instead of failing.
    #[n(9)]
    pub idempotent: bool,
    /// Free-form labels, listed with the job.
    #[n(10)]
    pub labels: BTreeMap<String, String>,
}

impl JobSpec {
    /// Checks names, sizes and counts.
    ///
    /// # Errors
    /// [`CodecError::Invalid`] naming the broken limit.
    pub fn validate(&self) -> Result<(), CodecError> {
        match (&self.service, &self.template) {
            (Some(s), None) => check_name("service name", s)?,
            (None, Some(t)) => check_name("template name", t)?,
            _ => {
                return Err(CodecError::Invalid(
                    "a job names either a service or a template".into(),
                ));
            }
        }
        if self.payload.len() > MAX_JOB_PAYLOAD {
            return Err(CodecError::Invalid(format!(
                "job payload of {} bytes, at most {MAX_JOB_PAYLOAD} allowed",
                self.payload.len()
            )));
        }
        for (what, map) in [
            ("params", &self.params),
            ("hints", &self.hints),
            ("labels", &self.labels),
        ] {
            if map.len() > MAX_LABELS {
                return Err(CodecError::Invalid(format!(
                    "{} {what}, at most {MAX_LABELS} allowed",
                    map.len()
                )));
            }
            if let Some((k, _)) = map.iter().find(|(k, v)| {
                k.len() > crate::limits::MAX_HINT_LEN || v.len() > crate::limits::MAX_HINT_LEN
            }) {
                return Err(CodecError::Invalid(format!(
                    "{what} entry {k:.32} longer than {} bytes",
                    crate::limits::MAX_HINT_LEN
                )));
            }
        }
        if self.max_attempts == Some(0) {
            return Err(CodecError::Invalid(
                "max_attempts must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// One state a job entered, with when (ms since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct Transition {
    /// The state entered.
    #[n(0)]
    pub state: JobState,
    /// When, ms since the Unix epoch.
    #[n(1)]
    pub at_ms: u64,
    /// The attempt it belongs to (0 before the first dispatch).
    #[n(2)]
    pub attempt: u32,
    /// The node, for `running`.
    #[n(3)]
    pub node: Option<String>,
    /// Why, in words (an error, "gateway restarted", "lease lost").
    #[n(4)]
    pub note: Option<String>,
}

/// A job as stored: what it asked for and where it is. Times are ms since
/// the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct JobView {
    /// The job's id: time-ordered, 26 lower-case hex digits.
    #[n(0)]
    pub id: String,
    /// The service it runs.
    #[n(1)]
    pub service: String,
    /// The template it came from, if any.
    #[n(2)]
    pub template: Option<String>,
    /// Where it is.
    #[n(3)]
    pub state: JobState,
    /// The tenant that submitted it (`None`: anonymous).
    #[n(4)]
    pub tenant: Option<String>,
    /// Higher runs first.
    #[n(5)]
    pub priority: i32,
    /// Ends as `occupied` rather than waiting.
    #[n(6)]
    pub realtime: bool,
    /// Killed after this long running, s.
    #[n(7)]
    pub watchdog_s: u32,
    /// The current attempt, 1-based (0 before the first dispatch).
    #[n(8)]
    pub attempt: u32,
    /// Attempts allowed in all.
    #[n(9)]
    pub max_attempts: u32,
    /// Started again after a lost node or gateway.
    #[n(10)]
    pub idempotent: bool,
    /// The node of the current or last attempt: for a running attempt,
    /// set once it outlives the gateway's first log flush (250 ms), else
    /// with its end.
    #[n(11)]
    pub node: Option<String>,
    /// Submitted.
    #[n(12)]
    pub created_ms: u64,
    /// The current attempt started running.
    #[n(13)]
    pub started_ms: Option<u64>,
    /// It reached a final state.
    #[n(14)]
    pub finished_ms: Option<u64>,
    /// Why it failed, timed out or was cancelled.
    #[n(15)]
    pub error: Option<String>,
    /// The stored result's length, bytes (`succeeded`, or the output a
    /// failed job left).
    #[n(16)]
    pub result_len: Option<u64>,
    /// Position among the service's waiting jobs (1 = next), when waiting.
    #[n(17)]
    pub position: Option<u32>,
    /// The hints it carries.
    #[n(18)]
    pub hints: BTreeMap<String, String>,
    /// Its labels.
    #[n(19)]
    pub labels: BTreeMap<String, String>,
    /// Every state it entered, oldest first (only in single-job answers;
    /// empty in lists).
    #[n(20)]
    pub history: Vec<Transition>,
    /// The request id of the request that submitted it (its HTTP
    /// `x-request-id`, or one the gateway made up); its attempts' calls
    /// carry it, so the gateway's and the agents' logs name it (`None` for
    /// a job stored before request ids).
    #[serde(default)]
    #[n(21)]
    pub request_id: Option<String>,
}

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "snake_case")]
#[cbor(index_only)]
pub enum LogStream {
    /// The service's standard output (or an HTTP service's body).
    #[n(0)]
    Stdout,
    /// The service's standard error.
    #[n(1)]
    Stderr,
    /// The gateway's own notes (dispatched to a node, lease lost, killed).
    #[n(2)]
    System,
}

impl LogStream {
    /// The lower-case name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::System => "system",
        }
    }

    /// The stream named `name` ([`Self::as_str`]).
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Stdout, Self::Stderr, Self::System]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// One stored line of a job's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct LogEntry {
    /// Its position in the job's log, from 1; follow with `after`.
    #[n(0)]
    pub seq: u64,
    /// The attempt that wrote it.
    #[n(1)]
    pub attempt: u32,
    /// When the gateway received it, ms since the Unix epoch.
    #[n(2)]
    pub ts_ms: u64,
    /// Where it came from.
    #[n(3)]
    pub stream: LogStream,
    /// The line, without its newline (invalid UTF-8 replaced).
    #[n(4)]
    pub line: String,
}

/// Agent → gateway on a dispatch stream that asked for its log: a piece
/// of the service's output as it ran. Stdout also arrives as the result's
/// `Data`; stderr only here.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct LogChunk {
    /// The stream it came from (never `System`).
    #[n(0)]
    pub stream: LogStream,
    /// When the agent read it, ms since the Unix epoch.
    #[n(1)]
    pub ts_ms: u64,
    /// The bytes, at most [`MAX_LOG_CHUNK`].
    #[cbor(n(2), with = "minicbor::bytes")]
    pub data: Vec<u8>,
}

/// Which jobs to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct JobFilter {
    /// Only jobs in this state.
    #[n(0)]
    pub state: Option<JobState>,
    /// Only this service's jobs.
    #[n(1)]
    pub service: Option<String>,
    /// Only this tenant's jobs (an admin may ask; a tenant sees its own).
    #[n(2)]
    pub tenant: Option<String>,
    /// At most this many (default 100, at most [`MAX_PAGE`]).
    #[n(3)]
    pub limit: Option<u32>,
    /// Continue after this job id (a previous page's `next_cursor`).
    #[n(4)]
    pub cursor: Option<String>,
}

/// One page of a job list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct JobPage {
    /// The jobs, newest first.
    #[n(0)]
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page; `None` on the last.
    #[n(1)]
    pub next_cursor: Option<String>,
}

/// What a [`JobRequest`] asks.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum JobOp {
    /// Store a job; answered once it is committed.
    #[n(0)]
    Submit(#[n(0)] JobSpec),
    /// One job, with its history.
    #[n(1)]
    Get(#[n(0)] String),
    /// Jobs, newest first.
    #[n(2)]
    List(#[n(0)] JobFilter),
    /// Stop a waiting or running job (the process is killed on its node).
    #[n(3)]
    Cancel(#[n(0)] String),
    /// Start a job again as a new attempt (a running one is cancelled
    /// first).
    #[n(4)]
    Restart(#[n(0)] String),
    /// Remove a job and its log (a running one is cancelled first).
    #[n(5)]
    Delete(#[n(0)] String),
    /// The log lines after `after` (0: from the start); with `follow`,
    /// more batches as they come until the job ends.
    #[n(6)]
    Log {
        /// The job.
        #[n(0)]
        id: String,
        /// The last `seq` already seen.
        #[n(1)]
        after: u64,
        /// Keep streaming until the job ends.
        #[n(2)]
        follow: bool,
    },
    /// The stored result's bytes.
    #[n(7)]
    Result(#[n(0)] String),
    /// The job settings (`None`), or new ones to store and put in force
    /// (the admin token). Added after 2.0: an older gateway refuses it as
    /// a malformed frame.
    #[n(8)]
    Settings(#[n(0)] Option<JobSettings>),
}

/// Job settings changed at run time (the most jobs one node runs at
/// once): the JSON of `GET`/`PUT /v1/job-settings` and the
/// [`JobOp::Settings`] / [`JobReply::Settings`] payload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
#[serde(deny_unknown_fields)]
pub struct JobSettings {
    /// The most jobs one node runs at once, every service together (0: no
    /// limit beyond the node's slots, its services' `max_concurrent`).
    #[n(0)]
    pub max_per_node: u32,
}

/// Client → gateway: one job operation.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct JobRequest {
    /// The tenant's API key (`None`: anonymous), as a call's.
    #[n(0)]
    pub api_key: Option<String>,
    /// The admin token: sees and changes every tenant's jobs.
    #[n(1)]
    pub admin_token: Option<String>,
    /// What to do.
    #[n(2)]
    pub op: JobOp,
}

impl JobRequest {
    /// Checks ids, keys and the spec against their limits.
    ///
    /// # Errors
    /// [`CodecError::Invalid`] naming the broken limit.
    pub fn validate(&self) -> Result<(), CodecError> {
        for key in [&self.api_key, &self.admin_token].into_iter().flatten() {
            if key.len() > crate::limits::MAX_API_KEY_LEN {
                return Err(CodecError::Invalid(format!(
                    "key longer than {} bytes",
                    crate::limits::MAX_API_KEY_LEN
                )));
            }
        }
        match &self.op {
            JobOp::Submit(spec) => spec.validate(),
            JobOp::Get(id)
            | JobOp::Cancel(id)
            | JobOp::Restart(id)
            | JobOp::Delete(id)
            | JobOp::Result(id)
            | JobOp::Log { id, .. } => check_job_id(id),
            JobOp::Settings(_) => Ok(()),
            JobOp::List(filter) => {
                if let Some(cursor) = &filter.cursor {
                    check_job_id(cursor)?;
                }
                if let Some(service) = &filter.service {
                    check_name("service name", service)?;
                }
                Ok(())
            }
        }
    }
}

/// Checks a job id's length and characters (ASCII letters, digits, `-`).
///
/// # Errors
/// [`CodecError::Invalid`].
pub fn check_job_id(id: &str) -> Result<(), CodecError> {
    if id.is_empty() {
        return Err(CodecError::Invalid("the job id is empty".into()));
    }
    if id.len() > MAX_JOB_ID_LEN || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(CodecError::Invalid(format!("bad job id {id:.64}")));
    }
    Ok(())
}

/// Gateway → client: a job operation's answer.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum JobReply {
    /// The job (submit, get, cancel, restart).
    #[n(0)]
    Job(#[n(0)] Box<JobView>),
    /// A list's page.
    #[n(1)]
    Page(#[n(0)] JobPage),
    /// A batch of log lines.
    #[n(2)]
    Log(#[n(0)] Vec<LogEntry>),
    /// The job was deleted (its id).
    #[n(3)]
    Deleted(#[n(0)] String),
    /// The stored result: its bytes and content type.
    #[n(4)]
    Result {
        /// The result, bytes.
        #[cbor(n(0), with = "minicbor::bytes")]
        data: Vec<u8>,
        /// Its media type, when the service named one.
        #[n(1)]
        content_type: Option<String>,
    },
    /// The job settings in force (after a change, the new ones).
    #[n(5)]
    Settings(#[n(0)] JobSettings),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_by_name() {
        for state in JobState::ALL {
            assert_eq!(JobState::parse(state.as_str()), Some(state));
            let json = serde_json::to_string(&state).expect("json");
            assert_eq!(json, format!("\"{}\"", state.as_str()));
        }
        assert_eq!(JobState::parse("done"), None);
        assert!(JobState::TimedOut.is_final());
        assert!(!JobState::Running.is_final());
    }

    #[test]
    fn specs_are_checked() {
        let mut spec = JobSpec {
            service: Some("sleep".into()),
            ..JobSpec::default()
        };
        assert!(spec.validate().is_ok());
        spec.template = Some("t".into());
        assert!(spec.validate().is_err(), "both service and template");
        spec.template = None;
        spec.payload = vec![0; MAX_JOB_PAYLOAD + 1];
        assert!(spec.validate().is_err(), "payload too large");
        spec.payload.clear();
        spec.max_attempts = Some(0);
        assert!(spec.validate().is_err());
        assert!(check_job_id("0190abcdef").is_ok());
        assert!(check_job_id("../etc").is_err());
        assert_eq!(
            check_job_id("").map_err(|e| e.to_string()),
            Err("invalid message: the job id is empty".into())
        );
    }
}
