//! `GET /api/cluster`: the gateways of this gateway's cluster as it sees
//! them, and its link to etcd.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Json, Response};
use serde::Serialize;

use crate::Shared;
use crate::cluster::EtcdHealth;

/// The answer of `GET /api/cluster`.
#[derive(Debug, Serialize)]
pub(super) struct ClusterView {
    /// This gateway's name.
    me: String,
    /// Whether it has a `[cluster]` (false: a cluster of one).
    clustered: bool,
    /// Whether etcd does not answer now (the list is the last one seen).
    degraded: bool,
    /// The member list's revision (etcd's revision of its last change).
    revision: u64,
    /// The live members, sorted by name.
    members: Vec<MemberView>,
    /// The link to etcd; `null` without `[cluster]`.
    etcd: Option<EtcdHealth>,
}

/// One member in `GET /api/cluster`.
#[derive(Debug, Serialize)]
struct MemberView {
    name: String,
    /// Whether it is this gateway.
    me: bool,
    quic: String,
    http: String,
    admin: String,
    started_unix_ms: u64,
    agents: u64,
    calls_in_flight: u64,
}

/// `GET /api/cluster`: `{me, clustered, degraded, revision, members:
/// [{name, me, quic, http, admin, started_unix_ms, agents,
/// calls_in_flight}], etcd: {endpoints, up, degraded_since_unix_ms,
/// last_error, lease_ttl_s, prefix} | null}`. This gateway's own agents
/// and calls are counted now; the others' as they last wrote them (every
/// 2 s when they change).
pub(super) async fn cluster(State(shared): State<Arc<Shared>>) -> Response {
    Json(view(&shared)).into_response()
}

fn view(shared: &Shared) -> ClusterView {
    let cluster = &shared.cluster;
    let me = cluster.name().to_string();
    let members = cluster
        .infos()
        .into_iter()
        .map(|i| {
            let mine = i.name == me;
            let (agents, calls_in_flight) = if mine {
                (
                    shared.registry.len() as u64,
                    shared.drain.in_flight() as u64,
                )
            } else {
                (i.load.agents, i.load.calls_in_flight)
            };
            MemberView {
                me: mine,
                admin: i.admin,
                name: i.name,
                quic: i.quic,
                http: i.http,
                started_unix_ms: i.started_unix_ms,
                agents,
                calls_in_flight,
            }
        })
        .collect();
    ClusterView {
        me,
        clustered: cluster.etcd().is_some(),
        degraded: cluster.is_degraded(),
        revision: cluster.members().revision,
        members,
        etcd: cluster.etcd_health(),
    }
}
