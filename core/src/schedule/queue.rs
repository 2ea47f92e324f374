//! One service's queue of calls waiting for a node: bounded, ordered by
//! priority (higher first), then round-robin across tenants (one call of
//! each tenant with calls waiting per round, see `rounds.rs`), then arrival
//! (FIFO). It records each waiter's last told position, so only changes are
//! told.
//!
//! The queue holds no node and makes no pick: the core asks for a pick for
//! its head when a slot frees (late binding).

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use super::rounds::Rounds;
use crate::CallId;

/// Where a waiter stands: ordered by priority (higher first), then round
/// (round-robin across tenants within a priority), then arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueKey {
    priority: Reverse<i32>,
    round: u64,
    seq: u64,
}

/// A call waiting in a queue.
#[derive(Debug, Clone)]
pub struct Waiter {
    /// The call.
    pub call: CallId,
    /// Its place in the order; the round is set when it enters a queue.
    pub key: QueueKey,
    /// The tenant the call comes from (its round-robin flow).
    pub tenant: Arc<str>,
    /// When it entered the queue (first time, if it was put back).
    pub enqueued: Instant,
    told: u32,
}

/// One service's waiting calls and counters.
#[derive(Debug)]
pub struct ServiceQueue {
    waiters: BTreeMap<QueueKey, Waiter>,
    rounds: Rounds,
    /// Calls waiting per tenant, and the count last reported; a tenant at
    /// 0 stays until its 0 is reported.
    lengths: HashMap<Arc<str>, (usize, usize)>,
    /// Most calls that may wait.
    pub capacity: u32,
    /// The head call a pick is under way for (no second pick starts
    /// meanwhile, so calls leave in order).
    pub picking: Option<CallId>,
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
    /// The key of call `seq` (increasing in arrival order) at `priority`;
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
    /// A waiter for `call` of `tenant`, entering at `now`.
    pub fn new(call: CallId, key: QueueKey, tenant: Arc<str>, now: Instant) -> Self {
        Self {
            call,
            key,
            tenant,
            enqueued: now,
            told: 0,
        }
    }
}

impl ServiceQueue {
    /// An empty queue holding at most `capacity` calls.
    pub fn new(capacity: u32) -> Self {
        Self {
            waiters: BTreeMap::new(),
            rounds: Rounds::default(),
            lengths: HashMap::new(),
            capacity,
            picking: None,
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

    /// Adds a waiter in its tenant's next round. Returns its key, round set.
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
    pub fn put_back(&mut self, mut waiter: Waiter) {
        self.rounds
            .reenter(waiter.key.priority(), &waiter.tenant, waiter.key.round);
        waiter.told = 0;
        self.insert(waiter);
    }

    fn insert(&mut self, waiter: Waiter) {
        self.lengths.entry(waiter.tenant.clone()).or_default().0 += 1;
        self.waiters.insert(waiter.key, waiter);
    }

    /// Forgets a waiter that left: `served` when it goes to a node.
    fn forget(&mut self, waiter: &Waiter, served: bool) {
        let key = waiter.key;
        self.rounds
            .leave(key.priority(), &waiter.tenant, key.round, served);
        if let Some((n, _)) = self.lengths.get_mut(&*waiter.tenant) {
            *n = n.saturating_sub(1);
        }
    }

    /// Calls waiting per tenant, for tenants whose count changed since the
    /// last call, sorted. A tenant whose last call left is listed once with
    /// 0, then forgotten.
    pub fn tenant_lengths(&mut self) -> Vec<(Arc<str>, usize)> {
        let mut lengths = Vec::new();
        for (tenant, (n, reported)) in &mut self.lengths {
            if *n != *reported {
                *reported = *n;
                lengths.push((tenant.clone(), *n));
            }
        }
        lengths.sort();
        self.lengths.retain(|_, (n, _)| *n > 0);
        lengths
    }

    /// The call at the head.
    pub fn peek(&self) -> Option<&Waiter> {
        self.waiters.values().next()
    }

    /// Takes the head out to serve it.
    pub fn pop(&mut self) -> Option<Waiter> {
        let (_, waiter) = self.waiters.pop_first()?;
        self.forget(&waiter, true);
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
        true
    }

    /// When the oldest waiting call entered the queue.
    pub fn oldest(&self) -> Option<Instant> {
        self.waiters.values().map(|w| w.enqueued).min()
    }

    /// The waiters whose position changed since last told, with their new
    /// position (1 = next), now counted as told.
    pub fn moved(&mut self) -> Vec<(CallId, u32)> {
        let mut out = Vec::new();
        for (i, waiter) in self.waiters.values_mut().enumerate() {
            let position = u32::try_from(i + 1).unwrap_or(u32::MAX);
            if waiter.told != position {
                waiter.told = position;
                out.push((waiter.call, position));
            }
        }
        out
    }

    /// The waiting calls in order (for tests and views).
    pub fn calls(&self) -> impl Iterator<Item = &Waiter> {
        self.waiters.values()
    }

    /// Levels and flows the round-robin remembers (bounded by the calls
    /// waiting).
    pub fn remembered(&self) -> (usize, usize) {
        self.rounds.remembered()
    }
}

#[cfg(test)]
mod tests;
