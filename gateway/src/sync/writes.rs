//! The run-time changes the front ends make: with `[cluster]` written to
//! etcd (every gateway applies them from its watch; this one also at
//! once, so its answer tells the outcome), without it applied here alone.

use std::path::PathBuf;
use std::sync::Arc;

use super::keys::{self, Key, MAX_COMPONENT, PolicyRef};
use super::{SyncError, apply::short};
use crate::Shared;
use crate::events::AdminEvent;
use crate::policies::pushed_source;

/// How long a cache purge's key stays in etcd, s: long enough for every
/// gateway's watch, or its reading again after a short etcd outage.
const PURGE_TTL_S: i64 = 60;

/// The etcd store a change goes through (`None` without `[cluster]`).
///
/// # Errors
/// [`SyncError::Degraded`] at once while the cluster's link to etcd is
/// down (`crate::cluster::Cluster::is_degraded`).
fn store_for_change(shared: &Shared) -> Result<Option<&super::store::Store>, SyncError> {
    let store = shared.sync.store();
    if store.is_some() && shared.cluster.is_degraded() {
        return Err(SyncError::Degraded(
            "this gateway's link to etcd is down".into(),
        ));
    }
    Ok(store)
}

/// A pushed policy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Pushed {
    /// The name its `name` export answers.
    pub(crate) name: String,
    /// BLAKE3 of the component, lowercase hex.
    pub(crate) hash: String,
    /// The component's length, bytes.
    pub(crate) bytes: usize,
    /// Where it is kept: `etcd` (every gateway loads it) or the plugins
    /// file of this gateway.
    pub(crate) stored: String,
}

/// Loads the component `bytes` as a policy (named `name` when given: the
/// component must answer that name) and keeps it: with `[cluster]` in
/// etcd, in chunks of at most 1 MiB, for every gateway to load; without,
/// in this gateway's plugins folder (the file that provides the name, else
/// `{name}.wasm`). A component that does not load is stored nowhere.
///
/// # Errors
/// [`SyncError::BadRequest`] for an empty or too large component (over
/// 64 MiB), one that does not compile or instantiate, or that answers
/// another name; [`SyncError::Degraded`] when etcd does not take it;
/// [`SyncError::Io`] when the plugins file cannot be written.
pub(crate) async fn push_policy(
    shared: &Arc<Shared>,
    name: Option<String>,
    bytes: Vec<u8>,
) -> Result<Pushed, SyncError> {
    if bytes.is_empty() || bytes.len() > MAX_COMPONENT {
        return Err(SyncError::BadRequest(format!(
            "a policy component is 1 byte to {} MiB, got {} bytes",
            MAX_COMPONENT >> 20,
            bytes.len()
        )));
    }
    let store = store_for_change(shared)?;
    let policies = shared.policies.clone();
    let (policy, bytes) = tokio::task::spawn_blocking(move || {
        let policy = policies.compile(&bytes, "pushed component");
        (policy, bytes)
    })
    .await
    .map_err(|e| SyncError::Io(e.to_string()))?;
    let policy =
        policy.map_err(|e| SyncError::BadRequest(format!("the component does not load: {e}")))?;
    let loaded = policy.name().to_string();
    if let Some(name) = &name
        && *name != loaded
    {
        return Err(SyncError::BadRequest(format!(
            "the component names itself {loaded:?}, not {name:?}"
        )));
    }
    if loaded.contains('/') {
        return Err(SyncError::BadRequest(format!(
            "a pushed policy's name has no '/', got {loaded:?}"
        )));
    }
    // Not empty (checked above): the chunks are `bytes.chunks(CHUNK)`.
    let (reference, _) = keys::chunks(&bytes);
    let len = bytes.len();
    let stored = match store {
        Some(store) => {
            for (index, part) in bytes.chunks(keys::CHUNK).enumerate() {
                let key = Key::Chunk {
                    hash: reference.hash.clone(),
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                };
                store.put(&key, part.to_vec(), None).await?;
            }
            let (_, names) = store.list("policy-names/").await?;
            let json = serde_json::to_vec(&reference).map_err(|e| SyncError::Io(e.to_string()))?;
            store
                .put(&Key::PolicyName(loaded.clone()), json, None)
                .await?;
            forget_unused(store, &loaded, &reference, &names).await;
            shared
                .policies
                .install(&pushed_source(&loaded), policy)
                .map_err(|e| SyncError::BadRequest(e.to_string()))?;
            "etcd".to_string()
        }
        None => {
            let path = shared
                .policies
                .file_of(&loaded)
                .unwrap_or_else(|| shared.config.plugins_dir.join(format!("{loaded}.wasm")));
            let written = path.clone();
            tokio::task::spawn_blocking(move || write_atomically(&written, &bytes))
                .await
                .map_err(|e| SyncError::Io(e.to_string()))?
                .map_err(|e| SyncError::Io(format!("{}: {e}", path.display())))?;
            shared
                .policies
                .install(&path, policy)
                .map_err(|e| SyncError::BadRequest(e.to_string()))?;
            path.display().to_string()
        }
    };
    tracing::info!(policy = %loaded, hash = %reference.hash, bytes = reference.len, %stored, "policy pushed");
    shared.announce(AdminEvent::new(
        "policy",
        format!("policy {loaded} pushed ({})", short(&reference.hash)),
    ));
    Ok(Pushed {
        name: loaded,
        hash: reference.hash,
        bytes: len,
        stored,
    })
}

/// Deletes the chunks of the component `name` referred to before
/// `reference` replaced it, unless another name still refers to them
/// (`names`: the `policy-names/` entries read before the replacement). A
/// failure leaves unused chunks behind, nothing worse.
async fn forget_unused(
    store: &super::store::Store,
    name: &str,
    reference: &PolicyRef,
    names: &[(String, Vec<u8>)],
) {
    let refs: Vec<(String, PolicyRef)> = names
        .iter()
        .filter_map(|(path, value)| {
            let Some(Key::PolicyName(n)) = Key::parse(path) else {
                return None;
            };
            Some((n, serde_json::from_slice(value).ok()?))
        })
        .collect();
    let Some(old) = refs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, r)| r.hash.clone())
    else {
        return;
    };
    let still_used = refs.iter().any(|(n, r)| n != name && r.hash == old);
    if old != reference.hash
        && !still_used
        && let Err(error) = store.delete_prefix(&format!("policies/{old}/")).await
    {
        tracing::warn!(%error, hash = %old, "cannot delete a replaced component's chunks");
    }
}

/// Writes `bytes` to `path` through a hidden temporary file in the same
/// folder and a rename, so the plugins watcher never reads half a file.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().map(PathBuf::from).unwrap_or_default();
    std::fs::create_dir_all(&dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.push.{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Makes `service` use the loaded policy `policy` (on every gateway with
/// `[cluster]`); the policy it used before on this gateway.
///
/// # Errors
/// [`SyncError::BadRequest`] for a bad service name or a policy not
/// loaded here; [`SyncError::Degraded`] when etcd does not take it.
pub(crate) async fn set_service_policy(
    shared: &Shared,
    service: &str,
    policy: &str,
) -> Result<Option<String>, SyncError> {
    protocol::NodeSpec::validate_name("service name", service)
        .map_err(|e| SyncError::BadRequest(e.to_string()))?;
    if service.contains('/') {
        return Err(SyncError::BadRequest(format!(
            "a service name has no '/', got {service:?}"
        )));
    }
    if let Some(store) = store_for_change(shared)? {
        if !shared.policies.is_loaded(policy) {
            // The same message as the table's refusal below.
            shared
                .policies
                .set_service_policy(service, policy)
                .map_err(SyncError::BadRequest)?;
        }
        store
            .put(
                &Key::ServicePolicy(service.to_string()),
                policy.as_bytes().to_vec(),
                None,
            )
            .await?;
    }
    shared
        .policies
        .set_service_policy(service, policy)
        .map_err(SyncError::BadRequest)
}

/// Drains (or undrains) the node `node`: no new calls go to it (on every
/// gateway with `[cluster]`); its calls in flight finish. Returns the
/// node's calls in flight here.
///
/// # Errors
/// [`SyncError::UnknownNode`] when no node of that id is registered here
/// (with `[cluster]`, undraining a node registered nowhere is allowed: it
/// clears its drain); [`SyncError::Degraded`] when etcd does not take it.
pub(crate) async fn set_draining(
    shared: &Shared,
    node: &str,
    draining: bool,
) -> Result<u32, SyncError> {
    let found = shared.registry.get(node);
    if let Some(store) = store_for_change(shared)? {
        if found.is_none() && draining {
            return Err(SyncError::UnknownNode(node.to_string()));
        }
        if node.is_empty() || node.contains('/') || node.len() > 256 {
            return Err(SyncError::BadRequest(format!("bad node id {node:.64?}")));
        }
        let key = Key::Drain(node.to_string());
        if draining {
            store.put(&key, b"1".to_vec(), None).await?;
        } else {
            store.delete(&key).await?;
        }
    }
    let Some(found) = found else {
        if shared.sync.is_cluster() {
            return Ok(0);
        }
        return Err(SyncError::UnknownNode(node.to_string()));
    };
    shared.scheduler.drain(&found, draining);
    Ok(found.in_flight_total())
}

/// Drops the cached results of `service` (`None`: every service), on
/// every gateway with `[cluster]`; the entries and bytes dropped here.
///
/// # Errors
/// [`SyncError::BadRequest`] for a bad service name;
/// [`SyncError::Degraded`] when etcd does not take it.
pub(crate) async fn purge_cache(
    shared: &Shared,
    service: Option<&str>,
) -> Result<(u64, u64), SyncError> {
    if let Some(service) = service {
        protocol::NodeSpec::validate_name("service name", service)
            .map_err(|e| SyncError::BadRequest(e.to_string()))?;
    }
    if let Some(store) = store_for_change(shared)? {
        let lease = store.lease(PURGE_TTL_S).await?;
        let id = format!(
            "{:x}-{:016x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis()),
            rand::random::<u64>()
        );
        store
            .put(
                &Key::CachePurge(id),
                service.unwrap_or("*").as_bytes().to_vec(),
                Some(lease),
            )
            .await?;
    }
    Ok(shared.cache.purge(service))
}
