//! Starting the jobs (the store opened, jobs left by a previous run
//! recovered), the dispatcher that hands waiting jobs to the scheduler as
//! slots free up, and the sweep (leases, other gateways' jobs, retention,
//! gauges).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::{JobState, NodeView};

use super::store::{JobStore, StoredJob};
use super::{Inner, JobError, Jobs, now_ms};
use crate::Shared;
use crate::telemetry::labels;

/// Most times an idempotent job goes back to waiting because its gateway
/// was lost; the next loss fails it (a job that keeps bringing its gateway
/// down is not run forever).
pub(crate) const MAX_REDELIVERIES: usize = 3;
/// What the note of such a return to waiting holds.
const REDELIVERED: &str = "waiting again, attempt";

/// How often the dispatcher looks again without being woken (slots freed
/// by calls that are not jobs), ms.
const PUMP_MS: u64 = 250;

impl Jobs {
    /// Opens the store (`[jobs] database_url`, else SQLite in `data_dir`),
    /// recovers the jobs a previous run left, and starts the dispatcher and
    /// the sweep; they stop when the gateway is dropped.
    ///
    /// # Errors
    /// `Store` when the database cannot be opened or migrated.
    pub(crate) async fn start(shared: &Arc<Shared>) -> Result<Arc<Self>, JobError> {
        let config = shared.config.jobs.clone();
        let url = match &config.database_url {
            Some(url) => url.clone(),
            None => JobStore::sqlite_url(&shared.config.data_dir.join("jobs.db")),
        };
        let store = JobStore::open(&url, config.max_connections).await?;
        let owner = gateway_id(&shared.config.data_dir);
        let (changed, _) = tokio::sync::broadcast::channel(1024);
        let jobs = Arc::new(Self {
            shared: Arc::downgrade(shared),
            store,
            templates: shared.config.templates.clone(),
            config,
            owner,
            inner: std::sync::Mutex::new(Inner::default()),
            wake: tokio::sync::Notify::new(),
            changed,
        });
        let stored = jobs.stored_limit().await?;
        jobs.apply_limit(stored.unwrap_or(jobs.config.max_per_node));
        let started = Instant::now();
        let (requeued, failed) = jobs.recover(true).await?;
        tracing::info!(
            store = jobs.store.backend(),
            waiting = jobs.inner.lock().map_or(0, |i| i.waiting.len()),
            requeued,
            failed,
            ms = started.elapsed().as_millis(),
            "jobs recovered"
        );
        tokio::spawn(dispatcher(Arc::downgrade(&jobs)));
        tokio::spawn(sweeper(Arc::downgrade(&jobs)));
        Ok(jobs)
    }

    /// Loads the unfinished jobs: waiting ones join the queue in their
    /// order; running ones whose gateway was lost (the lease is this
    /// gateway's at its start, `at_start`, or has run out) go back to
    /// waiting when idempotent, without spending an attempt (as a queue
    /// redelivers a message after its visibility timeout: the gateway
    /// failed, not the job), else fail with the reason. Returns
    /// (requeued, failed).
    async fn recover(&self, at_start: bool) -> Result<(u32, u32), JobError> {
        let now = now_ms();
        let mut requeued = 0;
        let mut failed = 0;
        for job in self.store.unfinished().await? {
            let view = &job.view;
            match view.state {
                JobState::Waiting => {
                    if let Ok(mut inner) = self.inner.lock()
                        && !inner.running.contains_key(&view.id)
                    {
                        inner.waiting.push(&view.id, &view.service, view.priority);
                    }
                }
                JobState::Running => {
                    let mine = job.owner.as_deref() == Some(self.owner.as_str());
                    let expired = job.lease_until_ms.is_none_or(|until| until < now);
                    let running_here = self
                        .inner
                        .lock()
                        .is_ok_and(|i| i.running.contains_key(&view.id));
                    if running_here || !((mine && at_start) || expired) {
                        continue;
                    }
                    let why = if mine && at_start {
                        "gateway restarted"
                    } else {
                        "lease of its gateway expired"
                    };
                    let lost_before = if view.idempotent {
                        self.redeliveries(&view.id).await
                    } else {
                        0
                    };
                    if view.idempotent && lost_before < MAX_REDELIVERIES {
                        if self.redeliver(view, why).await {
                            requeued += 1;
                        }
                    } else if view.idempotent {
                        let why = format!(
                            "{why} while it ran, its gateway lost {} times: not run again",
                            lost_before + 1
                        );
                        if self.fail(&job, &why).await {
                            failed += 1;
                        }
                    } else if self
                        .fail(
                            &job,
                            &format!("{why} while it ran (not idempotent: not run again)"),
                        )
                        .await
                    {
                        failed += 1;
                    }
                }
                _ => {}
            }
        }
        self.wake.notify_one();
        Ok((requeued, failed))
    }

    /// How many times job `id` went back to waiting because its gateway
    /// was lost (0 when its history cannot be read).
    async fn redeliveries(&self, id: &str) -> usize {
        match self.store.get(id).await {
            Ok(Some(job)) => redeliveries(&job.view.history),
            Ok(None) => 0,
            Err(error) => {
                tracing::warn!(job = %id, %error, "cannot read a job's history");
                0
            }
        }
    }

    /// Puts a running idempotent job whose gateway was lost back to
    /// waiting, its attempt not spent (the next one has the same number),
    /// fenced on its attempt. False when the store refused the change (the
    /// next recovery tries again) or the job had moved on meanwhile.
    async fn redeliver(&self, view: &protocol::JobView, why: &str) -> bool {
        let mut change = super::change(&view.id, &[JobState::Running], JobState::Waiting, now_ms());
        change.attempt = Some(view.attempt);
        change.new_attempt = Some(view.attempt.saturating_sub(1));
        change.owner = Some(None);
        change.lease_until_ms = Some(None);
        change.node = Some(None);
        change.note = Some(redelivered_note(why, view.attempt, view.max_attempts));
        match self.store.change(&change).await {
            Ok(true) => {
                metrics::counter!("jobs_redelivered_total", "service" => crate::telemetry::labels::service(&view.service))
                    .increment(1);
                if let Ok(mut inner) = self.inner.lock() {
                    inner.waiting.push(&view.id, &view.service, view.priority);
                }
                self.announce(&view.id);
                true
            }
            Ok(false) => false,
            Err(error) => {
                tracing::warn!(job = %view.id, %error, "cannot put a job back to waiting");
                false
            }
        }
    }

    /// Fails a running job that cannot go on (fenced on its attempt).
    async fn fail(&self, job: &StoredJob, why: &str) -> bool {
        let now = now_ms();
        let mut change = super::change(&job.view.id, &[JobState::Running], JobState::Failed, now);
        change.attempt = Some(job.view.attempt);
        change.finished_ms = Some(Some(now));
        change.owner = Some(None);
        change.lease_until_ms = Some(None);
        change.error = Some(Some(why.to_owned()));
        change.note = Some(why.to_owned());
        let applied = self.store.change(&change).await.unwrap_or(false);
        if applied {
            metrics::counter!("jobs_finished_total", "service" => labels::service(&job.view.service), "state" => "failed")
                .increment(1);
            self.announce(&job.view.id);
        }
        applied
    }

    /// Hands waiting jobs to the scheduler while their services have free
    /// slots: the highest priority first. A service no node has loaded but
    /// some node could load gets one job at a time (the swap planner loads
    /// it); a service no node knows keeps its jobs waiting.
    fn pump(self: &Arc<Self>) {
        // Nothing waits: no look at the fleet (its views cost a copy of
        // every node).
        if self.inner.lock().map_or(true, |i| i.waiting.is_empty()) {
            return;
        }
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let limit = shared.scheduler.job_limit();
        let views = shared.registry.views(Instant::now());
        let capacity = capacity(&views, limit);
        let mut start = Vec::new();
        if let Ok(mut inner) = self.inner.lock() {
            // With a per-node limit: the room left on every node, less the
            // jobs handed to the scheduler and not yet on a node.
            let mut total = (limit > 0).then(|| {
                let room: u32 = views.iter().map(|n| room(n, limit)).sum();
                room.saturating_sub(inner.admitting.values().sum())
            });
            for service in inner.waiting.services() {
                let Some(&(free, loaded)) = capacity.get(&service) else {
                    continue;
                };
                let admitting = inner.admitting.get(&service).copied().unwrap_or(0);
                let mut budget = if loaded {
                    free.saturating_sub(admitting)
                } else {
                    u32::from(admitting == 0)
                };
                if let Some(total) = &mut total {
                    budget = budget.min(*total);
                    *total -= budget;
                }
                for _ in 0..budget {
                    let Some(id) = inner.waiting.pop(&service) else {
                        break;
                    };
                    *inner.admitting.entry(service.clone()).or_default() += 1;
                    start.push((id, service.clone()));
                }
            }
        }
        if start.is_empty() {
            return;
        }
        // The round's jobs in one query, each then run on its own.
        let jobs = self.clone();
        tokio::spawn(async move {
            let ids: Vec<String> = start.iter().map(|(id, _)| id.clone()).collect();
            let mut loaded: HashMap<String, StoredJob> = match jobs.store.get_many(&ids).await {
                Ok(found) => found.into_iter().map(|j| (j.view.id.clone(), j)).collect(),
                Err(error) => {
                    tracing::warn!(jobs = ids.len(), %error, "cannot load waiting jobs");
                    HashMap::new()
                }
            };
            for (id, service) in start {
                match loaded.remove(&id) {
                    Some(job) if job.view.state == JobState::Waiting => {
                        tokio::spawn(jobs.clone().run_attempt(job, false));
                    }
                    // Gone, moved on, or not loaded: its slot is free again
                    // (a job not loaded stays waiting in the store and is
                    // queued again by the next recovery).
                    _ => jobs.admitted_done(&service),
                }
            }
        });
    }

    /// Free slots of `service` on nodes that have it loaded now (and room
    /// under the per-node job limit).
    pub(super) fn free_slots(&self, service: &str) -> u32 {
        let Some(shared) = self.shared.upgrade() else {
            return 0;
        };
        let limit = shared.scheduler.job_limit();
        capacity(&shared.registry.views(Instant::now()), limit)
            .get(service)
            .map_or(0, |c| c.0)
    }

    /// A job call of `service` was handed to the scheduler.
    pub(super) fn admitting(&self, service: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            *inner.admitting.entry(service.to_owned()).or_default() += 1;
        }
    }

    /// A job call of `service` reached a node or ended before.
    pub(super) fn admitted_done(&self, service: &str) {
        if let Ok(mut inner) = self.inner.lock()
            && let Some(n) = inner.admitting.get_mut(service)
        {
            *n = n.saturating_sub(1);
        }
        self.wake.notify_one();
    }

    /// Tells log followers that job `id` changed.
    pub(super) fn announce(&self, id: &str) {
        let _ = self.changed.send(id.to_owned());
    }

    /// The lease timeout, ms.
    pub(super) fn lease_ms(&self) -> u64 {
        u64::from(self.config.lease_timeout_s) * 1000
    }

    /// Renews this gateway's leases, takes over jobs whose gateway's lease
    /// ran out and waiting jobs submitted to other gateways, deletes
    /// finished jobs past retention, and refreshes the gauges.
    async fn sweep(&self, purge: bool) -> Result<(), JobError> {
        let now = now_ms();
        let ids: Vec<String> = self
            .inner
            .lock()
            .map(|i| i.running.keys().cloned().collect())
            .unwrap_or_default();
        if !ids.is_empty() {
            self.store
                .renew_leases(&self.owner, &ids, now + self.lease_ms())
                .await?;
        }
        self.recover(false).await?;
        self.load_settings().await?;
        if purge {
            let cutoff = now.saturating_sub(self.config.retention_s.saturating_mul(1000));
            let purged = self.store.purge_finished_before(cutoff).await?;
            if purged > 0 {
                tracing::info!(purged, "finished jobs past retention deleted");
            }
        }
        // Services the fleet does not know are summed under `_unknown`.
        let mut counts: HashMap<(String, JobState), u64> = HashMap::new();
        let mut stored = 0;
        for (service, state, n) in self.store.counts().await? {
            *counts
                .entry((labels::service(&service), state))
                .or_default() += n;
            stored += n;
        }
        for ((service, state), n) in counts {
            metrics::gauge!("jobs", "service" => service, "state" => state.as_str()).set(n as f64);
        }
        self.store.keep_statistics(stored).await?;
        Ok(())
    }
}

/// The jobs `node` may still take under a per-node limit of `limit` (the
/// core's count of the job calls it runs, every gateway's in a cluster).
fn room(node: &NodeView, limit: u32) -> u32 {
    limit.saturating_sub(node.jobs_in_flight)
}

/// Per service: free slots on nodes that have it loaded (not draining,
/// healthy, not ejected), each node's counted up to its room under the
/// per-node job limit when there is one (`limit` > 0); and whether any node
/// has it loaded.
fn capacity(nodes: &[NodeView], limit: u32) -> HashMap<String, (u32, bool)> {
    let mut capacity: HashMap<String, (u32, bool)> = HashMap::new();
    for node in nodes {
        let left = (limit > 0).then(|| room(node, limit));
        for service in &node.services {
            let entry = capacity.entry(service.name.clone()).or_default();
            if service.loaded && !node.draining && !service.unhealthy && service.ejected_for_ms == 0
            {
                let free = service.max_concurrent.saturating_sub(service.in_flight);
                entry.0 += left.map_or(free, |left| free.min(left));
                entry.1 = true;
            }
        }
    }
    capacity
}

async fn dispatcher(jobs: std::sync::Weak<Jobs>) {
    loop {
        let Some(strong) = jobs.upgrade() else {
            return;
        };
        strong.pump();
        tokio::select! {
            () = strong.wake.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(PUMP_MS)) => {}
        }
    }
}

async fn sweeper(jobs: std::sync::Weak<Jobs>) {
    let mut round: u64 = 0;
    loop {
        let every = match jobs.upgrade() {
            Some(jobs) => Duration::from_millis((jobs.lease_ms() / 3).max(500)),
            None => return,
        };
        tokio::time::sleep(every).await;
        let Some(strong) = jobs.upgrade() else {
            return;
        };
        // Retention at start-up and then about once a minute.
        let purge = round.is_multiple_of((60_000 / every.as_millis().max(1) as u64).max(1));
        if let Err(error) = strong.sweep(purge).await {
            tracing::warn!(%error, "job sweep failed");
        }
        round += 1;
    }
}

/// This gateway's id for leases: kept in `data_dir/gateway-id`, made once.
fn gateway_id(data_dir: &std::path::Path) -> String {
    let path = data_dir.join("gateway-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return id.to_owned();
        }
    }
    let id = format!("gw-{:016x}", rand::random::<u64>());
    if let Err(error) = std::fs::write(&path, &id) {
        tracing::warn!(path = %path.display(), %error, "cannot keep the gateway id; leases use a new one each start");
    }
    id
}

/// How many times a job went back to waiting because its gateway was lost,
/// from its history.
fn redeliveries(history: &[protocol::Transition]) -> usize {
    history
        .iter()
        .filter(|t| {
            t.state == JobState::Waiting
                && t.note.as_deref().is_some_and(|n| n.contains(REDELIVERED))
        })
        .count()
}

/// The note of a return to waiting after a lost gateway: "gateway
/// restarted: waiting again, attempt 1 of 1 not spent".
fn redelivered_note(why: &str, attempt: u32, max_attempts: u32) -> String {
    format!("{why}: {REDELIVERED} {attempt} of {max_attempts} not spent")
}

#[cfg(test)]
mod tests {
    use protocol::Transition;

    use super::*;

    fn transition(state: JobState, note: Option<String>) -> Transition {
        Transition {
            state,
            at_ms: 1,
            attempt: 1,
            node: None,
            note,
        }
    }

    #[test]
    fn only_returns_after_a_lost_gateway_count_as_redeliveries() {
        let mut history = vec![
            transition(JobState::Waiting, None),
            transition(JobState::Running, Some("attempt 1 of 1".into())),
            transition(
                JobState::Waiting,
                Some(redelivered_note("gateway restarted", 1, 1)),
            ),
            transition(JobState::Running, Some("attempt 1 of 1".into())),
            transition(
                JobState::Waiting,
                Some("lost its node; attempt 2 of 3 next".into()),
            ),
        ];
        assert_eq!(redeliveries(&history), 1);
        history.push(transition(
            JobState::Waiting,
            Some(redelivered_note("lease of its gateway expired", 1, 1)),
        ));
        assert_eq!(redeliveries(&history), 2);
        assert_eq!(
            redelivered_note("gateway restarted", 1, 1),
            "gateway restarted: waiting again, attempt 1 of 1 not spent"
        );
    }
}
