//! The job routes, served by the HTTP ingress under `/v1` and by the admin
//! port under `/api` (the dashboard's jobs page): one set of handlers,
//! mounted twice by [`routes`].
//!
//! | route | answer |
//! |---|---|
//! | `POST {p}/jobs` | `201` + the job (JSON `JobView`) |
//! | `GET {p}/jobs?state=&service=&tenant=&limit=&cursor=` | `{"jobs": [...], "next_cursor"}` |
//! | `GET {p}/jobs/{id}` | the job |
//! | `GET {p}/jobs/{id}/log?after=N&limit=N` | `{"lines": [LogEntry...]}` |
//! | `GET {p}/jobs/{id}/log?follow=1` | SSE: `data: <LogEntry>` per line, then `event: end` (data: the job) |
//! | `GET {p}/jobs/{id}/result` | the result's bytes with its content type; `409` while none |
//! | `POST {p}/jobs/{id}/cancel`, `/restart` | the job |
//! | `DELETE {p}/jobs/{id}` | `204` |
//! | `GET {p}/templates`, `POST {p}/templates` (admin) | `{"templates": [...]}`, `201` + the template |
//! | `GET {p}/job-settings`, `PUT {p}/job-settings` (admin) | `{"max_per_node": N}` |
//!
//! Every route needs a caller: the admin token (`Authorization: Bearer
//! <admin token>` or `x-switchyard-admin-token`) sees every job; a tenant's
//! API key (`Authorization: Bearer KEY`; none needed when no tenants are
//! configured) sees its own. Errors have the ports' one shape
//! (`crate::http_error`) with the status of `JobError::status`.

mod body;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::{Access, JobError, Jobs, LogFollow};
use crate::Shared;
use crate::http_error::HttpError;

/// The largest job request body, bytes: a [`protocol::job::MAX_JOB_PAYLOAD`]
/// payload in base64 (4/3 of it) and room for the rest.
const BODY_LIMIT: usize = protocol::job::MAX_JOB_PAYLOAD / 3 * 4 + 64 * 1024;

/// The header that may carry the admin token instead of `Authorization`.
const ADMIN_TOKEN_HEADER: &str = "x-switchyard-admin-token";

/// The job routes under `prefix` (`/v1` on the ingress, `/api` on the
/// admin port).
pub(crate) fn routes(prefix: &str) -> Router<Arc<Shared>> {
    Router::new()
        .route(&format!("{prefix}/jobs"), get(list).post(submit))
        .route(&format!("{prefix}/jobs/{{id}}"), get(one).delete(delete))
        .route(&format!("{prefix}/jobs/{{id}}/log"), get(log))
        .route(&format!("{prefix}/jobs/{{id}}/result"), get(result))
        .route(&format!("{prefix}/jobs/{{id}}/cancel"), post(cancel))
        .route(&format!("{prefix}/jobs/{{id}}/restart"), post(restart))
        .route(
            &format!("{prefix}/templates"),
            get(templates).post(put_template),
        )
        .route(
            &format!("{prefix}/job-settings"),
            get(settings).put(put_settings),
        )
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

/// A refused job request: its status and the error's message and type.
#[derive(Debug)]
pub(super) struct Failure {
    status: StatusCode,
    message: String,
    /// The machine-readable code, when the error has one.
    code: Option<&'static str>,
}

impl Failure {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            code: None,
        }
    }

    fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "jobs need `Authorization: Bearer <API key or admin token>`",
        )
    }
}

impl From<JobError> for Failure {
    fn from(error: JobError) -> Self {
        let status =
            StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self {
            code: error.code(),
            ..Self::new(status, error.to_string())
        }
    }
}

impl From<body::BadRequest> for Failure {
    fn from(bad: body::BadRequest) -> Self {
        let status = if bad.too_large {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        };
        Self::new(status, bad.message)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut error = HttpError::new(self.status, self.message);
        if let Some(code) = self.code {
            error = error.code(code);
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            error.retry_after(1).into_response()
        } else {
            error.into_response()
        }
    }
}

type Answer = Result<Response, Failure>;

/// Who is asking: the admin token (as the bearer or in
/// `x-switchyard-admin-token`) or else a tenant's API key.
///
/// # Errors
/// `401` for a wrong admin token header or an unknown key.
fn access(shared: &Shared, headers: &HeaderMap) -> Result<Access, Failure> {
    let admin = &shared.admin_token;
    if let Some(given) = headers.get(ADMIN_TOKEN_HEADER) {
        let given = given.to_str().map(str::trim).unwrap_or("");
        return if !admin.is_empty() && crate::token_matches(given, admin) {
            Ok(Access::Admin)
        } else {
            Err(Failure::unauthorized())
        };
    }
    let key = crate::tenants::api_key(headers);
    if let Some(key) = &key
        && !admin.is_empty()
        && crate::token_matches(key, admin)
    {
        return Ok(Access::Admin);
    }
    shared
        .tenants
        .authenticate(key.as_deref())
        .map(Access::Tenant)
        .map_err(|_| Failure::unauthorized())
}

/// The caller and the jobs for a route on job `id`, or why not (checked
/// in that order: `401`, a bad id's `400`, jobs disabled `503`).
fn open<'a>(
    shared: &'a Shared,
    headers: &HeaderMap,
    id: &str,
) -> Result<(Access, &'a Arc<Jobs>), Failure> {
    let access = access(shared, headers)?;
    job_id(id)?;
    Ok((access, shared.jobs()?))
}

/// A job id from the path, checked.
fn job_id(id: &str) -> Result<&str, Failure> {
    protocol::job::check_job_id(id)
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(id)
}

async fn submit(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Answer {
    let access = access(&shared, &headers)?;
    let spec = body::submit(&body)?;
    let jobs = shared.jobs()?;
    let request_id = crate::calls::request_id::of_headers(&headers);
    let job = jobs.submit(&access, spec, request_id.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(job)).into_response())
}

async fn list(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<body::ListQuery>,
) -> Answer {
    let access = access(&shared, &headers)?;
    let filter = query.filter()?;
    let page = shared.jobs()?.list(&access, filter).await?;
    Ok(Json(page).into_response())
}

async fn one(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let (access, jobs) = open(&shared, &headers, &id)?;
    Ok(Json(jobs.get(&access, &id).await?).into_response())
}

async fn cancel(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let (access, jobs) = open(&shared, &headers, &id)?;
    Ok(Json(jobs.cancel(&access, &id).await?).into_response())
}

async fn restart(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let (access, jobs) = open(&shared, &headers, &id)?;
    Ok(Json(jobs.restart(&access, &id).await?).into_response())
}

async fn delete(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let (access, jobs) = open(&shared, &headers, &id)?;
    jobs.delete(&access, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn result(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let (access, jobs) = open(&shared, &headers, &id)?;
    let (data, content_type) = jobs.result(&access, &id).await?;
    let content_type = content_type
        .and_then(|ct| HeaderValue::from_str(&ct).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    Ok(([(header::CONTENT_TYPE, content_type)], data).into_response())
}

async fn log(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<body::LogQuery>,
) -> Answer {
    let access = access(&shared, &headers)?;
    let id = job_id(&id)?.to_string();
    let ask = query.ask()?;
    let jobs = shared.jobs()?;
    if !ask.follow {
        let lines = jobs.log(&access, &id, ask.after, ask.limit).await?;
        return Ok(Json(json!({ "lines": lines })).into_response());
    }
    let follow = jobs.follow(&access, &id, ask.after).await?;
    let state = Follow {
        follow,
        queued: VecDeque::new(),
        ended: false,
        end: Some((jobs.clone(), access, id)),
    };
    let events = futures_util::stream::unfold(state, |mut state| async move {
        let event = state.next().await?;
        Some((Ok::<_, Infallible>(event), state))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// A log being followed as Server-Sent Events: a `data:` event per line
/// (the `LogEntry` as JSON), an `error` event if reading failed, then one
/// `end` event whose data is the job as it ended.
struct Follow {
    follow: LogFollow,
    queued: VecDeque<Event>,
    ended: bool,
    /// What the `end` event needs, taken when it is sent.
    end: Option<(Arc<Jobs>, Access, String)>,
}

impl Follow {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queued.pop_front() {
                return Some(event);
            }
            if !self.ended {
                match self.follow.recv().await {
                    Some(Ok(lines)) => {
                        self.queued.extend(
                            lines
                                .iter()
                                .filter_map(|line| Event::default().json_data(line).ok()),
                        );
                        continue;
                    }
                    Some(Err(error)) => {
                        self.queued
                            .push_back(Event::default().event("error").data(error.to_string()));
                    }
                    None => {}
                }
                self.ended = true;
                continue;
            }
            let (jobs, access, id) = self.end.take()?;
            let data = match jobs.get(&access, &id).await {
                Ok(job) => serde_json::to_string(&job).unwrap_or_else(|_| "{}".into()),
                Err(_) => json!({ "id": id }).to_string(),
            };
            return Some(Event::default().event("end").data(data));
        }
    }
}

async fn templates(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Answer {
    access(&shared, &headers)?;
    let templates = shared.jobs()?.templates().await?;
    Ok(Json(json!({ "templates": templates })).into_response())
}

async fn put_template(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let access = access(&shared, &headers)?;
    let (name, template) = body::template(&body)?;
    let jobs = shared.jobs()?;
    let view = jobs.put_template(&access, &name, template).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn settings(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Answer {
    access(&shared, &headers)?;
    Ok(Json(shared.jobs()?.settings()).into_response())
}

async fn put_settings(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let access = access(&shared, &headers)?;
    let settings = body::settings(&body)?;
    let settings = shared.jobs()?.set_settings(&access, settings).await?;
    Ok(Json(settings).into_response())
}

#[cfg(test)]
mod tests;
