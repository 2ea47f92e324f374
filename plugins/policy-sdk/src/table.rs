//! Per (service, node) state that forgets nodes left idle.

use std::collections::HashMap;

use crate::NodeKey;

/// How long a (service, node) entry lives without an update: 10 minutes, ms.
pub const FORGET_AFTER_MS: u64 = 10 * 60 * 1000;

/// State per (service, node), bounded by forgetting: an entry not updated for
/// `ttl_ms` reads as absent, and is dropped by a sweep that runs at most once
/// per `ttl_ms / 10` of update time (so memory holds only nodes updated in the
/// last ~1.1 × `ttl_ms`).
///
/// Lookups by `&str` allocate nothing; an update allocates the service name
/// only the first time the service is seen.
#[derive(Debug, Clone)]
pub struct NodeStates<V> {
    services: HashMap<String, HashMap<NodeKey, Slot<V>>>,
    ttl_ms: u64,
    next_sweep_ms: u64,
}

#[derive(Debug, Clone)]
struct Slot<V> {
    value: V,
    updated_ms: u64,
}

impl<V> Default for NodeStates<V> {
    fn default() -> Self {
        Self::new(FORGET_AFTER_MS)
    }
}

impl<V> NodeStates<V> {
    /// An empty table whose entries live `ttl_ms` without an update.
    #[must_use]
    pub fn new(ttl_ms: u64) -> Self {
        Self {
            services: HashMap::new(),
            ttl_ms: ttl_ms.max(1),
            next_sweep_ms: 0,
        }
    }

    /// The state of (`service`, `node`), unless absent or not updated for
    /// `ttl_ms` before `now_ms`.
    #[must_use]
    pub fn get(&self, service: &str, node: NodeKey, now_ms: u64) -> Option<&V> {
        self.service(service).get(node, now_ms)
    }

    /// The states of `service`'s nodes, for reading many of them in one
    /// call: the service is looked up once, each node by its key only.
    #[must_use]
    pub fn service(&self, service: &str) -> ServiceStates<'_, V> {
        ServiceStates {
            nodes: self.services.get(service),
            ttl_ms: self.ttl_ms,
        }
    }

    /// Updates (`service`, `node`) at `now_ms`: `update` changes a live entry
    /// in place; an absent or forgotten one is replaced by `insert()`.
    pub fn upsert(
        &mut self,
        service: &str,
        node: NodeKey,
        now_ms: u64,
        update: impl FnOnce(&mut V),
        insert: impl FnOnce() -> V,
    ) {
        if now_ms >= self.next_sweep_ms {
            self.sweep(now_ms);
        }
        let ttl_ms = self.ttl_ms;
        let nodes = match self.services.get_mut(service) {
            Some(nodes) => nodes,
            None => self.services.entry(service.to_owned()).or_default(),
        };
        match nodes.get_mut(&node) {
            Some(slot) if now_ms.saturating_sub(slot.updated_ms) < ttl_ms => {
                update(&mut slot.value);
                slot.updated_ms = slot.updated_ms.max(now_ms);
            }
            _ => {
                nodes.insert(
                    node,
                    Slot {
                        value: insert(),
                        updated_ms: now_ms,
                    },
                );
            }
        }
    }

    /// Every entry of `service`, forgotten ones included (for updates that
    /// touch all of a service's nodes, such as a discount).
    pub fn values_mut(&mut self, service: &str) -> impl Iterator<Item = &mut V> {
        self.services
            .get_mut(service)
            .into_iter()
            .flat_map(|nodes| nodes.values_mut().map(|slot| &mut slot.value))
    }

    /// How many entries are held (forgotten ones not yet swept included).
    #[must_use]
    pub fn len(&self) -> usize {
        self.services.values().map(HashMap::len).sum()
    }

    /// Whether no entry is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Drops forgotten entries and services left without entries.
    fn sweep(&mut self, now_ms: u64) {
        let ttl_ms = self.ttl_ms;
        self.services.retain(|_, nodes| {
            nodes.retain(|_, slot| now_ms.saturating_sub(slot.updated_ms) < ttl_ms);
            !nodes.is_empty()
        });
        self.next_sweep_ms = now_ms.saturating_add(ttl_ms / 10);
    }
}

/// One service's node states, from [`NodeStates::service`].
#[derive(Debug)]
pub struct ServiceStates<'a, V> {
    nodes: Option<&'a HashMap<NodeKey, Slot<V>>>,
    ttl_ms: u64,
}

impl<'a, V> ServiceStates<'a, V> {
    /// The state of `node`, unless absent or not updated for the table's
    /// `ttl_ms` before `now_ms` (as [`NodeStates::get`]).
    #[must_use]
    pub fn get(&self, node: NodeKey, now_ms: u64) -> Option<&'a V> {
        self.nodes?
            .get(&node)
            .filter(|slot| now_ms.saturating_sub(slot.updated_ms) < self.ttl_ms)
            .map(|slot| &slot.value)
    }
}

#[cfg(test)]
mod tests {
    use super::NodeStates;

    #[test]
    fn upsert_get_and_forget() {
        let mut t = NodeStates::<u32>::new(1000);
        t.upsert("a", 1, 0, |v| *v += 1, || 10);
        t.upsert("a", 1, 500, |v| *v += 1, || 10);
        t.upsert("b", 1, 500, |v| *v += 1, || 20);
        assert_eq!(t.get("a", 1, 600), Some(&11));
        assert_eq!(t.get("b", 1, 600), Some(&20));
        assert_eq!(t.get("a", 2, 600), None);
        assert_eq!(t.get("c", 1, 600), None);
        let a = t.service("a");
        assert_eq!((a.get(1, 600), a.get(2, 600)), (Some(&11), None));
        assert_eq!(a.get(1, 1500), None, "forgotten after the ttl");
        assert_eq!(t.service("c").get(1, 600), None);
        // Not updated for the ttl: reads as absent, replaced on update.
        assert_eq!(t.get("a", 1, 1500), None);
        t.upsert("a", 1, 1500, |v| *v += 1, || 30);
        assert_eq!(t.get("a", 1, 1500), Some(&30));
        // That update swept ("b", 1), idle for the ttl too.
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn sweeps_bound_memory() {
        let mut t = NodeStates::<u8>::new(1000);
        for node in 0..100 {
            t.upsert("svc", node, 0, |_| {}, || 0);
        }
        t.upsert("other", 0, 0, |_| {}, || 0);
        assert_eq!(t.len(), 101);
        t.upsert("svc", 0, 2000, |_| {}, || 1);
        assert_eq!(t.len(), 1);
        for v in t.values_mut("svc") {
            *v = 9;
        }
        assert_eq!(t.get("svc", 0, 2000), Some(&9));
        assert_eq!(t.values_mut("absent").count(), 0);
        assert!(!t.is_empty());
    }
}
