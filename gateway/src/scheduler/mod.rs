//! The IO shell around the scheduling core ([`switchyard_core::Core`]):
//! it turns what happens (a call arrives, a node registers, a slot frees, a
//! swap report comes) into the core's events and carries out its actions:
//! runs the service's policy for a pick (outside the core's lock), hands a
//! waiting call its slot or its refusal, tells it its position, sends swap
//! requests on agents' control streams, records metrics.
//!
//! A call's side: [`Scheduler::admit`] returns a [`Ticket`] whose
//! [`WaitHandle`] receives the [`Grant`] (a [`SlotGuard`] and the pick) or
//! the refusal, and position updates meanwhile. Dropping a ticket that got
//! no grant takes the call out (timeout, client gone); dropping a guard frees
//! the slot. A tick task sends the core its ticks while calls wait or swaps
//! are under way.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use protocol::{CallError, CallHead, Message, QueueView, Reserved, SwapReport};
use switchyard_core::{
    Action, CallEnd, CallId, Core, CoreConfig, Event, NodeKey, OutlierRules, RetryRefusal,
    SwapRules, Via,
};
use tokio::sync::{oneshot, watch};

use crate::config::GatewayConfig;
use crate::policies::{Picked, Policies};
use crate::registry::{CoreCell, Node, Registry, lock};

/// A taken call slot and the pick that chose it, handed to a waiting call.
#[derive(Debug)]
pub struct Grant {
    /// The slot; dropping it frees the slot.
    pub guard: SlotGuard,
    /// The pick (policy name, version) that chose the node.
    pub picked: Picked,
}

/// What a waiting call sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitState {
    /// Waiting at this position (1 = next; 0 before the first update).
    Queued(u32),
    /// Held for a node that is loading the service.
    Reserved(Reserved),
}

/// The waiting call's end: the grant when it comes, and its position.
#[derive(Debug)]
pub struct WaitHandle {
    /// Receives the slot when the call's turn comes, or why it cannot have
    /// one (unknown service, queue full, the policy refused it).
    pub grant: oneshot::Receiver<Result<Grant, CallError>>,
    /// Position updates and the reservation notice.
    pub state: watch::Receiver<WaitState>,
}

/// A call's place until it gets its grant; dropping it before takes the
/// call out of the queue (or its reservation).
pub struct Ticket {
    scheduler: Arc<Scheduler>,
    call: CallId,
    done: bool,
    /// The grant and position updates.
    pub handle: WaitHandle,
}

/// A taken call slot on a node; [`SlotGuard::finish`] or dropping it frees
/// the slot.
pub struct SlotGuard {
    scheduler: Arc<Scheduler>,
    node: Arc<Node>,
    call: CallId,
    service: String,
    ended: bool,
}

/// A waiting call's channels, until its grant or refusal is sent.
struct Waiting {
    grant: oneshot::Sender<Result<Grant, CallError>>,
    state: watch::Sender<WaitState>,
    tenant: Arc<str>,
    service: String,
    /// The latest pick for it: which policy version ranked its nodes.
    picked: Option<Picked>,
    /// The core's answer to the retry asked for it.
    retry: Option<Result<(u32, Duration), RetryRefusal>>,
}

/// A retry the core granted: the call's new ticket, its attempt number and
/// the backoff to wait before [`Scheduler::retry_due`].
pub struct Retry {
    /// Receives the retry's grant once its backoff is over.
    pub ticket: Ticket,
    /// The attempt it will be (2 for the first retry).
    pub attempt: u32,
    /// How long to wait first.
    pub backoff: Duration,
}

/// The core, the policies it asks for picks, and the calls waiting.
pub struct Scheduler {
    core: CoreCell,
    registry: Arc<Registry>,
    policies: Arc<Policies>,
    waiting: Mutex<HashMap<CallId, Waiting>>,
}

/// The core's settings from `gateway.toml`.
pub fn core_config(config: &GatewayConfig) -> CoreConfig {
    let secs = |s: u32| Duration::from_secs(u64::from(s));
    CoreConfig {
        queue_capacity: config.queue.capacity,
        service_queue_capacity: config
            .services
            .iter()
            .filter_map(|(name, s)| Some((name.clone(), s.queue_capacity?)))
            .collect(),
        swap: SwapRules {
            enabled: config.swap.enabled,
            node_cooldown: secs(config.swap.swap_cooldown_s),
            node_cooldowns: config
                .nodes
                .iter()
                .filter_map(|(id, n)| Some((id.clone(), secs(n.swap_cooldown_s?))))
                .collect(),
            service_cooldowns: config
                .services
                .iter()
                .map(|(name, s)| (name.clone(), secs(s.swap_cooldown_s)))
                .collect(),
            queue_ratio: config.swap.queue_ratio,
            cost_factor: config.swap.cost_factor,
            timeout: secs(config.swap.timeout_s),
            failure_cooldown: secs(config.swap.failure_cooldown_s),
        },
        positions: true,
        fail_open: config.fail_open,
        outlier: OutlierRules {
            consecutive_failures: config.outlier.consecutive_failures,
            base_ejection: secs(config.outlier.base_ejection_s),
            max_ejection: secs(config.outlier.max_ejection_s),
            max_ejected_percent: config.outlier.max_ejection_percent,
            success_rate: config.outlier.success_rate_rules(),
        },
        retry: config.retry.rules(),
        breakers: config
            .circuit_breakers
            .or(crate::config::BreakerConfig::default()),
        service_breakers: config
            .services
            .iter()
            .map(|(name, s)| (name.clone(), s.breakers(config.circuit_breakers)))
            .collect(),
    }
}

impl Scheduler {
    /// A scheduler driving `core`, whose nodes' links are in `registry`,
    /// picking with `policies`.
    pub fn new(core: CoreCell, registry: Arc<Registry>, policies: Arc<Policies>) -> Self {
        Self {
            core,
            registry,
            policies,
            waiting: Mutex::new(HashMap::new()),
        }
    }

    fn waiting(&self) -> MutexGuard<'_, HashMap<CallId, Waiting>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits call `call` (gateway-wide, increasing: FIFO order) of
    /// `tenant`: the returned ticket gets a free slot at once, or waits in
    /// its service's queue, or is refused (`unknown service`, `no node
    /// available`, `occupied` for a realtime call, `overloaded` for a full
    /// queue, the policy's refusal) through its grant. A `job` call goes
    /// only to a node below the per-node job limit ([`Self::set_job_limit`]).
    pub fn admit(
        self: &Arc<Self>,
        head: &Arc<CallHead>,
        tenant: &Arc<str>,
        call: CallId,
        prefix: Arc<[u64]>,
        job: bool,
    ) -> Ticket {
        let ticket = self.register(call, &head.service, tenant.clone());
        self.handle(Event::CallArrived {
            call,
            head: head.clone(),
            tenant: tenant.clone(),
            prefix,
            job,
        });
        ticket
    }

    /// Sets the most job calls one node runs at once (0: no limit beyond
    /// its slots). Jobs running stay; waiting ones start where there is
    /// room.
    pub fn set_job_limit(self: &Arc<Self>, max_per_node: u32) {
        self.handle(Event::JobLimit { max_per_node });
    }

    /// The most job calls one node runs at once (0: no limit).
    pub fn job_limit(&self) -> u32 {
        lock(&self.core).max_jobs_per_node()
    }

    fn register(self: &Arc<Self>, call: CallId, service: &str, tenant: Arc<str>) -> Ticket {
        let (grant, grant_rx) = oneshot::channel();
        let (state, state_rx) = watch::channel(WaitState::Queued(0));
        self.waiting().insert(
            call,
            Waiting {
                grant,
                state,
                tenant,
                service: service.to_string(),
                picked: None,
                retry: None,
            },
        );
        Ticket {
            scheduler: self.clone(),
            call,
            done: false,
            handle: WaitHandle {
                grant: grant_rx,
                state: state_rx,
            },
        }
    }

    /// A node registered.
    pub fn node_up(self: &Arc<Self>, node: &Node) {
        self.handle(Event::NodeUp {
            node: node.key,
            spec: node.spec.clone(),
        });
    }

    /// A node left (only the registered connection of its id: a replaced
    /// one was replaced in the core by the newer one's `node_up`).
    pub fn node_down(self: &Arc<Self>, node: &Node) {
        self.handle(Event::NodeDown { node: node.key });
    }

    /// A node's stats report.
    pub fn stats(self: &Arc<Self>, node: &Node, stats: protocol::NodeStats) {
        self.handle(Event::Stats {
            node: node.key,
            stats,
        });
    }

    /// An agent's swap report.
    pub fn swapped(self: &Arc<Self>, node: &Node, report: SwapReport) {
        self.handle(Event::SwapReported {
            node: node.key,
            report,
        });
    }

    /// Drains (true) or undrains a node: a drained node gets no new call
    /// and no swap; calls in flight finish.
    pub fn drain(self: &Arc<Self>, node: &Node, draining: bool) {
        self.handle(Event::Drain {
            node: node.key,
            draining,
        });
    }

    /// A retried call's backoff is over: it is admitted again (its ticket
    /// from [`SlotGuard::retry`] receives the grant).
    pub fn retry_due(self: &Arc<Self>, call: CallId) {
        self.handle(Event::RetryDue { call });
    }

    /// Every service's queue, plus services nodes host with nobody waiting.
    pub fn views(&self, now: Instant) -> Vec<QueueView> {
        lock(&self.core).queue_views(now)
    }

    /// Sends the core its ticks while it wants them, until the scheduler is
    /// dropped.
    pub async fn run_ticks(self: Arc<Self>) {
        let mut tick = tokio::time::interval(switchyard_core::TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if lock(&self.core).wants_tick() {
                self.handle(Event::Tick);
            }
        }
    }

    /// Hands `event` to the core and carries out its actions, and those of
    /// the events they lead to (picks, unsendable swaps), in order. The core
    /// is locked only while it handles one event.
    fn handle(self: &Arc<Self>, event: Event) {
        let mut events = VecDeque::from([event]);
        while let Some(event) = events.pop_front() {
            let actions = lock(&self.core).handle(event, Instant::now());
            for action in actions {
                if let Some(next) = self.execute(action) {
                    events.push_back(next);
                }
            }
        }
    }

    fn execute(self: &Arc<Self>, action: Action) -> Option<Event> {
        match action {
            Action::Pick(request) => {
                // The policy runs here, with no lock held.
                let (ranking, picked) = self.policies.pick(&request);
                if let Some(w) = self.waiting().get_mut(&request.call) {
                    w.picked = Some(picked);
                }
                return Some(Event::Picked {
                    call: request.call,
                    ranking,
                });
            }
            Action::Dispatch {
                call,
                node,
                via,
                waited,
            } => self.dispatch(call, node, via, waited),
            Action::Position { call, position } => {
                if let Some(w) = self.waiting().get(&call) {
                    w.state.send_replace(WaitState::Queued(position));
                }
            }
            Action::Reserved { call, notice } => {
                if let Some(w) = self.waiting().get(&call) {
                    w.state.send_replace(WaitState::Reserved(notice));
                }
            }
            Action::Reject { call, error } => {
                if let Some(w) = self.waiting().remove(&call) {
                    let _ = w.grant.send(Err(error));
                }
            }
            Action::Swap {
                node,
                request,
                from,
            } => {
                let link = self.registry.by_key(node);
                let sent = link
                    .as_ref()
                    .is_some_and(|n| n.control.try_send(Message::Swap(request.clone())).is_ok());
                let id = link.map_or_else(|| node.to_string(), |n| n.spec.id.clone());
                if !sent {
                    tracing::warn!(node = %id, slot = %request.slot, "swap request not sent: control stream full or closed");
                    return Some(Event::SwapReported {
                        node,
                        report: SwapReport {
                            swap_id: request.swap_id,
                            slot: request.slot,
                            loaded: from,
                            error: Some("the swap request could not be sent".into()),
                            duration_ms: 0,
                        },
                    });
                }
                metrics::counter!("swaps_started_total", "node" => id, "to" => request.service)
                    .increment(1);
            }
            Action::SwapEnded {
                node,
                slot: _,
                from,
                to,
                outcome,
                duration_ms,
            } => {
                let id = self
                    .registry
                    .by_key(node)
                    .map_or_else(|| node.to_string(), |n| n.spec.id.clone());
                metrics::counter!(
                    "swaps_total",
                    "node" => id.clone(),
                    "from" => from.unwrap_or_else(|| "none".into()),
                    "to" => to.clone(),
                    "outcome" => outcome,
                )
                .increment(1);
                if outcome == "ok" || outcome == "failed" {
                    metrics::histogram!("swap_duration_seconds", "node" => id, "service" => to)
                        .record(f64::from(duration_ms) / 1000.0);
                }
            }
            Action::Ejected {
                node,
                service,
                why,
                failures,
                ejection,
                count,
            } => {
                let id = self
                    .registry
                    .by_key(node)
                    .map_or_else(|| node.to_string(), |n| n.spec.id.clone());
                tracing::warn!(node = %id, %service, why = why.as_str(), failures, ejection_s = ejection.as_secs(), count, "node ejected from the service");
                metrics::counter!("outlier_ejections_total", "node" => id, "service" => service)
                    .increment(1);
            }
            Action::QueueLength {
                service,
                tenant,
                length,
            } => crate::telemetry::record_queue_length(&service, &tenant, length),
            Action::RetryAfter {
                call,
                attempt,
                backoff,
            } => {
                if let Some(w) = self.waiting().get_mut(&call) {
                    metrics::counter!("retries_total", "service" => w.service.clone()).increment(1);
                    w.retry = Some(Ok((attempt, backoff)));
                }
            }
            Action::RetryRefused { call, why } => {
                if let Some(w) = self.waiting().get_mut(&call) {
                    if why != RetryRefusal::Attempts {
                        metrics::counter!(
                            "retries_refused_total",
                            "service" => w.service.clone(),
                            "why" => why.as_str(),
                        )
                        .increment(1);
                    }
                    w.retry = Some(Err(why));
                }
            }
            Action::BreakerTripped { service, breaker } => {
                tracing::debug!(%service, breaker = breaker.as_str(), "circuit breaker open");
                metrics::counter!(
                    "circuit_breaker_trips_total",
                    "service" => service,
                    "breaker" => breaker.as_str(),
                )
                .increment(1);
            }
        }
        None
    }

    /// Hands call `call` its slot on `node`. A call that left meanwhile
    /// drops the grant, which frees the slot.
    fn dispatch(self: &Arc<Self>, call: CallId, node: NodeKey, via: Via, waited: Option<Duration>) {
        let gone = || Event::CallFinished {
            call,
            node_ms: 0.0,
            end: CallEnd::Abandoned,
        };
        let Some(w) = self.waiting().remove(&call) else {
            // Gone before its grant: free the slot at once.
            self.handle(gone());
            return;
        };
        let Some(link) = self.registry.by_key(node) else {
            // The core still has the node but its link is gone: the
            // connection closed and its NodeDown is on its way.
            self.handle(gone());
            let _ = w.grant.send(Err(CallError {
                kind: protocol::ErrorKind::NodeLost,
                message: "the picked node's connection closed".into(),
            }));
            return;
        };
        if let Some(waited) = waited {
            metrics::histogram!(
                "queue_wait_seconds",
                "service" => w.service.clone(),
                "tenant" => w.tenant.to_string(),
            )
            .record(waited.as_secs_f64());
        }
        let picked = match via {
            Via::Pick => w.picked.unwrap_or_else(|| self.policies.builtin_pick()),
            Via::Fallback => self.policies.fallback_pick(&w.service),
            Via::Swap => self.policies.swap_pick(&w.service),
        };
        let guard = SlotGuard {
            scheduler: self.clone(),
            node: link,
            call,
            service: w.service,
            ended: false,
        };
        // A call task that is gone drops this grant: the guard frees the slot.
        let _ = w.grant.send(Ok(Grant { guard, picked }));
    }
}

impl Ticket {
    /// The call got its grant (or refusal): dropping the ticket no longer
    /// takes it out.
    pub fn granted(&mut self) {
        self.done = true;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.scheduler.waiting().remove(&self.call);
        self.scheduler.handle(Event::CallLeft { call: self.call });
    }
}

impl std::fmt::Debug for SlotGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotGuard")
            .field("node", &self.node.spec.id)
            .field("call", &self.call)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl SlotGuard {
    /// The node the slot is on.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// The service the slot belongs to.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Frees the slot of a call that ended after `node_ms` of node time;
    /// `Ok` calls feed the node's latency EWMA, `Failed` ones count towards
    /// its outlier ejection.
    pub fn finish(mut self, node_ms: f32, end: CallEnd) {
        self.end(node_ms, end);
    }

    /// The stream to the node could not be opened (nothing reached it):
    /// frees the slot and sends the call to another node; the returned
    /// ticket receives the new grant.
    pub fn dispatch_failed(mut self, head: &CallHead, tenant: &Arc<str>) -> Ticket {
        self.ended = true;
        let ticket = self
            .scheduler
            .register(self.call, &head.service, tenant.clone());
        self.scheduler
            .handle(Event::DispatchFailed { call: self.call });
        ticket
    }

    /// The call failed on the node and may run again elsewhere (the caller
    /// checked that it is idempotent, its error retryable and its deadline
    /// not passed): frees the slot, counting the failure against the node,
    /// and asks the core for a retry (`jitter` in `0.0..1.0` draws the
    /// backoff).
    ///
    /// # Errors
    /// Why the core refused the retry (attempts, budget, breaker); the core
    /// has forgotten the call.
    pub fn retry(
        mut self,
        head: &CallHead,
        tenant: &Arc<str>,
        jitter: f32,
    ) -> Result<Retry, RetryRefusal> {
        self.ended = true;
        let mut ticket = self
            .scheduler
            .register(self.call, &head.service, tenant.clone());
        self.scheduler.handle(Event::RetryAsked {
            call: self.call,
            jitter,
        });
        let verdict = self
            .scheduler
            .waiting()
            .get_mut(&self.call)
            .and_then(|w| w.retry.take());
        match verdict {
            Some(Ok((attempt, backoff))) => Ok(Retry {
                ticket,
                attempt,
                backoff,
            }),
            refused => {
                // The core forgot the call: the ticket has nothing to leave.
                self.scheduler.waiting().remove(&self.call);
                ticket.granted();
                Err(refused
                    .and_then(Result::err)
                    .unwrap_or(RetryRefusal::Attempts))
            }
        }
    }

    fn end(&mut self, node_ms: f32, end: CallEnd) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        self.scheduler.handle(Event::CallFinished {
            call: self.call,
            node_ms,
            end,
        });
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.end(0.0, CallEnd::Abandoned);
    }
}

/// A fresh core cell with the gateway's settings.
pub fn new_core(config: &GatewayConfig) -> CoreCell {
    Arc::new(Mutex::new(Core::new(core_config(config))))
}
