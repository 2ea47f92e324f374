//! Swap planning: when calls wait for a service and an idle slot that can
//! host it holds something else, ask its agent to load the service, and
//! reserve the call at the head of the queue for that node.
//!
//! The rules (seed 000's swapping, with its per-node `swap_cd`, plus what it
//! lacks):
//! 1. Nodes with the service loaded serve first; a swap is considered only
//!    for calls still waiting after every free slot was used.
//! 2. A slot is a candidate when it can host the service, has no swap under
//!    way, the service it holds has no call in flight on the node, the
//!    node's cooldown (`swap_cooldown_s`, default 60 s) has passed since its
//!    last swap, and the slot did not fail to load this service within the
//!    service's cooldown.
//! 3. A service that a swap loaded stays at least its own cooldown
//!    (`[services.NAME] swap_cooldown_s`, default 0).
//! 4. A service with calls of its own waiting is swapped away only when the
//!    queue that wants the slot is at least `queue_ratio` (default 4) times
//!    longer.
//! 5. Cost: a swap starts only when the expected wait exceeds the load time
//!    the agent reported times `cost_factor` (default 1). The expected wait
//!    is unbounded when no node has the service loaded (nor is loading it);
//!    otherwise it is the larger of the head's wait so far and
//!    ceil(waiting / concurrent slots) × the service's mean latency EWMA.
//! 6. Empty slots go first, then slots whose service nobody waits for, then
//!    the shortest load time, then node id. One swap reserves one call;
//!    swaps continue while calls wait unreserved and the rules allow.
//!
//! A failed swap (start, readiness, timeout, node lost) blocks the service
//! on that slot for max(`failure_cooldown_s` (default 30 s), node cooldown,
//! service cooldown) and puts the reserved call back at the head of its
//! queue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::{Message, Reserved, SwapReport, SwapRequest};

use crate::queue::{Grant, ServiceQueue, Waiter};
use crate::registry::Node;
use crate::scheduler::{Scheduler, State};
use crate::slots::PendingSwap;

/// A swap under way and the call it holds.
pub(crate) struct Reservation {
    pub(crate) node: Arc<Node>,
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
    node: Arc<Node>,
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

impl Scheduler {
    /// Starts the swaps the rules allow for `service`'s waiting calls.
    pub(crate) fn plan_swaps(&self, state: &mut State, service: &str, now: Instant) {
        if !self.config.swap.enabled {
            return;
        }
        let Some(queue) = state.queues.get(service) else {
            return;
        };
        let loaded = self.registry.hosting(service);
        let samples: Vec<f64> = loaded
            .iter()
            .map(|n| n.latency(service))
            .filter(|e| e.samples > 0)
            .map(|e| f64::from(e.value_ms))
            .collect();
        let loading: u32 = state
            .reservations
            .values()
            .filter(|r| r.service == service)
            .map(|r| max_concurrent(&r.node, service))
            .sum();
        let mut demand = Demand {
            waiting: queue.len(),
            head_waited_ms: queue.oldest().map_or(0.0, |t| {
                now.saturating_duration_since(t).as_secs_f64() * 1000.0
            }),
            capacity: loaded
                .iter()
                .map(|n| max_concurrent(n, service))
                .sum::<u32>()
                + loading,
            latency_ms: if samples.is_empty() {
                0.0
            } else {
                samples.iter().sum::<f64>() / samples.len() as f64
            },
        };
        while demand.waiting > 0 {
            let best = self
                .candidates(state, service, demand.waiting, now)
                .into_iter()
                .filter(|c| demand.worth_swapping(c.load_ms, self.config.swap.cost_factor))
                .min_by_key(|c| c.rank);
            let Some(candidate) = best else { break };
            let capacity = candidate.max_concurrent;
            if !self.start_swap(state, candidate, service, now) {
                break;
            }
            demand.waiting -= 1;
            demand.capacity += capacity;
        }
    }

    fn candidates(
        &self,
        state: &State,
        service: &str,
        waiting: usize,
        now: Instant,
    ) -> Vec<Candidate> {
        let mut out = Vec::new();
        for node in self.registry.all() {
            let Some(entry) = node.services.get(service) else {
                continue;
            };
            if node.is_draining() {
                continue;
            }
            let slots = node.slots();
            if slots.cooldown_left(now) > Duration::ZERO {
                continue;
            }
            let Some(slot) = slots
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
                victim_waiting = state.queues.get(victim).map_or(0, ServiceQueue::len);
                let resident = slot.loaded_by_swap
                    && now < slot.loaded_at + self.config.service_swap_cooldown(victim);
                if node.in_flight(victim) > 0
                    || resident
                    || !may_evict(victim_waiting, waiting, self.config.swap.queue_ratio)
                {
                    continue;
                }
            }
            out.push(Candidate {
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
                node: node.clone(),
            });
        }
        out
    }

    /// Sends the swap request, unloads the old service and reserves the
    /// queue's head. False when the node cannot take it now.
    fn start_swap(&self, state: &mut State, c: Candidate, service: &str, now: Instant) -> bool {
        let node = &c.node;
        if let Some(victim) = &c.from
            && !node.unload(victim)
        {
            return false;
        }
        let swap_id = self.next_swap_id();
        let request = Message::Swap(SwapRequest {
            swap_id,
            slot: c.slot.clone(),
            service: service.to_string(),
        });
        if node.control.try_send(request).is_err() {
            if let Some(victim) = &c.from {
                node.set_loaded(victim, true);
            }
            return false;
        }
        {
            let mut slots = node.slots();
            slots.last_swap = Some(now);
            if let Some(slot) = slots.get_mut(&c.slot) {
                slot.swapping = Some(PendingSwap {
                    swap_id,
                    to: service.to_string(),
                    from: c.from.clone(),
                    started: now,
                });
            }
        }
        let waiter = state.queues.get_mut(service).and_then(|q| {
            q.peek()?;
            q.pop()
        });
        if let Some(waiter) = &waiter {
            waiter.reserve(Reserved {
                node_id: node.spec.id.clone(),
                service: service.to_string(),
                from: c.from.clone(),
                expected_ms: c.load_ms,
            });
        }
        tracing::info!(node = %node.spec.id, slot = %c.slot, from = ?c.from, to = service, swap_id, "swap started");
        metrics::counter!("swaps_started_total", "node" => node.spec.id.clone(), "to" => service.to_string())
            .increment(1);
        state.reservations.insert(
            swap_id,
            Reservation {
                node: node.clone(),
                slot: c.slot,
                service: service.to_string(),
                from: c.from,
                deadline: now + Duration::from_secs(u64::from(self.config.swap.timeout_s)),
                waiter,
            },
        );
        true
    }

    /// Applies an agent's report of a slot's state, finishing the swap it
    /// answers (if any): the reserved call gets the node, or goes back to
    /// the head of its queue.
    pub(crate) fn on_report(&self, node: &Arc<Node>, report: SwapReport, now: Instant) {
        let mut state = self.lock();
        let mut reservation = state.reservations.remove(&report.swap_id);
        if let Some(r) = reservation.take_if(|r| !Arc::ptr_eq(&r.node, node)) {
            // Not this node's swap: keep it for its own node.
            state.reservations.insert(report.swap_id, r);
        }
        let ok = report.error.is_none()
            && reservation
                .as_ref()
                .is_none_or(|r| report.loaded.as_deref() == Some(r.service.as_str()));
        {
            let mut slots = node.slots();
            if let Some(slot) = slots.get_mut(&report.slot) {
                let loaded = report.loaded.clone().filter(|s| slot.can_host.contains(s));
                for name in &slot.can_host {
                    node.set_loaded(name, loaded.as_deref() == Some(name.as_str()));
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
                if let Some(r) = reservation.as_ref().filter(|_| !ok) {
                    let block = self.config.failed_swap_block(&node.spec.id, &r.service);
                    slot.failed_until.insert(r.service.clone(), now + block);
                }
            } else {
                tracing::warn!(node = %node.spec.id, slot = %report.slot, "swap report for an unknown slot");
            }
        }
        let Some(r) = reservation else {
            tracing::info!(node = %node.spec.id, slot = %report.slot, loaded = ?report.loaded, error = ?report.error, "slot changed");
            let services: Vec<String> = node.services.keys().cloned().collect();
            drop(state);
            for service in services {
                self.kick(&service, now);
            }
            return;
        };
        let outcome = if ok { "ok" } else { "failed" };
        record_swap(node, &r, outcome, f64::from(report.duration_ms));
        if ok {
            tracing::info!(node = %node.spec.id, slot = %r.slot, from = ?r.from, to = %r.service, ms = report.duration_ms, "swap done");
        } else {
            tracing::warn!(node = %node.spec.id, slot = %r.slot, to = %r.service, error = ?report.error, "swap failed; the call goes back to the head of the queue");
        }
        if let Some(waiter) = r.waiter {
            let guard = if ok {
                node.try_acquire(&r.service)
            } else {
                None
            };
            let capacity = self.config.queue_capacity(&r.service);
            let queue = state
                .queues
                .entry(r.service.clone())
                .or_insert_with(|| ServiceQueue::new(capacity));
            match guard {
                Some(guard) => {
                    queue.dispatched_total += 1;
                    metrics::histogram!(
                        "queue_wait_seconds",
                        "service" => r.service.clone(),
                        "tenant" => waiter.tenant.to_string(),
                    )
                    .record(now.saturating_duration_since(waiter.enqueued).as_secs_f64());
                    let picked = self.policies.swap_pick(&r.service);
                    waiter.give(Ok(Grant { guard, picked }));
                }
                None => queue.put_back(waiter),
            }
        }
        drop(state);
        self.kick(&r.service, now);
    }

    /// A node left: its swaps under way fail and their calls go back.
    pub(crate) fn node_down(&self, node: &Arc<Node>, now: Instant) {
        let ids: Vec<u64> = self
            .lock()
            .reservations
            .iter()
            .filter(|(_, r)| Arc::ptr_eq(&r.node, node))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.abandon(id, "node_lost", now);
        }
    }

    /// Swaps whose report is overdue count as failed.
    pub(crate) fn expire_swaps(&self, now: Instant) {
        let ids: Vec<u64> = self
            .lock()
            .reservations
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.abandon(id, "timeout", now);
        }
    }

    fn abandon(&self, swap_id: u64, outcome: &'static str, now: Instant) {
        let mut state = self.lock();
        let Some(r) = state.reservations.remove(&swap_id) else {
            return;
        };
        {
            let block = self.config.failed_swap_block(&r.node.spec.id, &r.service);
            let mut slots = r.node.slots();
            if let Some(slot) = slots.get_mut(&r.slot) {
                slot.swapping = None;
                slot.swaps_total += 1;
                slot.failed_until.insert(r.service.clone(), now + block);
            }
        }
        record_swap(&r.node, &r, outcome, 0.0);
        tracing::warn!(node = %r.node.spec.id, slot = %r.slot, to = %r.service, outcome, "swap abandoned; the call goes back to the head of the queue");
        let service = r.service.clone();
        if let Some(waiter) = r.waiter {
            let capacity = self.config.queue_capacity(&service);
            state
                .queues
                .entry(service.clone())
                .or_insert_with(|| ServiceQueue::new(capacity))
                .put_back(waiter);
        }
        drop(state);
        self.kick(&service, now);
    }
}

fn max_concurrent(node: &Node, service: &str) -> u32 {
    node.services.get(service).map_or(0, |s| s.max_concurrent)
}

fn record_swap(node: &Node, r: &Reservation, outcome: &'static str, duration_ms: f64) {
    metrics::counter!(
        "swaps_total",
        "node" => node.spec.id.clone(),
        "from" => r.from.clone().unwrap_or_else(|| "none".into()),
        "to" => r.service.clone(),
        "outcome" => outcome,
    )
    .increment(1);
    if outcome == "ok" || outcome == "failed" {
        metrics::histogram!("swap_duration_seconds", "node" => node.spec.id.clone(), "service" => r.service.clone())
            .record(duration_ms / 1000.0);
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
