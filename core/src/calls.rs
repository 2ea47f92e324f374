//! A call's way through the core: admission (a free slot now, else the
//! queue, else `occupied` / `overloaded`), picks and their rankings, late
//! binding of the queue's head when a slot frees, the end of a call.

use std::sync::Arc;
use std::time::Instant;

use rand::Rng as _;

use protocol::{CallError, CallHead, ErrorKind};

use crate::balance::{Candidate, PickRequest, Ranking};
use crate::schedule::queue::{QueueKey, Waiter};
use crate::{Action, Call, CallEnd, CallId, Core, NodeKey, PickError, Stage, Via};

/// A call's arrival, as [`crate::Event::CallArrived`] tells it.
pub(crate) struct Arrival {
    pub(crate) call: CallId,
    pub(crate) head: Arc<CallHead>,
    pub(crate) tenant: Arc<str>,
    pub(crate) prefix: Arc<[u64]>,
    pub(crate) job: bool,
    pub(crate) exclude: Vec<NodeKey>,
}

impl Core {
    /// A call arrived: a pick now when nobody waits (or it is realtime) and
    /// a node has a free slot, else the queue.
    pub(crate) fn arrive(&mut self, arrival: Arrival, now: Instant) {
        let Arrival {
            call,
            head,
            tenant,
            prefix,
            job,
            exclude,
        } = arrival;
        if self.calls.contains_key(&call) {
            self.out.push(Action::Reject {
                call,
                error: CallError::new(
                    ErrorKind::Internal,
                    format!("call id {call} is already in use"),
                ),
            });
            return;
        }
        let service = head.service.clone();
        self.calls.insert(
            call,
            Call {
                head,
                tenant,
                prefix,
                exclude,
                attempt: 1,
                job,
                stage: Stage::Picking {
                    offered: Vec::new(),
                },
            },
        );
        if !self.fleet.knows(&service) {
            return self.reject(
                call,
                ErrorKind::UnknownService,
                format!("no node hosts service {service:?}"),
            );
        }
        if !self.fleet.serves(&service) {
            return self.reject(
                call,
                ErrorKind::NoNodeAvailable,
                format!("every node hosting service {service:?} is draining"),
            );
        }
        if self.breakers_refuse(call, &service) {
            return;
        }
        self.admit(call, now);
    }

    /// Asks for a pick when nobody waits (or the call is realtime) and a
    /// node has a free slot; else queues the call.
    pub(crate) fn admit(&mut self, call: CallId, now: Instant) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let service = c.head.service.clone();
        let nobody_waits = self.queues.get(&service).is_none_or(|q| q.is_empty());
        if nobody_waits || c.head.realtime {
            let candidates = self.candidates(call);
            if !candidates.is_empty() {
                return self.ask_pick(call, candidates, false);
            }
        }
        self.enqueue(call, now);
    }

    /// The free nodes call `call` may go to, as its policy sees them, in
    /// key order: every one, or past the service's `max_candidates` a
    /// uniform random sample of that many.
    pub(crate) fn candidates(&mut self, call: CallId) -> Vec<Candidate> {
        let Core {
            calls,
            fleet,
            config,
            rng,
            max_jobs_per_node,
            ..
        } = self;
        let Some(c) = calls.get(&call) else {
            return Vec::new();
        };
        let service = c.head.service.as_str();
        // One lookup of the service per node (`Node::has_free_slot`'s test).
        let free = |n: &crate::Node| {
            let s = n.services.get(service)?;
            let free = !n.draining
                && s.loaded
                && s.healthy
                && s.ejected_until.is_none()
                && s.load() < s.max_concurrent;
            (free && !c.exclude.contains(&n.key) && Core::job_room_within(*max_jobs_per_node, c, n))
                .then(|| candidate_of(n, s))
        };
        let bound = config.max_candidates(service);
        let hosts = fleet.hosts(service);
        if bound == 0 || hosts.len() <= bound {
            return fleet.iter().filter_map(free).collect();
        }
        // A partial Fisher-Yates shuffle of the hosts, stopped once `bound`
        // free ones are drawn: each free node is offered with the same
        // chance, and a pick touches about `bound` nodes, not the fleet.
        let mut order = hosts.to_vec();
        let mut sample = Vec::with_capacity(bound);
        for i in 0..order.len() {
            let j = rng.random_range(i..order.len());
            order.swap(i, j);
            if let Some(candidate) = fleet.get(order[i]).and_then(free) {
                sample.push(candidate);
                if sample.len() == bound {
                    break;
                }
            }
        }
        sample.sort_unstable_by_key(|c| c.node);
        sample
    }

    pub(crate) fn ask_pick(&mut self, call: CallId, candidates: Vec<Candidate>, queued: bool) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let offered: Vec<NodeKey> = candidates.iter().map(|c| c.node).collect();
        match &mut c.stage {
            Stage::Queued { offered: o, .. } if queued => *o = Some(offered),
            stage => *stage = Stage::Picking { offered },
        }
        if queued && let Some(queue) = self.queues.get_mut(&c.head.service) {
            queue.picking = Some(call);
        }
        self.out.push(Action::Pick(PickRequest {
            call,
            head: c.head.clone(),
            candidates,
            prefix: c.prefix.clone(),
        }));
    }

    /// Puts the call in its service's queue, or refuses it (`occupied` for
    /// a realtime call, `overloaded` for a full queue).
    fn enqueue(&mut self, call: CallId, now: Instant) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let service = c.head.service.clone();
        if self.held_by_job_limit(call) {
            return self.hold(call);
        }
        if c.head.realtime {
            let hosting = self.fleet.hosting(&service).count();
            return self.reject(
                call,
                ErrorKind::Occupied,
                format!("every node with {service:?} loaded is busy and the call is realtime ({hosting} nodes)"),
            );
        }
        let waiter = Waiter::new(
            call,
            QueueKey::new(c.head.priority, call),
            c.tenant.clone(),
            now,
        );
        match self.queue_mut(&service).push(waiter) {
            Ok(key) => {
                if let Some(c) = self.calls.get_mut(&call) {
                    c.stage = Stage::Queued { key, offered: None };
                }
                self.publish(&service);
                self.kick(&service, now);
            }
            Err(full) => self.reject(
                call,
                ErrorKind::Overloaded,
                format!(
                    "the queue of {service:?} is full ({} calls wait)",
                    full.capacity
                ),
            ),
        }
    }

    /// A pick came back.
    pub(crate) fn picked(
        &mut self,
        call: CallId,
        ranking: Result<Ranking, PickError>,
        now: Instant,
    ) {
        if !self.calls.contains_key(&call) {
            return; // The call left meanwhile.
        }
        let (ranking, via) = match ranking {
            Ok(ranking) => (Ok(ranking), Via::Pick),
            Err(PickError::Refused(error)) => (Err(error), Via::Pick),
            Err(PickError::Failed(why)) if self.config.fail_open => {
                tracing::warn!(call, %why, "policy failed; the built-in round-robin picks instead");
                self.fallback_next = self.fallback_next.wrapping_add(1);
                (Ok(Ranking::default()), Via::Fallback)
            }
            Err(PickError::Failed(why)) => (
                Err(CallError::new(
                    ErrorKind::Internal,
                    format!("policy failed: {why}"),
                )),
                Via::Pick,
            ),
        };
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let service = c.head.service.clone();
        match &mut c.stage {
            Stage::Picking { offered } => {
                let offered = std::mem::take(offered);
                match ranking {
                    Err(error) => {
                        self.calls.remove(&call);
                        self.out.push(Action::Reject { call, error });
                    }
                    Ok(ranking) => match self.take(call, &ranking, &offered, via) {
                        Some(()) => {}
                        None => self.enqueue(call, now),
                    },
                }
            }
            Stage::Queued { key, offered } if offered.is_some() => {
                let key = *key;
                let offered = offered.take().unwrap_or_default();
                if let Some(queue) = self.queues.get_mut(&service) {
                    queue.picking = None;
                }
                let is_head = self
                    .queues
                    .get(&service)
                    .and_then(|q| q.peek())
                    .is_some_and(|w| w.key == key);
                if is_head {
                    match ranking {
                        Err(error) => {
                            if let Some(queue) = self.queues.get_mut(&service) {
                                queue.pop();
                            }
                            self.calls.remove(&call);
                            self.out.push(Action::Reject { call, error });
                            self.publish(&service);
                        }
                        Ok(ranking) => {
                            if let Some(waiter) =
                                self.queues.get(&service).and_then(|q| q.peek()).cloned()
                                && self.take(call, &ranking, &offered, via).is_some()
                            {
                                if let Some(queue) = self.queues.get_mut(&service) {
                                    queue.pop();
                                    queue.dispatched_total += 1;
                                }
                                self.mark_waited(
                                    call,
                                    now.saturating_duration_since(waiter.enqueued),
                                );
                                self.publish(&service);
                            }
                        }
                    }
                }
                // Another call went ahead meanwhile, or the slots went: pick
                // again for whoever is at the head now.
                self.kick(&service, now);
            }
            // A pick for a call that is reserved or running now: stale.
            _ => {}
        }
    }

    /// Takes a slot for `call` on the first node of `ranking` (then of the
    /// rest of `offered`) that is offered, free and not excluded, and
    /// dispatches it there. `None` when every one is taken.
    fn take(
        &mut self,
        call: CallId,
        ranking: &Ranking,
        offered: &[NodeKey],
        via: Via,
    ) -> Option<()> {
        let c = self.calls.get(&call)?;
        let service = c.head.service.clone();
        // Each node's position in `offered`, by binary search: over
        // `offered` itself when it is in key order (candidates come from
        // the fleet in key order), else over a sorted copy. A ranking of
        // the whole fleet costs O(n log n) for its own nodes and O(n) for
        // the offered nodes after it.
        let index: Option<Vec<(NodeKey, usize)>> = (!offered.is_sorted()).then(|| {
            let mut index: Vec<(NodeKey, usize)> = offered
                .iter()
                .enumerate()
                .map(|(i, &key)| (key, i))
                .collect();
            index.sort_unstable();
            index
        });
        let position = |key: NodeKey| match &index {
            None => offered.binary_search(&key).ok(),
            Some(index) => index
                .binary_search_by_key(&key, |&(k, _)| k)
                .ok()
                .map(|j| index[j].1),
        };
        let mut seen = vec![false; offered.len()];
        let mut order: Vec<NodeKey> = Vec::with_capacity(offered.len());
        for &n in &ranking.nodes {
            if let Some(i) = position(n)
                && !std::mem::replace(&mut seen[i], true)
            {
                order.push(n);
            }
        }
        // After the ranking: the offered nodes from the one after its first
        // choice (with no ranking, a fallback pick: round-robin).
        let start = match order.first() {
            Some(&first) => position(first).map_or(0, |i| i + 1),
            None => self.fallback_next,
        };
        for k in 0..offered.len() {
            let i = (start + k) % offered.len();
            if !std::mem::replace(&mut seen[i], true) {
                order.push(offered[i]);
            }
        }
        let at = order.iter().position(|key| {
            !c.exclude.contains(key)
                && self
                    .fleet
                    .get(*key)
                    .is_some_and(|n| n.has_free_slot(&service) && self.job_room(c, n))
        })?;
        let node = order[at];
        let rest = order.split_off(at + 1);
        self.start(call, node, rest, via, None);
        Some(())
    }

    /// Takes the slot on `node` and tells the shell to dispatch.
    pub(crate) fn start(
        &mut self,
        call: CallId,
        node: NodeKey,
        rest: Vec<NodeKey>,
        via: Via,
        waited: Option<std::time::Duration>,
    ) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(n) = self.fleet.get_mut(node) else {
            return;
        };
        if let Some(s) = n.services.get_mut(&c.head.service) {
            s.in_flight += 1;
        }
        if c.job {
            n.jobs_in_flight += 1;
        }
        c.stage = Stage::Running {
            node,
            epoch: n.epoch,
            rest,
        };
        self.out.push(Action::Dispatch {
            call,
            node,
            via,
            waited,
        });
    }

    /// Sets the queue wait of the dispatch just pushed for `call`.
    fn mark_waited(&mut self, call: CallId, waited: std::time::Duration) {
        if let Some(Action::Dispatch {
            call: c, waited: w, ..
        }) = self.out.last_mut()
            && *c == call
        {
            *w = Some(waited);
        }
    }

    /// Sends up to `count` of `service`'s waiting calls, oldest first, to
    /// node `to` (see [`crate::Event::HandUp`]).
    pub(crate) fn hand_up(&mut self, service: &str, count: u32, to: NodeKey, now: Instant) {
        if self
            .fleet
            .get(to)
            .is_none_or(|n| !n.services.contains_key(service))
        {
            return;
        }
        let mut moved = 0;
        while moved < count {
            let Some(queue) = self.queues.get_mut(service) else {
                break;
            };
            let Some(waiter) = queue.pop() else {
                break;
            };
            if queue.picking == Some(waiter.call) {
                // Its pick's answer finds it running: stale, ignored.
                queue.picking = None;
            }
            queue.dispatched_total += 1;
            let waited = now.saturating_duration_since(waiter.enqueued);
            self.start(waiter.call, to, Vec::new(), Via::HandUp, Some(waited));
            moved += 1;
        }
        if moved > 0 {
            self.publish(service);
            // The new head may be served here.
            self.kick(service, now);
        }
    }

    /// Frees the slot of a running call. Returns its service.
    pub(crate) fn release(&mut self, call: CallId) -> Option<(String, NodeKey, bool)> {
        let c = self.calls.get(&call)?;
        let Stage::Running { node, epoch, .. } = c.stage else {
            return None;
        };
        let service = c.head.service.clone();
        let job = c.job;
        let same = match self.fleet.get_mut(node) {
            Some(n) if n.epoch == epoch => {
                if let Some(s) = n.services.get_mut(&service) {
                    s.in_flight = s.in_flight.saturating_sub(1);
                }
                if job {
                    n.jobs_in_flight = n.jobs_in_flight.saturating_sub(1);
                }
                true
            }
            _ => false,
        };
        Some((service, node, same))
    }

    /// A dispatched call ended.
    pub(crate) fn finished(&mut self, call: CallId, node_ms: f32, end: CallEnd, now: Instant) {
        let Some((service, node, same)) = self.release(call) else {
            return;
        };
        self.calls.remove(&call);
        if same {
            if end == CallEnd::Ok
                && let Some(n) = self.fleet.get_mut(node)
            {
                n.calls_total += 1;
                if let Some(s) = n.services.get_mut(&service) {
                    s.latency.add(node_ms);
                }
            }
            self.count_outcome(node, &service, end, now);
        }
        self.kick(&service, now);
        self.release_held();
    }

    /// A dispatch could not reach its node: the next node of the ranking
    /// that is free, else admission again (never that node).
    pub(crate) fn dispatch_failed(&mut self, call: CallId, now: Instant) {
        let Some((service, node, _)) = self.release(call) else {
            return;
        };
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        c.exclude.push(node);
        let rest = match &mut c.stage {
            Stage::Running { rest, .. } => std::mem::take(rest),
            _ => Vec::new(),
        };
        c.stage = Stage::Picking {
            offered: Vec::new(),
        };
        if self
            .take(call, &Ranking::new(rest.clone()), &rest, Via::Pick)
            .is_none()
        {
            self.admit(call, now);
        }
        self.kick(&service, now);
    }

    /// A call that was not dispatched left.
    pub(crate) fn left(&mut self, call: CallId) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let service = c.head.service.clone();
        match c.stage {
            Stage::Running { .. } => return, // It ends with CallFinished.
            Stage::Picking { .. } | Stage::Backoff => {}
            Stage::Held => {
                self.held.remove(&call);
            }
            Stage::Queued { key, .. } => {
                if let Some(queue) = self.queues.get_mut(&service) {
                    queue.remove(key);
                    if queue.picking == Some(call) {
                        queue.picking = None;
                    }
                }
                // Told at the next tick (see `Core::stale`).
                self.stale.insert(service.clone());
            }
            Stage::Reserved { swap_id } => {
                if let Some(r) = self.reservations.get_mut(&swap_id) {
                    r.waiter = None;
                }
                self.queue_mut(&service).abandoned_total += 1;
            }
        }
        self.calls.remove(&call);
    }

    /// Serves `service`'s queue head if a node has a free slot (a pick for
    /// it), else plans swaps for the calls still waiting.
    pub(crate) fn kick(&mut self, service: &str, now: Instant) {
        // A job held back by the per-node job limit must not hold up the
        // calls behind it: it leaves the queue to wait for room.
        let head = loop {
            let Some(queue) = self.queues.get(service) else {
                return;
            };
            if queue.picking.is_some() {
                return;
            }
            let Some((head, key)) = queue.peek().map(|w| (w.call, w.key)) else {
                return;
            };
            if !self.held_by_job_limit(head) {
                break head;
            }
            if let Some(queue) = self.queues.get_mut(service) {
                queue.remove(key);
            }
            self.stale.insert(service.to_string());
            self.hold(head);
        };
        let candidates = self.candidates(head);
        if candidates.is_empty() {
            self.plan_swaps(service, now);
        } else {
            self.ask_pick(head, candidates, true);
        }
    }
}

/// What a policy sees of `node` for `service`.
fn candidate_of(node: &crate::Node, s: &crate::fleet::ServiceState) -> Candidate {
    let mut c = Candidate {
        node: node.key,
        in_flight: s.load(),
        max_concurrent: s.max_concurrent,
        node_in_flight: node.load_total(),
        latency_ms: s.latency.value_ms,
        latency_samples: s.latency.samples,
        cost_per_hour: node.spec.cost_per_hour,
        model_load: s.model_load,
        ..Candidate::default()
    };
    if let Some(stats) = &node.stats {
        c.cpu_pct = stats.cpu_pct;
        c.mem_used_mib = stats.mem_used_mib;
        c.mem_total_mib = stats.mem_total_mib;
        c.gpu_count = u32::try_from(stats.gpus.len()).unwrap_or(u32::MAX);
        if !stats.gpus.is_empty() {
            c.gpu_util_pct =
                stats.gpus.iter().map(|g| g.util_pct).sum::<f32>() / stats.gpus.len() as f32;
        }
        c.gpu_mem_free_mib = stats
            .gpus
            .iter()
            .map(|g| g.mem_total_mib.saturating_sub(g.mem_used_mib))
            .max()
            .unwrap_or(0);
        c.gpu_mem_total_mib = stats.gpus.iter().map(|g| g.mem_total_mib).sum();
    }
    c
}
