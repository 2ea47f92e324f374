//! The per-node job limit ([`Event::JobLimit`]): job calls go only to a
//! node running fewer jobs than the limit, other calls are not held back,
//! and a job that ends makes room.

use super::*;

/// A job call of `service` (realtime or not); its id and the actions.
fn job(h: &mut Harness, service: &str, realtime: bool) -> (CallId, Vec<Action>) {
    let call = h.next_call;
    h.next_call += 1;
    let mut head = CallHead::new(service, 0, 1000);
    head.realtime = realtime;
    let actions = h.send(Event::CallArrived {
        call,
        head: Arc::new(head),
        tenant: Arc::from("t"),
        prefix: Default::default(),
        job: true,
        exclude: Vec::new(),
    });
    (call, actions)
}

fn jobs_on(h: &Harness, key: NodeKey) -> u32 {
    h.core.fleet().get(key).map_or(0, |n| n.jobs_in_flight)
}

/// Two nodes with four slots of `sh` and four of `py` each, at most one
/// job per node.
fn limited() -> Harness {
    let mut h = Harness::new(CoreConfig::default());
    h.up(1, spec("a", &[("sh", 4, 0), ("py", 4, 0)], &[]));
    h.up(2, spec("b", &[("sh", 4, 0), ("py", 4, 0)], &[]));
    h.send(Event::JobLimit { max_per_node: 1 });
    assert_eq!(h.core.max_jobs_per_node(), 1);
    h
}

#[test]
fn jobs_spread_one_per_node_and_the_third_waits() {
    let mut h = limited();
    let (j1, a1) = job(&mut h, "sh", false);
    let (j2, a2) = job(&mut h, "py", false);
    let n1 = dispatched(&a1, j1).expect("first job runs");
    let n2 = dispatched(&a2, j2).expect("second job runs");
    assert_ne!(n1, n2, "a node at its job limit is no candidate");
    let (j3, a3) = job(&mut h, "sh", false);
    assert_eq!(dispatched(&a3, j3), None, "no node has room: it waits");
    assert_eq!(jobs_on(&h, 1) + jobs_on(&h, 2), 2);
    // Calls that are not jobs still find the free slots.
    let (c, ac) = h.call("sh");
    assert!(
        dispatched(&ac, c).is_some(),
        "a plain call is not held back"
    );
    // The end of a job of another service makes room at once.
    let after = h.finish(j2);
    assert_eq!(dispatched(&after, j3), Some(n2), "the freed node takes it");
    assert_eq!(jobs_on(&h, n2), 1);
}

#[test]
fn a_held_job_that_leaves_is_forgotten() {
    let mut h = limited();
    job(&mut h, "sh", false);
    job(&mut h, "sh", false);
    let (held, _) = job(&mut h, "sh", false);
    assert!(h.core.wants_tick(), "a held job keeps the ticks coming");
    h.send(Event::CallLeft { call: held });
    assert_eq!(h.core.calls_held(), 2);
    h.advance(TICK);
    assert!(h.send(Event::Tick).is_empty());
}

#[test]
fn a_realtime_job_with_no_room_is_occupied() {
    let mut h = limited();
    job(&mut h, "sh", false);
    job(&mut h, "sh", false);
    let (rt, a) = job(&mut h, "sh", true);
    assert_eq!(rejected(&a, rt), Some(ErrorKind::Occupied));
}

#[test]
fn raising_or_lifting_the_limit_starts_the_waiting_jobs() {
    let mut h = limited();
    let ids: Vec<CallId> = (0..4).map(|_| job(&mut h, "sh", false).0).collect();
    assert_eq!(jobs_on(&h, 1) + jobs_on(&h, 2), 2);
    let raised = h.send(Event::JobLimit { max_per_node: 2 });
    let started = ids.iter().filter(|c| dispatched(&raised, **c).is_some());
    assert_eq!(started.count(), 2, "the new room is taken");
    assert_eq!((jobs_on(&h, 1), jobs_on(&h, 2)), (2, 2));
    // Lowering it stops nothing; lifting it (0) leaves only the slots.
    h.send(Event::JobLimit { max_per_node: 1 });
    assert_eq!((jobs_on(&h, 1), jobs_on(&h, 2)), (2, 2));
    h.send(Event::JobLimit { max_per_node: 0 });
    let (more, a) = job(&mut h, "sh", false);
    assert!(dispatched(&a, more).is_some());
}

#[test]
fn a_job_on_a_node_that_came_back_frees_nothing_on_the_new_one() {
    let mut h = limited();
    let (j1, a1) = job(&mut h, "sh", false);
    let node = dispatched(&a1, j1).unwrap();
    let node_spec = h.core.fleet().get(node).unwrap().spec.clone();
    h.up(node, node_spec);
    assert_eq!(jobs_on(&h, node), 0, "a new registration starts empty");
    let (j2, a2) = job(&mut h, "sh", false);
    assert!(dispatched(&a2, j2).is_some());
    h.finish(j1);
    assert_eq!(jobs_on(&h, node) + jobs_on(&h, 3 - node), 1);
}

/// A load report of node 1 telling `jobs` job calls in flight there,
/// every gateway's.
fn jobs_report(h: &mut Harness, jobs: u32) -> Vec<Action> {
    h.send(Event::Load {
        node: 1,
        in_flight: vec![("sh".into(), jobs)],
        jobs_in_flight: Some(jobs),
        counted: Counted::All,
    })
}

#[test]
fn other_gateways_jobs_count_against_the_limit_until_a_report_says_fewer() {
    let mut h = Harness::new(CoreConfig::default());
    h.up(1, spec("a", &[("sh", 4, 0)], &[]));
    h.send(Event::JobLimit { max_per_node: 1 });
    // The node runs one job for another gateway.
    assert!(jobs_report(&mut h, 1).is_empty());
    assert_eq!(h.core.fleet().get(1).map(|n| n.jobs_others), Some(1));
    let view = h.core.fleet().get(1).map(|n| n.view(h.now).jobs_in_flight);
    assert_eq!(view, Some(1), "the node's view counts the others' jobs");
    let (j, actions) = job(&mut h, "sh", false);
    assert_eq!(dispatched(&actions, j), None, "the node runs its limit");
    assert_eq!(rejected(&actions, j), None, "held, not refused");
    let (rt, actions) = job(&mut h, "sh", true);
    assert!(
        rejected(&actions, rt).is_some(),
        "a realtime job is occupied"
    );
    // Plain calls still take the free slots.
    let (c, actions) = h.call("sh");
    assert_eq!(dispatched(&actions, c), Some(1));
    // The same count again changes nothing.
    assert_eq!(dispatched(&jobs_report(&mut h, 1), j), None);
    // The other gateway's job ended: this gateway's goes at once.
    assert_eq!(dispatched(&jobs_report(&mut h, 0), j), Some(1));
    assert_eq!(jobs_on(&h, 1), 1);
    // A report counting this gateway's job leaves no other: a second job
    // of this gateway waits for its first.
    jobs_report(&mut h, 1);
    assert_eq!(h.core.fleet().get(1).map(|n| n.jobs_others), Some(0));
    let (j2, actions) = job(&mut h, "sh", false);
    assert_eq!(dispatched(&actions, j2), None);
    // A report taken before this gateway's job reached the node: the
    // others' count never goes below 0.
    jobs_report(&mut h, 0);
    assert_eq!(h.core.fleet().get(1).map(|n| n.jobs_others), Some(0));
    assert_eq!(dispatched(&h.finish(j), j2), Some(1));
}
