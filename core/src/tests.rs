//! Unit tests of the core, without any IO: admission, late binding, picks
//! as rankings, fail-open, the end of calls, and every swap rule. The
//! property tests over random event sequences are in `tests/props.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::{CallHead, ErrorKind, NodeSpec, ServiceSpec, SlotSpec, SwapReport};

use super::*;

mod hand_up;
mod health;
mod jobs;
mod load;
mod model_load;
mod outlier;
mod props;
mod respec;
mod retries;
mod sample;
mod swaps;

/// A core, a clock and the built-in round-robin, with helpers that read
/// like the events they send.
pub(crate) struct Harness {
    pub core: Core,
    pub balance: RoundRobin,
    pub now: Instant,
    pub next_call: CallId,
}

/// A node spec: `services` as (name, max_concurrent, load_ms), `slots` as
/// (name, can_host, loaded).
pub(crate) fn spec(
    id: &str,
    services: &[(&str, u32, u32)],
    slots: &[(&str, &[&str], Option<&str>)],
) -> NodeSpec {
    NodeSpec {
        id: id.into(),
        region: "test".into(),
        labels: Vec::new(),
        cost_per_hour: 1.0,
        services: services
            .iter()
            .map(|(name, max, load_ms)| ServiceSpec {
                name: (*name).into(),
                max_concurrent: *max,
                load_ms: *load_ms,
                model: false,
                policy: None,
                idempotent: false,
            })
            .collect(),
        slots: slots
            .iter()
            .map(|(name, can_host, loaded)| SlotSpec {
                name: (*name).into(),
                can_host: can_host.iter().map(|s| (*s).into()).collect(),
                loaded: loaded.map(Into::into),
            })
            .collect(),
        stats_interval_ms: 1000,
        heartbeat_ms: None,
        agent_version: "test".into(),
        gateway: false,
    }
}

impl Harness {
    pub fn new(config: CoreConfig) -> Self {
        let t0 = Instant::now();
        Self {
            core: Core::new(config),
            balance: RoundRobin::default(),
            now: t0,
            next_call: 1,
        }
    }

    pub fn send(&mut self, event: Event) -> Vec<Action> {
        drive(&mut self.core, &mut self.balance, event, self.now)
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    pub fn up(&mut self, key: NodeKey, spec: NodeSpec) -> Vec<Action> {
        self.send(Event::NodeUp { node: key, spec })
    }

    /// A call of `service` at `priority` from `tenant`; returns its id and
    /// the actions.
    pub fn call_as(
        &mut self,
        service: &str,
        priority: i32,
        tenant: &str,
        realtime: bool,
    ) -> (CallId, Vec<Action>) {
        let call = self.next_call;
        self.next_call += 1;
        let mut head = CallHead::new(service, 0, 1000);
        head.priority = priority;
        head.realtime = realtime;
        let actions = self.send(Event::CallArrived {
            call,
            head: Arc::new(head),
            tenant: Arc::from(tenant),
            prefix: Default::default(),
            job: false,
            exclude: Vec::new(),
        });
        (call, actions)
    }

    pub fn call(&mut self, service: &str) -> (CallId, Vec<Action>) {
        self.call_as(service, 0, "t", false)
    }

    pub fn finish(&mut self, call: CallId) -> Vec<Action> {
        self.send(Event::CallFinished {
            call,
            node_ms: 10.0,
            end: CallEnd::Ok,
        })
    }

    /// The candidates of the pick a new call of `service` asks for; the
    /// call is left waiting for its pick (holding no slot).
    pub fn candidates(&mut self, service: &str) -> Vec<Candidate> {
        let call = self.next_call;
        self.next_call += 1;
        let actions = self.core.handle(
            Event::CallArrived {
                call,
                head: Arc::new(CallHead::new(service, 0, 1000)),
                tenant: Arc::from("t"),
                prefix: Arc::default(),
                job: false,
                exclude: Vec::new(),
            },
            self.now,
        );
        actions
            .into_iter()
            .find_map(|a| match a {
                Action::Pick(request) => Some(request.candidates),
                _ => None,
            })
            .unwrap_or_default()
    }

    pub fn in_flight(&self, key: NodeKey, service: &str) -> u32 {
        self.core
            .fleet()
            .get(key)
            .map_or(0, |n| n.in_flight(service))
    }
}

/// The node `call` was dispatched to in `actions`, if it was.
pub(crate) fn dispatched(actions: &[Action], call: CallId) -> Option<NodeKey> {
    actions.iter().find_map(|a| match a {
        Action::Dispatch { call: c, node, .. } if *c == call => Some(*node),
        _ => None,
    })
}

/// The error `call` was rejected with in `actions`, if it was.
pub(crate) fn rejected(actions: &[Action], call: CallId) -> Option<ErrorKind> {
    actions.iter().find_map(|a| match a {
        Action::Reject { call: c, error } if *c == call => Some(error.kind),
        _ => None,
    })
}

fn positions(actions: &[Action]) -> HashMap<CallId, u32> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Position { call, position } => Some((*call, *position)),
            _ => None,
        })
        .collect()
}

fn two_nodes() -> Harness {
    let mut h = Harness::new(CoreConfig::default());
    h.up(1, spec("a", &[("svc", 1, 0)], &[]));
    h.up(2, spec("b", &[("svc", 1, 0)], &[]));
    h
}

#[test]
fn a_free_slot_takes_the_call_at_once() {
    let mut h = two_nodes();
    let (c1, a1) = h.call("svc");
    let (c2, a2) = h.call("svc");
    let n1 = dispatched(&a1, c1).expect("dispatched");
    let n2 = dispatched(&a2, c2).expect("dispatched");
    assert_ne!(n1, n2, "round-robin spreads the calls");
    assert_eq!(h.in_flight(n1, "svc") + h.in_flight(n2, "svc"), 2);
}

#[test]
fn a_call_with_no_free_slot_waits_and_takes_the_first_freed_one() {
    let mut h = two_nodes();
    let (c1, a1) = h.call("svc");
    let (c2, _) = h.call("svc");
    let (c3, a3) = h.call("svc");
    assert_eq!(dispatched(&a3, c3), None);
    assert_eq!(positions(&a3).get(&c3), Some(&1));
    let (c4, a4) = h.call("svc");
    assert_eq!(positions(&a4).get(&c4), Some(&2));
    let node = dispatched(&a1, c1).unwrap();
    let after = h.finish(c1);
    assert_eq!(
        dispatched(&after, c3),
        Some(node),
        "late binding: the freed node"
    );
    assert_eq!(positions(&after).get(&c4), Some(&1));
    assert!(matches!(
        after.iter().find(|a| matches!(a, Action::Dispatch { .. })),
        Some(Action::Dispatch {
            waited: Some(_),
            via: Via::Pick,
            ..
        })
    ));
    let _ = c2;
    assert_eq!(h.core.queue("svc").unwrap().dispatched_total, 1);
}

#[test]
fn refusals_name_their_reason() {
    let mut h = Harness::new(CoreConfig {
        queue_capacity: 1,
        ..CoreConfig::default()
    });
    let (c, a) = h.call("svc");
    assert_eq!(rejected(&a, c), Some(ErrorKind::UnknownService));
    h.up(1, spec("a", &[("svc", 1, 0)], &[]));
    let (_busy, _) = h.call("svc");
    let (c, a) = h.call_as("svc", 0, "t", true);
    assert_eq!(
        rejected(&a, c),
        Some(ErrorKind::Occupied),
        "realtime never waits"
    );
    let (_waits, _) = h.call("svc");
    let (c, a) = h.call("svc");
    assert_eq!(
        rejected(&a, c),
        Some(ErrorKind::Overloaded),
        "queue of one is full"
    );
    assert_eq!(h.core.queue("svc").unwrap().overloaded_total, 1);
    h.send(Event::Drain {
        node: 1,
        draining: true,
    });
    let (c, a) = h.call("svc");
    assert_eq!(rejected(&a, c), Some(ErrorKind::NoNodeAvailable));
}

#[test]
fn higher_priority_goes_first_then_arrival() {
    let mut h = Harness::new(CoreConfig::default());
    h.up(1, spec("a", &[("svc", 1, 0)], &[]));
    let (busy, _) = h.call("svc");
    let (low, _) = h.call_as("svc", 0, "t", false);
    let (high1, _) = h.call_as("svc", 5, "t", false);
    let (high2, _) = h.call_as("svc", 5, "t", false);
    let mut order = Vec::new();
    let mut running = busy;
    for _ in 0..3 {
        let a = h.finish(running);
        running = [low, high1, high2]
            .into_iter()
            .find(|c| dispatched(&a, *c).is_some())
            .expect("one dispatched");
        order.push(running);
    }
    assert_eq!(order, vec![high1, high2, low]);
}

#[test]
fn tenants_take_turns_within_a_priority() {
    let mut h = Harness::new(CoreConfig::default());
    h.up(1, spec("a", &[("svc", 1, 0)], &[]));
    let (busy, _) = h.call("svc");
    let a: Vec<CallId> = (0..3).map(|_| h.call_as("svc", 0, "A", false).0).collect();
    let (b, _) = h.call_as("svc", 0, "B", false);
    let mut order = Vec::new();
    let mut running = busy;
    for _ in 0..4 {
        let acts = h.finish(running);
        running = acts
            .iter()
            .find_map(|x| match x {
                Action::Dispatch { call, .. } => Some(*call),
                _ => None,
            })
            .expect("dispatched");
        order.push(running);
    }
    assert_eq!(order, vec![a[0], b, a[1], a[2]]);
}

#[test]
fn a_lost_race_takes_the_next_node_of_the_ranking_without_a_new_pick() {
    let mut h = two_nodes();
    let call = 100;
    let mut pick = h.core.handle(
        Event::CallArrived {
            call,
            head: Arc::new(CallHead::new("svc", 0, 1000)),
            tenant: Arc::from("t"),
            prefix: Default::default(),
            job: false,
            exclude: Vec::new(),
        },
        h.now,
    );
    assert!(matches!(pick.as_slice(), [Action::Pick(r)] if r.candidates.len() == 2));
    let Some(Action::Pick(_)) = pick.pop() else {
        unreachable!()
    };
    // Meanwhile another call takes node 1.
    let (other, a) = h.call("svc");
    let taken = dispatched(&a, other).unwrap();
    // The ranking prefers the node just taken: the next one serves.
    let actions = h.core.handle(
        Event::Picked {
            call,
            ranking: Ok(Ranking::one(taken)),
        },
        h.now,
    );
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Pick(_))),
        "no second pick"
    );
    let node = dispatched(&actions, call).expect("dispatched");
    assert_ne!(node, taken);
}

#[test]
fn after_its_ranking_a_call_tries_the_offered_nodes_from_the_first_choice_on() {
    let mut h = Harness::new(CoreConfig::default());
    for key in 1..=6 {
        h.up(key, spec(&format!("n{key}"), &[("svc", 1, 0)], &[]));
    }
    let call = 50;
    let actions = h.core.handle(
        Event::CallArrived {
            call,
            head: Arc::new(CallHead::new("svc", 0, 1000)),
            tenant: Arc::from("t"),
            prefix: Default::default(),
            job: false,
            exclude: Vec::new(),
        },
        h.now,
    );
    assert!(matches!(actions.as_slice(), [Action::Pick(r)] if r.candidates.len() == 6));
    let actions = h.core.handle(
        Event::Picked {
            call,
            ranking: Ok(Ranking::new(vec![4, 2, 4])),
        },
        h.now,
    );
    let mut order = vec![dispatched(&actions, call).expect("dispatched")];
    // Each failed dispatch goes to the next node: the rest of the ranking,
    // then the offered nodes after the first choice, each node once.
    for _ in 0..5 {
        let actions = h.core.handle(Event::DispatchFailed { call }, h.now);
        order.push(dispatched(&actions, call).expect("next node"));
    }
    assert_eq!(order, vec![4, 2, 5, 6, 1, 3]);
}

#[test]
fn a_ranking_never_reaches_a_node_it_was_not_offered() {
    let mut h = two_nodes();
    h.send(Event::Drain {
        node: 2,
        draining: true,
    });
    let actions = h.core.handle(
        Event::CallArrived {
            call: 7,
            head: Arc::new(CallHead::new("svc", 0, 1000)),
            tenant: Arc::from("t"),
            prefix: Default::default(),
            job: false,
            exclude: Vec::new(),
        },
        h.now,
    );
    assert!(matches!(actions.as_slice(), [Action::Pick(r)] if r.candidates.len() == 1));
    let actions = h.core.handle(
        Event::Picked {
            call: 7,
            ranking: Ok(Ranking::new(vec![2, 99])),
        },
        h.now,
    );
    assert_eq!(dispatched(&actions, 7), Some(1));
}

#[test]
fn failing_open_the_builtin_round_robin_picks_and_failing_closed_the_call_fails() {
    for fail_open in [true, false] {
        let mut h = Harness::new(CoreConfig {
            fail_open,
            ..CoreConfig::default()
        });
        h.up(1, spec("a", &[("svc", 1, 0)], &[]));
        h.core.handle(
            Event::CallArrived {
                call: 1,
                head: Arc::new(CallHead::new("svc", 0, 1000)),
                tenant: Arc::from("t"),
                prefix: Default::default(),
                job: false,
                exclude: Vec::new(),
            },
            h.now,
        );
        let actions = h.core.handle(
            Event::Picked {
                call: 1,
                ranking: Err(PickError::Failed("trap: unreachable".into())),
            },
            h.now,
        );
        if fail_open {
            assert!(matches!(
                actions.as_slice(),
                [Action::Dispatch {
                    call: 1,
                    node: 1,
                    via: Via::Fallback,
                    ..
                }]
            ));
        } else {
            assert_eq!(rejected(&actions, 1), Some(ErrorKind::Internal));
            assert_eq!(h.core.calls_held(), 0);
        }
    }
}

#[test]
fn a_refused_pick_fails_the_call_and_the_next_waiter_is_picked_for() {
    let mut h = Harness::new(CoreConfig::default());
    h.up(1, spec("a", &[("svc", 1, 0)], &[]));
    let (busy, _) = h.call("svc");
    let (c1, _) = h.call("svc");
    let (c2, _) = h.call("svc");
    let actions = h.core.handle(
        Event::CallFinished {
            call: busy,
            node_ms: 1.0,
            end: CallEnd::Ok,
        },
        h.now,
    );
    assert!(matches!(actions.as_slice(), [Action::Pick(r)] if r.call == c1));
    let actions = h.core.handle(
        Event::Picked {
            call: c1,
            ranking: Err(PickError::Refused(protocol::CallError::new(
                ErrorKind::Rejected,
                "no",
            ))),
        },
        h.now,
    );
    assert_eq!(rejected(&actions, c1), Some(ErrorKind::Rejected));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Pick(r) if r.call == c2))
    );
}

#[test]
fn a_call_that_left_during_its_pick_is_forgotten_and_the_late_pick_ignored() {
    let mut h = two_nodes();
    h.core.handle(
        Event::CallArrived {
            call: 1,
            head: Arc::new(CallHead::new("svc", 0, 1000)),
            tenant: Arc::from("t"),
            prefix: Default::default(),
            job: false,
            exclude: Vec::new(),
        },
        h.now,
    );
    assert!(h.core.handle(Event::CallLeft { call: 1 }, h.now).is_empty());
    let late = h.core.handle(
        Event::Picked {
            call: 1,
            ranking: Ok(Ranking::one(1)),
        },
        h.now,
    );
    assert!(late.is_empty());
    assert_eq!(h.in_flight(1, "svc"), 0);
    assert_eq!(h.core.calls_held(), 0);
}

#[test]
fn a_queued_call_that_leaves_is_counted_and_the_others_move_up() {
    let mut h = Harness::new(CoreConfig::default());
    h.up(1, spec("a", &[("svc", 1, 0)], &[]));
    h.call("svc");
    let (c1, _) = h.call("svc");
    let (c2, _) = h.call("svc");
    let actions = h.send(Event::CallLeft { call: c1 });
    // The others are told at the next tick (a burst of leaves is one
    // pass over the queue, not one each).
    assert_eq!(positions(&actions).get(&c2), None);
    assert!(h.core.wants_tick());
    let actions = h.send(Event::Tick);
    assert_eq!(positions(&actions).get(&c2), Some(&1));
    assert_eq!(h.core.queue("svc").unwrap().abandoned_total, 1);
}

#[test]
fn a_burst_of_leaves_tells_each_remaining_waiter_once() {
    let mut h = Harness::new(CoreConfig::default());
    h.up(1, spec("a", &[("svc", 1, 0)], &[]));
    h.call("svc");
    let waiting: Vec<CallId> = (0..100).map(|_| h.call("svc").0).collect();
    let mut told = 0;
    for &call in &waiting[..99] {
        told += positions(&h.send(Event::CallLeft { call })).len();
    }
    told += positions(&h.send(Event::Tick)).len();
    assert_eq!(told, 1, "only the last waiter moved, told once");
    assert_eq!(h.core.queue("svc").unwrap().abandoned_total, 99);
}

#[test]
fn a_failed_dispatch_goes_to_the_next_node_and_never_back() {
    let mut h = two_nodes();
    let (c, a) = h.call("svc");
    let first = dispatched(&a, c).unwrap();
    let a = h.send(Event::DispatchFailed { call: c });
    let second = dispatched(&a, c).expect("redispatched");
    assert_ne!(first, second);
    assert_eq!(h.in_flight(first, "svc"), 0);
    let a = h.send(Event::DispatchFailed { call: c });
    assert_eq!(dispatched(&a, c), None, "both nodes tried: it waits");
    h.send(Event::CallLeft { call: c });
    assert_eq!(h.core.calls_held(), 0);
}

#[test]
fn the_end_of_a_call_on_a_replaced_node_frees_nothing_on_the_new_one() {
    let mut h = Harness::new(CoreConfig::default());
    h.up(1, spec("a", &[("svc", 1, 0)], &[]));
    let (old, _) = h.call("svc");
    h.up(1, spec("a", &[("svc", 1, 0)], &[]));
    let (new, a) = h.call("svc");
    assert_eq!(dispatched(&a, new), Some(1));
    h.finish(old);
    assert_eq!(h.in_flight(1, "svc"), 1, "the new node's call still runs");
    assert_eq!(h.core.fleet().get(1).unwrap().calls_total, 0);
    h.finish(new);
    assert_eq!(h.in_flight(1, "svc"), 0);
}

#[test]
fn finished_calls_feed_the_latency_ewma_only_when_ok() {
    let mut h = Harness::new(CoreConfig::default());
    h.up(1, spec("a", &[("svc", 2, 0)], &[]));
    let (c1, _) = h.call("svc");
    let (c2, _) = h.call("svc");
    h.send(Event::CallFinished {
        call: c1,
        node_ms: 100.0,
        end: CallEnd::Ok,
    });
    h.send(Event::CallFinished {
        call: c2,
        node_ms: 900.0,
        end: CallEnd::Failed,
    });
    let node = h.core.fleet().get(1).unwrap();
    assert_eq!(node.latency("svc").value_ms, 100.0);
    assert_eq!(node.calls_total, 1, "only calls that went well count");
}

#[test]
fn views_show_queues_and_nodes() {
    let mut h = Harness::new(CoreConfig::default());
    h.up(1, spec("a", &[("svc", 1, 0)], &[]));
    h.call("svc");
    h.call("svc");
    h.advance(Duration::from_millis(40));
    let queues = h.core.queue_views(h.now);
    assert_eq!(queues.len(), 1);
    assert_eq!(queues[0].length, 1);
    assert_eq!(queues[0].oldest_wait_ms, 40);
    let nodes = h.core.node_views(h.now);
    assert_eq!(nodes[0].services[0].in_flight, 1);
    assert_eq!(nodes[0].connected_ms, 40);
}

#[test]
fn queue_length_is_told_per_tenant_and_once_more_at_zero() {
    let mut h = Harness::new(CoreConfig::default());
    h.up(1, spec("a", &[("svc", 1, 0)], &[]));
    let (busy, _) = h.call("svc");
    let (_, a) = h.call_as("svc", 0, "A", false);
    assert!(a.contains(&Action::QueueLength {
        service: "svc".into(),
        tenant: Arc::from("A"),
        length: 1
    }));
    let a = h.finish(busy);
    assert!(a.contains(&Action::QueueLength {
        service: "svc".into(),
        tenant: Arc::from("A"),
        length: 0
    }));
    let (_, a) = h.call_as("svc", 0, "B", false);
    assert!(
        !a.iter()
            .any(|x| matches!(x, Action::QueueLength { tenant, .. } if &**tenant == "A"))
    );
}

#[test]
fn every_pick_for_a_call_gets_its_prefix_hashes() {
    let mut h = two_nodes();
    let prefix: Arc<[u64]> = Arc::from(vec![7, 8, 9]);
    let first = h.core.handle(
        Event::CallArrived {
            call: 200,
            head: Arc::new(CallHead::new("svc", 0, 1000)),
            tenant: Arc::from("t"),
            prefix: prefix.clone(),
            job: false,
            exclude: Vec::new(),
        },
        h.now,
    );
    let [Action::Pick(request)] = first.as_slice() else {
        panic!("one pick: {first:?}")
    };
    assert_eq!(request.prefix, prefix);
}
