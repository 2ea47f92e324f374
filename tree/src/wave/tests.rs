//! The echo wave at one gateway, and over whole trees driven in virtual
//! time.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

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

/// A tree of gateways: each one's children, by id.
struct Tree {
    children: BTreeMap<String, Vec<String>>,
}

impl Tree {
    /// `fanout` children per gateway, `levels` deep below "g".
    fn regular(fanout: usize, levels: usize) -> Self {
        let mut children = BTreeMap::new();
        let mut level = vec!["g".to_string()];
        for _ in 0..levels {
            let mut next = Vec::new();
            for parent in &level {
                let kids: Vec<String> = (0..fanout).map(|i| format!("{parent}.{i}")).collect();
                next.extend(kids.iter().cloned());
                children.insert(parent.clone(), kids);
            }
            level = next;
        }
        Self { children }
    }

    fn of(&self, id: &str) -> Vec<String> {
        self.children.get(id).cloned().unwrap_or_default()
    }
}

/// Runs one wave from "g" over `tree` in virtual time: every message takes
/// `link`; gateways in `stopped` never answer. Returns the root's answer
/// and when it came.
fn run(
    tree: &Tree,
    link: Duration,
    stopped: &[&str],
    deadline: Duration,
) -> (Subtree<String>, Duration) {
    enum Msg {
        Probe(Probe),
        Answer {
            to: String,
            from: String,
            subtree: Subtree<String>,
        },
        Tick(String),
    }
    struct Net {
        queue: BinaryHeap<Reverse<(Instant, u64)>>,
        messages: BTreeMap<u64, Msg>,
        seq: u64,
    }
    impl Net {
        fn push(&mut self, at: Instant, msg: Msg) {
            self.seq += 1;
            self.messages.insert(self.seq, msg);
            self.queue.push(Reverse((at, self.seq)));
        }
        fn pop(&mut self) -> Option<(Instant, Msg)> {
            let Reverse((at, seq)) = self.queue.pop()?;
            Some((at, self.messages.remove(&seq)?))
        }
    }
    let t0 = Instant::now();
    let mut net = Net {
        queue: BinaryHeap::new(),
        messages: BTreeMap::new(),
        seq: 0,
    };
    let mut parent: BTreeMap<String, String> = BTreeMap::new();
    for (p, kids) in &tree.children {
        for k in kids {
            parent.insert(k.clone(), p.clone());
        }
    }
    let mut echoes: BTreeMap<String, Echo<String>> = BTreeMap::new();
    let mut answer = None;
    let (root, actions) = Echo::start(
        1,
        "g",
        "own g".to_string(),
        tree.of("g"),
        t0 + deadline,
        HOP,
        t0,
    );
    echoes.insert("g".into(), root);
    let mut pending_actions = vec![("g".to_string(), t0, actions)];
    loop {
        for (at_id, now, actions) in pending_actions.drain(..) {
            for action in actions {
                match action {
                    Action::Probe(p) => net.push(now + link, Msg::Probe(p)),
                    Action::Done(subtree) => match parent.get(&at_id) {
                        Some(up) => net.push(
                            now + link,
                            Msg::Answer {
                                to: up.clone(),
                                from: at_id.clone(),
                                subtree,
                            },
                        ),
                        None => answer = Some((subtree, now - t0)),
                    },
                }
            }
            if let Some(at) = echoes.get(&at_id).and_then(Echo::next_timeout) {
                net.push(at, Msg::Tick(at_id.clone()));
            }
        }
        if answer.is_some() {
            break;
        }
        let Some((now, msg)) = net.pop() else {
            break;
        };
        match msg {
            Msg::Probe(p) => {
                if stopped.contains(&p.child.as_str()) {
                    continue;
                }
                let (echo, actions) = Echo::start(
                    p.wave,
                    p.child.clone(),
                    format!("own {}", p.child),
                    tree.of(&p.child),
                    p.deadline,
                    HOP,
                    now,
                );
                echoes.insert(p.child.clone(), echo);
                pending_actions.push((p.child, now, actions));
            }
            Msg::Answer { to, from, subtree } => {
                if let Some(echo) = echoes.get_mut(&to) {
                    let actions = echo.handle(
                        Event::Answered {
                            child: from,
                            subtree,
                        },
                        now,
                    );
                    pending_actions.push((to, now, actions));
                }
            }
            Msg::Tick(at_id) => {
                if let Some(echo) = echoes.get_mut(&at_id) {
                    let actions = echo.handle(Event::Tick, now);
                    pending_actions.push((at_id, now, actions));
                }
            }
        }
    }
    answer.expect("the root answers")
}

#[test]
fn a_wave_over_a_whole_tree_takes_two_link_times_per_level() {
    // 1 + 10 + 100 + 1000 gateways.
    let tree = Tree::regular(10, 3);
    let (answer, took) = run(&tree, ms(2), &[], Duration::from_secs(5));
    assert_eq!(answer.len(), 1111);
    assert_eq!(answer.depth(), 4);
    assert!(!answer.is_partial());
    assert_eq!(took, ms(12), "down and up three levels");
}

#[test]
fn a_stopped_branch_makes_the_answer_partial_by_its_deadline_not_a_hang() {
    let tree = Tree::regular(3, 3);
    let deadline = Duration::from_secs(1);
    let (answer, took) = run(&tree, ms(2), &["g.1", "g.2.0.1"], deadline);
    assert!(answer.is_partial());
    // g.1's subtree (1 + 3 + 9) and one leaf are missing.
    assert_eq!(answer.len(), 40 - 13 - 1);
    let missing: Vec<Vec<String>> = answer
        .failures(&|_: &String| Ok(()))
        .into_iter()
        .map(|(path, _)| path)
        .collect();
    assert_eq!(
        missing,
        vec![
            vec!["g".to_string(), "g.1".to_string()],
            vec![
                "g".to_string(),
                "g.2".to_string(),
                "g.2.0".to_string(),
                "g.2.0.1".to_string()
            ],
        ]
    );
    // Each level answers by its own deadline: the root's is the last.
    assert!(took <= deadline, "{took:?}");
    assert!(took >= deadline - HOP, "{took:?}");
}
