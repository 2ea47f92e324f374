//! Switchyard's scheduling core: a sans-IO state machine, in the way of
//! quinn-proto.
//!
//! The [`Core`] owns the fleet (nodes as plain data: spec, stats, per
//! service in-flight and capacity, slots, draining), the per-service queues
//! and the swap planner. It is driven by [`Core::handle`]`(event, now)`:
//! nodes going up and down, stats, calls arriving, picked, finishing or
//! leaving, swap reports and ticks. It answers with [`Action`]s for its
//! shell to carry out: run a pick, dispatch a call to a node, tell a call
//! its position or reservation, reject it, ask a node to swap a slot. It
//! also keeps the retry budget and circuit breakers ([`RetryRules`],
//! [`Breakers`]) and outlier ejection (consecutive failures, success rate).
//!
//! It has no sockets, no runtime and no clock (time comes with each event),
//! and runs no policy itself: picks are asked for ([`Action::Pick`]) and
//! answered ([`Event::Picked`]), so the shell can run a wasm policy outside
//! any lock. The gateway is one shell (QUIC and HTTP, agent links, metrics);
//! `switchyard-sim` is another (virtual time, simulated nodes).
//!
//! ```text
//!  events ─▶ Core::handle(event, now) ─▶ actions
//!            ├ fleet      nodes, services (in flight, loaded, EWMA), slots
//!            ├ queues     per service: priority, tenant rounds, arrival
//!            └ swaps      planner rules, reservations, deadlines
//! ```
//!
//! Invariants (checked by the property tests in `tests.rs`): no node ever has
//! more calls of a service in flight than its `max_concurrent`; a call is
//! dispatched at most once at a time (a retried call again only after its
//! attempt ended, never to a node it tried while another hosts its
//! service); every call that arrives leaves through exactly one of
//! dispatch (the last attempt's), reject or leave; queue order is priority, then
//! tenant round, then arrival; a slot has at most one swap under way.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::{CallError, CallHead, ErrorKind};

pub mod balance;
mod calls;
mod config;
mod event;
pub mod fleet;
mod job_limit;
pub mod outlier;
pub mod prefix;
mod retry;
pub mod schedule;
mod success_rate;
mod views;

pub use balance::{Balance, Candidate, ModelLoad, PickRequest, Ranking, RoundRobin, drive};
pub use config::{CoreConfig, OutlierRules, SwapRules};
pub use event::{Action, CallEnd, CallId, Counted, Event, PickError, Via};
pub use fleet::{Ewma, Fleet, Node, NodeKey};
pub use outlier::EjectReason;
pub use retry::{Breaker, Breakers, RetryCounters, RetryRefusal, RetryRules};
pub use schedule::queue::{QueueKey, ServiceQueue};
pub use success_rate::SuccessRateRules;

/// How often the shell sends [`Event::Tick`] while [`Core::wants_tick`]:
/// cooldowns end and swap deadlines pass even when nothing else happens.
pub const TICK: Duration = Duration::from_millis(250);

/// The scheduling state machine. See the crate docs.
#[derive(Debug)]
pub struct Core {
    config: CoreConfig,
    fleet: Fleet,
    queues: BTreeMap<String, ServiceQueue>,
    calls: HashMap<CallId, Call>,
    reservations: BTreeMap<u64, schedule::swap::Reservation>,
    next_swap_id: u64,
    /// The built-in round-robin's next start (fail-open picks).
    fallback_next: usize,
    /// The earliest end of an ejection, if any node is ejected.
    next_unejection: Option<Instant>,
    /// Services whose queue lost waiters (timeouts, callers gone) since it
    /// last told positions: they are told at the next tick, so that n
    /// calls leaving at once (a burst of equal deadlines) cost O(n) per
    /// tick instead of O(n) each, O(n²) in all.
    stale: BTreeSet<String>,
    /// When the success rates are next compared (success-rate ejection).
    next_rate_check: Option<Instant>,
    /// Per service: the retry budget's per-second floor.
    retry_tokens: HashMap<String, retry::Bucket>,
    /// Per service: retries and breaker trips.
    retry_counters: HashMap<String, RetryCounters>,
    /// Most job calls running at once on one node (0: no limit beyond the
    /// node's slots); set by [`Event::JobLimit`].
    max_jobs_per_node: u32,
    /// Job calls held back by that limit, in arrival order (see
    /// `job_limit`).
    held: BTreeSet<CallId>,
    /// Draws the candidate sample past `max_candidates`.
    rng: rand::rngs::StdRng,
    out: Vec<Action>,
}

/// What the core keeps of a call until it leaves or finishes.
#[derive(Debug)]
struct Call {
    head: Arc<CallHead>,
    tenant: Arc<str>,
    /// The chained block hashes of its prompt (every pick gets them).
    prefix: Arc<[u64]>,
    /// Nodes it must not go to (a dispatch there failed).
    exclude: Vec<NodeKey>,
    /// Its attempt: 1, then one more with each retry.
    attempt: u32,
    /// Whether it runs a durable job (counted against the per-node job
    /// limit).
    job: bool,
    stage: Stage,
}

#[derive(Debug)]
enum Stage {
    /// Not queued; a pick was asked for. `offered` are the candidates.
    Picking { offered: Vec<NodeKey> },
    /// In its service's queue under `key`; `offered` while a pick for it
    /// as the head is under way.
    Queued {
        key: QueueKey,
        offered: Option<Vec<NodeKey>>,
    },
    /// Held by swap `swap_id`.
    Reserved { swap_id: u64 },
    /// A job call waiting for room under the per-node job limit (in
    /// `Core::held`, not in its service's queue).
    Held,
    /// Holding a slot on `node` (registration `epoch`); `rest` are the
    /// ranking's next nodes, tried if the dispatch fails.
    Running {
        node: NodeKey,
        epoch: u64,
        rest: Vec<NodeKey>,
    },
    /// Failed on a node and backing off before its retry
    /// ([`Event::RetryDue`] ends it).
    Backoff,
}

impl Core {
    /// An empty core with `config`.
    pub fn new(config: CoreConfig) -> Self {
        use rand::SeedableRng as _;
        Self {
            rng: rand::rngs::StdRng::seed_from_u64(config.seed),
            config,
            fleet: Fleet::default(),
            queues: BTreeMap::new(),
            calls: HashMap::new(),
            reservations: BTreeMap::new(),
            next_swap_id: 1,
            fallback_next: 0,
            next_unejection: None,
            stale: BTreeSet::new(),
            next_rate_check: None,
            retry_tokens: HashMap::new(),
            retry_counters: HashMap::new(),
            max_jobs_per_node: 0,
            held: BTreeSet::new(),
            out: Vec::new(),
        }
    }

    /// Handles `event` at `now` and returns what the shell must do, in
    /// order. Never panics on any event sequence; events about unknown
    /// calls or nodes are ignored.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        self.uneject(now);
        self.check_success_rates(now);
        match event {
            Event::NodeUp { node, spec } => self.node_up(node, spec, now),
            Event::NodeDown { node } => self.node_down(node, now),
            Event::HandUp { service, count, to } => self.hand_up(&service, count, to, now),
            Event::Respec { node, spec } => {
                for service in self.fleet.respec(node, spec).unwrap_or_default() {
                    self.kick(&service, now);
                }
            }
            Event::Stats { node, stats } => {
                if let Some(n) = self.fleet.get_mut(node) {
                    let recovered = n.set_health(&stats.unhealthy);
                    n.set_model_load(&stats.model_load);
                    n.stats = Some(stats);
                    n.last_stats_at = now;
                    // Calls queued while the service was unhealthy here.
                    for service in recovered {
                        self.kick(&service, now);
                    }
                }
            }
            Event::Load {
                node,
                in_flight,
                jobs_in_flight,
                counted,
            } => {
                if let Some(n) = self.fleet.get_mut(node) {
                    let freer = n.set_load(&in_flight, counted);
                    let fewer_jobs =
                        jobs_in_flight.is_some_and(|count| n.set_jobs_load(count, counted));
                    for service in freer {
                        self.kick(&service, now);
                    }
                    if fewer_jobs {
                        self.release_held();
                    }
                }
            }
            Event::Drain { node, draining } => self.drain(node, draining, now),
            Event::CallArrived {
                call,
                head,
                tenant,
                prefix,
                job,
                exclude,
            } => self.arrive(
                calls::Arrival {
                    call,
                    head,
                    tenant,
                    prefix,
                    job,
                    exclude,
                },
                now,
            ),
            Event::Picked { call, ranking } => self.picked(call, ranking, now),
            Event::DispatchFailed { call } => self.dispatch_failed(call, now),
            Event::CallFinished { call, node_ms, end } => self.finished(call, node_ms, end, now),
            Event::CallLeft { call } => self.left(call),
            Event::RetryAsked { call, jitter } => self.retry_asked(call, jitter, false, now),
            Event::NotRun { call, jitter } => self.retry_asked(call, jitter, true, now),
            Event::NodeFull { call, jitter } => self.node_full(call, jitter, now),
            Event::RetryDue { call } => self.retry_due(call, now),
            Event::SwapReported { node, report } => self.on_report(node, report, now),
            Event::JobLimit { max_per_node } => {
                self.max_jobs_per_node = max_per_node;
                self.tick(now);
            }
            Event::Tick => self.tick(now),
        }
        std::mem::take(&mut self.out)
    }

    /// Whether the shell should send [`Event::Tick`]s: calls wait, swaps
    /// are under way or a node is ejected.
    pub fn wants_tick(&self) -> bool {
        !self.reservations.is_empty()
            || self.next_unejection.is_some()
            || self.queues.values().any(|q| !q.is_empty())
            || !self.stale.is_empty()
            || !self.held.is_empty()
    }

    /// The fleet.
    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// The queue of `service`, if a call ever waited for it.
    pub fn queue(&self, service: &str) -> Option<&ServiceQueue> {
        self.queues.get(service)
    }

    /// The configuration.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Most job calls running at once on one node (0: no limit).
    pub fn max_jobs_per_node(&self) -> u32 {
        self.max_jobs_per_node
    }

    /// Calls the core holds now (picking, waiting, reserved or running).
    pub fn calls_held(&self) -> usize {
        self.calls.len()
    }

    /// Calls waiting in every service's queue.
    pub fn queued_total(&self) -> usize {
        self.queues.values().map(ServiceQueue::len).sum()
    }

    /// Swaps under way.
    pub fn swaps_under_way(&self) -> usize {
        self.reservations.len()
    }

    fn node_up(&mut self, key: NodeKey, spec: protocol::NodeSpec, now: Instant) {
        if self.fleet.get(key).is_some() {
            self.node_down(key, now);
        }
        let cooldown = self.config.node_swap_cooldown(&spec.id);
        let services: Vec<String> = spec.services.iter().map(|s| s.name.clone()).collect();
        self.fleet.insert(key, spec, cooldown, now);
        for service in services {
            self.kick(&service, now);
        }
    }

    fn node_down(&mut self, key: NodeKey, now: Instant) {
        if self.fleet.remove(key).is_none() {
            return;
        }
        let lost: Vec<u64> = self
            .reservations
            .iter()
            .filter(|(_, r)| r.node == key)
            .map(|(id, _)| *id)
            .collect();
        self.abandon_all(lost, "node_lost", now);
    }

    fn drain(&mut self, key: NodeKey, draining: bool, now: Instant) {
        let Some(node) = self.fleet.get_mut(key) else {
            return;
        };
        node.draining = draining;
        if !draining {
            let services: Vec<String> = node.services.keys().cloned().collect();
            for service in services {
                self.kick(&service, now);
            }
        }
    }

    fn tick(&mut self, now: Instant) {
        for service in std::mem::take(&mut self.stale) {
            self.publish(&service);
        }
        self.expire_swaps(now);
        let waiting: Vec<String> = self
            .queues
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(s, _)| s.clone())
            .collect();
        for service in waiting {
            self.kick(&service, now);
        }
        self.release_held();
    }

    fn reject(&mut self, call: CallId, kind: ErrorKind, message: String) {
        self.calls.remove(&call);
        self.out.push(Action::Reject {
            call,
            error: CallError::new(kind, message),
        });
    }

    fn queue_mut(&mut self, service: &str) -> &mut ServiceQueue {
        let capacity = self.config.queue_capacity(service);
        self.queues
            .entry(service.to_string())
            .or_insert_with(|| ServiceQueue::new(capacity))
    }

    /// Tells moved waiters their positions and tenants their queue lengths.
    fn publish(&mut self, service: &str) {
        let Some(queue) = self.queues.get_mut(service) else {
            return;
        };
        if self.config.positions {
            for (call, position) in queue.moved() {
                self.out.push(Action::Position { call, position });
            }
        }
        for (tenant, length) in queue.tenant_lengths() {
            self.out.push(Action::QueueLength {
                service: service.to_string(),
                tenant,
                length,
            });
        }
    }
}

#[cfg(test)]
mod tests;
