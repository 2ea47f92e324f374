//! The whole fleet as one node, per service: what a gateway tells its
//! parent gateway in a tree of gateways (its services, each with the
//! fleet's capacity and what of it is free now).

use std::collections::BTreeMap;

use super::Fleet;

/// One service's capacity over the fleet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capacity {
    /// Calls the fleet runs at once: the `max_concurrent` of every node
    /// that has the service loaded and is not drained.
    pub total: u32,
    /// Calls it would take now: the free slots of those nodes that are
    /// also healthy and not ejected for the service.
    pub free: u32,
    /// Calls running on those nodes (every gateway's).
    pub load: u32,
    /// An OpenAI-compatible model service on some node.
    pub model: bool,
    /// Every node that hosts it says running a call twice is safe.
    pub idempotent: bool,
}

impl Fleet {
    /// Per service hosted by some node that is loaded and not drained:
    /// its [`Capacity`], by name. A service no such node offers is left
    /// out (a parent sends no call for it).
    pub fn capacity(&self) -> BTreeMap<String, Capacity> {
        let mut out: BTreeMap<String, Capacity> = BTreeMap::new();
        for node in self.iter().filter(|n| !n.draining) {
            for (name, s) in node.services.iter().filter(|(_, s)| s.loaded) {
                let spec = node.spec.services.iter().find(|x| &x.name == name);
                let fresh = !out.contains_key(name);
                let c = out.entry(name.clone()).or_default();
                c.total = c.total.saturating_add(s.max_concurrent);
                c.load = c.load.saturating_add(s.load());
                if s.healthy && s.ejected_until.is_none() {
                    let free = s.max_concurrent.saturating_sub(s.load());
                    c.free = c.free.saturating_add(free);
                }
                c.model |= spec.is_some_and(|x| x.model);
                let idempotent = spec.is_some_and(|x| x.idempotent);
                c.idempotent = if fresh {
                    idempotent
                } else {
                    c.idempotent && idempotent
                };
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::tests::spec;

    #[test]
    fn capacity_sums_the_nodes_that_can_take_calls() {
        let now = Instant::now();
        let mut fleet = Fleet::default();
        fleet.insert(
            1,
            spec(
                "a",
                &[("echo", 4, 0), ("llm", 2, 100)],
                &[("gpu0", &["llm"], None)],
            ),
            Duration::ZERO,
            now,
        );
        fleet.insert(2, spec("b", &[("echo", 2, 0)], &[]), Duration::ZERO, now);
        fleet.insert(3, spec("c", &[("echo", 8, 0)], &[]), Duration::ZERO, now);
        if let Some(n) = fleet.get_mut(3) {
            n.draining = true;
        }
        if let Some(s) = fleet.service_mut(1, "echo") {
            s.in_flight = 3;
        }
        if let Some(s) = fleet.service_mut(2, "echo") {
            s.others = 1;
            s.healthy = false;
        }
        let capacity = fleet.capacity();
        let echo = capacity["echo"];
        assert_eq!((echo.total, echo.free, echo.load), (6, 1, 4), "{echo:?}");
        assert!(!capacity.contains_key("llm"), "its slot holds nothing");
    }
}
