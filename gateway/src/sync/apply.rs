//! Carrying out the [`Step`]s towards the shared state on this gateway.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::keys::{self, AssembleError, Key, PolicyRef};
use super::state::{Applied, Step};
use super::store::Store;
use crate::Shared;
use crate::events::AdminEvent;
use crate::policies::pushed_source;

/// Takes `step` on this gateway and records in `applied` what is done.
/// A step that cannot be taken yet (a policy not loaded for a service, a
/// chunk not readable) stays undone and is planned again.
pub(super) async fn take(shared: &Arc<Shared>, store: &Store, step: Step, applied: &mut Applied) {
    match step {
        Step::Load { name, reference } => {
            if let Some(tried) = load(shared, store, &name, &reference).await {
                applied.policies.insert(name, tried);
            }
        }
        Step::Unload(name) => {
            shared.policies.remove_file(&pushed_source(&name));
            applied.policies.remove(&name);
        }
        Step::SetService { service, policy } => {
            match shared.policies.set_service_policy(&service, &policy) {
                Ok(previous) => {
                    tracing::info!(%service, %policy, ?previous, "service policy changed (cluster)");
                    shared.announce(AdminEvent::new(
                        "policy",
                        format!("service {service} now uses policy {policy}"),
                    ));
                    applied.services.insert(service, policy);
                }
                Err(why) => {
                    tracing::debug!(%service, %policy, %why, "service policy waits for its policy")
                }
            }
        }
        Step::Drain(node) => {
            applied.drains.insert(node);
            hold_drains(shared, applied);
        }
        Step::Undrain(node) => {
            applied.drains.remove(&node);
            if let Some(found) = shared.registry.get(&node)
                && found.is_draining()
            {
                shared.scheduler.drain(&found, false);
                tracing::info!(%node, "node undrained (cluster)");
                shared.announce(AdminEvent::new("undrain", node));
            }
        }
        Step::Purge { id, service } => {
            let (entries, bytes) = shared.cache.purge(service.as_deref());
            let whose = service.as_deref().unwrap_or("all services");
            tracing::info!(purge = %id, whose, entries, bytes, "result cache purged (cluster)");
            if entries > 0 {
                shared.announce(AdminEvent::new(
                    "cache_purge",
                    format!("{whose} ({entries} entries, {bytes} bytes)"),
                ));
            }
            applied.purges.insert(id);
        }
        Step::JobLimit(limit) => {
            let done = match shared.jobs() {
                Ok(jobs) => jobs.apply_shared_limit(limit).await,
                // Jobs are off here: nothing to put in force.
                Err(_) => Ok(()),
            };
            match done {
                Ok(()) => {
                    applied.job_limit = Some(limit);
                }
                Err(error) => {
                    tracing::warn!(%error, max_per_node = limit, "cannot apply the cluster's job limit yet; retrying")
                }
            }
        }
        Step::Template { name, template } => {
            let done = match shared.jobs() {
                Ok(jobs) => jobs.apply_shared_template(&name, &template).await,
                Err(_) => Ok(()),
            };
            match done {
                Ok(()) => {
                    applied.templates.insert(name, template);
                }
                Err(error) => {
                    tracing::warn!(%error, template = %name, "cannot store the cluster's job template yet; retrying")
                }
            }
        }
    }
}

/// Drains every node the shared state drains that is registered here and
/// not draining (a node that registered, or came back, since).
pub(super) fn hold_drains(shared: &Shared, applied: &Applied) {
    for node in &applied.drains {
        if let Some(found) = shared.registry.get(node)
            && !found.is_draining()
        {
            shared.scheduler.drain(&found, true);
            tracing::info!(%node, in_flight = found.in_flight_total(), "node drained (cluster)");
            shared.announce(AdminEvent::new("drain", node.clone()));
        }
    }
}

/// Loads the pushed policy `name` from the chunks `reference` names; the
/// hash tried, or `None` to try again later (a chunk not readable yet).
async fn load(
    shared: &Arc<Shared>,
    store: &Store,
    name: &str,
    reference: &PolicyRef,
) -> Option<String> {
    let source = pushed_source(name);
    if shared.policies.hash_of(name).as_deref() == Some(reference.hash.as_str())
        && shared.policies.is_pushed(name)
    {
        // This gateway pushed it, and installed it then.
        return Some(reference.hash.clone());
    }
    let bytes = match read(store, reference).await {
        Ok(bytes) => bytes,
        Err(ReadError::Later(why)) => {
            tracing::warn!(policy = %name, hash = %reference.hash, %why, "pushed policy not readable yet; retrying");
            return None;
        }
        Err(ReadError::Never(why)) => {
            let error = policy_host::PolicyError::Instantiate {
                policy: name.to_string(),
                reason: why,
            };
            shared.policies.reject(&source, &error);
            return Some(reference.hash.clone());
        }
    };
    let policies = shared.policies.clone();
    let expected = name.to_string();
    let loaded = tokio::task::spawn_blocking(move || {
        let origin = pushed_source(&expected).display().to_string();
        let policy = policies.compile(&bytes, &origin)?;
        if policy.name() != expected {
            return Err(policy_host::PolicyError::Instantiate {
                policy: policy.name().to_string(),
                reason: format!("pushed as {expected:?} but names itself otherwise"),
            });
        }
        policies.install(&pushed_source(&expected), policy)
    })
    .await;
    match loaded {
        Ok(Ok(_)) => {
            shared.announce(AdminEvent::new(
                "policy",
                format!(
                    "policy {name} loaded from the cluster ({})",
                    short(&reference.hash)
                ),
            ));
        }
        Ok(Err(error)) => shared.policies.reject(&source, &error),
        Err(error) => {
            tracing::error!(policy = %name, %error, "loading a pushed policy failed");
            return None;
        }
    }
    Some(reference.hash.clone())
}

/// Why a pushed component could not be read.
enum ReadError {
    /// etcd did not answer, or a chunk is not there yet: try again.
    Later(String),
    /// The stored chunks do not make up the component: do not try again
    /// until the name refers to other bytes.
    Never(String),
}

/// The component `reference` names, read back from its chunks.
async fn read(store: &Store, reference: &PolicyRef) -> Result<Vec<u8>, ReadError> {
    let (_, entries) = store
        .list(&format!("policies/{}/", reference.hash))
        .await
        .map_err(|e| ReadError::Later(e.to_string()))?;
    let chunks: BTreeMap<u32, Vec<u8>> = entries
        .into_iter()
        .filter_map(|(path, value)| match Key::parse(&path) {
            Some(Key::Chunk { index, .. }) => Some((index, value)),
            _ => None,
        })
        .collect();
    keys::assemble(reference, &chunks).map_err(|e| match e {
        AssembleError::Missing { .. } => ReadError::Later(e.to_string()),
        AssembleError::BadRef(_) | AssembleError::Mismatch { .. } => {
            ReadError::Never(e.to_string())
        }
    })
}

/// The first 16 characters of a hash, as tables show it.
pub(super) fn short(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
}
