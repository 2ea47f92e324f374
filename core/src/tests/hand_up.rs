//! Rebalancing in a tree of gateways: the parent takes waiting calls
//! (oldest first, none started) to run them on a sibling; the link to the
//! parent is a drained node that takes no call otherwise.

use super::*;

#[test]
fn waiting_calls_go_up_oldest_first_and_the_parent_takes_no_other_call() {
    let mut h = Harness::new(CoreConfig::default());
    h.up(1, spec("node-a", &[("echo", 1, 0)], &[]));
    h.up(9, spec("root", &[("echo", 1000, 0)], &[]));
    h.send(Event::Drain {
        node: 9,
        draining: true,
    });
    let (running, actions) = h.call("echo");
    assert_eq!(dispatched(&actions, running), Some(1));
    let (older, _) = h.call("echo");
    h.advance(Duration::from_millis(10));
    let (newer, _) = h.call("echo");
    let (newest, _) = h.call("echo");
    assert_eq!(h.core.queue("echo").map(|q| q.len()), Some(3));
    // Unknown services and nodes change nothing.
    for (service, to) in [("sum", 9), ("echo", 7)] {
        let actions = h.send(Event::HandUp {
            service: service.into(),
            count: 5,
            to,
        });
        assert!(actions.is_empty(), "{actions:?}");
    }
    let actions = h.send(Event::HandUp {
        service: "echo".into(),
        count: 2,
        to: 9,
    });
    assert_eq!(dispatched(&actions, older), Some(9));
    assert_eq!(dispatched(&actions, newer), Some(9));
    assert_eq!(dispatched(&actions, newest), None, "two asked, two went");
    let waited = actions.iter().find_map(|a| match a {
        Action::Dispatch {
            call, via, waited, ..
        } if *call == older => Some((*via, *waited)),
        _ => None,
    });
    assert_eq!(
        waited,
        Some((Via::HandUp, Some(Duration::from_millis(10)))),
        "{actions:?}"
    );
    assert_eq!(h.core.queue("echo").map(|q| q.len()), Some(1));
    // The drained parent takes no new call: it waits for node-a.
    let (later, actions) = h.call("echo");
    assert_eq!(dispatched(&actions, later), None);
    // A call that went up ends there; node-a's slot is still node-a's.
    h.finish(older);
    assert_eq!(h.in_flight(9, "echo"), 1);
    assert_eq!(h.in_flight(1, "echo"), 1);
    assert_eq!(dispatched(&h.finish(running), newest), Some(1));
}
