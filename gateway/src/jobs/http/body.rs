//! The JSON bodies and queries of the job routes: a submitted job
//! (`POST /v1/jobs`), a template (`POST /v1/templates`), the list and log
//! queries. Parsing only; the handlers are in `super`.

use std::collections::BTreeMap;

use base64::Engine as _;
use protocol::job::MAX_JOB_PAYLOAD;
use protocol::{JobFilter, JobSpec, JobState};
use serde::Deserialize;

use crate::config::TemplateConfig;

/// Why a body or query was refused: the message and whether it is `413`
/// (a payload over [`MAX_JOB_PAYLOAD`]) rather than `400`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BadRequest {
    /// What is wrong, in words.
    pub(super) message: String,
    /// The payload is too large (413) rather than malformed (400).
    pub(super) too_large: bool,
}

impl BadRequest {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            too_large: false,
        }
    }
}

/// `POST /v1/jobs`'s body: a service or a template, the payload as text or
/// base64, the job's options. Unknown fields are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    service: Option<String>,
    template: Option<String>,
    #[serde(default)]
    params: BTreeMap<String, String>,
    payload: Option<String>,
    payload_base64: Option<String>,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    realtime: bool,
    watchdog_s: Option<u32>,
    max_attempts: Option<u32>,
    #[serde(default)]
    idempotent: bool,
    #[serde(default)]
    hints: BTreeMap<String, String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// The job a `POST /v1/jobs` body asks for.
///
/// # Errors
/// [`BadRequest`]: not JSON, an unknown field, both `payload` and
/// `payload_base64`, bad base64, neither or both of `service` and
/// `template`, a payload over [`MAX_JOB_PAYLOAD`] bytes (`too_large`), or
/// whatever [`JobSpec::validate`] refuses.
pub(super) fn submit(body: &[u8]) -> Result<JobSpec, BadRequest> {
    let body: SubmitBody =
        serde_json::from_slice(body).map_err(|e| BadRequest::new(format!("bad job body: {e}")))?;
    let payload = match (body.payload, body.payload_base64) {
        (Some(_), Some(_)) => {
            return Err(BadRequest::new(
                "give either payload or payload_base64, not both",
            ));
        }
        (Some(text), None) => text.into_bytes(),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| BadRequest::new(format!("payload_base64 is not base64: {e}")))?,
        (None, None) => Vec::new(),
    };
    if payload.len() > MAX_JOB_PAYLOAD {
        return Err(BadRequest {
            message: format!(
                "job payload of {} bytes, at most {MAX_JOB_PAYLOAD} allowed",
                payload.len()
            ),
            too_large: true,
        });
    }
    let spec = JobSpec {
        service: body.service,
        template: body.template,
        params: body.params,
        payload,
        hints: body.hints,
        priority: body.priority,
        realtime: body.realtime,
        watchdog_s: body.watchdog_s,
        max_attempts: body.max_attempts,
        idempotent: body.idempotent,
        labels: body.labels,
    };
    spec.validate()
        .map_err(|e| BadRequest::new(e.to_string()))?;
    Ok(spec)
}

/// `POST /v1/templates`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateBody {
    name: String,
    service: String,
    #[serde(default)]
    payload: String,
    #[serde(default)]
    defaults: BTreeMap<String, String>,
    watchdog_s: Option<u32>,
    #[serde(default)]
    description: String,
}

/// The template's name and settings a `POST /v1/templates` body gives.
///
/// # Errors
/// [`BadRequest`]: not JSON, an unknown or missing field, a bad name.
pub(super) fn template(body: &[u8]) -> Result<(String, TemplateConfig), BadRequest> {
    let body: TemplateBody = serde_json::from_slice(body)
        .map_err(|e| BadRequest::new(format!("bad template body: {e}")))?;
    protocol::job::check_job_id(&body.name)
        .map_err(|_| BadRequest::new(format!("bad template name {:.64}", body.name)))?;
    let config = TemplateConfig {
        service: body.service,
        payload: body.payload,
        defaults: body.defaults,
        watchdog_s: body.watchdog_s,
        description: body.description,
    };
    Ok((body.name, config))
}

/// `GET /v1/jobs`'s query, as text (parsed by [`ListQuery::filter`], so a
/// bad value gets a JSON error).
#[derive(Debug, Default, Deserialize)]
pub(super) struct ListQuery {
    state: Option<String>,
    service: Option<String>,
    tenant: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

impl ListQuery {
    /// The filter it asks for; empty values count as absent.
    ///
    /// # Errors
    /// [`BadRequest`]: an unknown state, a limit that is no number.
    pub(super) fn filter(self) -> Result<JobFilter, BadRequest> {
        let given = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        let state = given(self.state)
            .map(|s| {
                JobState::parse(s.trim()).ok_or_else(|| {
                    BadRequest::new(format!(
                        "state {s:.32} is none of waiting, running, succeeded, failed, \
                         timed_out, cancelled, occupied"
                    ))
                })
            })
            .transpose()?;
        let limit = given(self.limit)
            .map(|l| {
                l.trim()
                    .parse::<u32>()
                    .map(|n| n.min(protocol::job::MAX_PAGE))
                    .map_err(|_| BadRequest::new(format!("limit {l:.32} is not a number")))
            })
            .transpose()?;
        let cursor = given(self.cursor);
        if let Some(cursor) = &cursor {
            protocol::job::check_job_id(cursor)
                .map_err(|_| BadRequest::new(format!("bad cursor {cursor:.64}")))?;
        }
        Ok(JobFilter {
            state,
            service: given(self.service),
            tenant: given(self.tenant),
            limit,
            cursor,
        })
    }
}

/// The most log lines one `GET /v1/jobs/{id}/log` returns.
pub(super) const MAX_LOG_LINES: u32 = 10_000;

/// `GET /v1/jobs/{id}/log`'s query, as text.
#[derive(Debug, Default, Deserialize)]
pub(super) struct LogQuery {
    after: Option<String>,
    limit: Option<String>,
    follow: Option<String>,
}

/// What a log query asks: lines after `after`, at most `limit`, or
/// following.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LogAsk {
    /// Lines after this sequence number (default 0: from the first).
    pub(super) after: u64,
    /// At most this many lines (default and most [`MAX_LOG_LINES`]).
    pub(super) limit: u32,
    /// Follow as Server-Sent Events until the job ends.
    pub(super) follow: bool,
}

impl LogQuery {
    /// The parsed query.
    ///
    /// # Errors
    /// [`BadRequest`]: a number that does not parse, a `follow` that is not
    /// `1`, `0`, `true` or `false`.
    pub(super) fn ask(self) -> Result<LogAsk, BadRequest> {
        let number = |name: &str, v: Option<String>| {
            v.filter(|s| !s.trim().is_empty())
                .map(|s| {
                    s.trim()
                        .parse::<u64>()
                        .map_err(|_| BadRequest::new(format!("{name} {s:.32} is not a number")))
                })
                .transpose()
        };
        let after = number("after", self.after)?.unwrap_or(0);
        let limit = number("limit", self.limit)?.map_or(MAX_LOG_LINES, |l| {
            u32::try_from(l).unwrap_or(u32::MAX).min(MAX_LOG_LINES)
        });
        let follow = match self.follow.as_deref().map(str::trim) {
            None | Some("" | "0" | "false") => false,
            Some("1" | "true") => true,
            Some(other) => {
                return Err(BadRequest::new(format!("follow {other:.32} is not 1 or 0")));
            }
        };
        Ok(LogAsk {
            after,
            limit,
            follow,
        })
    }
}

#[cfg(test)]
#[path = "body_tests.rs"]
mod tests;

/// The settings a `PUT /api/job-settings` body gives
/// (`{"max_per_node": N}`).
///
/// # Errors
/// [`BadRequest`]: not JSON, an unknown or missing field, a value out of
/// `0..=4294967295`.
pub(super) fn settings(body: &[u8]) -> Result<protocol::JobSettings, BadRequest> {
    serde_json::from_slice(body).map_err(|e| BadRequest::new(format!("bad job settings: {e}")))
}
