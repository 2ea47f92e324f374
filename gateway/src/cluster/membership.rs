//! This gateway's membership in etcd: a lease, its key under the lease, and
//! a watch of every member's key, kept up by one task; when etcd stops
//! answering, the last list stays and the task retries with backoff.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, Txn, TxnOp, WatchOptions, WatchStream,
};
use protocol::{Member, MemberList};
use rand::Rng;
use tokio::sync::watch;

use super::{ClusterError, EtcdHealth, LoadFn, LoadSummary, MemberInfo, list_of, lock};
use crate::config::ClusterConfig;

/// How often this gateway's load is read and, when it changed, written.
const LOAD_INTERVAL: Duration = Duration::from_secs(2);

/// The first retry's backoff; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The longest wait between two tries to reach etcd.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Largest member value read, bytes; a longer one is skipped.
const MAX_VALUE_LEN: usize = 16 * 1024;

/// The etcd part of a [`super::Cluster`]: what its task and the handle
/// share. The task stops when the handle is dropped.
pub(super) struct Handle {
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the membership task and the handle share.
struct State {
    client: Client,
    config: ClusterConfig,
    /// `{prefix}/gateways/`.
    dir: String,
    /// `{prefix}/gateways/{name}`.
    key: String,
    me: Member,
    /// This gateway's value, less its load.
    info: MemberInfo,
    load: LoadFn,
    members: Arc<watch::Sender<MemberList>>,
    /// Every member's value, by name, as last read.
    infos: Mutex<BTreeMap<String, MemberInfo>>,
    up: AtomicBool,
    /// The lease held now (0: none).
    lease: AtomicI64,
    /// Since when etcd has not answered, and why.
    down: Mutex<Option<(SystemTime, String)>>,
}

/// A live membership: the lease's keeper and the watch.
struct Session {
    lease: i64,
    keeper: LeaseKeeper,
    renewals: LeaseKeepAliveStream,
    watch: WatchStream,
    revision: i64,
}

impl Handle {
    /// Connects, joins (or starts degraded) and starts the task.
    pub(super) async fn start(
        config: &ClusterConfig,
        me: &Member,
        admin: String,
        load: LoadFn,
        members: Arc<watch::Sender<MemberList>>,
    ) -> Result<Self, ClusterError> {
        let timeout = Duration::from_millis(u64::from(config.connect_timeout_ms));
        let options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_keep_alive(Duration::from_secs(1), timeout)
            .with_keep_alive_while_idle(true);
        let client = Client::connect(&config.etcd, Some(options))
            .await
            .map_err(|e| ClusterError::Etcd(e.to_string()))?;
        let dir = format!("{}/gateways/", config.prefix);
        let info = MemberInfo {
            name: me.name.clone(),
            quic: me.quic.clone(),
            http: me.http.clone(),
            admin,
            started_unix_ms: unix_ms(SystemTime::now()),
            load: LoadSummary::default(),
        };
        let state = Arc::new(State {
            client,
            config: config.clone(),
            key: format!("{dir}{}", me.name),
            dir,
            me: me.clone(),
            info,
            load,
            members,
            infos: Mutex::new(BTreeMap::new()),
            up: AtomicBool::new(false),
            lease: AtomicI64::new(0),
            down: Mutex::new(None),
        });
        metrics::gauge!("cluster_members").set(1.0);
        let first = match state.join(true).await {
            Ok(session) => {
                state.set_up(false);
                Some(session)
            }
            Err(e @ ClusterError::NameTaken { .. }) => return Err(e),
            Err(e) => {
                state.set_down(&e);
                None
            }
        };
        let task = tokio::spawn(state.clone().run(first));
        Ok(Self { state, task })
    }

    pub(super) fn started_unix_ms(&self) -> u64 {
        self.state.info.started_unix_ms
    }

    pub(super) fn client(&self) -> Client {
        self.state.client.clone()
    }

    pub(super) fn is_degraded(&self) -> bool {
        !self.state.up.load(Ordering::Acquire)
    }

    pub(super) fn prefix(&self) -> &str {
        &self.state.config.prefix
    }

    pub(super) fn health(&self) -> EtcdHealth {
        let down = lock(&self.state.down).clone();
        EtcdHealth {
            endpoints: self.state.config.etcd.clone(),
            up: down.is_none(),
            degraded_since_unix_ms: down.as_ref().map(|(t, _)| unix_ms(*t)),
            last_error: down.map(|(_, why)| why),
            lease_ttl_s: self.state.config.lease_ttl_s,
            prefix: self.state.config.prefix.clone(),
        }
    }

    pub(super) fn infos(&self) -> Vec<MemberInfo> {
        let mut infos = lock(&self.state.infos).clone();
        infos.insert(self.state.me.name.clone(), self.state.my_info());
        infos.into_values().collect()
    }

    pub(super) async fn leave(&self) {
        self.task.abort();
        let lease = self.state.lease.swap(0, Ordering::AcqRel);
        if lease != 0 {
            let mut client = self.state.client.clone();
            let _ = self.state.timed(client.lease_revoke(lease)).await;
        }
    }
}

impl State {
    /// This gateway's value with its load now.
    fn my_info(&self) -> MemberInfo {
        MemberInfo {
            load: (self.load)(),
            ..self.info.clone()
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.config.connect_timeout_ms))
    }

    /// Runs an etcd request within `connect_timeout_ms`.
    async fn timed<T>(
        &self,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, ClusterError> {
        match tokio::time::timeout(self.timeout(), request).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ClusterError::Etcd(e.to_string())),
            Err(_) => Err(ClusterError::Etcd(format!(
                "no answer within {} ms (connect_timeout_ms)",
                self.config.connect_timeout_ms
            ))),
        }
    }

    /// Keeps the membership up for good: a session until etcd stops
    /// answering, then tries with backoff until it answers again.
    async fn run(self: Arc<Self>, mut session: Option<Session>) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            if let Some(s) = session.take() {
                backoff = FIRST_BACKOFF;
                let lost = self.serve(s).await;
                self.set_down(&lost);
            }
            let wait = jittered(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
            tokio::time::sleep(wait).await;
            match self.join(false).await {
                Ok(s) => {
                    self.set_up(true);
                    session = Some(s);
                }
                Err(e) => {
                    let new = self.note_down(&e);
                    if new && matches!(e, ClusterError::NameTaken { .. }) {
                        tracing::error!(error = %e, "cannot rejoin the cluster");
                    }
                }
            }
        }
    }

    /// Grants a lease, claims this gateway's key under it, reads every
    /// member's and opens the watch and the renewals. At `startup`, a key
    /// held by another lease is waited for up to that lease's TTL left + 2 s
    /// (etcd rounds it down and looks for expired leases twice a second).
    async fn join(&self, startup: bool) -> Result<Session, ClusterError> {
        let mut client = self.client.clone();
        let ttl = i64::from(self.config.lease_ttl_s);
        let lease = self.timed(client.lease_grant(ttl, None)).await?.id();
        let claimed = self.claim(lease, startup).await;
        if let Err(e) = claimed {
            let _ = self.timed(client.lease_revoke(lease)).await;
            return Err(e);
        }
        let old = self.lease.swap(lease, Ordering::AcqRel);
        if old != 0 && old != lease {
            // The key is on the new lease now; the old one holds nothing.
            let _ = self.timed(client.lease_revoke(old)).await;
        }
        let read = self
            .timed(client.get(self.dir.as_str(), Some(GetOptions::new().with_prefix())))
            .await?;
        let revision = read.header().map_or(0, |h| h.revision());
        let mut infos = BTreeMap::new();
        for kv in read.kvs() {
            if let Some(info) = self.parse(kv.key(), kv.value()) {
                infos.insert(info.name.clone(), info);
            }
        }
        *lock(&self.infos) = infos;
        self.publish(revision);
        let watch = self
            .timed(
                client.watch(
                    self.dir.as_str(),
                    Some(
                        WatchOptions::new()
                            .with_prefix()
                            .with_start_revision(revision + 1),
                    ),
                ),
            )
            .await?;
        let (keeper, renewals) = self.timed(client.lease_keep_alive(lease)).await?;
        Ok(Session {
            lease,
            keeper,
            renewals,
            watch,
            revision,
        })
    }

    /// Puts this gateway's key under `lease` when no other lease holds it
    /// (none, or the one this gateway held before).
    async fn claim(&self, lease: i64, startup: bool) -> Result<(), ClusterError> {
        let mut client = self.client.clone();
        let value = self.value();
        let mut deadline: Option<Instant> = None;
        loop {
            let mut mine = vec![0];
            let old = self.lease.load(Ordering::Acquire);
            if old != 0 {
                mine.push(old);
            }
            for holder in mine {
                let txn = Txn::new()
                    .when([Compare::lease(self.key.as_str(), CompareOp::Equal, holder)])
                    .and_then([TxnOp::put(
                        self.key.as_str(),
                        value.clone(),
                        Some(PutOptions::new().with_lease(lease)),
                    )]);
                if self.timed(client.txn(txn)).await?.succeeded() {
                    return Ok(());
                }
            }
            let taken = || ClusterError::NameTaken {
                name: self.me.name.clone(),
                key: self.key.clone(),
            };
            if !startup {
                return Err(taken());
            }
            // Another lease holds it: a gateway of this name that died
            // within its TTL, or a live one. Wait for the first to expire.
            let until = match deadline {
                Some(d) => d,
                None => {
                    let held = self.timed(client.get(self.key.as_str(), None)).await?;
                    let holder = held.kvs().first().map_or(0, etcd_client::KeyValue::lease);
                    let left = self
                        .timed(client.lease_time_to_live(holder, None))
                        .await
                        .map_or(0, |r| r.ttl().max(0));
                    let d = Instant::now()
                        + Duration::from_secs(u64::try_from(left).unwrap_or(0).min(300) + 2);
                    tracing::info!(
                        key = %self.key,
                        "another lease holds this gateway's key; waiting up to {left} s for it to \
                         expire"
                    );
                    deadline = Some(d);
                    d
                }
            };
            if Instant::now() >= until {
                return Err(taken());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Renews the lease, follows the watch and writes the load until etcd
    /// stops answering; returns why.
    async fn serve(&self, mut s: Session) -> ClusterError {
        let ttl = Duration::from_secs(u64::from(self.config.lease_ttl_s));
        let mut renew = tokio::time::interval(ttl / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut load_tick = tokio::time::interval(LOAD_INTERVAL);
        load_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut renewed = Instant::now();
        let mut written = LoadSummary::default();
        let mut client = self.client.clone();
        loop {
            tokio::select! {
                _ = renew.tick() => {
                    if renewed.elapsed() > ttl {
                        return ClusterError::Etcd(format!(
                            "lease {:x} not renewed for {} s", s.lease, ttl.as_secs()
                        ));
                    }
                    match tokio::time::timeout(self.timeout(), s.keeper.keep_alive()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return ClusterError::Etcd(e.to_string()),
                        Err(_) => {
                            return ClusterError::Etcd("the lease renewals are stuck".into());
                        }
                    }
                }
                renewal = s.renewals.message() => match renewal {
                    Ok(Some(r)) if r.ttl() > 0 => renewed = Instant::now(),
                    Ok(Some(_)) => {
                        return ClusterError::Etcd(format!("lease {:x} expired", s.lease));
                    }
                    Ok(None) => return ClusterError::Etcd("the lease renewals ended".into()),
                    Err(e) => return ClusterError::Etcd(e.to_string()),
                },
                event = s.watch.message() => match event {
                    Ok(Some(w)) if w.canceled() => {
                        return ClusterError::Etcd(format!(
                            "the watch was cancelled: {}", w.cancel_reason()
                        ));
                    }
                    Ok(Some(w)) => {
                        let revision = w.header().map_or(s.revision, |h| h.revision());
                        s.revision = s.revision.max(revision);
                        self.apply(w.events());
                        self.publish(s.revision);
                    }
                    Ok(None) => return ClusterError::Etcd("the watch ended".into()),
                    Err(e) => return ClusterError::Etcd(e.to_string()),
                },
                _ = load_tick.tick() => {
                    metrics::gauge!("cluster_etcd_up").set(1.0);
                    let load = (self.load)();
                    if load != written {
                        let put = client.put(
                            self.key.as_str(),
                            self.value(),
                            Some(PutOptions::new().with_lease(s.lease)),
                        );
                        if let Err(e) = self.timed(put).await {
                            return e;
                        }
                        written = load;
                    }
                }
            }
        }
    }

    /// This gateway's value now, JSON.
    fn value(&self) -> Vec<u8> {
        serde_json::to_vec(&self.my_info()).unwrap_or_default()
    }

    /// A member's value, when it is one ([`parse_member`]).
    fn parse(&self, key: &[u8], value: &[u8]) -> Option<MemberInfo> {
        parse_member(&self.dir, key, value)
    }

    /// Applies the watch's events to the values held.
    fn apply(&self, events: &[etcd_client::Event]) {
        let mut infos = lock(&self.infos);
        for event in events {
            let Some(kv) = event.kv() else { continue };
            match event.event_type() {
                EventType::Put => {
                    if let Some(info) = self.parse(kv.key(), kv.value()) {
                        infos.insert(info.name.clone(), info);
                    }
                }
                EventType::Delete => {
                    if let Some(name) = std::str::from_utf8(kv.key())
                        .ok()
                        .and_then(|k| k.strip_prefix(&self.dir))
                    {
                        infos.remove(name);
                    }
                }
            }
        }
    }

    /// Makes the values held the member list, when its members changed
    /// (a load update changes nothing there).
    fn publish(&self, revision: i64) {
        let mut list = list_of(&lock(&self.infos), &self.me, 0);
        list.members.truncate(protocol::MAX_MEMBERS);
        let count = list.members.len();
        self.members.send_if_modified(|held| {
            if held.members == list.members {
                return false;
            }
            list.revision = u64::try_from(revision).unwrap_or(0).max(held.revision + 1);
            *held = list;
            true
        });
        metrics::gauge!("cluster_members").set(count as f64);
    }

    fn set_up(&self, was_down: bool) {
        self.up.store(true, Ordering::Release);
        *lock(&self.down) = None;
        metrics::gauge!("cluster_etcd_up").set(1.0);
        if was_down {
            tracing::info!(endpoints = ?self.config.etcd, "etcd answers again; rejoined the cluster");
        } else {
            tracing::info!(name = %self.me.name, key = %self.key, "joined the cluster");
        }
    }

    /// The move to degraded: warns once.
    fn set_down(&self, why: &ClusterError) {
        self.up.store(false, Ordering::Release);
        metrics::gauge!("cluster_etcd_up").set(0.0);
        let mut down = lock(&self.down);
        if down.is_none() {
            tracing::warn!(
                endpoints = ?self.config.etcd,
                error = %why,
                "etcd does not answer: serving with the last member list until it does"
            );
            *down = Some((SystemTime::now(), why.to_string()));
        }
    }

    /// Another failed try while degraded: keeps the first time, notes
    /// why; returns whether the reason is another than the last one's.
    fn note_down(&self, why: &ClusterError) -> bool {
        let why = why.to_string();
        match lock(&self.down).as_mut() {
            Some((_, last)) if *last == why => false,
            Some((_, last)) => {
                *last = why;
                true
            }
            None => true,
        }
    }
}

/// A member's value under `dir`, when it is one: a key right under the
/// directory whose value (at most 16 KiB of JSON) names it, with a valid
/// name and addresses of at most [`protocol::MAX_ADDR_LEN`] bytes; else
/// `None`, with a warning.
fn parse_member(dir: &str, key: &[u8], value: &[u8]) -> Option<MemberInfo> {
    let name = std::str::from_utf8(key).ok()?.strip_prefix(dir)?;
    if value.len() > MAX_VALUE_LEN {
        tracing::warn!(
            name,
            len = value.len(),
            "a member's value is too long; skipped"
        );
        return None;
    }
    let info: MemberInfo = match serde_json::from_slice(value) {
        Ok(info) => info,
        Err(error) => {
            tracing::warn!(name, %error, "a member's value is not valid; skipped");
            return None;
        }
    };
    let list = MemberList {
        revision: 0,
        members: vec![info.member()],
    };
    let valid =
        info.name == name && list.validate().is_ok() && info.admin.len() <= protocol::MAX_ADDR_LEN;
    if !valid {
        tracing::warn!(name, "a member's value does not describe it; skipped");
        return None;
    }
    Some(info)
}

/// `d` less a random part of up to a half (so that gateways cut off
/// together do not retry together).
fn jittered(d: Duration) -> Duration {
    let half = d / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

/// `t` in ms since the Unix epoch (0 before it).
pub(super) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
