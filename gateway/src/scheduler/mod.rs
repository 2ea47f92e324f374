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

use protocol::{CallHead, QueueView, SwapReport};
use switchyard_core::{CallId, Core, CoreConfig, Counted, Event, OutlierRules, SwapRules};
use tokio::sync::{oneshot, watch};

use crate::config::GatewayConfig;
use crate::fleet::{CoreCell, Node, Registry, lock};
use crate::policies::Policies;
use crate::telemetry::scale::ScaleWindow;

mod actions;
mod slots;

#[cfg(test)]
pub(crate) use actions::record_queue_length;
use slots::Waiting;
pub(crate) use slots::{Again, Grant, Retry, SlotGuard, Ticket, WaitHandle, WaitState};

/// The core, the policies it asks for picks, and the calls waiting.
pub(crate) struct Scheduler {
    core: CoreCell,
    registry: Arc<Registry>,
    policies: Arc<Policies>,
    waiting: Mutex<HashMap<CallId, Waiting>>,
    /// Arrivals, slot holds and queue waits, for the autoscaling signals.
    scale: Arc<ScaleWindow>,
    /// Notified after every event the core handled (a call admitted or
    /// ended, a node up, down or reporting): the link to a parent gateway
    /// reports this fleet's free capacity when it changes.
    changed: Arc<tokio::sync::Notify>,
}

/// The core's settings from `gateway.toml`.
pub(crate) fn core_config(config: &GatewayConfig) -> CoreConfig {
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
        max_candidates: config.max_candidates,
        service_max_candidates: config
            .services
            .iter()
            .filter_map(|(name, s)| Some((name.clone(), s.max_candidates?)))
            .collect(),
        // Not the policies' own stream: the same seed, told apart.
        seed: config
            .seed
            .map_or_else(rand::random, |seed| seed ^ 0x9e37_79b9_7f4a_7c15),
    }
}

impl Scheduler {
    /// A scheduler driving `core`, whose nodes' links are in `registry`,
    /// picking with `policies`; its autoscaling counts cover `scale_window`
    /// (`[scale] window_s`).
    pub(crate) fn new(
        core: CoreCell,
        registry: Arc<Registry>,
        policies: Arc<Policies>,
        scale_window: Duration,
    ) -> Self {
        Self {
            core,
            registry,
            policies,
            waiting: Mutex::new(HashMap::new()),
            scale: Arc::new(ScaleWindow::new(scale_window)),
            changed: Arc::default(),
        }
    }

    /// Notified (one waiter, a stored permit) after the core handled any
    /// event; wait on it, then read the core.
    pub(crate) fn changes(&self) -> Arc<tokio::sync::Notify> {
        self.changed.clone()
    }

    /// The core, locked for one read (never across IO).
    pub(crate) fn read<R>(&self, f: impl FnOnce(&switchyard_core::Core) -> R) -> R {
        f(&lock(&self.core))
    }

    /// A registered node's services changed ([`Event::Respec`]); `node` is
    /// the registry's new entry for it.
    pub(crate) fn respec(self: &Arc<Self>, node: &Node) {
        self.handle(Event::Respec {
            node: node.key,
            spec: node.spec.clone(),
        });
    }

    /// This gateway's arrivals, slot holds and queue waits per service.
    pub(crate) fn scale(&self) -> &ScaleWindow {
        &self.scale
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
    pub(crate) fn admit(
        self: &Arc<Self>,
        head: &Arc<CallHead>,
        tenant: &Arc<str>,
        call: CallId,
        prefix: Arc<[u64]>,
        job: bool,
    ) -> Ticket {
        self.admit_excluding(head, tenant, call, prefix, job, Vec::new())
    }

    /// As [`Self::admit`], the call never going to a node of `exclude`
    /// (a call a child gateway handed up does not go back down to it).
    pub(crate) fn admit_excluding(
        self: &Arc<Self>,
        head: &Arc<CallHead>,
        tenant: &Arc<str>,
        call: CallId,
        prefix: Arc<[u64]>,
        job: bool,
        exclude: Vec<switchyard_core::NodeKey>,
    ) -> Ticket {
        let ticket = self.register(call, &head.service, tenant.clone());
        self.scale.arrival(&head.service);
        self.handle(Event::CallArrived {
            call,
            head: head.clone(),
            tenant: tenant.clone(),
            prefix,
            job,
            exclude,
        });
        ticket
    }

    /// The parent gateway asks for up to `count` of `service`'s waiting
    /// calls: they go to `parent` (the link to it), oldest first.
    pub(crate) fn hand_up(self: &Arc<Self>, service: &str, count: u32, parent: &Node) {
        self.handle(Event::HandUp {
            service: service.to_string(),
            count,
            to: parent.key,
        });
    }

    /// Sets the most job calls one node runs at once (0: no limit beyond
    /// its slots). Jobs running stay; waiting ones start where there is
    /// room.
    pub(crate) fn set_job_limit(self: &Arc<Self>, max_per_node: u32) {
        self.handle(Event::JobLimit { max_per_node });
    }

    /// The most job calls one node runs at once (0: no limit).
    pub(crate) fn job_limit(&self) -> u32 {
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
    pub(crate) fn node_up(self: &Arc<Self>, node: &Node) {
        self.handle(Event::NodeUp {
            node: node.key,
            spec: node.spec.clone(),
        });
    }

    /// A node left (only the registered connection of its id: a replaced
    /// one was replaced in the core by the newer one's `node_up`).
    pub(crate) fn node_down(self: &Arc<Self>, node: &Node) {
        self.handle(Event::NodeDown { node: node.key });
    }

    /// A node's stats report.
    pub(crate) fn stats(self: &Arc<Self>, node: &Node, stats: protocol::NodeStats) {
        self.handle(Event::Stats {
            node: node.key,
            stats,
        });
    }

    /// A node's load report: its calls in flight per service and its job
    /// calls in flight (`None`: not told), counted as `counted` says (see
    /// [`Event::Load`]).
    pub(crate) fn load(
        self: &Arc<Self>,
        node: &Node,
        in_flight: Vec<(String, u32)>,
        jobs_in_flight: Option<u32>,
        counted: Counted,
    ) {
        self.handle(Event::Load {
            node: node.key,
            in_flight,
            jobs_in_flight,
            counted,
        });
    }

    /// An agent's swap report.
    pub(crate) fn swapped(self: &Arc<Self>, node: &Node, report: SwapReport) {
        self.handle(Event::SwapReported {
            node: node.key,
            report,
        });
    }

    /// Drains (true) or undrains a node: a drained node gets no new call
    /// and no swap; calls in flight finish.
    pub(crate) fn drain(self: &Arc<Self>, node: &Node, draining: bool) {
        self.handle(Event::Drain {
            node: node.key,
            draining,
        });
    }

    /// A retried call's backoff is over: it is admitted again (its ticket
    /// from [`SlotGuard::retry`] receives the grant).
    pub(crate) fn retry_due(self: &Arc<Self>, call: CallId) {
        self.handle(Event::RetryDue { call });
    }

    /// Every service's queue, plus services nodes host with nobody waiting.
    pub(crate) fn views(&self, now: Instant) -> Vec<QueueView> {
        lock(&self.core).queue_views(now)
    }

    /// Sends the core its ticks while it wants them, until the scheduler is
    /// dropped.
    pub(crate) async fn run_ticks(self: Arc<Self>) {
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
        self.changed.notify_one();
    }
}

/// A fresh core cell with the gateway's settings.
pub(crate) fn new_core(config: &GatewayConfig) -> CoreCell {
    Arc::new(Mutex::new(Core::new(core_config(config))))
}

/// Help texts of the queue, swap, outlier, retry and breaker series.
pub(crate) fn describe_metrics() {
    metrics::describe_gauge!("queue_length", "Calls waiting, by service and tenant.");
    metrics::describe_histogram!(
        "queue_wait_seconds",
        metrics::Unit::Seconds,
        "Time calls waited in the queue, by service and tenant."
    );
    metrics::describe_counter!("swaps_started_total", "Swaps the gateway asked for.");
    metrics::describe_counter!(
        "swaps_total",
        "Swaps finished, by node, from, to and outcome."
    );
    metrics::describe_histogram!(
        "swap_duration_seconds",
        metrics::Unit::Seconds,
        "Time a swap took on the node (stop to ready)."
    );
    metrics::describe_counter!(
        "outlier_ejections_total",
        "Nodes ejected from a service's candidates, by node and service."
    );
    metrics::describe_counter!(
        "retries_total",
        "Retries of idempotent calls on another node, by service."
    );
    metrics::describe_counter!(
        "retries_refused_total",
        "Retries refused, by service and why (budget, breaker)."
    );
    metrics::describe_counter!(
        "circuit_breaker_trips_total",
        "Calls or retries refused by a circuit breaker, by service and breaker."
    );
}
