//! Following the shared state: read everything under `{prefix}/config/`,
//! apply it, then watch from the next revision and apply each change;
//! when the watch fails, read everything again once etcd answers.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::apply;
use super::state::{Applied, Desired, plan};
use super::store::Store;
use crate::Shared;

/// How often the follower looks again without news from etcd: nodes that
/// registered since get their drain, services their policy once it is
/// loaded, and a gateway that stopped is noticed.
const TICK: Duration = Duration::from_millis(250);

/// Pause between tries while etcd does not answer.
const RETRY: Duration = Duration::from_millis(500);

/// Keeps each tenant's rate share in step with the number of live
/// members, until the gateway stops.
pub(super) fn tenant_shares(shared: &Arc<Shared>) {
    let mut members = shared.cluster.subscribe();
    shared.tenants.set_members(shared.cluster.live_count());
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        while members.changed().await.is_ok() {
            let live = members.borrow_and_update().members.len();
            let Some(shared) = weak.upgrade() else { return };
            shared.tenants.set_members(live);
            tracing::debug!(members = live, "tenants' rate shares recomputed");
        }
    });
}

/// What the follower knows.
struct Follower {
    shared: Weak<Shared>,
    desired: Desired,
    applied: Applied,
}

/// Reads and applies the shared state (waiting at most the etcd timeout),
/// then follows it in the background until the gateway stops.
pub(super) async fn start(shared: &Arc<Shared>) {
    let Some(store) = shared.sync.store().cloned() else {
        return;
    };
    let mut follower = Follower {
        shared: Arc::downgrade(shared),
        desired: Desired::default(),
        applied: Applied::default(),
    };
    let revision = match follower.resync(shared, &store).await {
        Ok(revision) => Some(revision),
        Err(error) => {
            tracing::warn!(%error, "cannot read the cluster's run-time state at start; retrying in the background");
            None
        }
    };
    tokio::spawn(follower.run(store, revision));
}

impl Follower {
    /// Reads everything, applies it; the revision read at.
    async fn resync(
        &mut self,
        shared: &Arc<Shared>,
        store: &Store,
    ) -> Result<i64, super::SyncError> {
        let (revision, entries) = store.list("").await?;
        self.desired = Desired::from_entries(
            entries
                .iter()
                .map(|(path, value)| (path.as_str(), value.as_slice())),
        );
        tracing::info!(
            revision,
            policies = self.desired.policies.len(),
            services = self.desired.services.len(),
            drains = self.desired.drains.len(),
            job_templates = self.desired.templates.len(),
            "cluster run-time state read"
        );
        self.apply(shared, store).await;
        shared.cluster.set_config_applied(revision);
        Ok(revision)
    }

    /// Takes every step towards the desired state.
    async fn apply(&mut self, shared: &Arc<Shared>, store: &Store) {
        for step in plan(&self.desired, &mut self.applied) {
            apply::take(shared, store, step, &mut self.applied).await;
        }
        apply::hold_drains(shared, &self.applied);
    }

    /// Watches and applies until the gateway is gone.
    async fn run(mut self, store: Store, mut revision: Option<i64>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let Some(read_at) = revision else {
                tokio::time::sleep(RETRY).await;
                let Some(shared) = self.shared.upgrade() else {
                    return;
                };
                revision = self.resync(&shared, &store).await.ok();
                continue;
            };
            let mut stream = match store.watch(read_at + 1).await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%error, "cannot watch the cluster's run-time state; reading it again when etcd answers");
                    revision = None;
                    continue;
                }
            };
            revision = None;
            loop {
                // The revision the watch has told up to, applied below.
                let mut seen = None;
                tokio::select! {
                    message = stream.message() => {
                        let response = match message {
                            Ok(Some(response)) => response,
                            Ok(None) => break,
                            Err(error) => {
                                tracing::warn!(%error, "the watch of the cluster's run-time state ended; reading it again when etcd answers");
                                break;
                            }
                        };
                        if response.canceled() || response.compact_revision() > 0 {
                            break;
                        }
                        seen = response.header().map(|h| h.revision());
                        for event in response.events() {
                            let Some(kv) = event.kv() else { continue };
                            let Some(path) = store.relative(kv.key()) else { continue };
                            match event.event_type() {
                                etcd_client::EventType::Put => self.desired.put(path, kv.value()),
                                etcd_client::EventType::Delete => self.desired.delete(path),
                            }
                        }
                    }
                    _ = tick.tick() => {}
                }
                let Some(shared) = self.shared.upgrade() else {
                    return;
                };
                self.apply(&shared, &store).await;
                if let Some(seen) = seen {
                    shared.cluster.set_config_applied(seen);
                }
            }
        }
    }
}
