//! Retries and circuit breakers: another node for the retry, the backoff,
//! the attempts cap, the retry budget and its per-second floor, the
//! breakers, a call leaving while it backs off.

use super::*;

fn fleet(nodes: u32, max_concurrent: u32, config: CoreConfig) -> Harness {
    let mut h = Harness::new(config);
    for key in 1..=nodes {
        h.up(
            key,
            spec(&format!("n{key}"), &[("svc", max_concurrent, 0)], &[]),
        );
    }
    h
}

fn retry_after(actions: &[Action], call: CallId) -> Option<(u32, Duration)> {
    actions.iter().find_map(|a| match a {
        Action::RetryAfter {
            call: c,
            attempt,
            backoff,
        } if *c == call => Some((*attempt, *backoff)),
        _ => None,
    })
}

fn refused(actions: &[Action], call: CallId) -> Option<RetryRefusal> {
    actions.iter().find_map(|a| match a {
        Action::RetryRefused { call: c, why } if *c == call => Some(*why),
        _ => None,
    })
}

fn tripped(actions: &[Action]) -> Option<Breaker> {
    actions.iter().find_map(|a| match a {
        Action::BreakerTripped { breaker, .. } => Some(*breaker),
        _ => None,
    })
}

/// Fails `call` on its node and asks for a retry with jitter 1.0.
fn fail(h: &mut Harness, call: CallId) -> Vec<Action> {
    h.send(Event::RetryAsked { call, jitter: 1.0 })
}

#[test]
fn a_retry_waits_its_backoff_then_goes_to_a_node_not_tried() {
    let mut h = fleet(2, 4, CoreConfig::default());
    let (c, a) = h.call("svc");
    let first = dispatched(&a, c).unwrap();
    let a = fail(&mut h, c);
    assert_eq!(retry_after(&a, c), Some((2, Duration::from_millis(25))));
    assert_eq!(h.in_flight(first, "svc"), 0, "the slot is free");
    assert_eq!(dispatched(&a, c), None, "not before its backoff");
    // The round-robin would start at the node tried first: it is excluded.
    for _ in 0..3 {
        let a = h.send(Event::RetryDue { call: c });
        if let Some(node) = dispatched(&a, c) {
            assert_ne!(node, first, "never the node tried");
            let a = fail(&mut h, c);
            assert_eq!(
                retry_after(&a, c),
                Some((3, Duration::from_millis(50))),
                "twice the backoff"
            );
            let a = h.send(Event::RetryDue { call: c });
            assert!(
                dispatched(&a, c).is_some(),
                "both nodes tried: either may run it"
            );
            let a = fail(&mut h, c);
            assert_eq!(refused(&a, c), Some(RetryRefusal::Attempts));
            assert_eq!(h.core.calls_held(), 0, "a refused call is forgotten");
            assert_eq!(h.core.retry_counters("svc").retries_total, 2);
            return;
        }
    }
    panic!("the retry was never dispatched");
}

#[test]
fn retried_failures_count_towards_the_nodes_ejection() {
    let mut h = fleet(2, 8, CoreConfig::default());
    let mut ejected = false;
    for _ in 0..5 {
        let call = h.next_call;
        h.next_call += 1;
        let a = h.core.handle(
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
        assert!(matches!(a.as_slice(), [Action::Pick(_)]));
        let a = h.core.handle(
            Event::Picked {
                call,
                ranking: Ok(Ranking::one(1)),
            },
            h.now,
        );
        assert_eq!(dispatched(&a, call), Some(1));
        let a = fail(&mut h, call);
        ejected |= a
            .iter()
            .any(|a| matches!(a, Action::Ejected { node: 1, .. }));
        let a = h.send(Event::RetryDue { call });
        assert_eq!(
            dispatched(&a, call),
            Some(2),
            "the retry runs elsewhere: {a:?}"
        );
        h.finish(call);
        // One call at a time: each retry takes a token of the per-second floor.
        h.advance(Duration::from_millis(400));
    }
    assert!(ejected, "five failures in a row eject the node");
}

#[test]
fn the_budget_allows_its_percentage_then_its_tokens_per_second() {
    let mut h = fleet(2, 10, CoreConfig::default());
    let calls: Vec<CallId> = (0..10)
        .map(|_| {
            let (c, a) = h.call("svc");
            assert!(dispatched(&a, c).is_some());
            c
        })
        .collect();
    let mut granted = Vec::new();
    let mut budget = 0;
    for &c in &calls {
        let a = fail(&mut h, c);
        match (retry_after(&a, c), refused(&a, c)) {
            (Some(_), None) => granted.push(c),
            (None, Some(RetryRefusal::Budget)) => budget += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    // 20% of 10 calls is 2 retries, then 3 tokens (3 per second).
    assert_eq!(granted.len(), 5);
    assert_eq!(budget, 5);
    assert_eq!(h.core.retry_counters("svc").refused_total, 5);
    // A second later the bucket is full again.
    h.advance(Duration::from_secs(1));
    let c = granted[0];
    assert!(dispatched(&h.send(Event::RetryDue { call: c }), c).is_some());
    assert!(retry_after(&fail(&mut h, c), c).is_some(), "a token");
}

#[test]
fn a_call_that_never_ran_is_retried_past_the_budget_but_not_its_attempts() {
    let mut h = fleet(2, 10, CoreConfig::default());
    let calls: Vec<CallId> = (0..10)
        .map(|_| {
            let (c, a) = h.call("svc");
            assert!(dispatched(&a, c).is_some());
            c
        })
        .collect();
    for &c in &calls {
        let a = h.send(Event::NotRun {
            call: c,
            jitter: 1.0,
        });
        assert!(retry_after(&a, c).is_some(), "granted: {a:?}");
    }
    assert_eq!(h.core.retry_counters("svc").refused_total, 0);
    let c = calls[0];
    for attempt in 2..=3 {
        assert!(dispatched(&h.send(Event::RetryDue { call: c }), c).is_some());
        let a = h.send(Event::NotRun {
            call: c,
            jitter: 1.0,
        });
        if attempt < 3 {
            assert!(retry_after(&a, c).is_some(), "attempt {attempt}");
        } else {
            assert_eq!(refused(&a, c), Some(RetryRefusal::Attempts));
        }
    }
}

#[test]
fn the_retries_breaker_refuses_a_retry_past_its_limit() {
    let mut config = CoreConfig::default();
    config.service_breakers.insert(
        "svc".into(),
        Breakers {
            max_retries_in_flight: Some(1),
            ..Breakers::default()
        },
    );
    let mut h = fleet(2, 10, config);
    let (c1, _) = h.call("svc");
    let (c2, _) = h.call("svc");
    assert!(retry_after(&fail(&mut h, c1), c1).is_some());
    let a = fail(&mut h, c2);
    assert_eq!(refused(&a, c2), Some(RetryRefusal::Breaker));
    assert_eq!(tripped(&a), Some(Breaker::Retries));
}

#[test]
fn the_waiting_and_in_flight_breakers_refuse_at_once_with_overloaded() {
    for (limits, breaker) in [
        (
            Breakers {
                max_waiting: Some(1),
                ..Breakers::default()
            },
            Breaker::Waiting,
        ),
        (
            Breakers {
                max_in_flight: Some(2),
                ..Breakers::default()
            },
            Breaker::InFlight,
        ),
    ] {
        let mut h = fleet(
            1,
            1,
            CoreConfig {
                breakers: limits,
                ..CoreConfig::default()
            },
        );
        let (c1, a) = h.call("svc");
        assert!(dispatched(&a, c1).is_some());
        let (c2, a) = h.call("svc");
        assert_eq!(rejected(&a, c2), None, "one may wait");
        let (c3, a) = h.call("svc");
        assert_eq!(rejected(&a, c3), Some(ErrorKind::Overloaded));
        assert_eq!(tripped(&a), Some(breaker));
        assert_eq!(h.core.retry_counters("svc").tripped_total, 1);
        h.finish(c1);
        let (c4, a) = h.call("svc");
        assert_eq!(rejected(&a, c4), None, "closed again once below");
    }
}

#[test]
fn a_call_that_leaves_while_backing_off_is_forgotten() {
    let mut h = fleet(2, 4, CoreConfig::default());
    let (c, _) = h.call("svc");
    assert!(retry_after(&fail(&mut h, c), c).is_some());
    assert_eq!(h.core.calls_held(), 1);
    h.send(Event::CallLeft { call: c });
    assert_eq!(h.core.calls_held(), 0);
    assert!(h.send(Event::RetryDue { call: c }).is_empty(), "ignored");
    assert!(
        h.send(Event::RetryAsked {
            call: c,
            jitter: 0.5
        })
        .is_empty(),
        "ignored"
    );
}

#[test]
fn with_one_node_the_retry_runs_there_again() {
    let mut h = fleet(1, 4, CoreConfig::default());
    let (c, _) = h.call("svc");
    assert!(retry_after(&fail(&mut h, c), c).is_some());
    assert_eq!(dispatched(&h.send(Event::RetryDue { call: c }), c), Some(1));
}
