//! The per-node job limit (the most jobs one node runs at once): a job
//! call ([`crate::Event::CallArrived`] with `job`) goes only
//! to a node running fewer job calls than [`crate::Event::JobLimit`] says,
//! whatever their services; other calls are not counted and not held back.
//! A node's job calls are this gateway's plus those the other gateways of
//! a cluster run there, as its latest load report told
//! ([`crate::Event::Load`]'s `jobs_in_flight`).
//!
//! A job call that finds free slots but no node with room is *held* apart
//! from its service's queue (so the calls behind it still take those
//! slots) and asks for a pick again as soon as a node has room: when a
//! call ends, at each tick, when the limit changes. A realtime job is
//! refused as `occupied` instead.

use protocol::ErrorKind;

use crate::{Call, CallId, Core, Node, Stage};

impl Core {
    /// Whether `node` may take `call` as far as the per-node job limit
    /// goes (always, for a call that is not a job).
    pub(crate) fn job_room(&self, call: &Call, node: &Node) -> bool {
        Self::job_room_within(self.max_jobs_per_node, call, node)
    }

    /// [`Self::job_room`] under a limit of `max` job calls per node (0: no
    /// limit).
    pub(crate) fn job_room_within(max: u32, call: &Call, node: &Node) -> bool {
        !call.job || max == 0 || node.jobs_in_flight.saturating_add(node.jobs_others) < max
    }

    /// Whether job call `call` finds a free slot of its service that only
    /// the job limit keeps it from.
    pub(crate) fn held_by_job_limit(&self, call: CallId) -> bool {
        let Some(c) = self.calls.get(&call) else {
            return false;
        };
        if !c.job || self.max_jobs_per_node == 0 {
            return false;
        }
        let service = &c.head.service;
        let mut some_free = false;
        for node in self.fleet.hosting(service) {
            if node.has_free_slot(service) && !c.exclude.contains(&node.key) {
                if self.job_room(c, node) {
                    return false;
                }
                some_free = true;
            }
        }
        some_free
    }

    /// Holds job call `call` until a node has room (a realtime one is
    /// refused: `occupied`).
    pub(crate) fn hold(&mut self, call: CallId) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.head.realtime {
            let limit = self.max_jobs_per_node;
            let service = c.head.service.clone();
            return self.reject(
                call,
                ErrorKind::Occupied,
                format!(
                    "every node with a free slot of {service:?} runs its limit of {limit} jobs and the job is realtime"
                ),
            );
        }
        c.stage = Stage::Held;
        self.held.insert(call);
    }

    /// Asks for a pick for each held job call that a node has room for
    /// now, oldest first.
    pub(crate) fn release_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        for call in self.held.clone() {
            if !self.calls.contains_key(&call) {
                self.held.remove(&call);
                continue;
            }
            let candidates = self.candidates(call);
            if !candidates.is_empty() {
                self.held.remove(&call);
                self.ask_pick(call, candidates, false);
            }
        }
    }
}
