//! Property tests over random event sequences: nodes come, go and drain,
//! calls arrive, are picked for late (so picks race), fail to dispatch,
//! finish and leave, fail and are retried (after a backoff, or refused),
//! swaps succeed, fail and time out. After every event:
//! - no node has more calls of a service in flight than `max_concurrent`,
//!   and its in-flight count is exactly the calls dispatched there and not
//!   ended;
//! - no call is dispatched while it runs, nor rejected after it left;
//! - a call leaves a queue (for a node or a reservation) only when no call
//!   still waiting in it is ahead of it (priority, round, arrival);
//! - a slot has at most one swap under way;
//! - a node's job count is exactly the job calls running there, and a job
//!   call is dispatched only to a node within the per-node job limit.
//!
//! At the end every call is finished or leaves, and the core holds nothing:
//! every waiting call left through exactly one exit.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    Up(NodeKey, u8),
    Down(NodeKey),
    Drain(NodeKey, bool),
    Arrive {
        service: u8,
        priority: i32,
        tenant: u8,
        realtime: bool,
        job: bool,
    },
    /// The per-node job limit changes (0: none).
    JobLimit(u32),
    /// Answer the n-th pending pick: 0 ranks the offered nodes shuffled
    /// by `seed`, 1 names a node never offered, 2 refuses, 3 fails.
    Answer(usize, u8, u64),
    Finish(usize, bool),
    Leave(usize),
    DispatchFailed(usize),
    Report(usize, bool),
    Tick(u64),
    /// The n-th running call failed and asks for a retry.
    Retry(usize),
    /// The n-th backing-off call's backoff is over.
    Due(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0u32..4, 0u8..4).prop_map(|(k, v)| Op::Up(k, v)),
        1 => (0u32..4).prop_map(Op::Down),
        1 => (0u32..4, any::<bool>()).prop_map(|(k, d)| Op::Drain(k, d)),
        6 => (0u8..3, 0i32..3, 0u8..3, prop::bool::weighted(0.1), prop::bool::weighted(0.3)).prop_map(|(service, priority, tenant, realtime, job)| Op::Arrive { service, priority, tenant, realtime, job }),
        1 => (0u32..3).prop_map(Op::JobLimit),
        6 => (0usize..8, prop_oneof![6 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8)], any::<u64>()).prop_map(|(i, k, s)| Op::Answer(i, k, s)),
        5 => (0usize..8, prop::bool::weighted(0.8)).prop_map(|(i, ok)| Op::Finish(i, ok)),
        1 => (0usize..8).prop_map(Op::Leave),
        1 => (0usize..8).prop_map(Op::DispatchFailed),
        2 => (0usize..4, prop::bool::weighted(0.7)).prop_map(|(i, ok)| Op::Report(i, ok)),
        2 => (0u64..3000).prop_map(Op::Tick),
        1 => (0usize..8).prop_map(Op::Retry),
        1 => (0usize..8).prop_map(Op::Due),
    ]
}

const SERVICES: [&str; 3] = ["x", "y", "z"];

fn variant(key: NodeKey, v: u8) -> NodeSpec {
    let id = format!("n{key}");
    match v {
        0 => spec(&id, &[("x", 2, 0)], &[]),
        1 => spec(&id, &[("y", 1, 0), ("z", 1, 0)], &[]),
        2 => spec(
            &id,
            &[("x", 1, 100), ("y", 1, 100)],
            &[("s0", &["x", "y"], Some("x"))],
        ),
        _ => spec(
            &id,
            &[("y", 2, 50), ("z", 2, 50)],
            &[("s0", &["y", "z"], None)],
        ),
    }
}

/// The test's own record of what the core told it.
#[derive(Default)]
struct Model {
    /// Calls arrived and not yet out (rejected, left or finished).
    alive: HashMap<CallId, &'static str>,
    /// Running calls: node and its epoch at dispatch.
    running: BTreeMap<CallId, (NodeKey, u64)>,
    /// Pick requests not yet answered.
    pending: Vec<PickRequest>,
    /// Swaps under way: (node, slot) → (swap id, service).
    swaps: BTreeMap<(NodeKey, String), (u64, String)>,
    /// Queue keys last seen per waiting call.
    keys: HashMap<CallId, QueueKey>,
    /// Calls backing off before a retry.
    backoff: std::collections::BTreeSet<CallId>,
    /// The calls that are jobs.
    jobs: std::collections::BTreeSet<CallId>,
    /// The per-node job limit last set.
    job_limit: u32,
}

struct Run {
    core: Core,
    now: Instant,
    next: CallId,
    model: Model,
}

impl Run {
    fn send(&mut self, event: Event) {
        let actions = self.core.handle(event, self.now);
        self.apply(actions);
        self.check();
    }

    fn apply(&mut self, actions: Vec<Action>) {
        let m = &mut self.model;
        let mut left_queue = Vec::new();
        let mut job_nodes = Vec::new();
        for action in actions {
            match action {
                Action::Pick(request) => {
                    assert!(!request.candidates.is_empty(), "a pick with no candidate");
                    m.pending.push(request);
                }
                Action::Dispatch {
                    call,
                    node,
                    via,
                    waited,
                } => {
                    assert!(
                        m.alive.contains_key(&call),
                        "dispatch of call {call} that is out"
                    );
                    assert!(
                        !m.running.contains_key(&call),
                        "call {call} dispatched twice"
                    );
                    let epoch = self
                        .core
                        .fleet()
                        .get(node)
                        .expect("dispatch to a node that is up")
                        .epoch;
                    m.running.insert(call, (node, epoch));
                    if m.jobs.contains(&call) {
                        job_nodes.push(node);
                    }
                    if waited.is_some() && via != Via::Swap {
                        left_queue.push(call);
                    }
                }
                Action::Reserved { call, .. } => left_queue.push(call),
                Action::Reject { call, .. } => {
                    assert!(
                        !m.running.contains_key(&call),
                        "running call {call} rejected"
                    );
                    assert!(
                        m.alive.remove(&call).is_some(),
                        "call {call} rejected twice"
                    );
                }
                Action::Swap { node, request, .. } => {
                    let slot = (node, request.slot.clone());
                    assert!(!m.swaps.contains_key(&slot), "second swap on slot {slot:?}");
                    m.swaps.insert(slot, (request.swap_id, request.service));
                }
                Action::SwapEnded { node, slot, .. } => {
                    m.swaps.remove(&(node, slot));
                }
                Action::Position { .. }
                | Action::QueueLength { .. }
                | Action::Ejected { .. }
                | Action::BreakerTripped { .. } => {}
                Action::RetryAfter { call, .. } => {
                    assert!(
                        m.alive.contains_key(&call),
                        "retry of call {call} that is out"
                    );
                    assert!(!m.running.contains_key(&call), "retry of a running call");
                    m.backoff.insert(call);
                }
                Action::RetryRefused { call, .. } => {
                    assert!(
                        m.alive.remove(&call).is_some(),
                        "retry of call {call} refused twice"
                    );
                }
            }
        }
        for node in job_nodes {
            let jobs = self.core.fleet().get(node).map_or(0, |n| n.jobs_in_flight);
            assert!(
                m.job_limit == 0 || jobs <= m.job_limit,
                "node {node} runs {jobs} jobs, limit {}",
                m.job_limit
            );
        }
        // Whoever left a queue had no one still waiting ahead of it.
        for call in left_queue {
            let (Some(key), Some(service)) = (m.keys.get(&call), m.alive.get(&call)) else {
                continue;
            };
            if let Some(queue) = self.core.queue(service) {
                let ahead = queue.calls().find(|w| w.key < *key);
                assert!(
                    ahead.is_none(),
                    "call {call} left the queue while {ahead:?} waited ahead of it"
                );
            }
        }
        for service in SERVICES {
            if let Some(queue) = self.core.queue(service) {
                for w in queue.calls() {
                    m.keys.insert(w.call, w.key);
                }
            }
        }
    }

    fn check(&self) {
        for node in self.core.fleet().iter() {
            for (service, state) in &node.services {
                assert!(
                    state.in_flight <= state.max_concurrent,
                    "node {} over max_concurrent for {service}",
                    node.key
                );
                let ours = self
                    .model
                    .running
                    .iter()
                    .filter(|(call, (n, e))| {
                        *n == node.key
                            && *e == node.epoch
                            && self.model.alive.get(call) == Some(&service.as_str())
                    })
                    .count();
                assert_eq!(
                    state.in_flight as usize, ours,
                    "node {} in flight of {service}",
                    node.key
                );
            }
            let jobs = self
                .model
                .running
                .iter()
                .filter(|(call, (n, e))| {
                    *n == node.key
                        && *e == node.epoch
                        && self.model.alive.contains_key(call)
                        && self.model.jobs.contains(call)
                })
                .count();
            assert_eq!(node.jobs_in_flight as usize, jobs, "node {} jobs", node.key);
            let under_way = node
                .slots
                .slots
                .iter()
                .filter(|s| s.swapping.is_some())
                .count();
            assert!(under_way <= node.slots.slots.len());
        }
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Up(key, v) => self.send(Event::NodeUp {
                node: key,
                spec: variant(key, v),
            }),
            Op::Down(key) => self.send(Event::NodeDown { node: key }),
            Op::Drain(key, draining) => self.send(Event::Drain {
                node: key,
                draining,
            }),
            Op::Arrive {
                service,
                priority,
                tenant,
                realtime,
                job,
            } => {
                let call = self.next;
                self.next += 1;
                let service = SERVICES[service as usize];
                let mut head = CallHead::new(service, 0, 1000);
                head.priority = priority;
                head.realtime = realtime;
                self.model.alive.insert(call, service);
                if job {
                    self.model.jobs.insert(call);
                }
                self.send(Event::CallArrived {
                    call,
                    head: Arc::new(head),
                    tenant: Arc::from(format!("t{tenant}")),
                    prefix: Default::default(),
                    job,
                    exclude: Vec::new(),
                });
            }
            Op::JobLimit(max_per_node) => {
                self.model.job_limit = max_per_node;
                self.send(Event::JobLimit { max_per_node });
            }
            Op::Answer(i, kind, seed) => {
                if self.model.pending.is_empty() {
                    return;
                }
                let request = self.model.pending.remove(i % self.model.pending.len());
                let mut nodes: Vec<NodeKey> = request.candidates.iter().map(|c| c.node).collect();
                let ranking = match kind {
                    0 => {
                        let n = nodes.len() as u64;
                        nodes.rotate_left((seed % n) as usize);
                        Ok(Ranking::new(nodes))
                    }
                    1 => Ok(Ranking::one(99)),
                    2 => Err(PickError::Refused(protocol::CallError::new(
                        ErrorKind::Rejected,
                        "no",
                    ))),
                    _ => Err(PickError::Failed("trap".into())),
                };
                self.send(Event::Picked {
                    call: request.call,
                    ranking,
                });
            }
            Op::Finish(i, ok) => {
                if let Some(call) = nth(self.model.running.keys(), i) {
                    self.model.running.remove(&call);
                    self.model.alive.remove(&call);
                    self.send(Event::CallFinished {
                        call,
                        node_ms: 5.0,
                        end: if ok { CallEnd::Ok } else { CallEnd::Failed },
                    });
                }
            }
            Op::DispatchFailed(i) => {
                if let Some(call) = nth(self.model.running.keys(), i) {
                    self.model.running.remove(&call);
                    self.send(Event::DispatchFailed { call });
                }
            }
            Op::Leave(i) => {
                let waiting: Vec<CallId> = {
                    let mut w: Vec<CallId> = self
                        .model
                        .alive
                        .keys()
                        .filter(|c| !self.model.running.contains_key(c))
                        .copied()
                        .collect();
                    w.sort_unstable();
                    w
                };
                if let Some(call) = nth(waiting.iter(), i) {
                    self.model.alive.remove(&call);
                    self.model.backoff.remove(&call);
                    self.send(Event::CallLeft { call });
                }
            }
            Op::Retry(i) => {
                if let Some(call) = nth(self.model.running.keys(), i) {
                    self.model.running.remove(&call);
                    self.send(Event::RetryAsked { call, jitter: 0.5 });
                }
            }
            Op::Due(i) => {
                if let Some(call) = nth(self.model.backoff.iter(), i) {
                    self.model.backoff.remove(&call);
                    self.send(Event::RetryDue { call });
                }
            }
            Op::Report(i, ok) => {
                let Some(((node, slot), (swap_id, service))) = self
                    .model
                    .swaps
                    .iter()
                    .nth(i % self.model.swaps.len().max(1))
                    .map(|(k, v)| (k.clone(), v.clone()))
                else {
                    return;
                };
                let report = SwapReport {
                    swap_id,
                    slot,
                    loaded: ok.then_some(service),
                    error: (!ok).then(|| "failed".to_string()),
                    duration_ms: 10,
                };
                self.send(Event::SwapReported { node, report });
            }
            Op::Tick(ms) => {
                self.now += Duration::from_millis(ms);
                self.send(Event::Tick);
            }
        }
    }

    /// Ends everything: answers picks, finishes what runs, lets the rest
    /// leave; then the core must hold nothing.
    fn wind_down(&mut self) {
        for _ in 0..1000 {
            if let Some(request) = self.model.pending.pop() {
                let nodes = request.candidates.iter().map(|c| c.node).collect();
                self.send(Event::Picked {
                    call: request.call,
                    ranking: Ok(Ranking::new(nodes)),
                });
            } else if let Some(&call) = self.model.running.keys().next() {
                self.model.running.remove(&call);
                self.model.alive.remove(&call);
                self.send(Event::CallFinished {
                    call,
                    node_ms: 1.0,
                    end: CallEnd::Ok,
                });
            } else if let Some(&call) = self.model.alive.keys().next() {
                self.model.alive.remove(&call);
                self.send(Event::CallLeft { call });
            } else {
                break;
            }
        }
        assert!(self.model.alive.is_empty());
        assert_eq!(
            self.core.calls_held(),
            0,
            "every call left through one exit"
        );
        for service in SERVICES {
            assert!(self.core.queue(service).is_none_or(ServiceQueue::is_empty));
        }
        for node in self.core.fleet().iter() {
            assert_eq!(node.in_flight_total(), 0);
        }
    }
}

fn nth<'a>(mut keys: impl Iterator<Item = &'a CallId> + Clone, i: usize) -> Option<CallId> {
    let n = keys.clone().count();
    if n == 0 {
        return None;
    }
    keys.nth(i % n).copied()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_core_keeps_its_invariants_under_any_event_sequence(
        ops in prop::collection::vec(op(), 1..200),
        cooldown_s in 0u64..2,
        capacity in 1u32..6,
    ) {
        let config = CoreConfig {
            queue_capacity: capacity,
            swap: SwapRules {
                node_cooldown: Duration::from_secs(cooldown_s),
                timeout: Duration::from_secs(3),
                failure_cooldown: Duration::from_secs(1),
                ..SwapRules::default()
            },
            // Two attempts and a small budget: retries are refused too.
            retry: RetryRules {
                max_attempts: 2,
                min_retries_per_second: 1,
                ..RetryRules::default()
            },
            ..CoreConfig::default()
        };
        let mut run = Run { core: Core::new(config), now: Instant::now(), next: 1, model: Model::default() };
        for op in ops {
            run.step(op);
        }
        run.wind_down();
    }
}

#[test]
fn unanswered_picks_never_hold_a_slot() {
    let mut run = Run {
        core: Core::new(CoreConfig::default()),
        now: Instant::now(),
        next: 1,
        model: Model::default(),
    };
    run.step(Op::Up(1, 0));
    for _ in 0..5 {
        run.step(Op::Arrive {
            service: 0,
            priority: 0,
            tenant: 0,
            realtime: false,
            job: false,
        });
    }
    assert_eq!(run.core.fleet().get(1).unwrap().in_flight("x"), 0);
    run.wind_down();
}
