//! One configuration, changed at run time, on every gateway of a cluster.
//!
//! With `[cluster]`, what an operator changes at run time (a pushed
//! policy, a service's policy, node drains, cache purges) is written to
//! etcd under `{prefix}/config/` ([`keys`]) and applied by every gateway
//! from its watch of that prefix, the one that wrote it included
//! ([`follow`]): at start a gateway reads everything there and applies it,
//! then watches from the next revision; when the watch fails it reads
//! everything again once etcd answers. While etcd does not answer, those
//! changes are refused ([`SyncError::Degraded`]) and calls keep flowing.
//!
//! Without `[cluster]` the changes apply to this gateway alone, as they
//! always did; a pushed policy is written into the plugins folder so that
//! it outlives a restart ([`writes`]).
//!
//! The share of each tenant's rate this gateway enforces follows the
//! member list (`crate::tenants::Tenants::set_members`).
//!
//! Job settings and templates (`job-settings`, `job-templates/{name}`) are
//! written by the jobs room, below this module, through
//! `crate::cluster::Cluster::put_config`, and applied here like the rest.
//!
//! Architecture Invariant: the front ends change run-time state through
//! this module only; it writes `{prefix}/config/` (the jobs room its own
//! keys through the cluster handle), its follower alone applies what is
//! there, and the rooms below never read etcd.

mod apply;
mod follow;
pub(crate) mod keys;
mod state;
mod store;
mod writes;

use std::sync::Arc;

use axum::http::StatusCode;
use protocol::ErrorKind;

use crate::Shared;
use crate::config::ClusterConfig;
use store::Store;
pub(crate) use writes::{purge_cache, push_policy, set_draining, set_service_policy};

/// Why a run-time change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SyncError {
    /// etcd did not answer in time or failed: the change is not made
    /// anywhere.
    #[error(
        "the cluster's etcd is unreachable ({0}): run-time changes go through etcd so that \
         every gateway applies them; calls keep flowing; retry when etcd is back"
    )]
    Degraded(String),
    /// The change itself is wrong (a component that does not load, a
    /// policy that is not loaded, a bad name).
    #[error("{0}")]
    BadRequest(String),
    /// No node of that id is registered.
    #[error("no node {0:?} is registered")]
    UnknownNode(String),
    /// The component could not be written into the plugins folder.
    #[error("cannot store the policy: {0}")]
    Io(String),
}

impl SyncError {
    /// The HTTP status of the error answer.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::Degraded(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::UnknownNode(_) => StatusCode::NOT_FOUND,
            Self::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `code` of the JSON error answer.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::Degraded(_) => "cluster_degraded",
            Self::BadRequest(_) => "bad_request",
            Self::UnknownNode(_) => "unknown_node",
            Self::Io(_) => "internal",
        }
    }

    /// The protocol error kind of the QUIC answer.
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            Self::Degraded(_) | Self::Io(_) => ErrorKind::Internal,
            Self::BadRequest(_) => ErrorKind::BadRequest,
            Self::UnknownNode(_) => ErrorKind::UnknownService,
        }
    }

    /// The QUIC answer's message: [`SyncError::Degraded`] starts with
    /// `cluster degraded:` (its kind alone does not tell).
    pub(crate) fn quic_message(&self) -> String {
        match self {
            Self::Degraded(_) => format!("cluster degraded: {self}"),
            _ => self.to_string(),
        }
    }
}

/// The shared run-time state's side of the gateway: the etcd store when
/// `[cluster]` is set.
pub(crate) struct Sync {
    store: Option<Store>,
}

impl Sync {
    /// The sync side of a gateway with `cluster` whose etcd client is
    /// `etcd` (the cluster membership's; `None`, or no `cluster`: a
    /// cluster of one, no etcd).
    pub(crate) fn new(cluster: Option<&ClusterConfig>, etcd: Option<etcd_client::Client>) -> Self {
        Self {
            store: cluster
                .zip(etcd)
                .map(|(config, client)| Store::new(client, config)),
        }
    }

    /// Whether run-time changes go through etcd.
    pub(crate) fn is_cluster(&self) -> bool {
        self.store.is_some()
    }

    /// The etcd store, `None` without `[cluster]`.
    pub(crate) fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }
}

/// Applies the shared state at start (read from etcd, waiting at most the
/// etcd timeout; then in the background until etcd answers) and keeps
/// following it while the gateway runs; also keeps every tenant's rate
/// share in step with the member list.
pub(crate) async fn start(shared: &Arc<Shared>) {
    follow::tenant_shares(shared);
    if shared.sync.is_cluster() {
        follow::start(shared).await;
    }
}

#[cfg(test)]
mod tests;
