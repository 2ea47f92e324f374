//! Look-aside leases on this node: a gateway has the node hold a slot of a
//! service for a client ([`hold`]), the client calls the node directly on
//! its direct port with the gateway's token ([`direct`], [`call`]), and the
//! node ends the lease when its calls are used, it expires, it idles, the
//! gateway releases it or the node drains.
//!
//! [`Leases`] is the table: the active leases by id, each holding its
//! [`Slot`] (so it counts in the node's calls in flight and in every load
//! report, as a call does), the ended ones remembered until their expiry
//! (to answer a late token with why), and the gateways' signing keys
//! ([`keys`]). The node is the authority on its leases: a lease whose
//! gateway's connection is gone lives on until it ends by itself.

mod call;
pub(crate) mod direct;
mod hold;
mod keys;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use protocol::{ErrorKind, LeaseClaims, LeaseEndReason, LeaseHold};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::services::{ServiceError, Slot, Tally};
use keys::KeySets;
pub(crate) use keys::SessionKeys;

/// Most ended leases remembered at once; past it the one that ended first
/// goes first.
const MAX_ENDED: usize = 16_384;

/// The node's leases (shared; clones are cheap handles to one table).
#[derive(Clone)]
pub(crate) struct Leases {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("active", &self.table().active.len())
            .finish_non_exhaustive()
    }
}

struct Inner {
    node_id: String,
    /// Whether the direct port is open: a hold is refused without it.
    direct: AtomicBool,
    keys: KeySets,
    table: Mutex<Table>,
    /// Turns true when the node drains: every lease ends.
    draining: watch::Sender<bool>,
    /// The number of active leases.
    active: watch::Sender<usize>,
}

#[derive(Default)]
struct Table {
    active: HashMap<String, Arc<Lease>>,
    ended: HashMap<String, Ended>,
    /// The ended leases' ids in the order they ended, with when each may
    /// be forgotten: the front is dropped once due (or past
    /// [`MAX_ENDED`]), so remembering costs O(1) per lease.
    ended_order: VecDeque<(Instant, String)>,
}

/// An ended lease, remembered until its expiry.
struct Ended {
    reason: LeaseEndReason,
    max_calls: u32,
}

/// One active lease.
pub(crate) struct Lease {
    hold: LeaseHold,
    /// The tally of the gateway session that holds it (only that gateway
    /// may release it).
    owner: Arc<Tally>,
    /// When its lifetime ends.
    deadline: Instant,
    state: Mutex<State>,
    /// Woken on every change of `state` (for the lease's own task).
    wake: Notify,
}

struct State {
    /// The slot held; `None` while a call runs on it.
    slot: Option<Slot>,
    /// Calls started.
    calls: u32,
    /// The node's time on its calls, ms, summed.
    busy_ms: f32,
    /// When the last call started or ended (or the lease began).
    last_activity: Instant,
    /// Set once the lease ends: no call starts after.
    ending: Option<LeaseEndReason>,
}

impl Leases {
    /// An empty table for node `node_id`.
    pub(crate) fn new(node_id: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                node_id: node_id.to_owned(),
                direct: AtomicBool::new(false),
                keys: KeySets::default(),
                table: Mutex::new(Table::default()),
                draining: watch::channel(false).0,
                active: watch::channel(0).0,
            }),
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.inner
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// This node's id (tokens must name it).
    pub(crate) fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// The gateways' keys, per session.
    pub(crate) fn keys(&self) -> &KeySets {
        &self.inner.keys
    }

    /// Number of active leases.
    #[cfg(test)]
    pub(crate) fn active(&self) -> usize {
        *self.inner.active.borrow()
    }

    /// Ends every lease (reason `Draining`) and refuses new ones.
    pub(crate) fn drain(&self) {
        self.inner.draining.send_replace(true);
    }

    /// Waits until no lease is active.
    pub(crate) async fn ended(&self) {
        let mut active = self.inner.active.subscribe();
        let _ = active.wait_for(|n| *n == 0).await;
    }

    /// Takes `hold`'s lease into the table with its slot; refused for an
    /// id known here (active or remembered).
    fn insert(
        &self,
        hold: LeaseHold,
        slot: Slot,
        owner: &Arc<Tally>,
    ) -> Result<Arc<Lease>, ServiceError> {
        let mut table = self.table();
        if table.active.contains_key(&hold.lease_id) || table.ended.contains_key(&hold.lease_id) {
            return Err(ServiceError::new(
                ErrorKind::BadRequest,
                format!("lease {} is known on this node already", hold.lease_id),
            ));
        }
        let now = Instant::now();
        let lease = Arc::new(Lease {
            deadline: now + Duration::from_millis(u64::from(hold.ttl_ms)),
            state: Mutex::new(State {
                slot: Some(slot),
                calls: 0,
                busy_ms: 0.0,
                last_activity: now,
                ending: None,
            }),
            wake: Notify::new(),
            hold,
            owner: Arc::clone(owner),
        });
        table
            .active
            .insert(lease.hold.lease_id.clone(), Arc::clone(&lease));
        self.inner.active.send_replace(table.active.len());
        Ok(lease)
    }

    /// Moves an ended lease out of the active table into the remembered
    /// ones, dropping the earliest ended while they are due or more than
    /// [`MAX_ENDED`] (one whose lifetime was longer than a later one's may
    /// be kept a little past its expiry).
    fn forget(&self, lease: &Lease, reason: LeaseEndReason) {
        let mut table = self.table();
        let now = Instant::now();
        table.active.remove(&lease.hold.lease_id);
        while let Some((at, _)) = table.ended_order.front() {
            if *at > now && table.ended_order.len() < MAX_ENDED {
                break;
            }
            if let Some((_, id)) = table.ended_order.pop_front() {
                table.ended.remove(&id);
            }
        }
        if lease.deadline > now {
            let id = lease.hold.lease_id.clone();
            table.ended_order.push_back((lease.deadline, id.clone()));
            table.ended.insert(
                id,
                Ended {
                    reason,
                    max_calls: lease.hold.max_calls,
                },
            );
        }
        self.inner.active.send_replace(table.active.len());
    }

    /// The active lease `claims` names, or why there is none
    /// (`LeaseEnded`: it ended, or was never held here).
    fn find(&self, claims: &LeaseClaims) -> Result<Arc<Lease>, ServiceError> {
        let table = self.table();
        if let Some(lease) = table.active.get(&claims.lease_id) {
            return Ok(Arc::clone(lease));
        }
        let why = match table.ended.get(&claims.lease_id) {
            Some(ended) => ended_message(ended.reason, ended.max_calls),
            None if claims.expires_unix_ms < unix_ms() => "lease expired".to_string(),
            None => "no such lease on this node".to_string(),
        };
        Err(ServiceError::new(ErrorKind::LeaseEnded, why))
    }
}

/// What a call on a lease that ended for `reason` is told.
fn ended_message(reason: LeaseEndReason, max_calls: u32) -> String {
    match reason {
        LeaseEndReason::Used => format!("lease used its {max_calls} calls"),
        LeaseEndReason::Expired => "lease expired".into(),
        LeaseEndReason::Idle => "lease ended after its idle timeout".into(),
        LeaseEndReason::Released => "lease released".into(),
        LeaseEndReason::Draining => "lease ended: the node is draining".into(),
        LeaseEndReason::Other => "lease ended".into(),
    }
}

/// Now, ms since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Lease {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The policy that picked the node.
    pub(crate) fn policy(&self) -> &str {
        &self.hold.policy
    }

    /// The longest payload a call of the lease may send, given the agent's
    /// own limit, bytes.
    pub(crate) fn max_payload(&self, agent: u64) -> u64 {
        match self.hold.max_payload {
            0 => agent,
            n => n.min(agent),
        }
    }

    /// Whether `claims` carry this lease's tenant and calls (a token of
    /// another grant of the same id does not).
    fn matches(&self, claims: &LeaseClaims) -> bool {
        claims.tenant == self.hold.tenant && claims.max_calls == self.hold.max_calls
    }

    /// Starts a call of `payload_len` bytes on the lease: refused
    /// (`LeaseEnded`) once it ended, expired or used its calls,
    /// (`Occupied`) while a call of it runs, (`PayloadTooLarge`) past
    /// [`Lease::max_payload`] of `agent_max`; else counts it and hands over
    /// the slot until the returned guard drops.
    fn begin(self: &Arc<Self>, payload_len: u64, agent_max: u64) -> Result<Running, ServiceError> {
        let mut state = self.state();
        let ended = |why: String| Err(ServiceError::new(ErrorKind::LeaseEnded, why));
        if let Some(reason) = state.ending {
            return ended(ended_message(reason, self.hold.max_calls));
        }
        if Instant::now() >= self.deadline {
            return ended("lease expired".into());
        }
        if state.calls >= self.hold.max_calls {
            return ended(ended_message(LeaseEndReason::Used, self.hold.max_calls));
        }
        if state.slot.is_none() {
            return Err(ServiceError::new(
                ErrorKind::Occupied,
                "lease busy with a call",
            ));
        }
        let max = self.max_payload(agent_max);
        if payload_len > max {
            return Err(ServiceError::new(
                ErrorKind::PayloadTooLarge,
                format!("payload of {payload_len} bytes exceeds the lease's limit of {max} bytes"),
            ));
        }
        let Some(slot) = state.slot.take() else {
            return Err(ServiceError::internal("lease slot missing"));
        };
        state.calls += 1;
        state.last_activity = Instant::now();
        drop(state);
        // The lease's task re-arms its idle timer (none runs while a call
        // does); without one it has nothing to do.
        if self.hold.idle_ms != 0 {
            self.wake.notify_one();
        }
        Ok(Running {
            lease: Arc::clone(self),
            slot: Some(slot),
            busy_ms: 0.0,
        })
    }

    /// Ends the lease for `reason`, unless it ended already.
    fn end(&self, reason: LeaseEndReason) {
        let mut state = self.state();
        if state.ending.is_none() {
            state.ending = Some(reason);
        }
        drop(state);
        self.wake.notify_one();
    }
}

/// A call running on a lease's slot: dropping it gives the slot back (and
/// ends the lease after its last call).
pub(crate) struct Running {
    lease: Arc<Lease>,
    slot: Option<Slot>,
    /// The node's time on the call, ms.
    pub(crate) busy_ms: f32,
}

impl Running {
    /// The slot the call runs on.
    pub(crate) fn slot(&self) -> Option<&Slot> {
        self.slot.as_ref()
    }

    /// The lease the call is on.
    pub(crate) fn lease(&self) -> &Arc<Lease> {
        &self.lease
    }

    /// Whether this is the lease's last call (its `max_calls`-th).
    pub(crate) fn is_last(&self) -> bool {
        self.lease.state().calls >= self.lease.hold.max_calls
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut state = self.lease.state();
        state.slot = self.slot.take();
        state.busy_ms += self.busy_ms;
        state.last_activity = Instant::now();
        if state.calls >= self.lease.hold.max_calls && state.ending.is_none() {
            state.ending = Some(LeaseEndReason::Used);
        }
        // The lease's task has work only when the lease ends (it waits
        // for this slot) or its idle timer starts again.
        let wake = state.ending.is_some() || self.lease.hold.idle_ms != 0;
        drop(state);
        if wake {
            self.lease.wake.notify_one();
        }
    }
}

impl Inner {
    fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }
}

impl Leases {
    /// Whether the direct port is open.
    fn direct_open(&self) -> bool {
        self.inner.direct.load(Ordering::Acquire)
    }

    /// Marks the direct port open (holds are taken) or closed.
    pub(crate) fn set_direct_open(&self, open: bool) {
        self.inner.direct.store(open, Ordering::Release);
    }
}

#[cfg(test)]
mod tests;
