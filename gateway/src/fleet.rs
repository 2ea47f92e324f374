//! The agent links: which node connections are open, keyed by node id and by
//! the key policies see, each with its QUIC connection (calls are streams on
//! it) and its control stream's sender (swap requests).
//!
//! What the scheduling core knows of a node (services, in flight, slots,
//! stats, draining) lives in the core ([`switchyard_core::Fleet`]); a
//! [`Node`] reads it from there, so it is never a second copy.
//!
//! Invariant: a node is here only while its connection is open and its stats
//! arrive on time; a newer connection with the same node id replaces the
//! older one (which is closed) and keeps its key.
//!
//! A node's call count survives its reconnects: the core counts the calls
//! of one connection, and the registry keeps, per node key, the calls its
//! earlier connections finished, added to every view.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use dashmap::DashMap;
use protocol::{Message, NodeSpec, NodeStats, NodeView, ServiceSpec};
use switchyard_core::{Core, Ewma};
use tokio::sync::mpsc;

mod blocks;
mod holds;
pub(crate) use blocks::ReportedBlocks;
pub(crate) use holds::{HoldWord, Holds};

/// The scheduling core, shared by the scheduler (which drives it) and the
/// views that read it. Held only for one event or one read, never across
/// IO or a policy's pick.
pub(crate) type CoreCell = Arc<Mutex<Core>>;

/// Locks the core (a panic while it was held poisons nothing we rely on:
/// the core's state is consistent after every event).
pub(crate) fn lock(core: &CoreCell) -> MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A child gateway's queues (`Load.queued`) and when they came.
pub(crate) type QueueReport = (Instant, Vec<protocol::QueuedCalls>);

/// The key of the link to the parent gateway ([`Registry::insert_parent`]):
/// above any key [`Registry::key_for`] gives.
pub(crate) const PARENT_KEY: u32 = u32::MAX;

/// All connected nodes.
#[derive(Debug)]
pub struct Registry {
    core: CoreCell,
    nodes: DashMap<String, Arc<Node>>,
    keys: DashMap<String, u32>,
    by_key: DashMap<u32, Arc<Node>>,
    next_key: AtomicU32,
    /// Per node key: calls its earlier connections finished well, and the
    /// core's epoch of the last one counted (so none is counted twice); one
    /// entry per node id that ever finished a call, as `keys`.
    earlier_calls: DashMap<u32, (u64, u64)>,
}

/// One connected node: its link, and its state read from the core.
#[derive(Debug)]
pub struct Node {
    /// The key policies see.
    pub key: u32,
    /// What the node registered.
    pub spec: NodeSpec,
    /// The services it hosts (loaded or loadable), by name.
    pub services: BTreeMap<String, ServiceSpec>,
    /// The agent's connection: calls are streams on it.
    pub connection: quinn::Connection,
    /// When the node registered.
    pub registered_at: Instant,
    /// Frames for the agent's control stream (swap requests).
    pub control: mpsc::Sender<Message>,
    /// Where clients reach the node's direct port (`host:port`, as it
    /// registered it); `None` when it takes no direct calls (it cannot be
    /// leased).
    pub direct: Option<String>,
    /// The prefix blocks the node reports holding, per service (its load
    /// reports); policies match calls' prompts against them.
    pub(crate) blocks: Arc<ReportedBlocks>,
    /// The lease holds the node keeps for this gateway, answered on its
    /// control stream.
    pub(crate) holds: Arc<Holds>,
    /// A child gateway's queues as its latest load report said, and when
    /// it came (rebalancing reads them).
    pub(crate) queued: Arc<Mutex<Option<QueueReport>>>,
    /// Calls a child gateway may still hand up: those this gateway asked
    /// for (rebalancing); a call it was not asked for is refused.
    pub(crate) hand_up_credit: Arc<AtomicU32>,
    core: CoreCell,
}

/// How a node is reached: its connection, its control stream's sender,
/// its direct port.
struct Link {
    connection: quinn::Connection,
    control: mpsc::Sender<Message>,
    direct: Option<String>,
}

impl Registry {
    /// An empty registry over `core`.
    pub fn new(core: CoreCell) -> Self {
        Self {
            core,
            nodes: DashMap::new(),
            keys: DashMap::new(),
            by_key: DashMap::new(),
            next_key: AtomicU32::new(0),
            earlier_calls: DashMap::new(),
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
    /// `direct` is its direct port's address, if it has one. The caller
    /// tells the scheduler.
    pub fn insert(
        &self,
        spec: NodeSpec,
        connection: quinn::Connection,
        control: mpsc::Sender<Message>,
        direct: Option<String>,
        now: Instant,
    ) -> Arc<Node> {
        let key = self.key_for(&spec.id);
        // A connection of this id still in the core (being replaced): its
        // calls carry over before the newer one's `node_up` resets them.
        self.carry_calls(key);
        let node = Arc::new(Node::fresh(
            key,
            spec,
            Link {
                connection,
                control,
                direct,
            },
            now,
            self.core.clone(),
        ));
        if let Some(old) = self.nodes.insert(node.spec.id.clone(), node.clone()) {
            old.connection.close(
                protocol::codes::close::REPLACED.into(),
                b"replaced by a new connection",
            );
        }
        self.by_key.insert(key, node.clone());
        node
    }

    /// Replaces registered `node` by the same link with the services of
    /// `spec` (same id; the caller checked it), and returns it; the caller
    /// tells the scheduler (its `respec`). The
    /// link, key, holds and prefix blocks carry over: calls in flight on
    /// `node` go on. `None` when `node` is no longer the registered node
    /// for its id.
    pub fn respec(&self, node: &Arc<Node>, spec: NodeSpec) -> Option<Arc<Node>> {
        let link = Link {
            connection: node.connection.clone(),
            control: node.control.clone(),
            direct: node.direct.clone(),
        };
        let fresh = Arc::new(Node {
            blocks: node.blocks.clone(),
            holds: node.holds.clone(),
            queued: node.queued.clone(),
            hand_up_credit: node.hand_up_credit.clone(),
            ..Node::fresh(node.key, spec, link, node.registered_at, self.core.clone())
        });
        let listed = self.nodes.contains_key(&node.spec.id);
        if listed {
            let mut current = self.nodes.get_mut(&node.spec.id)?;
            if !Arc::ptr_eq(&current, node) {
                return None;
            }
            *current = fresh.clone();
        }
        let mut current = self.by_key.get_mut(&node.key)?;
        if !Arc::ptr_eq(&current, node) {
            return None;
        }
        *current = fresh.clone();
        Some(fresh)
    }

    /// Adds the link to this gateway's parent as node `spec` (a tree of
    /// gateways): calls can be granted on it (handed up for rebalancing),
    /// but it is listed nowhere (`get`, `all`, views) and never probed.
    /// The caller tells the scheduler, and drains it there so that it
    /// takes no call but those handed up.
    pub(crate) fn insert_parent(
        &self,
        spec: NodeSpec,
        connection: quinn::Connection,
        now: Instant,
    ) -> Arc<Node> {
        // A key of its own: a node of this fleet with the parent's id
        // keeps its key.
        let key = PARENT_KEY;
        // Nothing reads its control stream: frames for it are dropped.
        let (control, _) = mpsc::channel(1);
        let link = Link {
            connection,
            control,
            direct: None,
        };
        let node = Arc::new(Node::fresh(key, spec, link, now, self.core.clone()));
        self.by_key.insert(key, node.clone());
        node
    }

    /// Removes the link to the parent added by [`Self::insert_parent`]
    /// (if it is still the one registered under its key).
    pub(crate) fn remove_parent(&self, node: &Arc<Node>) {
        self.by_key
            .remove_if(&node.key, |_, current| Arc::ptr_eq(current, node));
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
            // Its calls carry over before the caller's `node_down` drops it.
            self.carry_calls(node.key);
        }
        removed
    }

    /// Adds the calls the core counts for node `key`'s connection now to
    /// its earlier calls (the core is about to forget that connection),
    /// once per connection (core epoch).
    fn carry_calls(&self, key: u32) {
        let Some((calls, epoch)) = lock(&self.core)
            .fleet()
            .get(key)
            .map(|n| (n.calls_total, n.epoch))
        else {
            return;
        };
        if calls == 0 {
            return;
        }
        let mut earlier = self.earlier_calls.entry(key).or_default();
        if earlier.1 != epoch {
            *earlier = (earlier.0 + calls, epoch);
        }
    }

    /// Calls node `key`'s earlier connections finished well.
    fn earlier_calls(&self, key: u32) -> u64 {
        self.earlier_calls.get(&key).map_or(0, |c| c.0)
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

    /// Every service some node hosts now, sorted.
    pub fn service_names(&self) -> Vec<String> {
        lock(&self.core).fleet().service_names()
    }

    /// Every node, sorted by id.
    pub fn all(&self) -> Vec<Arc<Node>> {
        let mut nodes: Vec<_> = self.nodes.iter().map(|n| n.clone()).collect();
        nodes.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
        nodes
    }

    /// A view of every node for `switchyard nodes`, sorted by id; its
    /// `calls_total` counts since the gateway started, across reconnects;
    /// `direct` is the node's direct address.
    pub fn views(&self, now: Instant) -> Vec<NodeView> {
        let mut views = lock(&self.core).node_views(now);
        // The link to a parent gateway is no node of this fleet.
        views.retain(|v| v.key != PARENT_KEY);
        for view in &mut views {
            view.calls_total += self.earlier_calls(view.key);
            view.direct = self.by_key.get(&view.key).and_then(|n| n.direct.clone());
        }
        views
    }
}

impl Node {
    /// A node as it registers: `spec` over `link`, nothing carried over.
    fn fresh(key: u32, spec: NodeSpec, link: Link, now: Instant, core: CoreCell) -> Self {
        Self {
            key,
            services: spec
                .services
                .iter()
                .map(|s| (s.name.clone(), s.clone()))
                .collect(),
            spec,
            connection: link.connection,
            registered_at: now,
            control: link.control,
            direct: link.direct,
            blocks: Arc::default(),
            holds: Arc::default(),
            queued: Arc::default(),
            hand_up_credit: Arc::default(),
            core,
        }
    }

    fn read<R: Default>(&self, f: impl FnOnce(&switchyard_core::Node) -> R) -> R {
        lock(&self.core)
            .fleet()
            .get(self.key)
            .map(f)
            .unwrap_or_default()
    }

    /// The latest stats report, if any.
    pub fn stats(&self) -> Option<NodeStats> {
        self.read(|n| n.stats.clone())
    }

    /// Whether the node is drained.
    pub fn is_draining(&self) -> bool {
        self.read(|n| n.draining)
    }

    /// Whether calls of `service` can run here now.
    pub fn is_loaded(&self, service: &str) -> bool {
        self.read(|n| n.is_loaded(service))
    }

    /// Calls of `service` in flight here.
    pub fn in_flight(&self, service: &str) -> u32 {
        self.read(|n| n.in_flight(service))
    }

    /// Calls of every service in flight here.
    pub fn in_flight_total(&self) -> u32 {
        self.read(switchyard_core::Node::in_flight_total)
    }

    /// The latency estimate of `service` here.
    pub fn latency(&self, service: &str) -> Ewma {
        self.read(|n| n.latency(service))
    }

    /// Calls this connection of the node finished well since it
    /// registered (the views add its earlier connections').
    pub fn calls_total(&self) -> u64 {
        self.read(|n| n.calls_total)
    }

    /// A view for `switchyard nodes` (`None` once it left the core); its
    /// `calls_total` is this connection's only.
    pub fn view(&self, now: Instant) -> Option<NodeView> {
        let mut view = self.read(|n| Some(n.view(now)))?;
        view.direct.clone_from(&self.direct);
        Some(view)
    }
}

#[cfg(test)]
mod tests {
    use protocol::{CallHead, ServiceSpec};
    use switchyard_core::{CallEnd, Event, RoundRobin, drive};

    use super::*;

    fn up(core: &CoreCell, key: u32) {
        let spec = NodeSpec {
            id: "a".into(),
            region: "test".into(),
            labels: Vec::new(),
            cost_per_hour: 1.0,
            services: vec![ServiceSpec {
                name: "echo".into(),
                max_concurrent: 4,
                load_ms: 0,
                model: false,
                policy: None,
                idempotent: false,
            }],
            slots: Vec::new(),
            stats_interval_ms: 1000,
            heartbeat_ms: None,
            agent_version: "test".into(),
            gateway: false,
        };
        let event = Event::NodeUp { node: key, spec };
        drive(
            &mut lock(core),
            &mut RoundRobin::default(),
            event,
            Instant::now(),
        );
    }

    /// `n` calls of `echo` served well by the one node.
    fn serve(core: &CoreCell, n: u64, next_call: &mut u64) {
        let mut balance = RoundRobin::default();
        for _ in 0..n {
            *next_call += 1;
            let call = *next_call;
            let arrived = Event::CallArrived {
                call,
                head: Arc::new(CallHead::new("echo", 0, 1000)),
                tenant: Arc::from("t"),
                prefix: Default::default(),
                job: false,
                exclude: Vec::new(),
            };
            drive(&mut lock(core), &mut balance, arrived, Instant::now());
            let end = Event::CallFinished {
                call,
                node_ms: 1.0,
                end: CallEnd::Ok,
            };
            drive(&mut lock(core), &mut balance, end, Instant::now());
        }
    }

    fn calls(r: &Registry) -> Vec<u64> {
        r.views(Instant::now())
            .iter()
            .map(|v| v.calls_total)
            .collect()
    }

    #[test]
    fn call_counts_outlive_reconnects_and_count_once() {
        let core: CoreCell = Arc::new(Mutex::new(Core::new(Default::default())));
        let r = Registry::new(core.clone());
        let key = r.key_for("a");
        let mut next_call = 0;
        up(&core, key);
        serve(&core, 3, &mut next_call);
        assert_eq!(calls(&r), [3]);
        // The connection leaves (`remove`, then `node_down`); carried
        // twice, it counts once.
        r.carry_calls(key);
        r.carry_calls(key);
        drive(
            &mut lock(&core),
            &mut RoundRobin::default(),
            Event::NodeDown { node: key },
            Instant::now(),
        );
        assert_eq!(r.earlier_calls(key), 3);
        // Back: the core counts from 0, the views from 3.
        up(&core, key);
        assert_eq!(calls(&r), [3]);
        serve(&core, 2, &mut next_call);
        assert_eq!(calls(&r), [5]);
        // Replaced by a newer connection while still in the core.
        r.carry_calls(key);
        up(&core, key);
        serve(&core, 1, &mut next_call);
        assert_eq!(calls(&r), [6]);
        // A node that never served a call keeps no entry.
        let other = r.key_for("b");
        r.carry_calls(other);
        assert_eq!(r.earlier_calls.len(), 1);
    }

    #[test]
    fn keys_are_stable_per_node_id() {
        let r = Registry::new(Arc::new(Mutex::new(Core::new(Default::default()))));
        let a = r.key_for("a");
        let b = r.key_for("b");
        assert_ne!(a, b);
        assert_eq!(r.key_for("a"), a);
    }
}
