//! Nodes shared with other gateways: a load report's calls beyond this
//! gateway's own count as the others', in the free-slot check and in what
//! policies see; a node that refuses a call for being full makes the core
//! pick again without spending the call's attempts or the retry budget.

use std::sync::Arc;

use super::*;

fn load(h: &mut Harness, node: NodeKey, service: &str, in_flight: u32) -> Vec<Action> {
    h.send(Event::Load {
        node,
        in_flight: vec![(service.to_string(), in_flight)],
        jobs_in_flight: None,
        counted: Counted::All,
    })
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

#[test]
fn a_node_full_of_other_gateways_calls_gets_none_until_a_report_says_fewer() {
    let mut h = Harness::new(CoreConfig::default());
    h.up(1, spec("n1", &[("svc", 2, 0)], &[]));
    assert!(load(&mut h, 1, "svc", 2).is_empty());
    let node = h.core.fleet().get(1).unwrap();
    assert!(!node.has_free_slot("svc"));
    assert_eq!((node.in_flight("svc"), node.load("svc")), (0, 2));
    let (call, actions) = h.call("svc");
    assert_eq!(dispatched(&actions, call), None, "queued: {actions:?}");
    assert_eq!(rejected(&actions, call), None, "queued, not refused");
    // A report with as many calls changes nothing.
    assert_eq!(dispatched(&load(&mut h, 1, "svc", 2), call), None);
    // One of the others' calls ended: room for one.
    assert_eq!(dispatched(&load(&mut h, 1, "svc", 1), call), Some(1));
    let (second, actions) = h.call("svc");
    assert_eq!(dispatched(&actions, second), None, "1 own + 1 other = 2");
    // The report now counts this gateway's call too: 1 other still.
    assert_eq!(dispatched(&load(&mut h, 1, "svc", 2), second), None);
    assert_eq!(dispatched(&h.finish(call), second), Some(1));
}

#[test]
fn others_never_go_below_zero_and_unknown_services_are_ignored() {
    let mut h = Harness::new(CoreConfig::default());
    h.up(1, spec("n1", &[("svc", 4, 0)], &[]));
    let (a, actions) = h.call("svc");
    assert_eq!(dispatched(&actions, a), Some(1));
    let (b, actions) = h.call("svc");
    assert_eq!(dispatched(&actions, b), Some(1));
    // A report taken before this gateway's calls reached the node.
    h.send(Event::Load {
        node: 1,
        in_flight: vec![("svc".into(), 0), ("unknown".into(), 9)],
        jobs_in_flight: None,
        counted: Counted::All,
    });
    let node = h.core.fleet().get(1).unwrap();
    assert_eq!(node.services["svc"].others, 0);
    assert_eq!(node.load("svc"), 2);
    assert!(!node.services.contains_key("unknown"));
    // A report for a node that is not up is ignored.
    assert!(load(&mut h, 7, "svc", 3).is_empty());
}

#[test]
fn policies_see_the_nodes_whole_load() {
    let mut h = Harness::new(CoreConfig::default());
    h.up(1, spec("n1", &[("svc", 8, 0), ("other", 8, 0)], &[]));
    h.send(Event::Load {
        node: 1,
        in_flight: vec![("svc".into(), 3), ("other".into(), 2)],
        jobs_in_flight: None,
        counted: Counted::All,
    });
    let actions = h.core.handle(
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
    let candidates = actions
        .iter()
        .find_map(|a| match a {
            Action::Pick(request) => Some(request.candidates.clone()),
            _ => None,
        })
        .expect("a pick");
    assert_eq!(candidates.len(), 1);
    assert_eq!(candidates[0].in_flight, 3);
    assert_eq!(candidates[0].node_in_flight, 5);
    assert_eq!(candidates[0].max_concurrent, 8);
}

#[test]
fn a_full_node_makes_the_core_pick_again_without_spending_attempts_or_budget() {
    let mut config = CoreConfig::default();
    config.retry.max_attempts = 2;
    let mut h = Harness::new(config);
    h.up(1, spec("n1", &[("svc", 1, 0)], &[]));
    h.up(2, spec("n2", &[("svc", 1, 0)], &[]));
    let (call, actions) = h.call("svc");
    let first = dispatched(&actions, call).unwrap();
    let other = if first == 1 { 2 } else { 1 };
    // The other node is busy with another gateway's call.
    load(&mut h, other, "svc", 1);
    for _ in 0..5 {
        let a = h.send(Event::NodeFull { call, jitter: 1.0 });
        assert_eq!(
            retry_after(&a, call),
            Some((1, Duration::from_millis(25))),
            "the same attempt: {a:?}"
        );
        let node = h.core.fleet().get(first).unwrap();
        assert_eq!(node.in_flight("svc"), 0, "the slot is freed");
        assert!(!node.has_free_slot("svc"), "taken to be full");
        assert_eq!(node.services["svc"].consecutive_failures, 0);
        let a = h.send(Event::RetryDue { call });
        assert_eq!(dispatched(&a, call), None, "both nodes full: it waits");
        assert_eq!(rejected(&a, call), None);
        // The node reports it has room again: the call goes there.
        let a = load(&mut h, first, "svc", 0);
        assert_eq!(dispatched(&a, call), Some(first), "{a:?}");
    }
    let counters = h.core.retry_counters("svc");
    assert_eq!((counters.retries_total, counters.refused_total), (0, 0));
    // A failure still counts as a retry, within the attempts.
    let a = h.send(Event::RetryAsked { call, jitter: 1.0 });
    assert_eq!(retry_after(&a, call).map(|r| r.0), Some(2));
}

#[test]
fn a_service_busy_with_other_gateways_calls_is_not_swapped_out() {
    let mut config = CoreConfig::default();
    config.swap.node_cooldown = Duration::ZERO;
    let mut h = Harness::new(config);
    h.up(
        1,
        spec(
            "n1",
            &[("a", 4, 100), ("b", 4, 100)],
            &[("gpu0", &["a", "b"], Some("a"))],
        ),
    );
    load(&mut h, 1, "a", 1);
    let (_, actions) = h.call("b");
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Swap { .. })),
        "a runs another gateway's call: {actions:?}"
    );
    load(&mut h, 1, "a", 0);
    let actions = h.send(Event::Tick);
    assert!(
        actions.iter().any(|a| matches!(a, Action::Swap { .. })),
        "idle now: {actions:?}"
    );
}

#[test]
fn a_report_of_the_others_calls_alone_is_taken_as_it_is() {
    let mut h = Harness::new(CoreConfig::default());
    h.up(1, spec("n1", &[("svc", 2, 0)], &[]));
    let (a, actions) = h.call("svc");
    assert_eq!(dispatched(&actions, a), Some(1));
    // The node counts every gateway's: sent while this gateway's call was
    // running, read after it ended, it makes that call another gateway's.
    h.finish(a);
    load(&mut h, 1, "svc", 1);
    assert_eq!(h.core.fleet().get(1).unwrap().load("svc"), 1, "a phantom");
    // Counted apart, the same moment says what the others run: nothing.
    h.send(Event::Load {
        node: 1,
        in_flight: vec![("svc".into(), 0)],
        jobs_in_flight: Some(0),
        counted: Counted::Others,
    });
    assert_eq!(h.core.fleet().get(1).unwrap().load("svc"), 0);
    // This gateway's calls are never taken off the others'.
    let (b, actions) = h.call("svc");
    assert_eq!(dispatched(&actions, b), Some(1));
    h.send(Event::Load {
        node: 1,
        in_flight: vec![("svc".into(), 1)],
        jobs_in_flight: Some(1),
        counted: Counted::Others,
    });
    let node = h.core.fleet().get(1).unwrap();
    assert_eq!((node.in_flight("svc"), node.load("svc")), (1, 2));
    assert!(!node.has_free_slot("svc"));
    assert_eq!(node.jobs_others, 1);
}
