//! Admission and queueing: a call either gets a free slot at once (the
//! service's policy picks among the nodes that have one), or waits in its
//! service's [`ServiceQueue`], or is refused (`occupied` for a realtime
//! call, `overloaded` for a full queue).
//!
//! One task ([`Scheduler::run`]) owns dispatching from the queues: every
//! freed slot, new node and swap report is an [`Event`]; on each it pops the
//! head of the service's queue while the policy finds it a free slot (late
//! binding), then plans swaps for what still waits ([`crate::swap`]). Calls
//! leave the queue themselves when they time out or their client goes
//! ([`Ticket`]'s drop).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use protocol::{CallError, CallHead, ErrorKind, QueueView, SwapReport};
use tokio::sync::mpsc;

use crate::config::GatewayConfig;
use crate::policies::Policies;
use crate::queue::{Grant, QueueKey, ServiceQueue, WaitHandle, Waiter};
use crate::registry::{Node, Registry};
use crate::swap::Reservation;

/// How often queues with waiting calls are looked at again (cooldowns end,
/// swap deadlines pass) even when no event arrives.
pub const TICK: Duration = Duration::from_millis(250);

/// Most times a pick is retried because a slot was taken under it.
const MAX_SLOT_RACES: usize = 16;

/// What the scheduler task reacts to.
#[derive(Debug)]
pub enum Event {
    /// A call slot of this service was freed.
    Freed(String),
    /// A call entered this service's queue.
    Kick(String),
    /// A node registered.
    NodeUp(Arc<Node>),
    /// A node left.
    NodeDown(Arc<Node>),
    /// A node reported a slot's new state.
    Swapped(Arc<Node>, SwapReport),
}

/// Queues, reservations and the dispatching task's logic.
pub struct Scheduler {
    pub(crate) state: Mutex<State>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) policies: Arc<Policies>,
    pub(crate) config: GatewayConfig,
    events: mpsc::UnboundedSender<Event>,
    next_swap_id: AtomicU64,
}

/// What the scheduler's lock guards.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) queues: HashMap<String, ServiceQueue>,
    /// Swaps under way, by swap id, with the call each one holds.
    pub(crate) reservations: HashMap<u64, Reservation>,
}

/// How a call was admitted.
pub enum Admission {
    /// A slot was free: go.
    Granted(Grant),
    /// The call waits; the ticket leaves the queue when dropped.
    Queued(Ticket),
}

/// A queued call's place; dropping it leaves the queue (or the reservation).
pub struct Ticket {
    scheduler: Arc<Scheduler>,
    service: String,
    key: QueueKey,
    /// The grant and position updates.
    pub handle: WaitHandle,
}

impl Scheduler {
    /// A scheduler over `registry`, picking with `policies`; `events` is the
    /// sending end of the channel [`Scheduler::run`] reads.
    pub fn new(
        registry: Arc<Registry>,
        policies: Arc<Policies>,
        config: GatewayConfig,
        events: mpsc::UnboundedSender<Event>,
    ) -> Self {
        Self {
            state: Mutex::new(State::default()),
            registry,
            policies,
            config,
            events,
            next_swap_id: AtomicU64::new(1),
        }
    }

    /// Hands an event to the scheduler task.
    pub fn notify(&self, event: Event) {
        let _ = self.events.send(event);
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn next_swap_id(&self) -> u64 {
        self.next_swap_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Admits call `seq` (gateway-wide, increasing: FIFO order) of
    /// `tenant`: a free slot now (skipping nodes in `exclude`), else a place
    /// in the queue, in the tenant's next round at the call's priority
    /// (round-robin across tenants, see [`crate::queue`]).
    ///
    /// # Errors
    /// `unknown service` when no node hosts or can load it, `no node
    /// available` when every node hosting it is draining, `occupied` for a
    /// realtime call with no free slot, `overloaded` when the queue is full,
    /// or the policy's refusal.
    pub fn admit(
        self: &Arc<Self>,
        head: &Arc<CallHead>,
        tenant: &Arc<str>,
        exclude: &HashSet<u32>,
        seq: u64,
        now: Instant,
    ) -> Result<Admission, CallError> {
        let service = &head.service;
        if !self.registry.knows(service) {
            return Err(error(
                ErrorKind::UnknownService,
                format!("no node hosts service {service:?}"),
            ));
        }
        if !self.registry.serves(service) {
            return Err(error(
                ErrorKind::NoNodeAvailable,
                format!("every node hosting service {service:?} is draining"),
            ));
        }
        let queue_empty = self.lock().queues.get(service).is_none_or(|q| q.is_empty());
        // Calls already waiting go first: a newcomer only takes a free slot
        // when nobody waits (a realtime call never waits, so it may).
        if (queue_empty || head.realtime)
            && let Some(grant) = self.try_pick(head, exclude)?
        {
            return Ok(Admission::Granted(grant));
        }
        if head.realtime {
            return Err(error(
                ErrorKind::Occupied,
                format!(
                    "every node with {service:?} loaded is busy and the call is realtime ({} nodes)",
                    self.registry.hosting(service).len()
                ),
            ));
        }
        let (waiter, handle) = Waiter::new(
            QueueKey::new(head.priority, seq),
            tenant.clone(),
            head.clone(),
            now,
        );
        let key = {
            let mut state = self.lock();
            let capacity = self.config.queue_capacity(service);
            let queue = state
                .queues
                .entry(service.clone())
                .or_insert_with(|| ServiceQueue::new(capacity));
            let key = queue.push(waiter).map_err(|full| {
                error(
                    ErrorKind::Overloaded,
                    format!(
                        "the queue of {service:?} is full ({} calls wait)",
                        full.capacity
                    ),
                )
            })?;
            gauge_length(service, queue);
            key
        };
        let _ = self.events.send(Event::Kick(service.clone()));
        Ok(Admission::Queued(Ticket {
            scheduler: self.clone(),
            service: service.clone(),
            key,
            handle,
        }))
    }

    /// Asks the service's policy to pick among the nodes with a free slot
    /// (not in `exclude`) and takes the slot. `None` when none is free.
    ///
    /// # Errors
    /// The policy's refusal (`rejected by policy`, or a failed pick when
    /// fail-closed).
    pub fn try_pick(
        &self,
        head: &CallHead,
        exclude: &HashSet<u32>,
    ) -> Result<Option<Grant>, CallError> {
        for _ in 0..MAX_SLOT_RACES {
            let free: Vec<Arc<Node>> = self
                .registry
                .hosting(&head.service)
                .into_iter()
                .filter(|n| !exclude.contains(&n.key) && n.has_free_slot(&head.service))
                .collect();
            if free.is_empty() {
                return Ok(None);
            }
            let picked = self.policies.pick(head, head.payload_len, &free)?;
            let node = free
                .get(picked.index)
                .ok_or_else(|| error(ErrorKind::Internal, "policy picked a node out of range"))?;
            if let Some(guard) = node.try_acquire(&head.service) {
                return Ok(Some(Grant { guard, picked }));
            }
        }
        Ok(None)
    }

    /// Removes call `key` from `service`'s queue or reservation (it timed
    /// out or its client left).
    fn leave(&self, service: &str, key: QueueKey) {
        let mut state = self.lock();
        if let Some(queue) = state.queues.get_mut(service)
            && queue.remove(key)
        {
            gauge_length(service, queue);
            return;
        }
        for reservation in state.reservations.values_mut() {
            if reservation.waiter.as_ref().is_some_and(|w| w.key == key) {
                reservation.waiter = None;
                if let Some(queue) = state.queues.get_mut(service) {
                    queue.abandoned_total += 1;
                }
                return;
            }
        }
    }

    /// Runs the dispatching task until every event sender is gone.
    pub async fn run(self: Arc<Self>, mut events: mpsc::UnboundedReceiver<Event>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    None => break,
                    Some(event) => self.handle(event, Instant::now()),
                },
                _ = tick.tick() => self.on_tick(Instant::now()),
            }
        }
    }

    fn handle(&self, event: Event, now: Instant) {
        match event {
            Event::Freed(service) | Event::Kick(service) => self.kick(&service, now),
            Event::NodeUp(node) => {
                for service in node.services.keys() {
                    self.kick(service, now);
                }
            }
            Event::NodeDown(node) => self.node_down(&node, now),
            Event::Swapped(node, report) => self.on_report(&node, report, now),
        }
    }

    /// Dispatches `service`'s queue head while a slot is free, then plans
    /// swaps for the calls still waiting.
    pub(crate) fn kick(&self, service: &str, now: Instant) {
        let mut state = self.lock();
        let Some(queue) = state.queues.get_mut(service) else {
            return;
        };
        while let Some(head) = queue.peek() {
            let call = head.head.clone();
            let outcome = self.try_pick(&call, &HashSet::new());
            let granted = match outcome {
                Ok(None) => break,
                Ok(Some(grant)) => Ok(grant),
                Err(refused) => Err(refused),
            };
            let Some(waiter) = queue.pop() else { break };
            let waited = now.saturating_duration_since(waiter.enqueued);
            if granted.is_ok() {
                queue.dispatched_total += 1;
                metrics::histogram!(
                    "queue_wait_seconds",
                    "service" => service.to_string(),
                    "tenant" => waiter.tenant.to_string(),
                )
                .record(waited.as_secs_f64());
            }
            // A call that left meanwhile drops the grant: its slot frees and
            // comes back as an event.
            waiter.give(granted);
        }
        gauge_length(service, queue);
        if !queue.is_empty() {
            self.plan_swaps(&mut state, service, now);
        }
    }

    fn on_tick(&self, now: Instant) {
        self.expire_swaps(now);
        let waiting: Vec<String> = self
            .lock()
            .queues
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(s, _)| s.clone())
            .collect();
        for service in waiting {
            self.kick(&service, now);
        }
    }

    /// Every service's queue, plus services nodes host with nobody waiting.
    pub fn views(&self, now: Instant) -> Vec<QueueView> {
        let state = self.lock();
        let mut names: Vec<String> = self.registry.service_names();
        names.extend(state.queues.keys().cloned());
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|service| {
                let reserved = state
                    .reservations
                    .values()
                    .filter(|r| r.service == service && r.waiter.is_some())
                    .count();
                let queue = state.queues.get(&service);
                QueueView {
                    length: queue.map_or(0, |q| u32::try_from(q.len()).unwrap_or(u32::MAX)),
                    capacity: queue
                        .map_or_else(|| self.config.queue_capacity(&service), |q| q.capacity),
                    oldest_wait_ms: queue.and_then(ServiceQueue::oldest).map_or(0, |t| {
                        u64::try_from(now.saturating_duration_since(t).as_millis())
                            .unwrap_or(u64::MAX)
                    }),
                    reserved: u32::try_from(reserved).unwrap_or(u32::MAX),
                    dispatched_total: queue.map_or(0, |q| q.dispatched_total),
                    abandoned_total: queue.map_or(0, |q| q.abandoned_total),
                    overloaded_total: queue.map_or(0, |q| q.overloaded_total),
                    service,
                }
            })
            .collect()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.scheduler.leave(&self.service, self.key);
    }
}

/// Sets `queue_length{service,tenant}` for every tenant with calls waiting,
/// and to 0 once for a tenant whose last call left.
pub(crate) fn gauge_length(service: &str, queue: &mut ServiceQueue) {
    for (tenant, length) in queue.tenant_lengths() {
        metrics::gauge!(
            "queue_length",
            "service" => service.to_string(),
            "tenant" => tenant.to_string(),
        )
        .set(length as f64);
    }
}

pub(crate) fn error(kind: ErrorKind, message: impl Into<String>) -> CallError {
    CallError {
        kind,
        message: message.into(),
    }
}
