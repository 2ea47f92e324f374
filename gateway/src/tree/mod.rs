//! A tree of gateways: this gateway's place in it.
//!
//! With `[parent]`, this gateway dials the gateway above it as an agent
//! does ([`uplink`]) and registers its whole fleet as one node of kind
//! `gateway` ([`summary`]): its services are the union of its nodes', each
//! with the fleet's capacity, and whenever that changes (a call admitted
//! or ended, a node up or down) it tells the parent what is free now. The
//! parent's policies pick between child gateways and plain nodes; a call
//! sent here is admitted like any call, as the caller's tenant the parent
//! names ([`serve`]), and its result streams back up with the path it
//! took.
//!
//! Every gateway knows its ancestry (itself, its parent, the parent's
//! parent, ...). A parent refuses a gateway whose id is in its own
//! ancestry, and tells its gateway children whenever its ancestry changes;
//! a child that finds itself there leaves: no gateway becomes its own
//! ancestor.
//!
//! Architecture Invariant: a call from a parent is admitted through the
//! same call path as a client's ([`crate::calls::spawn_from_parent`]); the
//! tree adds no second scheduler.

pub(crate) mod rebalance;
mod serve;
mod summary;
mod uplink;
pub(crate) mod wave;

pub(crate) use serve::handed_up;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use crate::Shared;

/// This gateway's place in a tree of gateways.
#[derive(Debug)]
pub(crate) struct Tree {
    id: String,
    /// Itself, then the gateways above it, nearest first.
    ancestry: watch::Sender<Vec<String>>,
    /// Calls the parent sent here that have not ended, per service.
    from_parent: Arc<ParentCalls>,
    /// Turns true when the gateway shuts down: the link to the parent
    /// drains, then closes.
    leave: watch::Sender<bool>,
}

impl Tree {
    /// A gateway with id `id` and no parent yet.
    pub(crate) fn new(id: String) -> Self {
        Self {
            ancestry: watch::Sender::new(vec![id.clone()]),
            id,
            from_parent: Arc::default(),
            leave: watch::Sender::new(false),
        }
    }

    /// This gateway's id (its node id at its parent).
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// This gateway, then the gateways above it, nearest first.
    pub(crate) fn ancestry(&self) -> Vec<String> {
        self.ancestry.borrow().clone()
    }

    /// Changes to [`Self::ancestry`].
    pub(crate) fn watch_ancestry(&self) -> watch::Receiver<Vec<String>> {
        self.ancestry.subscribe()
    }

    /// Whether `id` is this gateway or one above it (a child with that id
    /// would close a loop).
    pub(crate) fn is_ancestor(&self, id: &str) -> bool {
        self.ancestry.borrow().iter().any(|a| a == id)
    }

    /// The parent's ancestry is `above` (the parent first); empty when
    /// there is no link to a parent.
    fn set_above(&self, above: &[String]) {
        let mut ancestry = Vec::with_capacity(above.len() + 1);
        ancestry.push(self.id.clone());
        ancestry.extend(above.iter().take(protocol::MAX_DEPTH - 1).cloned());
        self.ancestry.send_if_modified(|current| {
            let changed = *current != ancestry;
            *current = ancestry;
            changed
        });
    }

    /// Starts the link to the parent when `[parent]` is set, and the
    /// rebalancing of child gateways' queues (`[rebalance]`).
    pub(crate) fn start(shared: &Arc<Shared>) {
        rebalance::start(shared);
        if let Some(parent) = shared.config.parent.clone() {
            let leave = shared.tree.leave.subscribe();
            tokio::spawn(uplink::run(shared.clone(), parent, leave));
        }
    }

    /// The gateway shuts down: the parent is told to send no new call, and
    /// the link closes once the calls it sent have ended.
    pub(crate) fn leave(&self) {
        self.leave.send_replace(true);
    }
}

/// Calls a parent sent that have not ended, per service: they hold the
/// parent's slots here, so they are not counted again as the fleet's
/// other calls in what the parent is told is free.
#[derive(Debug, Default)]
pub(crate) struct ParentCalls(Mutex<BTreeMap<String, u32>>);

impl ParentCalls {
    /// Counts one call of `service` until the guard drops.
    fn enter(self: &Arc<Self>, service: &str) -> ParentCall {
        let mut calls = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *calls.entry(service.to_string()).or_default() += 1;
        ParentCall {
            calls: self.clone(),
            service: service.to_string(),
        }
    }

    /// Calls in flight per service (services with none are absent).
    fn snapshot(&self) -> BTreeMap<String, u32> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// One call from the parent, counted until dropped.
#[derive(Debug)]
struct ParentCall {
    calls: Arc<ParentCalls>,
    service: String,
}

impl Drop for ParentCall {
    fn drop(&mut self) {
        let mut calls = self.calls.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = calls.get_mut(&self.service) {
            *n -= 1;
            if *n == 0 {
                calls.remove(&self.service);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestry_starts_with_the_gateway_and_grows_from_the_parent() {
        let tree = Tree::new("site-b".into());
        assert_eq!(tree.ancestry(), ["site-b"]);
        assert!(tree.is_ancestor("site-b"));
        tree.set_above(&["region-1".into(), "root".into()]);
        assert_eq!(tree.ancestry(), ["site-b", "region-1", "root"]);
        assert!(tree.is_ancestor("root") && !tree.is_ancestor("site-c"));
        let long: Vec<String> = (0..100).map(|i| format!("g{i}")).collect();
        tree.set_above(&long);
        assert_eq!(tree.ancestry().len(), protocol::MAX_DEPTH);
        tree.set_above(&[]);
        assert_eq!(tree.ancestry(), ["site-b"]);
    }

    #[test]
    fn parent_calls_are_counted_until_they_end() {
        let calls = Arc::new(ParentCalls::default());
        let a = calls.enter("echo");
        let b = calls.enter("echo");
        let c = calls.enter("llm");
        assert_eq!(
            calls.snapshot(),
            [("echo".into(), 2), ("llm".into(), 1)].into()
        );
        drop((a, c));
        assert_eq!(calls.snapshot(), [("echo".into(), 1)].into());
        drop(b);
        assert!(calls.snapshot().is_empty());
    }
}
