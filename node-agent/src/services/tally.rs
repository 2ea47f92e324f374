//! The slots one gateway session holds, counted apart from the node's
//! totals: that session's load reports tell its gateway exactly the calls
//! the other gateways sent (`NodeLoad::others`), with no subtraction on the
//! gateway's side that a report crossing one of its own calls' ends would
//! get wrong.
//!
//! Order of the counters: a slot is counted here before the node's total
//! grows and after it shrinks, and a report reads the total first; so a
//! report racing a call of this session sees at worst one call fewer of
//! the others, never one of this session's as another gateway's (and the
//! change that raced it sends another report).

use std::sync::atomic::{AtomicU32, Ordering};

/// The calls and lease holds of one gateway session in flight on this
/// node: per service (by the service's place among the node's) and its
/// job calls. Made by [`super::Services::tally`]; a slot taken with
/// [`super::Services::acquire_for`] counts here until it is dropped.
#[derive(Debug)]
pub struct Tally {
    in_flight: Box<[AtomicU32]>,
    jobs: AtomicU32,
}

impl Tally {
    pub(super) fn new(services: usize) -> Self {
        Self {
            in_flight: (0..services).map(|_| AtomicU32::new(0)).collect(),
            jobs: AtomicU32::new(0),
        }
    }

    /// This session's calls of the service at `index`.
    pub(super) fn in_flight(&self, index: usize) -> u32 {
        self.in_flight
            .get(index)
            .map_or(0, |n| n.load(Ordering::SeqCst))
    }

    /// This session's job calls.
    pub(super) fn jobs(&self) -> u32 {
        self.jobs.load(Ordering::SeqCst)
    }

    pub(super) fn add(&self, index: usize) {
        if let Some(n) = self.in_flight.get(index) {
            n.fetch_add(1, Ordering::SeqCst);
        }
    }

    pub(super) fn remove(&self, index: usize) {
        if let Some(n) = self.in_flight.get(index) {
            n.fetch_sub(1, Ordering::SeqCst);
        }
    }

    pub(super) fn add_job(&self) {
        self.jobs.fetch_add(1, Ordering::SeqCst);
    }

    pub(super) fn remove_job(&self) {
        self.jobs.fetch_sub(1, Ordering::SeqCst);
    }
}
