//! Unit tests of one service's queue: order, positions, capacity, and the
//! round-robin across tenants.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

/// A waiter of tenant `tenant`; the call's service field carries `label`
/// (the queue never reads it) so orders read as `A1 B1 ...`.
fn call(tenant: &str, label: &str, priority: i32, seq: u64) -> (Waiter, WaitHandle) {
    Waiter::new(
        QueueKey::new(priority, seq),
        Arc::from(tenant),
        Arc::new(CallHead::new(label, 0, 1000)),
        Instant::now(),
    )
}

fn waiter(priority: i32, seq: u64) -> (Waiter, WaitHandle) {
    call("anonymous", "svc", priority, seq)
}

fn position(h: &WaitHandle) -> WaitState {
    h.state.borrow().clone()
}

/// Calls queued by a test, labelled tenant + count (`A1`, `A2`, `B1`...),
/// with their handles (which keep them waiting) and keys.
#[derive(Default)]
struct Arrivals {
    seq: u64,
    counts: HashMap<String, usize>,
    calls: Vec<(String, QueueKey, WaitHandle)>,
}

impl Arrivals {
    /// Queues calls `(tenant, priority)` in this order.
    fn push(&mut self, q: &mut ServiceQueue, calls: &[(&str, i32)]) {
        for (tenant, priority) in calls {
            self.seq += 1;
            let n = self.counts.entry((*tenant).to_string()).or_default();
            *n += 1;
            let label = format!("{tenant}{n}");
            let (w, h) = call(tenant, &label, *priority, self.seq);
            let key = q.push(w).expect("room");
            self.calls.push((label, key, h));
        }
    }

    /// The position of call `label`.
    fn position(&self, label: &str) -> WaitState {
        let (_, _, handle) = self.calls.iter().find(|c| c.0 == label).expect(label);
        position(handle)
    }

    /// Takes every call of `tenant` out, as their tickets' drop does.
    fn abandon(&mut self, q: &mut ServiceQueue, tenant: &str) {
        for (label, key, _) in &self.calls {
            if label.starts_with(tenant) {
                q.remove(*key);
            }
        }
        self.calls
            .retain(|(label, _, _)| !label.starts_with(tenant));
    }
}

fn pop_labels(q: &mut ServiceQueue, n: usize) -> Vec<String> {
    (0..n)
        .map_while(|_| q.pop().map(|w| w.head.service.clone()))
        .collect()
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
    assert_eq!(q.pop().map(|w| w.key.seq()), Some(0));
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
    let order: Vec<u64> = std::iter::from_fn(|| q.pop().map(|w| w.key.seq())).collect();
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
    q.push(a).expect("room");
    let b_key = q.push(b).expect("room");
    q.push(c).expect("room");
    drop(ha);
    assert!(q.remove(b_key));
    assert!(!q.remove(b_key), "already gone");
    drop(hb);
    assert_eq!(q.peek().map(|w| w.key.seq()), Some(3));
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
    assert_eq!(q.peek().map(|w| w.key.seq()), Some(1));
}

#[test]
fn tenants_take_turns_within_a_priority() {
    let mut q = ServiceQueue::new(100);
    let mut calls = Arrivals::default();
    calls.push(&mut q, &[("A", 0); 5]);
    calls.push(&mut q, &[("B", 0); 2]);
    assert_eq!(
        pop_labels(&mut q, 7),
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
        assert_eq!(calls.position(label), WaitState::Queued(at), "{label}");
    }
    assert_eq!(pop_labels(&mut q, 1), ["A1"]);
    for (label, at) in [("B1", 1), ("A2", 2), ("B2", 3), ("A3", 4)] {
        assert_eq!(calls.position(label), WaitState::Queued(at), "{label}");
    }
    // A newcomer joins the current round: right behind B1.
    calls.push(&mut q, &[("C", 0)]);
    assert_eq!(calls.position("C1"), WaitState::Queued(2));
    assert_eq!(calls.position("A3"), WaitState::Queued(5));
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
        pop_labels(&mut q, 7),
        ["B1", "A4", "B2", "A1", "B3", "A2", "A3"]
    );
}

#[test]
fn a_returning_tenant_is_neither_penalised_nor_ahead() {
    let mut q = ServiceQueue::new(100);
    let mut calls = Arrivals::default();
    calls.push(&mut q, &[("A", 0); 5]);
    calls.push(&mut q, &[("B", 0); 2]);
    assert_eq!(pop_labels(&mut q, 4), ["A1", "B1", "A2", "B2"]);
    // B's calls drained, and B was served in this round already: its next
    // call goes into the next round, behind A's, not ahead of it.
    calls.push(&mut q, &[("B", 0)]);
    // C's calls all left unserved: C is not charged for them, its next call
    // joins the current round like a newcomer's.
    calls.push(&mut q, &[("C", 0); 3]);
    calls.abandon(&mut q, "C");
    calls.push(&mut q, &[("C", 0)]);
    assert_eq!(pop_labels(&mut q, 5), ["C4", "A3", "B3", "A4", "A5"]);
}

#[test]
fn a_put_back_call_keeps_its_turn_across_tenants() {
    let mut q = ServiceQueue::new(100);
    let mut calls = Arrivals::default();
    calls.push(&mut q, &[("A", 0), ("A", 0), ("A", 0), ("B", 0)]);
    assert_eq!(pop_labels(&mut q, 3), ["A1", "B1", "A2"]);
    // A3 is reserved for a swap (taken out): the queue empties and forgets
    // its rounds, yet the calls that come meanwhile queue behind A3 when
    // it comes back.
    let reserved = q.pop().expect("A3");
    assert!(q.is_empty());
    calls.push(&mut q, &[("B", 0), ("C", 0), ("A", 0)]);
    q.put_back(reserved);
    assert_eq!(pop_labels(&mut q, 4), ["A3", "B2", "C1", "A4"]);
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
    assert_eq!(
        q.rounds.remembered(),
        (0, 0),
        "an empty queue remembers nothing"
    );
    calls.push(&mut q, &[("A", 0), ("B", 1), ("C", 2)]);
    calls.calls.clear();
    assert!(q.peek().is_none(), "gone calls are dropped");
    assert_eq!(q.rounds.remembered(), (0, 0));
}

#[test]
fn tenant_lengths_report_a_drained_tenant_once() {
    let mut q = ServiceQueue::new(100);
    let mut calls = Arrivals::default();
    calls.push(&mut q, &[("A", 0), ("A", 0), ("B", 0)]);
    let sorted = |mut v: Vec<(Arc<str>, usize)>| {
        v.sort();
        v.into_iter()
            .map(|(t, n)| (t.to_string(), n))
            .collect::<Vec<_>>()
    };
    let pairs = |p: &[(&str, usize)]| {
        p.iter()
            .map(|(t, n)| ((*t).to_string(), *n))
            .collect::<Vec<_>>()
    };
    assert_eq!(sorted(q.tenant_lengths()), pairs(&[("A", 2), ("B", 1)]));
    assert_eq!(pop_labels(&mut q, 2), ["A1", "B1"]);
    assert_eq!(sorted(q.tenant_lengths()), pairs(&[("A", 1), ("B", 0)]));
    assert_eq!(sorted(q.tenant_lengths()), pairs(&[("A", 1)]));
}
