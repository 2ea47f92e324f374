//! Swap planning: when calls wait for a service and an idle slot that can
//! host it holds something else, ask its agent to load the service, and
//! reserve the call at the head of the queue for that node.
//!
//! The rules:
//! 1. Nodes with the service loaded serve first; a swap is considered only
//!    for calls still waiting after every free slot was used.
//! 2. A slot is a candidate when it can host the service, has no swap under
//!    way, the service it holds has no call in flight on the node, the
//!    node's cooldown has passed since its last swap, and the slot did not
//!    fail to load this service within the failure block.
//! 3. A service that a swap loaded stays at least its own cooldown.
//! 4. A service with calls of its own waiting is swapped away only when the
//!    queue that wants the slot is at least `queue_ratio` times longer.
//! 5. Cost: a swap starts only when the expected wait exceeds the load time
//!    the agent reported times `cost_factor`. The expected wait is
//!    unbounded when no node has the service loaded (nor is loading it);
//!    otherwise it is the larger of the head's wait so far and
//!    ceil(waiting / concurrent slots) × the service's mean latency EWMA.
//! 6. Empty slots go first, then slots whose service nobody waits for, then
//!    the shortest load time, then node key. One swap reserves one call;
//!    swaps continue while calls wait unreserved and the rules allow.
//!
//! A failed swap (report with an error, timeout, node lost, request not
//! sent) blocks the service on that slot for
//! [`CoreConfig::failed_swap_block`](crate::CoreConfig::failed_swap_block)
//! and puts the reserved call back at the head of its queue.

use std::time::{Duration, Instant};

use protocol::{Reserved, SwapReport, SwapRequest};

use super::queue::{ServiceQueue, Waiter};
use crate::fleet::PendingSwap;
use crate::{Action, Core, NodeKey, Stage, Via};

/// A swap under way and the call it holds.
#[derive(Debug)]
pub(crate) struct Reservation {
    pub(crate) node: NodeKey,
    pub(crate) epoch: u64,
    pub(crate) slot: String,
    pub(crate) service: String,
    pub(crate) from: Option<String>,
    pub(crate) deadline: Instant,
    /// The reserved call; `None` once it left (timed out, client gone).
    pub(crate) waiter: Option<Waiter>,
}

/// What waits for a service, for the cost rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Demand {
    /// Calls waiting, not reserved.
    pub waiting: usize,
    /// How long the oldest waiting call has waited, ms.
    pub head_waited_ms: f64,
    /// Calls the nodes with the service loaded (or loading it) run at once.
    pub capacity: u32,
    /// Mean latency EWMA of the service on those nodes, ms (0: no samples).
    pub latency_ms: f64,
}

/// A slot that may load the service.
struct Candidate {
    node: NodeKey,
    slot: String,
    from: Option<String>,
    load_ms: u32,
    max_concurrent: u32,
    rank: (bool, usize, u32, u32),
}

impl Demand {
    /// Expected wait without a swap, ms (infinite with no capacity).
    pub fn expected_wait_ms(&self) -> f64 {
        if self.capacity == 0 {
            return f64::INFINITY;
        }
        let rounds = self.waiting.div_ceil(self.capacity as usize) as f64;
        self.head_waited_ms.max(rounds * self.latency_ms)
    }

    /// Whether loading the service (`load_ms`) beats waiting (rule 5).
    pub fn worth_swapping(&self, load_ms: u32, cost_factor: f32) -> bool {
        self.waiting > 0 && self.expected_wait_ms() > f64::from(load_ms) * f64::from(cost_factor)
    }
}

/// Whether a slot whose service has `victim_waiting` calls waiting may be
/// given to a service with `waiting` calls waiting (rule 4).
pub fn may_evict(victim_waiting: usize, waiting: usize, queue_ratio: u32) -> bool {
    victim_waiting == 0
        || victim_waiting
            .checked_mul(queue_ratio as usize)
            .is_some_and(|needed| waiting >= needed)
}

impl Core {
    /// Starts the swaps the rules allow for `service`'s waiting calls.
    pub(crate) fn plan_swaps(&mut self, service: &str, now: Instant) {
        if !self.config.swap.enabled {
            return;
        }
        let Some(queue) = self.queues.get(service) else {
            return;
        };
        let mut demand = self.demand(service, queue, now);
        while demand.waiting > 0 {
            let cost_factor = self.config.swap.cost_factor;
            let best = self
                .swap_candidates(service, demand.waiting, now)
                .into_iter()
                .filter(|c| demand.worth_swapping(c.load_ms, cost_factor))
                .min_by_key(|c| c.rank);
            let Some(candidate) = best else { break };
            demand.waiting -= 1;
            demand.capacity += candidate.max_concurrent;
            self.start_swap(candidate, service, now);
        }
    }

    fn demand(&self, service: &str, queue: &ServiceQueue, now: Instant) -> Demand {
        let samples: Vec<f64> = self
            .fleet
            .hosting(service)
            .map(|n| n.latency(service))
            .filter(|e| e.samples > 0)
            .map(|e| f64::from(e.value_ms))
            .collect();
        let loading: u32 = self
            .reservations
            .values()
            .filter(|r| r.service == service)
            .filter_map(|r| self.fleet.get(r.node))
            .map(|n| n.max_concurrent(service))
            .sum();
        Demand {
            waiting: queue.len(),
            head_waited_ms: queue.oldest().map_or(0.0, |t| {
                now.saturating_duration_since(t).as_secs_f64() * 1000.0
            }),
            capacity: self
                .fleet
                .hosting(service)
                .map(|n| n.max_concurrent(service))
                .sum::<u32>()
                + loading,
            latency_ms: if samples.is_empty() {
                0.0
            } else {
                samples.iter().sum::<f64>() / samples.len() as f64
            },
        }
    }

    fn swap_candidates(&self, service: &str, waiting: usize, now: Instant) -> Vec<Candidate> {
        let mut out = Vec::new();
        for node in self.fleet.iter() {
            let Some(entry) = node.services.get(service) else {
                continue;
            };
            if node.draining || node.slots.cooldown_left(now) > Duration::ZERO {
                continue;
            }
            let Some(slot) = node
                .slots
                .slots
                .iter()
                .find(|s| s.can_host.iter().any(|n| n == service))
            else {
                continue;
            };
            if slot.swapping.is_some()
                || slot.loaded.as_deref() == Some(service)
                || !slot.may_try(service, now)
            {
                continue;
            }
            let mut victim_waiting = 0;
            if let Some(victim) = &slot.loaded {
                victim_waiting = self.queues.get(victim).map_or(0, ServiceQueue::len);
                let resident = slot.loaded_by_swap
                    && now < slot.loaded_at + self.config.service_swap_cooldown(victim);
                // Other gateways' calls hold the victim too (the node
                // refuses to unload a service with calls in flight).
                if node.load(victim) > 0
                    || resident
                    || !may_evict(victim_waiting, waiting, self.config.swap.queue_ratio)
                {
                    continue;
                }
            }
            out.push(Candidate {
                node: node.key,
                slot: slot.name.clone(),
                from: slot.loaded.clone(),
                load_ms: entry.load_ms,
                max_concurrent: entry.max_concurrent,
                rank: (
                    slot.loaded.is_some(),
                    victim_waiting,
                    entry.load_ms,
                    node.key,
                ),
            });
        }
        out
    }

    /// Unloads the old service (no call of it runs: rule 2), asks for the
    /// swap and reserves the queue's head.
    fn start_swap(&mut self, c: Candidate, service: &str, now: Instant) {
        let swap_id = self.next_swap_id;
        self.next_swap_id += 1;
        let Some(node) = self.fleet.get_mut(c.node) else {
            return;
        };
        if let Some(victim) = &c.from
            && let Some(s) = node.services.get_mut(victim)
        {
            s.loaded = false;
        }
        node.slots.last_swap = Some(now);
        if let Some(slot) = node.slots.get_mut(&c.slot) {
            slot.swapping = Some(PendingSwap {
                swap_id,
                to: service.to_string(),
                from: c.from.clone(),
                started: now,
            });
        }
        let node_id = node.spec.id.clone();
        let epoch = node.epoch;
        self.out.push(Action::Swap {
            node: c.node,
            request: SwapRequest {
                swap_id,
                slot: c.slot.clone(),
                service: service.to_string(),
            },
            from: c.from.clone(),
        });
        let waiter = self.queues.get_mut(service).and_then(ServiceQueue::pop);
        if let Some(waiter) = &waiter {
            if let Some(call) = self.calls.get_mut(&waiter.call) {
                call.stage = Stage::Reserved { swap_id };
            }
            self.out.push(Action::Reserved {
                call: waiter.call,
                notice: Reserved {
                    node_id: node_id.clone(),
                    service: service.to_string(),
                    from: c.from.clone(),
                    expected_ms: c.load_ms,
                },
            });
        }
        self.publish(service);
        tracing::info!(node = %node_id, slot = %c.slot, from = ?c.from, to = service, swap_id, "swap started");
        self.reservations.insert(
            swap_id,
            Reservation {
                node: c.node,
                epoch,
                slot: c.slot,
                service: service.to_string(),
                from: c.from,
                deadline: now + self.config.swap.timeout,
                waiter,
            },
        );
    }

    /// Applies an agent's report of a slot's state, finishing the swap it
    /// answers (if any): the reserved call gets the node, or goes back to
    /// the head of its queue.
    pub(crate) fn on_report(&mut self, key: NodeKey, report: SwapReport, now: Instant) {
        let Some(node) = self.fleet.get(key) else {
            return;
        };
        let epoch = node.epoch;
        let node_id = node.spec.id.clone();
        let reservation = match self.reservations.get(&report.swap_id) {
            Some(r) if r.node == key && r.epoch == epoch => {
                self.reservations.remove(&report.swap_id)
            }
            _ => None,
        };
        let ok = report.error.is_none()
            && reservation
                .as_ref()
                .is_none_or(|r| report.loaded.as_deref() == Some(r.service.as_str()));
        let block = reservation
            .as_ref()
            .map(|r| self.config.failed_swap_block(&node_id, &r.service));
        let Some(node) = self.fleet.get_mut(key) else {
            return;
        };
        if let Some(slot) = node.slots.get_mut(&report.slot) {
            let loaded = report.loaded.clone().filter(|s| slot.can_host.contains(s));
            for name in &slot.can_host {
                if let Some(s) = node.services.get_mut(name) {
                    s.loaded = loaded.as_deref() == Some(name.as_str());
                }
            }
            slot.loaded = loaded;
            slot.loaded_at = now;
            slot.loaded_by_swap = reservation.is_some() && ok;
            if slot
                .swapping
                .as_ref()
                .is_some_and(|p| p.swap_id == report.swap_id)
            {
                slot.swapping = None;
                slot.swaps_total += 1;
            }
            if let (Some(r), Some(block), false) = (&reservation, block, ok) {
                slot.failed_until.insert(r.service.clone(), now + block);
            }
        } else {
            tracing::warn!(node = %node_id, slot = %report.slot, "swap report for an unknown slot");
        }
        let Some(r) = reservation else {
            tracing::info!(node = %node_id, slot = %report.slot, loaded = ?report.loaded, error = ?report.error, "slot changed");
            let services: Vec<String> = node.services.keys().cloned().collect();
            for service in services {
                self.kick(&service, now);
            }
            return;
        };
        let outcome = if ok { "ok" } else { "failed" };
        if ok {
            tracing::info!(node = %node_id, slot = %r.slot, from = ?r.from, to = %r.service, ms = report.duration_ms, "swap done");
        } else {
            tracing::warn!(node = %node_id, slot = %r.slot, to = %r.service, error = ?report.error, "swap failed; the call goes back to the head of the queue");
        }
        self.out.push(Action::SwapEnded {
            node: key,
            slot: r.slot.clone(),
            from: r.from.clone(),
            to: r.service.clone(),
            outcome,
            duration_ms: report.duration_ms,
        });
        if let Some(waiter) = r.waiter {
            let free = ok
                && self.fleet.get(key).is_some_and(|n| {
                    n.has_free_slot(&r.service)
                        && self
                            .calls
                            .get(&waiter.call)
                            .is_none_or(|c| self.job_room(c, n))
                });
            if free {
                self.queue_mut(&r.service).dispatched_total += 1;
                let waited = now.saturating_duration_since(waiter.enqueued);
                self.start(waiter.call, key, Vec::new(), Via::Swap, Some(waited));
            } else {
                self.put_back(&r.service, waiter);
            }
        }
        self.kick(&r.service, now);
    }

    fn put_back(&mut self, service: &str, waiter: Waiter) {
        let call = waiter.call;
        let key = waiter.key;
        if let Some(c) = self.calls.get_mut(&call) {
            c.stage = Stage::Queued { key, offered: None };
        }
        self.queue_mut(service).put_back(waiter);
        self.publish(service);
    }

    /// Swaps whose report is overdue count as failed.
    pub(crate) fn expire_swaps(&mut self, now: Instant) {
        let overdue: Vec<u64> = self
            .reservations
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        self.abandon_all(overdue, "timeout", now);
    }

    /// Ends the swaps `swap_ids` without a report: each slot leaves its
    /// service alone for the failure block, and every reserved call goes
    /// back to its queue before any queue moves (a call put back ahead of
    /// another is placed first).
    pub(crate) fn abandon_all(&mut self, swap_ids: Vec<u64>, outcome: &'static str, now: Instant) {
        let mut services: Vec<String> = Vec::new();
        for swap_id in swap_ids {
            if let Some(service) = self.end_swap(swap_id, outcome, now)
                && !services.contains(&service)
            {
                services.push(service);
            }
        }
        for service in services {
            self.kick(&service, now);
        }
    }

    /// Ends swap `swap_id` without moving any queue; the service whose
    /// queue should move, if the swap was under way.
    fn end_swap(&mut self, swap_id: u64, outcome: &'static str, now: Instant) -> Option<String> {
        let r = self.reservations.remove(&swap_id)?;
        if let Some(node) = self.fleet.get(r.node).filter(|n| n.epoch == r.epoch) {
            let block = self.config.failed_swap_block(&node.spec.id, &r.service);
            if let Some(slot) = self
                .fleet
                .get_mut(r.node)
                .and_then(|n| n.slots.get_mut(&r.slot))
            {
                slot.swapping = None;
                slot.swaps_total += 1;
                slot.failed_until.insert(r.service.clone(), now + block);
            }
        }
        tracing::warn!(node = r.node, slot = %r.slot, to = %r.service, outcome, "swap abandoned; the call goes back to the head of the queue");
        self.out.push(Action::SwapEnded {
            node: r.node,
            slot: r.slot.clone(),
            from: r.from.clone(),
            to: r.service.clone(),
            outcome,
            duration_ms: 0,
        });
        if let Some(waiter) = r.waiter {
            self.put_back(&r.service, waiter);
        }
        Some(r.service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demand(waiting: usize, head_waited_ms: f64, capacity: u32, latency_ms: f64) -> Demand {
        Demand {
            waiting,
            head_waited_ms,
            capacity,
            latency_ms,
        }
    }

    #[test]
    fn no_capacity_means_any_swap_is_worth_it() {
        assert!(demand(1, 0.0, 0, 0.0).worth_swapping(60_000, 1.0));
        assert!(
            !demand(0, 0.0, 0, 0.0).worth_swapping(1, 1.0),
            "nobody waits"
        );
    }

    #[test]
    fn the_expected_wait_is_weighed_against_the_load_time() {
        // 6 calls on 2 slots of 1 s each: about 3 s of waiting.
        let d = demand(6, 100.0, 2, 1000.0);
        assert_eq!(d.expected_wait_ms(), 3000.0);
        assert!(d.worth_swapping(2000, 1.0));
        assert!(!d.worth_swapping(4000, 1.0));
        assert!(
            !d.worth_swapping(2000, 2.0),
            "a higher cost factor is stricter"
        );
        // Unknown latency: the head's wait so far is the estimate.
        assert!(!demand(3, 200.0, 1, 0.0).worth_swapping(300, 1.0));
        assert!(demand(3, 400.0, 1, 0.0).worth_swapping(300, 1.0));
    }

    #[test]
    fn a_service_with_its_own_queue_is_evicted_only_for_a_much_longer_one() {
        assert!(may_evict(0, 1, 4));
        assert!(!may_evict(2, 7, 4));
        assert!(may_evict(2, 8, 4));
        assert!(!may_evict(usize::MAX, usize::MAX, 4), "no overflow");
    }
}
