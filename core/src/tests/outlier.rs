//! Outlier ejection: consecutive failures, ejection time growing with each
//! ejection, the percentage cap, never the last node.

use super::*;

fn fleet(nodes: u32) -> Harness {
    let mut h = Harness::new(CoreConfig::default());
    for key in 1..=nodes {
        h.up(key, spec(&format!("n{key}"), &[("svc", 8, 0)], &[]));
    }
    h
}

/// Runs one call on `node` (the only free candidate it can get: the others
/// are drained for it) and ends it with `end`; returns the actions.
fn call_on(h: &mut Harness, node: NodeKey, end: CallEnd) -> Vec<Action> {
    let call = h.next_call;
    h.next_call += 1;
    let mut actions = h.core.handle(
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
    if let Some(Action::Pick(_)) = actions.pop() {
        actions = h.core.handle(
            Event::Picked {
                call,
                ranking: Ok(Ranking::one(node)),
            },
            h.now,
        );
    }
    assert_eq!(
        dispatched(&actions, call),
        Some(node),
        "dispatched to {node}"
    );
    h.core.handle(
        Event::CallFinished {
            call,
            node_ms: 5.0,
            end,
        },
        h.now,
    )
}

fn ejected(actions: &[Action]) -> Option<(NodeKey, Duration)> {
    actions.iter().find_map(|a| match a {
        Action::Ejected { node, ejection, .. } => Some((*node, *ejection)),
        _ => None,
    })
}

fn offered(h: &mut Harness) -> Vec<NodeKey> {
    let call = h.next_call;
    h.next_call += 1;
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
    h.core.handle(Event::CallLeft { call }, h.now);
    match actions.as_slice() {
        [Action::Pick(r)] => r.candidates.iter().map(|c| c.node).collect(),
        other => panic!("expected a pick, got {other:?}"),
    }
}

#[test]
fn five_failures_in_a_row_eject_for_longer_each_time() {
    let mut h = fleet(2);
    for _ in 0..4 {
        assert_eq!(ejected(&call_on(&mut h, 1, CallEnd::Failed)), None);
    }
    let a = call_on(&mut h, 1, CallEnd::Failed);
    assert_eq!(ejected(&a), Some((1, Duration::from_secs(30))));
    assert_eq!(offered(&mut h), vec![2], "out of the candidates");
    assert!(h.core.wants_tick());
    h.advance(Duration::from_secs(31));
    h.send(Event::Tick);
    assert_eq!(offered(&mut h), vec![1, 2], "back after 30 s");
    for _ in 0..4 {
        call_on(&mut h, 1, CallEnd::Failed);
    }
    let a = call_on(&mut h, 1, CallEnd::Failed);
    assert_eq!(
        ejected(&a),
        Some((1, Duration::from_secs(60))),
        "twice as long"
    );
}

#[test]
fn a_success_or_a_caller_that_left_resets_or_keeps_the_count() {
    let mut h = fleet(2);
    for _ in 0..4 {
        call_on(&mut h, 1, CallEnd::Failed);
    }
    call_on(&mut h, 1, CallEnd::Ok);
    for _ in 0..4 {
        assert_eq!(ejected(&call_on(&mut h, 1, CallEnd::Failed)), None);
    }
    assert_eq!(
        ejected(&call_on(&mut h, 1, CallEnd::Abandoned)),
        None,
        "not the node's fault"
    );
    assert!(ejected(&call_on(&mut h, 1, CallEnd::Failed)).is_some());
}

#[test]
fn the_last_node_is_never_ejected() {
    let mut h = fleet(1);
    for _ in 0..20 {
        assert_eq!(ejected(&call_on(&mut h, 1, CallEnd::Failed)), None);
    }
    assert_eq!(offered(&mut h), vec![1]);
}

#[test]
fn at_most_the_percentage_cap_is_ejected_but_at_least_one() {
    let mut h = fleet(3);
    for _ in 0..5 {
        call_on(&mut h, 1, CallEnd::Failed);
    }
    assert_eq!(
        offered(&mut h),
        vec![2, 3],
        "one of three may go (10%, at least one)"
    );
    for _ in 0..10 {
        assert_eq!(ejected(&call_on(&mut h, 2, CallEnd::Failed)), None);
    }
    assert_eq!(offered(&mut h), vec![2, 3]);
}

#[test]
fn ejection_can_be_turned_off() {
    let mut h = Harness::new(CoreConfig {
        outlier: OutlierRules {
            consecutive_failures: 0,
            ..OutlierRules::default()
        },
        ..CoreConfig::default()
    });
    h.up(1, spec("n1", &[("svc", 8, 0)], &[]));
    h.up(2, spec("n2", &[("svc", 8, 0)], &[]));
    for _ in 0..10 {
        assert_eq!(ejected(&call_on(&mut h, 1, CallEnd::Failed)), None);
    }
}

#[test]
fn success_rate_ejection_takes_out_the_node_far_below_the_others() {
    let mut h = Harness::new(CoreConfig {
        outlier: OutlierRules {
            consecutive_failures: 0,
            max_ejected_percent: 50,
            success_rate: Some(crate::SuccessRateRules {
                request_volume: 10,
                ..crate::SuccessRateRules::default()
            }),
            ..OutlierRules::default()
        },
        ..CoreConfig::default()
    });
    for key in 1..=6 {
        h.up(key, spec(&format!("n{key}"), &[("svc", 8, 0)], &[]));
    }
    // Node 6 fails half its calls, the others one in ten.
    for i in 0..10 {
        for key in 1..=6 {
            let fails = if key == 6 { i % 2 == 0 } else { i == 0 };
            let end = if fails { CallEnd::Failed } else { CallEnd::Ok };
            assert_eq!(
                ejected(&call_on(&mut h, key, end)),
                None,
                "not before the interval"
            );
        }
    }
    h.advance(Duration::from_secs(10));
    let a = h.send(Event::Tick);
    assert_eq!(ejected(&a), Some((6, Duration::from_secs(30))));
    assert!(a.iter().any(|a| matches!(
        a,
        Action::Ejected {
            why: crate::EjectReason::SuccessRate,
            ..
        }
    )));
    let view = h.core.node_views(h.now);
    let s = &view[5].services[0];
    assert_eq!(s.ejected_why.as_deref(), Some("success_rate"));
    assert_eq!(s.ejected_for_ms, 30_000);
    // A new interval starts empty: nobody has the volume yet.
    h.advance(Duration::from_secs(10));
    assert_eq!(ejected(&h.send(Event::Tick)), None);
}
