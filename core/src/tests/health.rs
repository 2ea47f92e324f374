//! Active health checks: a service an agent reports unhealthy in its stats
//! gets no calls on that node; calls queued meanwhile move when it recovers.

use protocol::NodeStats;

use super::*;

fn report(h: &mut Harness, node: NodeKey, unhealthy: &[&str]) -> Vec<Action> {
    h.send(Event::Stats {
        node,
        stats: NodeStats {
            unhealthy: unhealthy.iter().map(|s| (*s).to_string()).collect(),
            ..NodeStats::default()
        },
    })
}

#[test]
fn an_unhealthy_service_gets_no_calls_on_that_node() {
    let mut h = Harness::new(CoreConfig::default());
    h.up(1, spec("n1", &[("svc", 64, 0), ("other", 64, 0)], &[]));
    h.up(2, spec("n2", &[("svc", 64, 0)], &[]));
    report(&mut h, 1, &["svc"]);
    let view = h.core.fleet().get(1).unwrap().view(h.now);
    let svc = view.services.iter().find(|s| s.name == "svc").unwrap();
    assert!(svc.unhealthy, "the view shows it: {view:?}");
    for _ in 0..20 {
        let (call, actions) = h.call("svc");
        assert_eq!(dispatched(&actions, call), Some(2), "{actions:?}");
    }
    // The node's other service is unaffected.
    let (call, actions) = h.call("other");
    assert_eq!(dispatched(&actions, call), Some(1), "{actions:?}");
}

#[test]
fn calls_queued_while_unhealthy_everywhere_run_when_it_recovers() {
    let mut h = Harness::new(CoreConfig::default());
    h.up(1, spec("n1", &[("svc", 4, 0)], &[]));
    report(&mut h, 1, &["svc"]);
    let (call, actions) = h.call("svc");
    assert_eq!(dispatched(&actions, call), None, "queued: {actions:?}");
    assert_eq!(rejected(&actions, call), None, "queued, not refused");
    // A report naming another service changes nothing for it.
    assert!(dispatched(&report(&mut h, 1, &["svc", "gone"]), call).is_none());
    let actions = report(&mut h, 1, &[]);
    assert_eq!(dispatched(&actions, call), Some(1), "{actions:?}");
    assert!(!h.core.fleet().get(1).unwrap().view(h.now).services[0].unhealthy);
}
