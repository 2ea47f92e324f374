//! Simulated slots: loading a service into a slot (answering the core's
//! swaps, or the oracle's preloads) once the old service's calls are done.

use super::*;

impl Sim {
    /// Starts a slot's load once no call of the service it held is left on
    /// the node.
    pub(super) fn try_load(&mut self, node: usize, slot: usize) {
        let now = self.now;
        let n = &self.nodes[node];
        let s = &n.slots[slot];
        let SlotLoad::Draining { to, swap_id, asked } = s.load else {
            return;
        };
        if s.loaded.is_some_and(|old| n.active[old] > 0) {
            return;
        }
        let fail = n.window(now as f64 / 1e9).map_or(0.0, |w| w.fail);
        let ok = !(fail > 0.0 && self.fail_rng.random::<f64>() < fail);
        let load_ms = self.services[to].load_ms;
        let s = &mut self.nodes[node].slots[slot];
        s.loaded = None;
        s.load = SlotLoad::Loading {
            to,
            swap_id,
            asked,
            ok,
        };
        self.at(
            now + Nanos::from(load_ms) * 1_000_000,
            Ev::LoadDone { node, slot },
        );
    }

    pub(super) fn load_done(&mut self, node: usize, slot: usize) {
        let s = &mut self.nodes[node].slots[slot];
        let SlotLoad::Loading {
            to,
            swap_id,
            asked,
            ok,
        } = s.load
        else {
            return;
        };
        s.load = SlotLoad::Idle;
        s.loaded = ok.then_some(to);
        let report = SwapReport {
            swap_id,
            slot: s.name.clone(),
            loaded: ok.then(|| self.services[to].name.clone()),
            error: (!ok).then(|| "load failed (simulated failure window)".to_string()),
            duration_ms: u32::try_from((self.now - asked) / 1_000_000).unwrap_or(u32::MAX),
        };
        self.core(Event::SwapReported {
            node: key(node),
            report,
        });
    }

    /// The oracle's load: the slot stops taking calls now (reported empty),
    /// loads once its calls are done, and is reported loaded.
    pub(super) fn preload(&mut self, i: usize) {
        let p = &self.preloads[i];
        let (node, slot, service) = (p.node, p.slot, p.service);
        if let Some(every) = p.every
            && self.now + every < self.end
        {
            self.at(self.now + every, Ev::Preload(i));
        }
        let s = &self.nodes[node].slots[slot];
        let busy_with_it = match s.load {
            SlotLoad::Idle => s.loaded == Some(service),
            SlotLoad::Draining { to, .. } | SlotLoad::Loading { to, .. } => to == service,
        };
        if busy_with_it || s.load != SlotLoad::Idle {
            return;
        }
        self.swaps += 1;
        let name = s.name.clone();
        self.nodes[node].slots[slot].load = SlotLoad::Draining {
            to: service,
            swap_id: 0,
            asked: self.now,
        };
        self.core(Event::SwapReported {
            node: key(node),
            report: SwapReport {
                swap_id: 0,
                slot: name,
                loaded: None,
                error: None,
                duration_ms: 0,
            },
        });
        self.try_load(node, slot);
    }
}
