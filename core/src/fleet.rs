//! The fleet as plain data: every node that is up, what it registered, its
//! latest stats, and per service the calls in flight, the capacity, whether
//! the service is loaded and its latency EWMA.
//!
//! Nothing here is shared or locked: the [`crate::Core`] owns the fleet and
//! changes it only while handling an event, so a node's in-flight count can
//! be checked and taken in one step (no compare-and-swap, no lost race).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use protocol::{NodeSpec, NodeStats, NodeView, ServiceView};

use crate::balance::ModelLoad;
use crate::event::Counted;

mod capacity;
pub mod slots;

pub use capacity::Capacity;
pub use slots::{NodeSlots, PendingSwap, SlotState};

/// The number a node is known by to policies and in events: stable for a
/// node id for the life of the gateway (the shell assigns it). The WIT's
/// `node-key`, defined beside it in `switchyard-policy-types`.
pub use switchyard_policy_types::NodeKey;

/// Weight of the newest sample in the latency EWMA.
pub const LATENCY_EWMA_WEIGHT: f32 = 0.3;

/// Every node that is up, by key (so iteration is in key order and runs are
/// deterministic).
#[derive(Debug, Default)]
pub struct Fleet {
    nodes: BTreeMap<NodeKey, Node>,
    next_epoch: u64,
    /// Per service, the nodes that host it (loaded or loadable), in key
    /// order: what a candidate sample draws from without walking the fleet.
    hosts: HashMap<String, Vec<NodeKey>>,
}

/// One node that is up.
#[derive(Debug)]
pub struct Node {
    /// Its key.
    pub key: NodeKey,
    /// Which registration of the node this is: a node that comes back (a new
    /// connection) gets a new epoch, so the end of a call that ran on the
    /// old one frees nothing on the new one.
    pub epoch: u64,
    /// What the node registered.
    pub spec: NodeSpec,
    /// Per service: capacity, in flight, loaded, latency.
    pub services: BTreeMap<String, ServiceState>,
    /// Its swappable slots.
    pub slots: NodeSlots,
    /// A drained node gets no new call and no swap; calls in flight finish.
    pub draining: bool,
    /// The latest stats report, if any.
    pub stats: Option<NodeStats>,
    /// When it registered.
    pub registered_at: Instant,
    /// When the latest stats report (or the registration) arrived.
    pub last_stats_at: Instant,
    /// Calls it finished well since it registered.
    pub calls_total: u64,
    /// Job calls running here now (every service).
    pub jobs_in_flight: u32,
    /// Job calls the other gateways run here, as the node's latest load
    /// report told: its total less this gateway's at the time, never
    /// below 0 (0 until a report tells).
    pub jobs_others: u32,
}

/// One service on one node.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceState {
    /// Most calls at once (the agent's `max_concurrent`).
    pub max_concurrent: u32,
    /// Usual load time into a slot, ms (0 for a service in no slot).
    pub load_ms: u32,
    /// Calls this gateway runs here now.
    pub in_flight: u32,
    /// Calls other gateways run here now, as the node's latest load report
    /// tells: its total less this gateway's calls in flight when the report
    /// arrived, never below 0 (0 until a report says otherwise).
    pub others: u32,
    /// Whether calls can run now (always, for a service in no slot).
    pub loaded: bool,
    /// Node time of finished calls, ms.
    pub latency: Ewma,
    /// Calls failed in a row (outlier detection).
    pub consecutive_failures: u32,
    /// Times ejected from this service's candidates.
    pub ejections: u32,
    /// Out of the service's candidates until then.
    pub ejected_until: Option<Instant>,
    /// Whether the agent's active health check passes (true until a stats
    /// report names the service unhealthy, and for a service without one):
    /// an unhealthy service is no candidate for calls.
    pub healthy: bool,
    /// Why it was last ejected.
    pub ejected_why: Option<crate::EjectReason>,
    /// Calls that succeeded in the success-rate interval.
    pub window_ok: u32,
    /// Calls that succeeded or failed in the success-rate interval.
    pub window_total: u32,
    /// The model server's load from the latest stats report; `None` when
    /// it carried none for this service.
    pub model_load: Option<ModelLoad>,
}

impl ServiceState {
    /// A service `s` of node `spec` as it registered: nothing in flight,
    /// loaded unless its slot holds another service.
    fn new(s: &protocol::ServiceSpec, spec: &NodeSpec) -> Self {
        let loaded = spec
            .slot_of(&s.name)
            .is_none_or(|slot| slot.loaded.as_ref() == Some(&s.name));
        Self {
            max_concurrent: s.max_concurrent,
            load_ms: s.load_ms,
            in_flight: 0,
            others: 0,
            loaded,
            latency: Ewma::default(),
            consecutive_failures: 0,
            ejections: 0,
            ejected_until: None,
            healthy: true,
            ejected_why: None,
            window_ok: 0,
            window_total: 0,
            model_load: None,
        }
    }

    /// Calls running on the node: this gateway's plus the others'.
    pub fn load(&self) -> u32 {
        self.in_flight.saturating_add(self.others)
    }
}

/// An exponentially weighted moving average of node times, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Ewma {
    /// Current estimate, ms (0 with no samples).
    pub value_ms: f32,
    /// Samples seen (saturating).
    pub samples: u32,
}

impl Ewma {
    /// Adds a sample, ms: the first sample is taken as is, later ones with
    /// weight [`LATENCY_EWMA_WEIGHT`]. Negative or non-finite samples are
    /// ignored.
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

impl Fleet {
    /// Adds the node `key` registered as `spec` at `now` with swap cooldown
    /// `cooldown`, replacing any node with that key (the caller has already
    /// ended what the old one held). Returns its epoch.
    pub fn insert(
        &mut self,
        key: NodeKey,
        spec: NodeSpec,
        cooldown: Duration,
        now: Instant,
    ) -> u64 {
        self.next_epoch += 1;
        let services = spec
            .services
            .iter()
            .map(|s| (s.name.clone(), ServiceState::new(s, &spec)))
            .collect();
        let node = Node {
            key,
            epoch: self.next_epoch,
            slots: NodeSlots::new(&spec.slots, cooldown, now),
            spec,
            services,
            draining: false,
            stats: None,
            registered_at: now,
            last_stats_at: now,
            calls_total: 0,
            jobs_in_flight: 0,
            jobs_others: 0,
        };
        let names: Vec<String> = node.services.keys().cloned().collect();
        if let Some(old) = self.nodes.insert(key, node) {
            self.unindex(key, old.services.keys());
        }
        self.index(key, &names);
        self.next_epoch
    }

    /// Adds `key` to the hosts of each of `services`.
    fn index(&mut self, key: NodeKey, services: &[String]) {
        for service in services {
            let hosts = self.hosts.entry(service.clone()).or_default();
            if let Err(at) = hosts.binary_search(&key) {
                hosts.insert(at, key);
            }
        }
    }

    /// Takes `key` out of the hosts of each of `services`.
    fn unindex<'a>(&mut self, key: NodeKey, services: impl IntoIterator<Item = &'a String>) {
        for service in services {
            if let Some(hosts) = self.hosts.get_mut(service) {
                if let Ok(at) = hosts.binary_search(&key) {
                    hosts.remove(at);
                }
                if hosts.is_empty() {
                    self.hosts.remove(service);
                }
            }
        }
    }

    /// The nodes that host `service` (loaded or loadable, draining or
    /// not), in key order.
    pub fn hosts(&self, service: &str) -> &[NodeKey] {
        self.hosts.get(service).map_or(&[], Vec::as_slice)
    }

    /// Takes node `key`'s services from `spec` (see
    /// [`crate::Event::Respec`]): a kept service keeps its state with the
    /// new `max_concurrent` and `load_ms`, a new one starts empty, a
    /// dropped one goes. Returns the services it hosts now, or `None` for
    /// an unknown node.
    pub fn respec(&mut self, key: NodeKey, spec: NodeSpec) -> Option<Vec<String>> {
        let node = self.nodes.get_mut(&key)?;
        let mut services = BTreeMap::new();
        for s in &spec.services {
            let state = match node.services.remove(&s.name) {
                Some(mut kept) => {
                    kept.max_concurrent = s.max_concurrent;
                    kept.load_ms = s.load_ms;
                    kept
                }
                None => ServiceState::new(s, &node.spec),
            };
            services.insert(s.name.clone(), state);
        }
        let before = std::mem::replace(&mut node.services, services);
        let slots = std::mem::take(&mut node.spec.slots);
        node.spec = NodeSpec { slots, ..spec };
        let now: Vec<String> = node.services.keys().cloned().collect();
        self.unindex(key, before.keys());
        self.index(key, &now);
        Some(now)
    }

    /// Removes node `key`, returning it.
    pub fn remove(&mut self, key: NodeKey) -> Option<Node> {
        let node = self.nodes.remove(&key)?;
        self.unindex(key, node.services.keys());
        Some(node)
    }

    /// Node `key`, if up.
    pub fn get(&self, key: NodeKey) -> Option<&Node> {
        self.nodes.get(&key)
    }

    /// Node `key`, if up, to change.
    pub fn get_mut(&mut self, key: NodeKey) -> Option<&mut Node> {
        self.nodes.get_mut(&key)
    }

    /// One service's state on one node, if both exist.
    pub fn service_mut(&mut self, key: NodeKey, service: &str) -> Option<&mut ServiceState> {
        self.nodes.get_mut(&key)?.services.get_mut(service)
    }

    /// Every node, by key.
    pub fn iter(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// Every node, by key, to change.
    pub(crate) fn nodes_mut(&mut self) -> impl Iterator<Item = &mut Node> {
        self.nodes.values_mut()
    }

    /// Nodes up.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node is up.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether some node has `service` loaded or can load it into a slot.
    pub fn knows(&self, service: &str) -> bool {
        self.iter().any(|n| n.services.contains_key(service))
    }

    /// Whether some node that hosts `service` (loaded or loadable) is not
    /// draining: a call can be served some day without an operator.
    pub fn serves(&self, service: &str) -> bool {
        self.iter()
            .any(|n| n.services.contains_key(service) && !n.draining)
    }

    /// The nodes that have `service` loaded and are not draining, by key,
    /// whether or not they have a free slot.
    pub fn hosting<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.iter()
            .filter(move |n| !n.draining && n.is_loaded(service))
    }

    /// Every service some node hosts now, sorted.
    pub fn service_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .iter()
            .flat_map(|n| n.services.keys().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

impl Node {
    /// Whether calls of `service` can run here now.
    pub fn is_loaded(&self, service: &str) -> bool {
        self.services.get(service).is_some_and(|s| s.loaded)
    }

    /// Whether a new call of `service` can start here now: not draining,
    /// loaded, not ejected, healthy, fewer than `max_concurrent` in flight.
    pub fn has_free_slot(&self, service: &str) -> bool {
        !self.draining
            && self.services.get(service).is_some_and(|s| {
                s.loaded && s.healthy && s.ejected_until.is_none() && s.load() < s.max_concurrent
            })
    }

    /// Takes a load report from the node: `in_flight` as `(service, calls
    /// in flight on the node)`, counted as `counted` says. Each known
    /// service named gets `others`: the figure itself ([`Counted::Others`])
    /// or the figure less this gateway's calls in flight, never below 0
    /// ([`Counted::All`]). Unknown services are ignored, services left out
    /// keep their figure. Returns the services that have more room than
    /// before (their queues may move).
    pub fn set_load(&mut self, in_flight: &[(String, u32)], counted: Counted) -> Vec<String> {
        let mut freer = Vec::new();
        for (name, count) in in_flight {
            if let Some(s) = self.services.get_mut(name) {
                let others = match counted {
                    Counted::All => count.saturating_sub(s.in_flight),
                    Counted::Others => *count,
                };
                if others < s.others {
                    freer.push(name.clone());
                }
                s.others = others;
            }
        }
        freer
    }

    /// Takes the node's report of its job calls in flight, counted as
    /// `counted` says (as [`Node::set_load`]): the other gateways' count
    /// until the next report. Whether the others run fewer than before
    /// (held job calls may find room).
    pub fn set_jobs_load(&mut self, count: u32, counted: Counted) -> bool {
        let others = match counted {
            Counted::All => count.saturating_sub(self.jobs_in_flight),
            Counted::Others => count,
        };
        let fewer = others < self.jobs_others;
        self.jobs_others = others;
        fewer
    }

    /// The node refused a call of `service` for being at its
    /// `max_concurrent`: until its next load report, other gateways are
    /// taken to hold every slot this gateway does not.
    pub fn mark_full(&mut self, service: &str) {
        if let Some(s) = self.services.get_mut(service) {
            s.others = s.max_concurrent.saturating_sub(s.in_flight);
        }
    }

    /// Takes a stats report's health verdicts: every service it names in
    /// `unhealthy` is marked so, every other one healthy. Returns the
    /// services that became healthy again (their queues may move).
    pub fn set_health(&mut self, unhealthy: &[String]) -> Vec<String> {
        let mut recovered = Vec::new();
        for (name, state) in &mut self.services {
            let healthy = !unhealthy.contains(name);
            if healthy && !state.healthy {
                recovered.push(name.clone());
            }
            state.healthy = healthy;
        }
        recovered
    }

    /// Takes a stats report's model-server load: each service it names gets
    /// its entry (the first, where one is named twice), every other one
    /// `None`.
    pub fn set_model_load(&mut self, loads: &[protocol::ServiceLoad]) {
        for (name, state) in &mut self.services {
            state.model_load = loads
                .iter()
                .find(|l| &l.service == name)
                .map(crate::balance::model_load);
        }
    }

    /// The model server's load of `service` here, if reported.
    pub fn model_load(&self, service: &str) -> Option<ModelLoad> {
        self.services.get(service).and_then(|s| s.model_load)
    }

    /// Whether the node is ejected from `service`'s candidates.
    pub fn is_ejected(&self, service: &str) -> bool {
        self.services
            .get(service)
            .is_some_and(|s| s.ejected_until.is_some())
    }

    /// Calls of `service` this gateway runs here.
    pub fn in_flight(&self, service: &str) -> u32 {
        self.services.get(service).map_or(0, |s| s.in_flight)
    }

    /// Calls of every service this gateway runs here.
    pub fn in_flight_total(&self) -> u32 {
        self.services.values().map(|s| s.in_flight).sum()
    }

    /// Calls of `service` running here, this gateway's and the others'
    /// (as [`ServiceState::load`]).
    pub fn load(&self, service: &str) -> u32 {
        self.services.get(service).map_or(0, ServiceState::load)
    }

    /// Calls of every service running here, this gateway's and the
    /// others'.
    pub fn load_total(&self) -> u32 {
        self.services.values().map(ServiceState::load).sum()
    }

    /// `max_concurrent` of `service` here (0 when not hosted).
    pub fn max_concurrent(&self, service: &str) -> u32 {
        self.services.get(service).map_or(0, |s| s.max_concurrent)
    }

    /// The latency estimate of `service` here.
    pub fn latency(&self, service: &str) -> Ewma {
        self.services
            .get(service)
            .map(|s| s.latency)
            .unwrap_or_default()
    }

    /// A view for `switchyard nodes` and the dashboard.
    pub fn view(&self, now: Instant) -> NodeView {
        let services = self
            .services
            .iter()
            .map(|(name, s)| ServiceView {
                name: name.clone(),
                in_flight: s.in_flight,
                max_concurrent: s.max_concurrent,
                latency_ms: s.latency.value_ms,
                loaded: s.loaded,
                unhealthy: !s.healthy,
                ejected_for_ms: s
                    .ejected_until
                    .map_or(0, |t| millis(t.saturating_duration_since(now)).max(1)),
                ejections: s.ejections,
                ejected_why: s
                    .ejected_until
                    .and(s.ejected_why)
                    .map(|w| w.as_str().to_string()),
            })
            .collect();
        NodeView {
            key: self.key,
            spec: self.spec.clone(),
            stats: self.stats.clone(),
            services,
            slots: self.slots.views(now),
            draining: self.draining,
            connected_ms: millis(now.saturating_duration_since(self.registered_at)),
            last_stats_ms: millis(now.saturating_duration_since(self.last_stats_at)),
            calls_total: self.calls_total,
            jobs_in_flight: self.jobs_in_flight.saturating_add(self.jobs_others),
            direct: None,
        }
    }
}

pub(crate) fn millis(d: Duration) -> u64 {
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
        e.add(-1.0);
        assert_eq!(e.samples, 2, "bad samples ignored");
    }
}
