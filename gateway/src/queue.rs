//! One service's queue of calls waiting for a node: bounded, ordered by
//! priority (higher first) then arrival (FIFO), telling each waiter its
//! position whenever it changes.
//!
//! The queue holds no node and makes no pick: [`crate::scheduler`] pops its
//! head when a slot frees (late binding) and hands the waiter a [`Grant`].

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use protocol::{CallError, CallHead, Reserved};
use tokio::sync::{oneshot, watch};

use crate::policies::Picked;
use crate::registry::SlotGuard;

/// Where a waiter stands: ordered by priority (higher first), then arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueKey {
    priority: Reverse<i32>,
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
    /// Its place in the order.
    pub key: QueueKey,
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
    /// The key of the `seq`-th call (gateway-wide counter) at `priority`.
    pub fn new(priority: i32, seq: u64) -> Self {
        Self {
            priority: Reverse(priority),
            seq,
        }
    }
}

impl Waiter {
    /// A waiter for `head` and the handle its call task keeps.
    pub fn new(key: QueueKey, head: Arc<CallHead>, now: Instant) -> (Self, WaitHandle) {
        let (grant, grant_rx) = oneshot::channel();
        let (state, state_rx) = watch::channel(WaitState::Queued(0));
        let waiter = Self {
            key,
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

    /// Adds a waiter and updates everyone's position.
    ///
    /// # Errors
    /// [`Full`] when `capacity` calls already wait (the waiter is dropped).
    pub fn push(&mut self, waiter: Waiter) -> Result<(), Full> {
        if self.waiters.len() >= self.capacity as usize {
            self.overloaded_total += 1;
            return Err(Full {
                capacity: self.capacity,
            });
        }
        self.waiters.insert(waiter.key, waiter);
        self.publish_positions();
        Ok(())
    }

    /// Puts back a waiter that was taken out (a failed swap's reserved
    /// call): it keeps its key, so it is ahead of later calls of its
    /// priority, and it may exceed the capacity by the calls put back.
    pub fn put_back(&mut self, waiter: Waiter) {
        self.waiters.insert(waiter.key, waiter);
        self.publish_positions();
    }

    /// The call at the head, skipping (and dropping) calls whose task is gone.
    pub fn peek(&mut self) -> Option<&Waiter> {
        let mut dropped = false;
        while let Some(entry) = self.waiters.first_entry() {
            if !entry.get().is_gone() {
                break;
            }
            entry.remove();
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
        let waiter = self.waiters.pop_first()?;
        self.publish_positions();
        Some(waiter.1)
    }

    /// Removes the call `key` (it timed out or its client left). Returns
    /// whether it was waiting.
    pub fn remove(&mut self, key: QueueKey) -> bool {
        let removed = self.waiters.remove(&key).is_some();
        if removed {
            self.abandoned_total += 1;
            self.publish_positions();
        }
        removed
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
mod tests {
    use super::*;

    fn waiter(priority: i32, seq: u64) -> (Waiter, WaitHandle) {
        Waiter::new(
            QueueKey::new(priority, seq),
            Arc::new(CallHead::new("svc", 0, 1000)),
            Instant::now(),
        )
    }

    fn position(h: &WaitHandle) -> WaitState {
        h.state.borrow().clone()
    }

    #[test]
    fn positions_count_down_in_fifo_order() {
        let mut q = ServiceQueue::new(10);
        let handles: Vec<_> = (0..3)
            .map(|seq| {
                let (w, h) = waiter(0, seq);
                q.push(w).expect("room");
                h
            })
            .collect();
        assert_eq!(position(&handles[2]), WaitState::Queued(3));
        assert_eq!(q.pop().map(|w| w.key), Some(QueueKey::new(0, 0)));
        assert_eq!(position(&handles[1]), WaitState::Queued(1));
        assert_eq!(position(&handles[2]), WaitState::Queued(2));
    }

    #[test]
    fn higher_priority_goes_first_fifo_within() {
        let mut q = ServiceQueue::new(10);
        let mut keep = Vec::new();
        for (priority, seq) in [(0, 1), (5, 2), (0, 3), (5, 4), (-1, 5)] {
            let (w, h) = waiter(priority, seq);
            q.push(w).expect("room");
            keep.push(h);
        }
        let order: Vec<u64> = std::iter::from_fn(|| q.pop().map(|w| w.key.seq)).collect();
        assert_eq!(order, [2, 4, 1, 3, 5]);
    }

    #[test]
    fn a_full_queue_refuses_and_counts() {
        let mut q = ServiceQueue::new(1);
        let (a, _ha) = waiter(0, 1);
        let (b, _hb) = waiter(0, 2);
        q.push(a).expect("room");
        assert_eq!(q.push(b).map_err(|f| f.capacity), Err(1));
        assert_eq!(q.overloaded_total, 1);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn gone_waiters_are_skipped_and_removed_ones_shift_the_rest() {
        let mut q = ServiceQueue::new(10);
        let (a, ha) = waiter(0, 1);
        let (b, hb) = waiter(0, 2);
        let (c, hc) = waiter(0, 3);
        for w in [a, b, c] {
            q.push(w).expect("room");
        }
        drop(ha);
        assert!(q.remove(QueueKey::new(0, 2)));
        drop(hb);
        assert_eq!(q.peek().map(|w| w.key.seq), Some(3));
        assert_eq!(q.abandoned_total, 2);
        assert_eq!(position(&hc), WaitState::Queued(1));
    }

    #[test]
    fn a_put_back_call_is_ahead_of_later_ones() {
        let mut q = ServiceQueue::new(2);
        let (a, _ha) = waiter(0, 1);
        let (b, _hb) = waiter(0, 2);
        let (c, _hc) = waiter(0, 3);
        q.push(a).expect("room");
        let head = q.pop().expect("head");
        q.push(b).expect("room");
        q.push(c).expect("room");
        q.put_back(head);
        assert_eq!(q.len(), 3);
        assert_eq!(q.peek().map(|w| w.key.seq), Some(1));
    }
}
