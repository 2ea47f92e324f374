//! Several gateways as one cluster: who the members are.
//!
//! Without a `[cluster]` section the gateway is a cluster of one: its
//! member list names itself alone and never changes. With one, the list is
//! the live members as etcd knows them: each gateway holds a lease on its
//! key `{prefix}/gateways/{name}` ([`membership`]) and watches the others'.
//! When etcd cannot be reached the gateway keeps the last list it saw and is
//! degraded until etcd answers again.
//!
//! Architecture Invariant: this module depends only on `config`,
//! `telemetry` and the protocol crate; the rooms above read the member
//! list from it, never from etcd directly, and hand it their load as a
//! closure ([`LoadFn`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use protocol::{Member, MemberList};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::ClusterConfig;

mod membership;
#[cfg(test)]
mod tests;

/// Why a cluster operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(
    dead_code,
    reason = "the refusal of changes that go through etcd, for the rooms that make them"
)]
pub(crate) enum ClusterError {
    /// etcd does not answer (the gateway is degraded): a change that must
    /// be agreed through etcd is refused until it does.
    #[error(
        "etcd is unreachable: this change must go through etcd and is refused until it is back \
         (retry later)"
    )]
    EtcdUnreachable,
    /// Another live gateway holds this gateway's name.
    #[error(
        "another live gateway holds the cluster name {name:?} (etcd key {key}); give this \
         gateway another [cluster] name or stop that one"
    )]
    NameTaken {
        /// The name.
        name: String,
        /// Its etcd key.
        key: String,
    },
    /// An etcd request failed or took longer than `connect_timeout_ms`.
    #[error("etcd: {0}")]
    Etcd(String),
}

/// What this gateway carries now, shown beside its name to the others:
/// agents registered and calls in flight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LoadSummary {
    /// Node agents registered with this gateway.
    pub(crate) agents: u64,
    /// Calls admitted and not finished, queued ones included.
    pub(crate) calls_in_flight: u64,
}

/// Reads this gateway's [`LoadSummary`] (called every couple of seconds
/// from the membership task).
pub(crate) type LoadFn = Box<dyn Fn() -> LoadSummary + Send + Sync>;

/// One member as it describes itself: the JSON value of its etcd key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MemberInfo {
    /// Its unique name.
    pub(crate) name: String,
    /// Where its QUIC port is dialled, `host:port`.
    pub(crate) quic: String,
    /// Where its HTTP ingress is reached, `host:port` (empty: none).
    #[serde(default)]
    pub(crate) http: String,
    /// Where its admin HTTP port is reached, `host:port` (empty: none).
    #[serde(default)]
    pub(crate) admin: String,
    /// When it started, ms since the Unix epoch.
    #[serde(default)]
    pub(crate) started_unix_ms: u64,
    /// Its load when it last wrote its key.
    #[serde(flatten)]
    pub(crate) load: LoadSummary,
}

impl MemberInfo {
    fn member(&self) -> Member {
        Member {
            name: self.name.clone(),
            quic: self.quic.clone(),
            http: self.http.clone(),
        }
    }
}

/// How this gateway's link to etcd is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct EtcdHealth {
    /// Its client endpoints.
    pub(crate) endpoints: Vec<String>,
    /// Whether it answered the last request.
    pub(crate) up: bool,
    /// Since when it has not, ms since the Unix epoch (`None` while up).
    pub(crate) degraded_since_unix_ms: Option<u64>,
    /// The last failure, in words (`None` while up).
    pub(crate) last_error: Option<String>,
    /// The TTL of this gateway's lease, s.
    pub(crate) lease_ttl_s: u32,
    /// The key prefix.
    pub(crate) prefix: String,
}

/// The cluster as this gateway sees it.
pub(crate) struct Cluster {
    /// This gateway, as the others and its agents and clients reach it.
    me: Member,
    /// Where this gateway's admin port is reached (a cluster of one's;
    /// with etcd, in its value).
    admin: String,
    /// When it started, ms since the Unix epoch.
    started_unix_ms: u64,
    members: Arc<watch::Sender<MemberList>>,
    /// The etcd part; `None` for a cluster of one.
    etcd: Option<membership::Handle>,
    /// The bound on one etcd request (`connect_timeout_ms`).
    timeout: std::time::Duration,
    /// The etcd revision up to which this gateway has applied the shared
    /// run-time state under `{prefix}/config/` (0: none yet).
    config_applied: watch::Sender<i64>,
}

impl Cluster {
    /// A cluster of one: `me` alone, at revision 1.
    pub(crate) fn single(me: Member) -> Self {
        metrics::gauge!("cluster_etcd_up").set(1.0);
        metrics::gauge!("cluster_members").set(1.0);
        let list = MemberList {
            revision: 1,
            members: vec![me.clone()],
        };
        Self {
            me,
            admin: String::new(),
            started_unix_ms: membership::unix_ms(std::time::SystemTime::now()),
            members: Arc::new(watch::Sender::new(list)),
            etcd: None,
            timeout: std::time::Duration::from_secs(2),
            config_applied: watch::Sender::new(0),
        }
    }

    /// The same, telling `admin` (`host:port`) as its admin port's address.
    pub(crate) fn with_admin(mut self, admin: String) -> Self {
        self.admin = admin;
        self
    }

    /// Joins the cluster of `config`: grants a lease, puts this gateway's
    /// key under it, reads and watches the others', and keeps all of that
    /// up in a task that lives as long as the handle. `me` and `admin`
    /// (`host:port`, empty: none) are the addresses advertised; `load` is
    /// read every couple of seconds.
    ///
    /// When etcd does not answer within `connect_timeout_ms` the gateway
    /// starts degraded, alone in its list, and joins when etcd answers.
    ///
    /// # Errors
    /// [`ClusterError::NameTaken`] when another live gateway holds
    /// `me.name` (a holder that stops renewing its lease is waited for,
    /// for up to its TTL); [`ClusterError::Etcd`] when the endpoints are
    /// unusable.
    pub(crate) async fn start(
        config: &ClusterConfig,
        me: Member,
        admin: String,
        load: LoadFn,
    ) -> Result<Self, ClusterError> {
        let members = Arc::new(watch::Sender::new(MemberList {
            revision: 0,
            members: vec![me.clone()],
        }));
        let etcd =
            membership::Handle::start(config, &me, admin.clone(), load, members.clone()).await?;
        Ok(Self {
            me,
            admin,
            started_unix_ms: etcd.started_unix_ms(),
            members,
            etcd: Some(etcd),
            timeout: std::time::Duration::from_millis(u64::from(config.connect_timeout_ms)),
            config_applied: watch::Sender::new(0),
        })
    }

    /// This gateway.
    pub(crate) fn me(&self) -> &Member {
        &self.me
    }

    /// This gateway's name.
    pub(crate) fn name(&self) -> &str {
        &self.me.name
    }

    /// The live members now, this gateway among them, sorted by name.
    pub(crate) fn members(&self) -> MemberList {
        self.members.borrow().clone()
    }

    /// Follows the member list: the receiver sees every change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<MemberList> {
        self.members.subscribe()
    }

    /// How many members are live (at least 1: this gateway).
    pub(crate) fn live_count(&self) -> usize {
        self.members.borrow().members.len().max(1)
    }

    /// A clone of the etcd client (cheap: it shares the connection);
    /// `None` without `[cluster]`. Every request through it should have a
    /// timeout: while etcd is down a request waits for it.
    pub(crate) fn etcd(&self) -> Option<etcd_client::Client> {
        self.etcd.as_ref().map(membership::Handle::client)
    }

    /// The etcd client while etcd answers, for a change that must go
    /// through etcd.
    ///
    /// # Errors
    /// [`ClusterError::EtcdUnreachable`] while degraded;
    /// [`ClusterError::Etcd`] without `[cluster]`.
    #[allow(dead_code, reason = "for the rooms that make changes through etcd")]
    pub(crate) fn etcd_for_change(&self) -> Result<etcd_client::Client, ClusterError> {
        match &self.etcd {
            None => Err(ClusterError::Etcd("this gateway has no [cluster]".into())),
            Some(h) if h.is_degraded() => Err(ClusterError::EtcdUnreachable),
            Some(h) => Ok(h.client()),
        }
    }

    /// Writes `value` at `{prefix}/config/{path}` in etcd, the shared
    /// run-time state every gateway follows and applies (this one
    /// included); the etcd revision of the write, or `None` without
    /// `[cluster]` (nothing written: the change is this gateway's alone).
    ///
    /// # Errors
    /// [`ClusterError::EtcdUnreachable`] at once while degraded;
    /// [`ClusterError::Etcd`] when etcd fails or does not answer within
    /// `connect_timeout_ms` (the write may or may not have been made).
    pub(crate) async fn put_config(
        &self,
        path: &str,
        value: Vec<u8>,
    ) -> Result<Option<i64>, ClusterError> {
        let Some(h) = &self.etcd else {
            return Ok(None);
        };
        if h.is_degraded() {
            return Err(ClusterError::EtcdUnreachable);
        }
        let key = format!("{}/config/{path}", h.prefix());
        let mut kv = h.client().kv_client();
        match tokio::time::timeout(self.timeout, kv.put(key, value, None)).await {
            Ok(Ok(put)) => Ok(Some(put.header().map_or(0, |h| h.revision()))),
            Ok(Err(e)) => Err(ClusterError::Etcd(e.to_string())),
            Err(_) => Err(ClusterError::Etcd(format!(
                "no answer within {} ms (connect_timeout_ms)",
                self.timeout.as_millis()
            ))),
        }
    }

    /// Records that this gateway has applied the shared run-time state up
    /// to etcd revision `revision` (a lower one than already recorded
    /// changes nothing).
    pub(crate) fn set_config_applied(&self, revision: i64) {
        self.config_applied.send_if_modified(|applied| {
            let newer = revision > *applied;
            if newer {
                *applied = revision;
            }
            newer
        });
    }

    /// Waits until this gateway has applied the shared run-time state up to
    /// etcd revision `revision`, for at most `limit`; whether it has.
    pub(crate) async fn config_applied(&self, revision: i64, limit: std::time::Duration) -> bool {
        let mut applied = self.config_applied.subscribe();
        matches!(
            tokio::time::timeout(limit, applied.wait_for(|r| *r >= revision)).await,
            Ok(Ok(_))
        )
    }

    /// Whether etcd does not answer now (always false without `[cluster]`).
    pub(crate) fn is_degraded(&self) -> bool {
        self.etcd
            .as_ref()
            .is_some_and(membership::Handle::is_degraded)
    }

    /// The etcd key prefix (`/switchyard` by default; empty without
    /// `[cluster]`).
    #[allow(
        dead_code,
        reason = "for the rooms that keep keys of their own in etcd"
    )]
    pub(crate) fn prefix(&self) -> &str {
        self.etcd.as_ref().map_or("", membership::Handle::prefix)
    }

    /// The link to etcd; `None` without `[cluster]`.
    pub(crate) fn etcd_health(&self) -> Option<EtcdHealth> {
        self.etcd.as_ref().map(membership::Handle::health)
    }

    /// Every live member's description (address of its admin port, load),
    /// sorted by name; this gateway's with its load now. Without
    /// `[cluster]` this gateway alone, with no load (its reader counts
    /// it).
    pub(crate) fn infos(&self) -> Vec<MemberInfo> {
        match &self.etcd {
            Some(h) => h.infos(),
            None => vec![MemberInfo {
                name: self.me.name.clone(),
                quic: self.me.quic.clone(),
                http: self.me.http.clone(),
                admin: self.admin.clone(),
                started_unix_ms: self.started_unix_ms,
                load: LoadSummary::default(),
            }],
        }
    }

    /// Leaves the cluster now: revokes this gateway's lease so that the
    /// others drop it at once (rather than when the lease runs out), and
    /// stops renewing it. Does nothing without `[cluster]` or while etcd
    /// does not answer.
    pub(crate) async fn leave(&self) {
        if let Some(h) = &self.etcd {
            h.leave().await;
        }
    }
}

/// Registers the cluster's metrics' descriptions.
pub(crate) fn describe_metrics() {
    metrics::describe_gauge!(
        "cluster_etcd_up",
        "1 while etcd answers this gateway (or it has no [cluster]), 0 while degraded."
    );
    metrics::describe_gauge!(
        "cluster_members",
        "Live gateways in this gateway's member list, itself included."
    );
}

/// Locks `m`, whatever a panicking holder left.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The member list of `infos`, sorted by name, with `me` in it.
fn list_of(infos: &BTreeMap<String, MemberInfo>, me: &Member, revision: u64) -> MemberList {
    let mut members: Vec<Member> = infos.values().map(MemberInfo::member).collect();
    if !infos.contains_key(&me.name) {
        members.push(me.clone());
        members.sort_by(|a, b| a.name.cmp(&b.name));
    }
    MemberList { revision, members }
}
