//! The echo wave at one gateway. Whole trees of gateways running it, in
//! virtual time: the simulator's `tree` module.

use super::*;

const HOP: Duration = Duration::from_millis(100);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn done<R: Clone>(actions: &[Action<R>]) -> Option<Subtree<R>> {
    actions.iter().find_map(|a| match a {
        Action::Done(t) => Some(t.clone()),
        Action::Probe(_) => None,
    })
}

fn probes<R>(actions: &[Action<R>]) -> Vec<Probe> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Probe(p) => Some(p.clone()),
            Action::Done(_) => None,
        })
        .collect()
}

#[test]
fn a_leaf_answers_at_once() {
    let now = Instant::now();
    let (echo, actions) = Echo::start(1, "leaf", 7u32, Vec::new(), now + ms(500), HOP, now);
    assert_eq!(done(&actions), Some(Subtree::leaf("leaf", 7)));
    assert!(echo.is_done());
    assert_eq!(echo.next_timeout(), None);
}

#[test]
fn a_gateway_answers_once_every_child_did_in_its_order() {
    let now = Instant::now();
    let children = vec!["b".to_string(), "a".to_string(), "b".to_string()];
    let (mut echo, actions) = Echo::start(9, "root", 0u32, children, now + ms(1000), HOP, now);
    let sent = probes(&actions);
    assert_eq!(sent.len(), 2, "a duplicate child is probed once");
    assert!(
        sent.iter()
            .all(|p| p.wave == 9 && p.deadline == now + ms(900))
    );
    assert_eq!(echo.next_timeout(), Some(now + ms(1000)));
    let a = Subtree::leaf("a", 1);
    let out = echo.handle(
        Event::Answered {
            child: "a".into(),
            subtree: a.clone(),
        },
        now + ms(10),
    );
    assert!(out.is_empty(), "b is still pending");
    // An unknown child's answer changes nothing.
    let out = echo.handle(
        Event::Answered {
            child: "zz".into(),
            subtree: Subtree::leaf("zz", 5),
        },
        now + ms(11),
    );
    assert!(out.is_empty());
    let b = Subtree::leaf("b", 2);
    let out = echo.handle(
        Event::Answered {
            child: "b".into(),
            subtree: b.clone(),
        },
        now + ms(20),
    );
    let tree = done(&out).expect("answered");
    assert_eq!(
        tree.children,
        vec![Branch::Answered(b), Branch::Answered(a)]
    );
    assert!(!tree.is_partial());
    assert_eq!((tree.len(), tree.depth()), (3, 2));
    // After the end nothing changes.
    assert!(echo.handle(Event::Tick, now + ms(2000)).is_empty());
}

#[test]
fn a_silent_child_is_missing_at_the_deadline_and_a_lost_link_at_once() {
    let now = Instant::now();
    let children = vec!["up".to_string(), "stopped".to_string(), "gone".to_string()];
    let (mut echo, _) = Echo::start(1, "root", (), children, now + ms(1000), HOP, now);
    echo.handle(
        Event::Answered {
            child: "up".into(),
            subtree: Subtree::leaf("up", ()),
        },
        now + ms(5),
    );
    assert!(
        echo.handle(
            Event::Unreachable {
                child: "gone".into(),
                why: "not connected".into()
            },
            now + ms(6)
        )
        .is_empty()
    );
    assert!(echo.handle(Event::Tick, now + ms(999)).is_empty());
    let tree = done(&echo.handle(Event::Tick, now + ms(1000))).expect("answered at the deadline");
    assert!(tree.is_partial());
    let failures = tree.failures(&|_: &()| Ok(()));
    assert_eq!(
        failures,
        vec![
            (
                vec!["root".to_string(), "stopped".to_string()],
                "no answer in time".to_string()
            ),
            (
                vec!["root".to_string(), "gone".to_string()],
                "unreachable: not connected".to_string()
            ),
        ]
    );
}

#[test]
fn a_child_with_no_time_left_is_not_probed() {
    let now = Instant::now();
    let (echo, actions) = Echo::start(1, "mid", (), vec!["c".to_string()], now + ms(50), HOP, now);
    assert!(probes(&actions).is_empty());
    let tree = done(&actions).expect("answers at once");
    assert_eq!(
        tree.children,
        vec![Branch::Missing {
            child: "c".into(),
            why: Missing::TimedOut
        }]
    );
    assert!(echo.is_done());
}

#[test]
fn failures_name_the_gateways_that_did_not_apply_a_change() {
    let applied = |ok: bool| if ok { Ok(()) } else { Err("no".to_string()) };
    let tree = Subtree {
        id: "root".into(),
        own: true,
        children: vec![
            Branch::Answered(Subtree {
                id: "a".into(),
                own: true,
                children: vec![Branch::Answered(Subtree::leaf("a1", false))],
            }),
            Branch::Answered(Subtree::leaf("b", true)),
        ],
    };
    let check = |ok: &bool| applied(*ok).map_err(|e| format!("not applied: {e}"));
    assert_eq!(
        tree.failures(&check),
        vec![(
            vec!["root".to_string(), "a".to_string(), "a1".to_string()],
            "not applied: no".to_string()
        )]
    );
}
