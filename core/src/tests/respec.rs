//! A node whose services change while registered (a child gateway's fleet):
//! calls in flight keep their slots, new capacity serves waiting calls at
//! once, a dropped service takes no new call.

use super::*;

fn respec(h: &mut Harness, node: NodeKey, spec: NodeSpec) -> Vec<Action> {
    h.send(Event::Respec { node, spec })
}

#[test]
fn more_capacity_serves_the_waiting_calls_and_keeps_those_in_flight() {
    let mut h = Harness::new(CoreConfig::default());
    h.up(1, spec("site-b", &[("echo", 1, 0)], &[]));
    let (first, actions) = h.call("echo");
    assert_eq!(dispatched(&actions, first), Some(1));
    let (second, actions) = h.call("echo");
    assert_eq!(dispatched(&actions, second), None, "full: it waits");
    // The child's fleet grew: two echo slots and a sum service.
    let actions = respec(
        &mut h,
        1,
        spec("site-b", &[("echo", 2, 0), ("sum", 1, 0)], &[]),
    );
    assert_eq!(dispatched(&actions, second), Some(1));
    let (sum, actions) = h.call("sum");
    assert_eq!(dispatched(&actions, sum), Some(1), "sum is hosted now");
    assert_eq!(h.in_flight(1, "echo"), 2, "the first call kept its slot");
    // Ending the first frees one of the two slots, not more.
    h.finish(first);
    assert_eq!(h.in_flight(1, "echo"), 1);
    let (third, actions) = h.call("echo");
    assert_eq!(dispatched(&actions, third), Some(1));
    let (fourth, actions) = h.call("echo");
    assert_eq!(dispatched(&actions, fourth), None);
}

#[test]
fn a_dropped_service_takes_no_new_call_and_its_running_call_ends_cleanly() {
    let mut h = Harness::new(CoreConfig::default());
    h.up(1, spec("site-b", &[("echo", 2, 0), ("sum", 2, 0)], &[]));
    let (running, actions) = h.call("sum");
    assert_eq!(dispatched(&actions, running), Some(1));
    respec(&mut h, 1, spec("site-b", &[("echo", 2, 0)], &[]));
    let (next, actions) = h.call("sum");
    assert_eq!(
        dispatched(&actions, next),
        None,
        "sum is gone from the node"
    );
    assert!(
        rejected(&actions, next).is_some(),
        "no node hosts sum: {actions:?}"
    );
    assert_eq!(h.in_flight(1, "sum"), 0);
    // The call that ran there ends without touching anything else.
    h.finish(running);
    assert_eq!(h.in_flight(1, "echo"), 0);
    // An unknown node's respec is ignored.
    assert!(respec(&mut h, 9, spec("nobody", &[("sum", 1, 0)], &[])).is_empty());
}
