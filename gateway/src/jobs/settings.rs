//! Job settings changed at run time: the most jobs one node runs at once
//! (the per-node job limit, also set from the dashboard's Settings
//! form). `[jobs] max_per_node` gives the value until one is stored;
//! `PUT /api/job-settings` (admin) stores a new one, so it outlives a
//! restart and reaches every gateway on the same store (each reads it back
//! at its next sweep). With `[cluster]` it is written to etcd instead and
//! every gateway of the cluster takes it from there ([`super::shared`]).
//!
//! The limit is enforced by the scheduling core (a job call goes only to a
//! node running fewer jobs, [`switchyard_core::Event::JobLimit`]); the
//! dispatcher hands the core no more jobs than the nodes have room for, so
//! that jobs held back by the limit wait in the job queue, not ahead of
//! other calls in the core's.

use protocol::JobSettings;

use super::{Access, JobError, Jobs, now_ms};

/// The stored setting's name.
pub(super) const MAX_PER_NODE: &str = "max_per_node";

impl Jobs {
    /// The settings in force (the scheduler's; none while the gateway
    /// stops).
    pub(crate) fn settings(&self) -> JobSettings {
        JobSettings {
            max_per_node: self
                .shared
                .upgrade()
                .map_or(0, |shared| shared.scheduler.job_limit()),
        }
    }

    /// Stores `settings` and puts them in force: jobs running stay, jobs
    /// waiting start where the new limit leaves room. With `[cluster]`
    /// they are written to etcd, and every gateway (this one before the
    /// answer) takes them from there into its store and scheduler.
    ///
    /// # Errors
    /// `Forbidden` without the admin token; `Store` when it cannot be
    /// stored (nothing changed; retry-safe); `Degraded` while the
    /// cluster's etcd does not take it (nothing changed; retry-safe).
    pub(crate) async fn set_settings(
        &self,
        access: &Access,
        settings: JobSettings,
    ) -> Result<JobSettings, JobError> {
        if !matches!(access, Access::Admin) {
            return Err(JobError::Forbidden(
                "job settings are changed with the admin token".into(),
            ));
        }
        let value = serde_json::to_vec(&settings).unwrap_or_default();
        if self.put_shared(super::shared::SETTINGS_KEY, value).await? {
            return Ok(self.settings());
        }
        self.store
            .put_setting(MAX_PER_NODE, u64::from(settings.max_per_node), now_ms())
            .await?;
        self.apply_limit(settings.max_per_node);
        Ok(self.settings())
    }

    /// Puts the stored settings in force if they differ (at each sweep:
    /// another gateway may have changed them).
    ///
    /// # Errors
    /// `Store` when they cannot be read.
    pub(super) async fn load_settings(&self) -> Result<(), JobError> {
        if let Some(limit) = self.stored_limit().await?
            && limit != self.settings().max_per_node
        {
            self.apply_limit(limit);
        }
        Ok(())
    }

    /// The stored per-node job limit, `None` when never set.
    ///
    /// # Errors
    /// `Store` when it cannot be read.
    pub(super) async fn stored_limit(&self) -> Result<Option<u32>, JobError> {
        let stored = self.store.setting(MAX_PER_NODE).await?;
        Ok(stored.map(|v| u32::try_from(v).unwrap_or(u32::MAX)))
    }

    /// Tells the scheduler the per-node job limit and wakes the dispatcher.
    pub(super) fn apply_limit(&self, max_per_node: u32) {
        metrics::gauge!("jobs_max_per_node").set(f64::from(max_per_node));
        if let Some(shared) = self.shared.upgrade() {
            shared.scheduler.set_job_limit(max_per_node);
        }
        tracing::info!(max_per_node, "jobs per node limit in force");
        self.wake.notify_one();
    }
}
