//! The node registry: which nodes are connected, what they host, their latest
//! stats, and the gateway's own count of calls in flight on each.
//!
//! Invariant: a node is in the registry only while its QUIC connection is
//! open and its stats arrive on time; `in_flight` never exceeds
//! `max_concurrent` because slots are taken by compare-and-swap
//! ([`Node::try_acquire`]); a call is only dispatched to a service that is
//! loaded (a swap unloads a service only when it has no call in flight, and
//! a call only takes a slot of a loaded service: see [`Node::unload`]).
//! Every freed call slot is announced to the scheduler, which dispatches the
//! head of that service's queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use protocol::{Message, NodeSpec, NodeStats, NodeView, ServiceView};
use tokio::sync::mpsc;

use crate::scheduler::Event;
use crate::slots::NodeSlots;

/// Weight of the newest sample in the latency EWMA.
pub const LATENCY_EWMA_WEIGHT: f32 = 0.3;

/// All connected nodes.
#[derive(Debug, Default)]
pub struct Registry {
    nodes: DashMap<String, Arc<Node>>,
    keys: DashMap<String, u32>,
    by_key: DashMap<u32, Arc<Node>>,
    next_key: AtomicU32,
    events: Option<mpsc::UnboundedSender<Event>>,
}

/// One connected node.
#[derive(Debug)]
pub struct Node {
    /// The key policies see.
    pub key: u32,
    /// What the node registered.
    pub spec: NodeSpec,
    /// The agent's connection: calls are streams on it.
    pub connection: quinn::Connection,
    /// Per-service slots and latency.
    pub services: HashMap<String, ServiceSlot>,
    /// When the node registered.
    pub registered_at: Instant,
    /// Frames for the agent's control stream (swap requests).
    pub control: mpsc::Sender<Message>,
    slots: Mutex<NodeSlots>,
    events: Option<mpsc::UnboundedSender<Event>>,
    draining: AtomicBool,
    stats: RwLock<Option<NodeStats>>,
    last_stats: Mutex<Instant>,
    calls_total: AtomicU64,
}

/// One service on one node: its slots and latency estimate.
#[derive(Debug)]
pub struct ServiceSlot {
    /// Most calls at once.
    pub max_concurrent: u32,
    /// Usual load time into a slot, ms (0 for a service in no slot).
    pub load_ms: u32,
    in_flight: AtomicU32,
    loaded: AtomicBool,
    latency: Mutex<Ewma>,
}

/// An exponentially weighted moving average of node times, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Ewma {
    /// Current estimate, ms (0 with no samples).
    pub value_ms: f32,
    /// Samples seen (saturating).
    pub samples: u32,
}

/// A taken call slot; dropping it frees the slot.
#[derive(Debug)]
pub struct SlotGuard {
    node: Arc<Node>,
    service: String,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty registry that tells `events` when a call slot frees.
    pub fn with_events(events: mpsc::UnboundedSender<Event>) -> Self {
        Self {
            events: Some(events),
            ..Self::default()
        }
    }

    /// The key for `node_id`: the same id always gets the same key.
    pub fn key_for(&self, node_id: &str) -> u32 {
        if let Some(key) = self.keys.get(node_id) {
            return *key;
        }
        *self
            .keys
            .entry(node_id.to_string())
            .or_insert_with(|| self.next_key.fetch_add(1, Ordering::Relaxed))
    }

    /// Adds a node (replacing any node with the same id, whose connection is
    /// closed) and returns it. `control` reaches its agent's control stream;
    /// `swap_cooldown` is the least time between two swaps on it.
    pub fn insert(
        &self,
        spec: NodeSpec,
        connection: quinn::Connection,
        control: mpsc::Sender<Message>,
        swap_cooldown: Duration,
        now: Instant,
    ) -> Arc<Node> {
        let key = self.key_for(&spec.id);
        let services = spec
            .services
            .iter()
            .map(|s| {
                let loaded = spec
                    .slot_of(&s.name)
                    .is_none_or(|slot| slot.loaded.as_ref() == Some(&s.name));
                let slot = ServiceSlot {
                    max_concurrent: s.max_concurrent,
                    load_ms: s.load_ms,
                    in_flight: AtomicU32::new(0),
                    loaded: AtomicBool::new(loaded),
                    latency: Mutex::new(Ewma::default()),
                };
                (s.name.clone(), slot)
            })
            .collect();
        let slots = NodeSlots::new(&spec.slots, swap_cooldown, now);
        let node = Arc::new(Node {
            key,
            spec,
            connection,
            services,
            control,
            slots: Mutex::new(slots),
            events: self.events.clone(),
            draining: AtomicBool::new(false),
            registered_at: now,
            stats: RwLock::new(None),
            last_stats: Mutex::new(now),
            calls_total: AtomicU64::new(0),
        });
        if let Some(old) = self.nodes.insert(node.spec.id.clone(), node.clone()) {
            old.connection.close(
                crate::CLOSE_REPLACED.into(),
                b"replaced by a new connection",
            );
        }
        self.by_key.insert(key, node.clone());
        node
    }

    /// Removes `node` if it is still the registered node for its id (a newer
    /// connection with the same id stays). Returns whether it was removed.
    pub fn remove(&self, node: &Arc<Node>) -> bool {
        let removed = self
            .nodes
            .remove_if(&node.spec.id, |_, current| Arc::ptr_eq(current, node))
            .is_some();
        if removed {
            self.by_key
                .remove_if(&node.key, |_, current| Arc::ptr_eq(current, node));
        }
        removed
    }

    /// The node with id `id`, if connected.
    pub fn get(&self, id: &str) -> Option<Arc<Node>> {
        self.nodes.get(id).map(|n| n.clone())
    }

    /// The node with `key`, if connected.
    pub fn by_key(&self, key: u32) -> Option<Arc<Node>> {
        self.by_key.get(&key).map(|n| n.clone())
    }

    /// Number of connected nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node is connected.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The nodes that have `service` loaded now, sorted by key (so picks are
    /// deterministic for a given registry), whether or not they have a free
    /// slot.
    pub fn hosting(&self, service: &str) -> Vec<Arc<Node>> {
        let mut nodes: Vec<_> = self
            .nodes
            .iter()
            .filter(|n| n.is_loaded(service) && !n.is_draining())
            .map(|n| n.clone())
            .collect();
        nodes.sort_by_key(|n| n.key);
        nodes
    }

    /// Whether some node has `service` loaded or can load it into a slot.
    pub fn knows(&self, service: &str) -> bool {
        self.nodes.iter().any(|n| n.services.contains_key(service))
    }

    /// Whether some node that hosts `service` (loaded or loadable) is not
    /// draining: a call can be served some day without an operator.
    pub fn serves(&self, service: &str) -> bool {
        self.nodes
            .iter()
            .any(|n| n.services.contains_key(service) && !n.is_draining())
    }

    /// Every service some node hosts now, sorted.
    pub fn service_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .nodes
            .iter()
            .flat_map(|n| n.services.keys().cloned().collect::<Vec<_>>())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Every node, sorted by id.
    pub fn all(&self) -> Vec<Arc<Node>> {
        let mut nodes: Vec<_> = self.nodes.iter().map(|n| n.clone()).collect();
        nodes.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
        nodes
    }

    /// A view of every node for `switchyard nodes`.
    pub fn views(&self, now: Instant) -> Vec<NodeView> {
        self.all().iter().map(|n| n.view(now)).collect()
    }
}

impl Node {
    /// Stores a stats report received at `now`.
    pub fn update_stats(&self, stats: NodeStats, now: Instant) {
        if let Ok(mut s) = self.stats.write() {
            *s = Some(stats);
        }
        if let Ok(mut t) = self.last_stats.lock() {
            *t = now;
        }
    }

    /// The latest stats report, if any.
    pub fn stats(&self) -> Option<NodeStats> {
        self.stats.read().ok().and_then(|s| s.clone())
    }

    /// Reads the latest stats without cloning them.
    pub fn with_stats<R>(&self, f: impl FnOnce(Option<&NodeStats>) -> R) -> R {
        match self.stats.read() {
            Ok(s) => f(s.as_ref()),
            Err(_) => f(None),
        }
    }

    /// When the latest stats report (or the registration) arrived.
    pub fn last_stats_at(&self) -> Instant {
        self.last_stats
            .lock()
            .map(|t| *t)
            .unwrap_or(self.registered_at)
    }

    /// Whether `service` is loaded here and has a free call slot now.
    pub fn has_free_slot(&self, service: &str) -> bool {
        self.services
            .get(service)
            .is_some_and(|s| s.is_loaded() && s.in_flight() < s.max_concurrent)
    }

    /// Drains (true) or undrains the node: a drained node gets no new call
    /// and no swap; calls in flight finish.
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::SeqCst);
    }

    /// Whether the node is drained.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Whether calls of `service` can run here now.
    pub fn is_loaded(&self, service: &str) -> bool {
        self.services
            .get(service)
            .is_some_and(ServiceSlot::is_loaded)
    }

    /// Calls of `service` in flight here.
    pub fn in_flight(&self, service: &str) -> u32 {
        self.services.get(service).map_or(0, ServiceSlot::in_flight)
    }

    /// Marks `service` unloaded, unless a call of it is in flight (then it
    /// stays loaded and this returns false). A call that races this sees the
    /// flag in [`Node::try_acquire`] and backs off, so after `true` no call
    /// of `service` runs here until [`Node::set_loaded`].
    pub fn unload(&self, service: &str) -> bool {
        let Some(slot) = self.services.get(service) else {
            return true;
        };
        slot.loaded.store(false, Ordering::SeqCst);
        if slot.in_flight.load(Ordering::SeqCst) > 0 {
            slot.loaded.store(true, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Marks `service` loaded (or not), as an agent's swap report says.
    pub fn set_loaded(&self, service: &str, loaded: bool) {
        if let Some(slot) = self.services.get(service) {
            slot.loaded.store(loaded, Ordering::SeqCst);
        }
    }

    /// The node's slot state, locked.
    pub fn slots(&self) -> MutexGuard<'_, NodeSlots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The latency estimate of `service` here.
    pub fn latency(&self, service: &str) -> Ewma {
        self.services
            .get(service)
            .map(ServiceSlot::latency)
            .unwrap_or_default()
    }

    /// Calls of every service in flight here.
    pub fn in_flight_total(&self) -> u32 {
        self.services.values().map(ServiceSlot::in_flight).sum()
    }

    /// Takes a slot for `service` unless all are in use or the service is
    /// not loaded.
    pub fn try_acquire(self: &Arc<Self>, service: &str) -> Option<SlotGuard> {
        let slot = self.services.get(service)?;
        if !slot.is_loaded() {
            return None;
        }
        slot.in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < slot.max_concurrent).then_some(n + 1)
            })
            .ok()?;
        // A swap may have unloaded the service between the check and the
        // increment: it sees our count or we see its flag (both SeqCst).
        if !slot.loaded.load(Ordering::SeqCst) {
            slot.in_flight.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(SlotGuard {
            node: self.clone(),
            service: service.to_string(),
        })
    }

    /// Records a finished call's node time, ms.
    pub fn record_latency(&self, service: &str, node_ms: f32) {
        self.calls_total.fetch_add(1, Ordering::Relaxed);
        if let Some(slot) = self.services.get(service)
            && let Ok(mut ewma) = slot.latency.lock()
        {
            ewma.add(node_ms);
        }
    }

    /// Calls this node finished since it registered.
    pub fn calls_total(&self) -> u64 {
        self.calls_total.load(Ordering::Relaxed)
    }

    /// A view for `switchyard nodes`.
    pub fn view(&self, now: Instant) -> NodeView {
        let mut services: Vec<_> = self
            .services
            .iter()
            .map(|(name, s)| ServiceView {
                name: name.clone(),
                in_flight: s.in_flight(),
                max_concurrent: s.max_concurrent,
                latency_ms: s.latency().value_ms,
                loaded: s.is_loaded(),
            })
            .collect();
        services.sort_by(|a, b| a.name.cmp(&b.name));
        NodeView {
            key: self.key,
            spec: self.spec.clone(),
            stats: self.stats(),
            services,
            slots: self.slots().views(now),
            draining: self.is_draining(),
            connected_ms: millis(now.saturating_duration_since(self.registered_at)),
            last_stats_ms: millis(now.saturating_duration_since(self.last_stats_at())),
            calls_total: self.calls_total(),
        }
    }
}

impl ServiceSlot {
    /// Calls in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Whether calls can run now (always, for a service in no slot).
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::SeqCst)
    }

    /// The latency estimate.
    pub fn latency(&self) -> Ewma {
        self.latency.lock().map(|e| *e).unwrap_or_default()
    }
}

impl Ewma {
    /// Adds a sample, ms: the first sample is taken as is, later ones with
    /// weight [`LATENCY_EWMA_WEIGHT`].
    pub fn add(&mut self, sample_ms: f32) {
        if !sample_ms.is_finite() || sample_ms < 0.0 {
            return;
        }
        self.value_ms = if self.samples == 0 {
            sample_ms
        } else {
            self.value_ms + LATENCY_EWMA_WEIGHT * (sample_ms - self.value_ms)
        };
        self.samples = self.samples.saturating_add(1);
    }
}

impl SlotGuard {
    /// The node holding the slot.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }
}

impl SlotGuard {
    /// The service the slot belongs to.
    pub fn service(&self) -> &str {
        &self.service
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Some(slot) = self.node.services.get(&self.service) {
            slot.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        if let Some(events) = &self.node.events {
            let _ = events.send(Event::Freed(self.service.clone()));
        }
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ewma_starts_at_first_sample_then_smooths() {
        let mut e = Ewma::default();
        e.add(100.0);
        assert_eq!(e.value_ms, 100.0);
        e.add(0.0);
        assert!((e.value_ms - 70.0).abs() < 1e-3);
        e.add(f32::NAN);
        assert_eq!(e.samples, 2, "bad samples ignored");
    }

    #[test]
    fn keys_are_stable_per_node_id() {
        let r = Registry::new();
        let a = r.key_for("a");
        let b = r.key_for("b");
        assert_ne!(a, b);
        assert_eq!(r.key_for("a"), a);
    }
}
