//! One service's queue of calls waiting for a node: bounded, ordered by
//! priority (higher first), then round-robin across tenants (one call of
//! each tenant with calls waiting per round, see `queue/rounds.rs`), then
//! arrival (FIFO), telling each waiter its position whenever it changes.
//!
//! The queue holds no node and makes no pick: [`crate::scheduler`] pops its
//! head when a slot frees (late binding) and hands the waiter a [`Grant`].

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use protocol::{CallError, CallHead, Reserved};
use tokio::sync::{oneshot, watch};

use crate::policies::Picked;
use crate::registry::SlotGuard;

mod rounds;

/// Where a waiter stands: ordered by priority (higher first), then round
/// (round-robin across tenants within a priority), then arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueKey {
    priority: Reverse<i32>,
    round: u64,
    seq: u64,
}

/// A taken call slot and the pick that chose it, handed to a waiting call.
#[derive(Debug)]
pub struct Grant {
    /// The slot; dropping it frees the slot.
    pub guard: SlotGuard,
    /// The pick (policy name, version) that chose the node.
    pub picked: Picked,
}

/// What a waiting call sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitState {
    /// Waiting at this position (1 = next).
    Queued(u32),
    /// Held for a node that is loading the service.
    Reserved(Reserved),
}

/// A call waiting in a queue.
#[derive(Debug)]
pub struct Waiter {
    /// Its place in the order; the round is set when it enters a queue.
    pub key: QueueKey,
    /// The tenant the call comes from (its round-robin flow and metrics
    /// label).
    pub tenant: Arc<str>,
    /// The call, for the policy's pick at dispatch time.
    pub head: Arc<CallHead>,
    /// When it entered the queue (first time, if it was put back).
    pub enqueued: Instant,
    grant: oneshot::Sender<Result<Grant, CallError>>,
    state: watch::Sender<WaitState>,
}

/// The waiting call's end: the grant when it comes, and its position.
#[derive(Debug)]
pub struct WaitHandle {
    /// Receives the slot when the call's turn comes (or why it cannot have
    /// one: the policy refused it).
    pub grant: oneshot::Receiver<Result<Grant, CallError>>,
    /// Position updates and the reservation notice.
    pub state: watch::Receiver<WaitState>,
}

/// One service's waiting calls.
#[derive(Debug)]
pub struct ServiceQueue {
    waiters: BTreeMap<QueueKey, Waiter>,
    rounds: rounds::Rounds,
    /// Calls waiting per tenant; a tenant at 0 stays until
    /// [`ServiceQueue::tenant_lengths`] reported it.
    lengths: HashMap<Arc<str>, usize>,
    /// Most calls that may wait.
    pub capacity: u32,
    /// Calls that left the queue for a node.
    pub dispatched_total: u64,
    /// Calls that timed out or whose client left while waiting.
    pub abandoned_total: u64,
    /// Calls refused because the queue was full.
    pub overloaded_total: u64,
}

/// The queue was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    /// Its capacity.
    pub capacity: u32,
}

impl QueueKey {
    /// The key of the `seq`-th call (gateway-wide counter) at `priority`;
    /// its round is 0 until [`ServiceQueue::push`] sets it.
    pub fn new(priority: i32, seq: u64) -> Self {
        Self {
            priority: Reverse(priority),
            round: 0,
            seq,
        }
    }

    /// The call's priority (higher first).
    pub fn priority(&self) -> i32 {
        self.priority.0
    }

    /// Its round among its priority's calls (lower first).
    pub fn round(&self) -> u64 {
        self.round
    }

    /// Its arrival number (lower first within a round).
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

impl Waiter {
    /// A waiter for `head` of `tenant` and the handle its call task keeps.
    pub fn new(
        key: QueueKey,
        tenant: Arc<str>,
        head: Arc<CallHead>,
        now: Instant,
    ) -> (Self, WaitHandle) {
        let (grant, grant_rx) = oneshot::channel();
        let (state, state_rx) = watch::channel(WaitState::Queued(0));
        let waiter = Self {
            key,
            tenant,
            head,
            enqueued: now,
            grant,
            state,
        };
        (
            waiter,
            WaitHandle {
                grant: grant_rx,
                state: state_rx,
            },
        )
    }

    /// Whether the call task is gone (timed out, client left).
    pub fn is_gone(&self) -> bool {
        self.grant.is_closed()
    }

    /// Hands the slot (or the refusal) over. When the call task is gone the
    /// grant is dropped, which frees the slot.
    pub fn give(self, grant: Result<Grant, CallError>) {
        let _ = self.grant.send(grant);
    }

    /// Tells the call it is held for a node that loads its service.
    pub fn reserve(&self, notice: Reserved) {
        self.state.send_replace(WaitState::Reserved(notice));
    }
}

impl ServiceQueue {
    /// An empty queue holding at most `capacity` calls.
    pub fn new(capacity: u32) -> Self {
        Self {
            waiters: BTreeMap::new(),
            rounds: rounds::Rounds::default(),
            lengths: HashMap::new(),
            capacity,
            dispatched_total: 0,
            abandoned_total: 0,
            overloaded_total: 0,
        }
    }

    /// Calls waiting.
    pub fn len(&self) -> usize {
        self.waiters.len()
    }

    /// Whether no call waits.
    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// Adds a waiter in its tenant's next round and updates everyone's
    /// position. Returns its key, round set.
    ///
    /// # Errors
    /// [`Full`] when `capacity` calls already wait (the waiter is dropped).
    pub fn push(&mut self, mut waiter: Waiter) -> Result<QueueKey, Full> {
        if self.waiters.len() >= self.capacity as usize {
            self.overloaded_total += 1;
            return Err(Full {
                capacity: self.capacity,
            });
        }
        waiter.key.round = self.rounds.enter(waiter.key.priority(), &waiter.tenant);
        let key = waiter.key;
        self.insert(waiter);
        Ok(key)
    }

    /// Puts back a waiter that was taken out (a failed swap's reserved
    /// call): it keeps its key, round included, so it is ahead of every
    /// call of its priority that arrived after it was taken out, and it may
    /// exceed the capacity by the calls put back.
    pub fn put_back(&mut self, waiter: Waiter) {
        self.rounds
            .reenter(waiter.key.priority(), &waiter.tenant, waiter.key.round);
        self.insert(waiter);
    }

    fn insert(&mut self, waiter: Waiter) {
        *self.lengths.entry(waiter.tenant.clone()).or_default() += 1;
        self.waiters.insert(waiter.key, waiter);
        self.publish_positions();
    }

    /// Forgets a waiter that left: `served` when it goes to a node.
    fn forget(&mut self, waiter: &Waiter, served: bool) {
        let key = waiter.key;
        self.rounds
            .leave(key.priority(), &waiter.tenant, key.round, served);
        if let Some(n) = self.lengths.get_mut(&*waiter.tenant) {
            *n = n.saturating_sub(1);
        }
    }

    /// Calls waiting per tenant, for the `queue_length` gauge. A tenant
    /// whose last call left is listed once more, with 0, then forgotten.
    pub fn tenant_lengths(&mut self) -> Vec<(Arc<str>, usize)> {
        let lengths = self
            .lengths
            .iter()
            .map(|(tenant, n)| (tenant.clone(), *n))
            .collect();
        self.lengths.retain(|_, n| *n > 0);
        lengths
    }

    /// The call at the head, skipping (and dropping) calls whose task is gone.
    pub fn peek(&mut self) -> Option<&Waiter> {
        let mut dropped = false;
        while let Some(entry) = self.waiters.first_entry() {
            if !entry.get().is_gone() {
                break;
            }
            let gone = entry.remove();
            self.forget(&gone, false);
            self.abandoned_total += 1;
            dropped = true;
        }
        if dropped {
            self.publish_positions();
        }
        self.waiters.values().next()
    }

    /// Takes the head out (after [`ServiceQueue::peek`]); positions of the
    /// rest are updated.
    pub fn pop(&mut self) -> Option<Waiter> {
        let (_, waiter) = self.waiters.pop_first()?;
        self.forget(&waiter, true);
        self.publish_positions();
        Some(waiter)
    }

    /// Removes the call `key` (it timed out or its client left). Returns
    /// whether it was waiting.
    pub fn remove(&mut self, key: QueueKey) -> bool {
        let Some(waiter) = self.waiters.remove(&key) else {
            return false;
        };
        self.forget(&waiter, false);
        self.abandoned_total += 1;
        self.publish_positions();
        true
    }

    /// When the oldest waiting call entered the queue.
    pub fn oldest(&self) -> Option<Instant> {
        self.waiters.values().map(|w| w.enqueued).min()
    }

    /// Tells every waiter whose position changed its new position.
    fn publish_positions(&self) {
        for (i, waiter) in self.waiters.values().enumerate() {
            let position = u32::try_from(i + 1).unwrap_or(u32::MAX);
            waiter.state.send_if_modified(|state| {
                if *state == WaitState::Queued(position) {
                    false
                } else {
                    *state = WaitState::Queued(position);
                    true
                }
            });
        }
    }
}

#[cfg(test)]
mod tests;
