//! The operations the front ends call (QUIC `Job` frames, `/v1/jobs`,
//! the dashboard's `/api/jobs`), each checked against the caller's
//! [`Access`]: a tenant sees and changes only its own jobs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::{JobFilter, JobPage, JobSpec, JobState, JobView, LogEntry};

use super::store::{NewJob, StoredJob};
use super::{Access, JobError, Jobs, LogFollow, TemplateView, now_ms, template};
use crate::config::TemplateConfig;
use crate::telemetry::labels;

/// Most log lines one answer holds.
const MAX_LOG_LINES: u32 = 10_000;

impl Jobs {
    /// Stores a job and queues it (a realtime one runs now or ends
    /// `occupied`); returns it once committed. It keeps `request_id` (the
    /// submitting request's, when valid; else a new one), which its
    /// attempts' calls carry.
    ///
    /// # Errors
    /// `Invalid` (bad spec, unknown template), `Forbidden` (the tenant's
    /// services or rate), `Full`, `Store`.
    pub(crate) async fn submit(
        self: &Arc<Self>,
        access: &Access,
        spec: JobSpec,
        request_id: Option<&str>,
    ) -> Result<JobView, JobError> {
        spec.validate()
            .map_err(|e| JobError::Invalid(e.to_string()))?;
        let (service, payload, template_watchdog) = match &spec.template {
            Some(name) => {
                let t = self.template(name).await?;
                let payload = template::render(&t.payload, &spec.params, &t.defaults)
                    .map_err(JobError::Invalid)?;
                (t.service, payload.into_bytes(), t.watchdog_s)
            }
            None => (
                spec.service.clone().unwrap_or_default(),
                spec.payload.clone(),
                None,
            ),
        };
        let mut priority = spec.priority;
        let tenant = match access {
            Access::Admin => None,
            Access::Tenant(t) => {
                let admitted = t
                    .admit(&service, spec.priority, Instant::now())
                    .map_err(|e| JobError::Forbidden(e.to_string()))?;
                priority = admitted.priority;
                Some(t.name().to_string())
            }
        };
        let watchdog_s = spec
            .watchdog_s
            .or(template_watchdog)
            .unwrap_or(self.config.default_watchdog_s);
        if watchdog_s == 0 || watchdog_s > self.config.max_watchdog_s {
            return Err(JobError::Invalid(format!(
                "watchdog_s must be in 1..={}",
                self.config.max_watchdog_s
            )));
        }
        let max_attempts = spec
            .max_attempts
            .unwrap_or(self.config.default_max_attempts);
        if max_attempts > self.config.max_attempts {
            return Err(JobError::Invalid(format!(
                "max_attempts must be at most {}",
                self.config.max_attempts
            )));
        }
        let waiting = self.inner.lock().map_or(0, |i| i.waiting.len() as u64);
        if !spec.realtime && waiting >= self.config.max_waiting {
            return Err(JobError::Full(self.config.max_waiting));
        }
        // A realtime job with no free slot now never waits.
        let occupied = spec.realtime && self.free_slots(&service) == 0;
        let job = NewJob {
            id: new_id(),
            service: service.clone(),
            template: spec.template.clone(),
            state: if occupied {
                JobState::Occupied
            } else {
                JobState::Waiting
            },
            tenant,
            priority,
            realtime: spec.realtime,
            watchdog_s,
            max_attempts,
            idempotent: spec.idempotent,
            created_ms: now_ms(),
            payload,
            hints: spec.hints,
            labels: spec.labels,
            note: occupied.then(|| "no free slot for a realtime job".to_owned()),
            request_id: Some(crate::calls::request_id::of_caller(request_id)),
        };
        self.store.insert(&job).await?;
        metrics::counter!("jobs_submitted_total", "service" => labels::service(&service))
            .increment(1);
        let stored = job.stored();
        let view = self.view(stored.view.clone());
        if spec.realtime && !occupied {
            self.admitting(&service);
            tokio::spawn(self.clone().run_attempt(stored, true));
        } else if !occupied {
            if let Ok(mut inner) = self.inner.lock() {
                inner.waiting.push(&job.id, &service, priority);
            }
            self.wake.notify_one();
        }
        Ok(view)
    }

    /// One job with its history and position.
    ///
    /// # Errors
    /// `NotFound` (also another tenant's job), `Store`.
    pub(crate) async fn get(&self, access: &Access, id: &str) -> Result<JobView, JobError> {
        Ok(self.view(self.owned(access, id).await?.view))
    }

    /// Jobs, newest first; a tenant sees only its own (`filter.tenant` is
    /// honoured for the admin only).
    ///
    /// # Errors
    /// `Store`.
    pub(crate) async fn list(
        &self,
        access: &Access,
        mut filter: JobFilter,
    ) -> Result<JobPage, JobError> {
        if let Some(tenant) = access.tenant() {
            filter.tenant = Some(tenant.to_owned());
        }
        let mut page = self.store.list(&filter).await?;
        page.jobs = page.jobs.into_iter().map(|j| self.view(j)).collect();
        Ok(page)
    }

    /// Cancels a waiting or running job (a running one's process is killed
    /// on its node); a job already ended is returned as it is.
    ///
    /// # Errors
    /// `NotFound`, `Store`.
    pub(crate) async fn cancel(&self, access: &Access, id: &str) -> Result<JobView, JobError> {
        let job = self.owned(access, id).await?;
        let now = now_ms();
        let mut change = super::change(
            id,
            &[JobState::Waiting, JobState::Running],
            JobState::Cancelled,
            now,
        );
        change.finished_ms = Some(Some(now));
        change.owner = Some(None);
        change.lease_until_ms = Some(None);
        change.error = Some(Some("cancelled".into()));
        change.note = Some(format!("cancelled by {}", access.who()));
        if self.store.change(&change).await? {
            metrics::counter!("jobs_finished_total", "service" => labels::service(&job.view.service), "state" => "cancelled")
                .increment(1);
            self.stop(id);
            self.announce(id);
        }
        self.get(access, id).await
    }

    /// Starts a job again as a new attempt (a running one is stopped
    /// first); it waits again at its priority.
    ///
    /// # Errors
    /// `NotFound`, `Store`.
    pub(crate) async fn restart(&self, access: &Access, id: &str) -> Result<JobView, JobError> {
        let job = self.owned(access, id).await?;
        let mut change = super::change(id, &JobState::ALL, JobState::Waiting, now_ms());
        change.attempt = Some(job.view.attempt);
        change.owner = Some(None);
        change.lease_until_ms = Some(None);
        change.node = Some(None);
        change.finished_ms = Some(None);
        change.error = Some(None);
        change.note = Some(format!("restarted by {}", access.who()));
        if self.store.change(&change).await? {
            self.stop(id);
            if let Ok(mut inner) = self.inner.lock() {
                inner.waiting.push(id, &job.view.service, job.view.priority);
            }
            self.announce(id);
            self.wake.notify_one();
        }
        self.get(access, id).await
    }

    /// Removes a job, its history and its log (a running one is stopped
    /// first).
    ///
    /// # Errors
    /// `NotFound`, `Store`.
    pub(crate) async fn delete(&self, access: &Access, id: &str) -> Result<(), JobError> {
        self.owned(access, id).await?;
        self.stop(id);
        if let Ok(mut inner) = self.inner.lock() {
            inner.waiting.remove(id);
        }
        if !self.store.delete(id).await? {
            return Err(JobError::NotFound(id.to_owned()));
        }
        self.announce(id);
        Ok(())
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
        self.owned(access, id).await?;
        Ok(self
            .store
            .log_after(id, after, limit.clamp(1, MAX_LOG_LINES))
            .await?)
    }

    /// Follows a job's log from `after`: stored lines first, then new ones
    /// as they are written, until the job has ended and every line was
    /// given (the channel closes), or the receiver is dropped.
    ///
    /// # Errors
    /// `NotFound`, `Store`.
    pub(crate) async fn follow(
        self: &Arc<Self>,
        access: &Access,
        id: &str,
        after: u64,
    ) -> Result<LogFollow, JobError> {
        self.owned(access, id).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let jobs = self.clone();
        let id = id.to_owned();
        let mut changed = self.changed.subscribe();
        tokio::spawn(async move {
            let mut after = after;
            loop {
                // The state first: lines written before it ended are read
                // below, so none is missed.
                let ended = match jobs.store.get(&id).await {
                    Ok(Some(job)) => job.view.state.is_final(),
                    Ok(None) => true,
                    Err(error) => {
                        let _ = tx.send(Err(error.into())).await;
                        return;
                    }
                };
                match jobs.store.log_after(&id, after, MAX_LOG_LINES).await {
                    Ok(lines) if !lines.is_empty() => {
                        after = lines.last().map_or(after, |l| l.seq);
                        let full = lines.len() as u32 == MAX_LOG_LINES;
                        if tx.send(Ok(lines)).await.is_err() {
                            return;
                        }
                        if full {
                            continue;
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        let _ = tx.send(Err(error.into())).await;
                        return;
                    }
                }
                if ended {
                    return;
                }
                tokio::select! {
                    () = tx.closed() => return,
                    () = wait_for(&mut changed, &id) => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
        Ok(rx)
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
        let job = self.owned(access, id).await?;
        match self.store.result(id).await? {
            Some(result) if job.view.result_len.is_some() => Ok(result),
            _ => Err(JobError::Conflict {
                id: id.to_owned(),
                state: job.view.state,
                why: if job.view.state.is_final() {
                    "it ended without a result"
                } else {
                    "it has no result yet"
                },
            }),
        }
    }

    /// Every template: `gateway.toml`'s, then those created over the API.
    ///
    /// # Errors
    /// `Store`.
    pub(crate) async fn templates(&self) -> Result<Vec<TemplateView>, JobError> {
        let mut all: Vec<_> = self
            .templates
            .iter()
            .map(|(name, t)| template_view(name, t.clone(), "config"))
            .collect();
        for (name, t) in self.store.templates().await? {
            if !self.templates.contains_key(&name) {
                all.push(template_view(&name, t, "api"));
            }
        }
        Ok(all)
    }

    /// Creates (or replaces) a template over the API; admin only, and a
    /// name from `gateway.toml` cannot be replaced. With `[cluster]` it is
    /// written to etcd, and every gateway (this one before the answer)
    /// takes it from there into its job store.
    ///
    /// # Errors
    /// `Forbidden` for a tenant or a configured name, `Invalid`, `Store`,
    /// `Degraded` while the cluster's etcd does not take it.
    pub(crate) async fn put_template(
        &self,
        access: &Access,
        name: &str,
        template: TemplateConfig,
    ) -> Result<TemplateView, JobError> {
        if !matches!(access, Access::Admin) {
            return Err(JobError::Forbidden(
                "templates are created with the admin token".into(),
            ));
        }
        if self.templates.contains_key(name) {
            return Err(JobError::Forbidden(format!(
                "template {name} comes from gateway.toml"
            )));
        }
        protocol::job::check_job_id(name).map_err(|e| JobError::Invalid(e.to_string()))?;
        if template.service.is_empty() {
            return Err(JobError::Invalid("a template names a service".into()));
        }
        let value = super::shared::template_json(&template);
        if !self
            .put_shared(&super::shared::template_key(name), value)
            .await?
        {
            self.store.put_template(name, &template, now_ms()).await?;
        }
        Ok(template_view(name, template, "api"))
    }

    /// The template `name`.
    async fn template(&self, name: &str) -> Result<TemplateConfig, JobError> {
        if let Some(t) = self.templates.get(name) {
            return Ok(t.clone());
        }
        self.store
            .templates()
            .await?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| JobError::Invalid(format!("no template {name}")))
    }

    /// Job `id` when `access` may see it.
    async fn owned(&self, access: &Access, id: &str) -> Result<StoredJob, JobError> {
        protocol::job::check_job_id(id).map_err(|e| JobError::Invalid(e.to_string()))?;
        let job = self.stored(id).await?;
        match access.tenant() {
            Some(tenant) if job.view.tenant.as_deref() != Some(tenant) => {
                Err(JobError::NotFound(id.to_owned()))
            }
            _ => Ok(job),
        }
    }

    pub(super) async fn stored(&self, id: &str) -> Result<StoredJob, JobError> {
        self.store
            .get(id)
            .await?
            .ok_or_else(|| JobError::NotFound(id.to_owned()))
    }

    /// The view with its live position.
    fn view(&self, mut view: JobView) -> JobView {
        if view.state == JobState::Waiting {
            view.position = self
                .inner
                .lock()
                .ok()
                .and_then(|i| i.waiting.position(&view.id));
        }
        view
    }

    /// Tells a running attempt of `id` to stop, if this gateway runs it.
    fn stop(&self, id: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.waiting.remove(id);
            if let Some(stop) = inner.running.get_mut(id).and_then(|r| r.stop.take()) {
                let _ = stop.send(super::runner::Stop::User);
            }
        }
    }
}

impl Access {
    /// Who did it, for a job's history.
    fn who(&self) -> String {
        match self {
            Self::Admin => "the admin".into(),
            Self::Tenant(t) => format!("tenant {}", t.name()),
        }
    }
}

/// Waits until `changed` names `id` (or lags: then look anyway).
async fn wait_for(changed: &mut tokio::sync::broadcast::Receiver<String>, id: &str) {
    loop {
        match changed.recv().await {
            Ok(got) if got == id => return,
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                std::future::pending::<()>().await;
            }
        }
    }
}

fn template_view(name: &str, t: TemplateConfig, source: &'static str) -> TemplateView {
    TemplateView {
        name: name.to_owned(),
        service: t.service,
        payload: t.payload,
        defaults: t.defaults,
        watchdog_s: t.watchdog_s,
        description: t.description,
        source,
    }
}

/// A new job id: the time in ms (12 hex digits, so ids sort by
/// submission) and 56 random bits (14 hex digits).
fn new_id() -> String {
    let random: u64 = rand::random::<u64>() >> 8;
    format!("{:012x}{random:014x}", now_ms() & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_sort_by_time_and_are_valid() {
        let a = super::new_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = super::new_id();
        assert_eq!(a.len(), 26);
        assert!(a < b);
        assert!(protocol::job::check_job_id(&a).is_ok());
    }
}
