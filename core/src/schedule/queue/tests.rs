//! Unit tests of one service's queue: order, positions, capacity, and the
//! round-robin across tenants. Ported from the gateway's queue tests: a
//! waiter's position is what [`ServiceQueue::moved`] last told for it, and a
//! call whose client left is removed (the core does that on its `Left`
//! event) instead of being skipped once its task is gone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

/// Positions as told: [`ServiceQueue::moved`] applied after each operation
/// (the helpers below forget a call when it leaves the queue).
type Positions = HashMap<CallId, u32>;

/// Applies what `moved()` tells to `positions`, and checks that, with it,
/// every waiting call's told position is its place in the queue (so
/// `moved()` left out no change).
fn tell(q: &mut ServiceQueue, positions: &mut Positions) {
    for (call, position) in q.moved() {
        positions.insert(call, position);
    }
    for (i, waiter) in q.calls().enumerate() {
        assert_eq!(
            positions.get(&waiter.call).copied(),
            Some(u32::try_from(i + 1).unwrap()),
            "call {} told its position",
            waiter.call
        );
    }
}

/// A waiter for call `call` of tenant `tenant`.
fn call(call: CallId, tenant: &str, priority: i32, seq: u64) -> Waiter {
    Waiter::new(
        call,
        QueueKey::new(priority, seq),
        Arc::from(tenant),
        Instant::now(),
    )
}

/// The call `seq` of the anonymous tenant (its call id is `seq`).
fn waiter(priority: i32, seq: u64) -> Waiter {
    call(seq, "anonymous", priority, seq)
}

/// Calls queued by a test, labelled tenant + count (`A1`, `A2`, `B1`...),
/// with their call ids, keys, and positions as told.
#[derive(Default)]
struct Arrivals {
    seq: u64,
    counts: HashMap<String, usize>,
    calls: Vec<(String, QueueKey, CallId)>,
    labels: HashMap<CallId, String>,
    positions: Positions,
}

impl Arrivals {
    /// Queues calls `(tenant, priority)` in this order.
    fn push(&mut self, q: &mut ServiceQueue, calls: &[(&str, i32)]) {
        for (tenant, priority) in calls {
            self.seq += 1;
            let n = self.counts.entry((*tenant).to_string()).or_default();
            *n += 1;
            let label = format!("{tenant}{n}");
            let id = self.seq;
            let key = q.push(call(id, tenant, *priority, self.seq)).expect("room");
            tell(q, &mut self.positions);
            self.labels.insert(id, label.clone());
            self.calls.push((label, key, id));
        }
    }

    /// The position last told to call `label`.
    fn position(&self, label: &str) -> u32 {
        let (_, _, id) = self.calls.iter().find(|c| c.0 == label).expect(label);
        *self.positions.get(id).expect(label)
    }

    /// Takes every call of `tenant` out, as the core does when their
    /// clients leave.
    fn abandon(&mut self, q: &mut ServiceQueue, tenant: &str) {
        for (label, key, id) in &self.calls {
            if label.starts_with(tenant) {
                q.remove(*key);
                self.positions.remove(id);
                tell(q, &mut self.positions);
            }
        }
        self.calls
            .retain(|(label, _, _)| !label.starts_with(tenant));
    }
}

/// Pops up to `n` calls, telling positions after each, and returns their
/// labels.
fn pop_labels(q: &mut ServiceQueue, calls: &mut Arrivals, n: usize) -> Vec<String> {
    (0..n)
        .map_while(|_| {
            let waiter = q.pop()?;
            calls.positions.remove(&waiter.call);
            tell(q, &mut calls.positions);
            Some(calls.labels[&waiter.call].clone())
        })
        .collect()
}

#[test]
fn positions_count_down_in_fifo_order() {
    let mut q = ServiceQueue::new(10);
    let mut positions = Positions::new();
    for seq in 0..3 {
        q.push(waiter(0, seq)).expect("room");
        tell(&mut q, &mut positions);
    }
    assert_eq!(positions[&2], 3);
    assert_eq!(q.pop().map(|w| w.key.seq()), Some(0));
    tell(&mut q, &mut positions);
    assert_eq!(positions[&1], 1);
    assert_eq!(positions[&2], 2);
}

#[test]
fn higher_priority_goes_first_fifo_within() {
    let mut q = ServiceQueue::new(10);
    for (priority, seq) in [(0, 1), (5, 2), (0, 3), (5, 4), (-1, 5)] {
        q.push(waiter(priority, seq)).expect("room");
    }
    let order: Vec<u64> = std::iter::from_fn(|| q.pop().map(|w| w.key.seq())).collect();
    assert_eq!(order, [2, 4, 1, 3, 5]);
}

#[test]
fn a_full_queue_refuses_and_counts() {
    let mut q = ServiceQueue::new(1);
    q.push(waiter(0, 1)).expect("room");
    assert_eq!(q.push(waiter(0, 2)).map_err(|f| f.capacity), Err(1));
    assert_eq!(q.overloaded_total, 1);
    assert_eq!(q.len(), 1);
}

#[test]
fn gone_waiters_are_skipped_and_removed_ones_shift_the_rest() {
    let mut q = ServiceQueue::new(10);
    let mut positions = Positions::new();
    let a_key = q.push(waiter(0, 1)).expect("room");
    let b_key = q.push(waiter(0, 2)).expect("room");
    q.push(waiter(0, 3)).expect("room");
    tell(&mut q, &mut positions);
    // The core keeps no handle to notice a gone call by: its client's
    // leaving removes it, head or not.
    assert!(q.remove(a_key));
    assert!(q.remove(b_key));
    assert!(!q.remove(b_key), "already gone");
    tell(&mut q, &mut positions);
    assert_eq!(q.peek().map(|w| w.key.seq()), Some(3));
    assert_eq!(q.abandoned_total, 2);
    assert_eq!(positions[&3], 1);
}

#[test]
fn a_put_back_call_is_ahead_of_later_ones() {
    let mut q = ServiceQueue::new(2);
    q.push(waiter(0, 1)).expect("room");
    let head = q.pop().expect("head");
    q.push(waiter(0, 2)).expect("room");
    q.push(waiter(0, 3)).expect("room");
    q.put_back(head);
    assert_eq!(q.len(), 3);
    assert_eq!(q.peek().map(|w| w.key.seq()), Some(1));
}

#[test]
fn tenants_take_turns_within_a_priority() {
    let mut q = ServiceQueue::new(100);
    let mut calls = Arrivals::default();
    calls.push(&mut q, &[("A", 0); 5]);
    calls.push(&mut q, &[("B", 0); 2]);
    assert_eq!(
        pop_labels(&mut q, &mut calls, 7),
        ["A1", "B1", "A2", "B2", "A3", "A4", "A5"]
    );
    assert!(q.is_empty());
}

#[test]
fn positions_follow_the_turns() {
    let mut q = ServiceQueue::new(100);
    let mut calls = Arrivals::default();
    calls.push(&mut q, &[("A", 0); 3]);
    calls.push(&mut q, &[("B", 0); 2]);
    // A1 B1 A2 B2 A3.
    for (label, at) in [("A1", 1), ("B1", 2), ("A2", 3), ("B2", 4), ("A3", 5)] {
        assert_eq!(calls.position(label), at, "{label}");
    }
    assert_eq!(pop_labels(&mut q, &mut calls, 1), ["A1"]);
    for (label, at) in [("B1", 1), ("A2", 2), ("B2", 3), ("A3", 4)] {
        assert_eq!(calls.position(label), at, "{label}");
    }
    // A newcomer joins the current round: right behind B1.
    calls.push(&mut q, &[("C", 0)]);
    assert_eq!(calls.position("C1"), 2);
    assert_eq!(calls.position("A3"), 5);
}

#[test]
fn priorities_still_come_first() {
    let mut q = ServiceQueue::new(100);
    let mut calls = Arrivals::default();
    // A's backlog at priority 0 does not push its priority-5 call behind
    // B's priority-5 calls: each priority takes turns on its own.
    calls.push(
        &mut q,
        &[
            ("A", 0),
            ("A", 0),
            ("A", 0),
            ("B", 5),
            ("B", 5),
            ("A", 5),
            ("B", 0),
        ],
    );
    assert_eq!(
        pop_labels(&mut q, &mut calls, 7),
        ["B1", "A4", "B2", "A1", "B3", "A2", "A3"]
    );
}

#[test]
fn a_returning_tenant_is_neither_penalised_nor_ahead() {
    let mut q = ServiceQueue::new(100);
    let mut calls = Arrivals::default();
    calls.push(&mut q, &[("A", 0); 5]);
    calls.push(&mut q, &[("B", 0); 2]);
    assert_eq!(pop_labels(&mut q, &mut calls, 4), ["A1", "B1", "A2", "B2"]);
    // B's calls drained, and B was served in this round already: its next
    // call goes into the next round, behind A's, not ahead of it.
    calls.push(&mut q, &[("B", 0)]);
    // C's calls all left unserved: C is not charged for them, its next call
    // joins the current round like a newcomer's.
    calls.push(&mut q, &[("C", 0); 3]);
    calls.abandon(&mut q, "C");
    calls.push(&mut q, &[("C", 0)]);
    assert_eq!(
        pop_labels(&mut q, &mut calls, 5),
        ["C4", "A3", "B3", "A4", "A5"]
    );
}

#[test]
fn a_put_back_call_keeps_its_turn_across_tenants() {
    let mut q = ServiceQueue::new(100);
    let mut calls = Arrivals::default();
    calls.push(&mut q, &[("A", 0), ("A", 0), ("A", 0), ("B", 0)]);
    assert_eq!(pop_labels(&mut q, &mut calls, 3), ["A1", "B1", "A2"]);
    // A3 is reserved for a swap (taken out): the queue empties and forgets
    // its rounds, yet the calls that come meanwhile queue behind A3 when
    // it comes back.
    let reserved = q.pop().expect("A3");
    assert!(q.is_empty());
    calls.push(&mut q, &[("B", 0), ("C", 0), ("A", 0)]);
    calls.positions.remove(&reserved.call);
    q.put_back(reserved);
    // Held for the swap, A3 was told no position: it is told its place anew.
    tell(&mut q, &mut calls.positions);
    assert_eq!(calls.position("A3"), 1);
    assert_eq!(pop_labels(&mut q, &mut calls, 4), ["A3", "B2", "C1", "A4"]);
}

#[test]
fn round_robin_state_stays_bounded() {
    let mut q = ServiceQueue::new(10_000);
    let mut calls = Arrivals::default();
    let tenants: Vec<String> = (0..20).map(|t| format!("t{t}")).collect();
    for round in 0..50 {
        let batch: Vec<(&str, i32)> = tenants
            .iter()
            .map(|t| (t.as_str(), (round % 7) - 3))
            .collect();
        calls.push(&mut q, &batch);
        calls.push(&mut q, &batch);
        while q.pop().is_some() {}
    }
    assert_eq!(q.remembered(), (0, 0), "an empty queue remembers nothing");
    calls.push(&mut q, &[("A", 0), ("B", 1), ("C", 2)]);
    for tenant in ["A", "B", "C"] {
        calls.abandon(&mut q, tenant);
    }
    assert!(q.peek().is_none(), "gone calls are dropped");
    assert_eq!(q.remembered(), (0, 0));
}

#[test]
fn tenant_lengths_report_a_drained_tenant_once() {
    let mut q = ServiceQueue::new(100);
    let mut calls = Arrivals::default();
    calls.push(&mut q, &[("A", 0), ("A", 0), ("B", 0)]);
    // Not sorted here: the queue lists tenants sorted.
    let lengths = |q: &mut ServiceQueue| {
        q.tenant_lengths()
            .into_iter()
            .map(|(t, n)| (t.to_string(), n))
            .collect::<Vec<_>>()
    };
    let pairs = |p: &[(&str, usize)]| {
        p.iter()
            .map(|(t, n)| ((*t).to_string(), *n))
            .collect::<Vec<_>>()
    };
    assert_eq!(lengths(&mut q), pairs(&[("A", 2), ("B", 1)]));
    assert_eq!(pop_labels(&mut q, &mut calls, 2), ["A1", "B1"]);
    assert_eq!(lengths(&mut q), pairs(&[("A", 1), ("B", 0)]));
    // Only changes are listed: A still has 1, B's 0 was reported.
    assert_eq!(lengths(&mut q), pairs(&[]));
    // A count back where it was last reported is no change; a drained
    // tenant that returns is listed again.
    calls.push(&mut q, &[("A", 0), ("B", 0)]);
    assert_eq!(pop_labels(&mut q, &mut calls, 1), ["A2"]);
    assert_eq!(lengths(&mut q), pairs(&[("B", 1)]));
}
