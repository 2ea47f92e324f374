//! Every swap rule, one test each (see `schedule/swap.rs` for the rules).

use super::*;

fn rules(node_cooldown_s: u64) -> CoreConfig {
    CoreConfig {
        swap: SwapRules {
            node_cooldown: Duration::from_secs(node_cooldown_s),
            ..SwapRules::default()
        },
        ..CoreConfig::default()
    }
}

/// Node 1: one slot `gpu0` that can host `a` or `b`, holding `a`; both
/// services take one call at a time and load in `load_ms`.
fn one_slot(config: CoreConfig, load_ms: u32) -> Harness {
    let mut h = Harness::new(config);
    h.up(
        1,
        spec(
            "n1",
            &[("a", 1, load_ms), ("b", 1, load_ms)],
            &[("gpu0", &["a", "b"], Some("a"))],
        ),
    );
    h
}

fn swap_of(actions: &[Action]) -> Option<(NodeKey, protocol::SwapRequest)> {
    actions.iter().find_map(|a| match a {
        Action::Swap { node, request, .. } => Some((*node, request.clone())),
        _ => None,
    })
}

fn report(
    h: &mut Harness,
    node: NodeKey,
    swap_id: u64,
    loaded: Option<&str>,
    error: Option<&str>,
) -> Vec<Action> {
    h.send(Event::SwapReported {
        node,
        report: SwapReport {
            swap_id,
            slot: "gpu0".into(),
            loaded: loaded.map(Into::into),
            error: error.map(Into::into),
            duration_ms: 100,
        },
    })
}

#[test]
fn a_waiting_call_gets_an_idle_slot_loaded_for_it_and_is_reserved() {
    let mut h = one_slot(rules(0), 100);
    let (call, actions) = h.call("b");
    let (node, request) = swap_of(&actions).expect("swap");
    assert_eq!(
        (node, request.slot.as_str(), request.service.as_str()),
        (1, "gpu0", "b")
    );
    assert!(actions.iter().any(|a| matches!(a, Action::Reserved { call: c, notice } if *c == call && notice.from.as_deref() == Some("a") && notice.expected_ms == 100)));
    assert!(
        !h.core.fleet().get(1).unwrap().is_loaded("a"),
        "the old service is unloaded first"
    );
    let (other, actions) = h.call("a");
    assert_eq!(
        dispatched(&actions, other),
        None,
        "no call goes to a slot being swapped"
    );
    let done = report(&mut h, 1, request.swap_id, Some("b"), None);
    assert!(done.iter().any(|a| matches!(a, Action::Dispatch { call: c, node: 1, via: Via::Swap, waited: Some(_) } if *c == call)));
    assert!(
        done.iter()
            .any(|a| matches!(a, Action::SwapEnded { outcome: "ok", .. }))
    );
    assert!(h.core.fleet().get(1).unwrap().is_loaded("b"));
}

#[test]
fn a_slot_has_at_most_one_swap_under_way() {
    let mut h = one_slot(rules(0), 100);
    let (_, first) = h.call("b");
    assert!(swap_of(&first).is_some());
    let (_, second) = h.call("b");
    assert!(swap_of(&second).is_none());
    assert_eq!(h.core.swaps_under_way(), 1);
}

#[test]
fn a_service_with_a_call_in_flight_is_not_swapped_out() {
    let mut h = one_slot(rules(0), 100);
    let (running, _) = h.call("a");
    let (_, actions) = h.call("b");
    assert!(swap_of(&actions).is_none(), "rule 2: a's call runs");
    h.finish(running);
    let actions = h.send(Event::Tick);
    assert!(swap_of(&actions).is_some(), "idle now: the next tick swaps");
}

#[test]
fn the_node_cooldown_spaces_swaps() {
    let mut h = one_slot(rules(60), 100);
    let (_, actions) = h.call("b");
    let (_, request) = swap_of(&actions).unwrap();
    let done = report(&mut h, 1, request.swap_id, Some("b"), None);
    let b_call = done
        .iter()
        .find_map(|a| match a {
            Action::Dispatch { call, .. } => Some(*call),
            _ => None,
        })
        .unwrap();
    h.finish(b_call);
    let (_, actions) = h.call("a");
    assert!(
        swap_of(&actions).is_none(),
        "within the node's 60 s cooldown"
    );
    h.advance(Duration::from_secs(61));
    let actions = h.send(Event::Tick);
    assert!(swap_of(&actions).is_some());
}

#[test]
fn a_service_a_swap_loaded_stays_its_own_cooldown() {
    let mut config = rules(0);
    config
        .swap
        .service_cooldowns
        .insert("b".into(), Duration::from_secs(10));
    let mut h = one_slot(config, 100);
    let (_, actions) = h.call("b");
    let (_, request) = swap_of(&actions).unwrap();
    let done = report(&mut h, 1, request.swap_id, Some("b"), None);
    let b_call = done
        .iter()
        .find_map(|a| match a {
            Action::Dispatch { call, .. } => Some(*call),
            _ => None,
        })
        .unwrap();
    h.finish(b_call);
    let (_, actions) = h.call("a");
    assert!(swap_of(&actions).is_none(), "rule 3: b stays 10 s");
    h.advance(Duration::from_secs(11));
    assert!(swap_of(&h.send(Event::Tick)).is_some());
}

#[test]
fn a_swap_starts_only_when_waiting_costs_more_than_loading() {
    for (load_ms, swaps) in [(10_000, false), (100, true)] {
        let mut h = Harness::new(rules(0));
        // Node 2 serves b (50 ms a call); node 1's slot could load it.
        h.up(2, spec("n2", &[("b", 1, 0)], &[]));
        h.up(
            1,
            spec(
                "n1",
                &[("a", 1, load_ms), ("b", 1, load_ms)],
                &[("gpu0", &["a", "b"], Some("a"))],
            ),
        );
        let (warm, _) = h.call("b");
        h.send(Event::CallFinished {
            call: warm,
            node_ms: 50.0,
            end: CallEnd::Ok,
        });
        let mut all = Vec::new();
        for _ in 0..4 {
            all.extend(h.call("b").1);
        }
        // 3 wait on 1 slot of 50 ms: about 150 ms of waiting.
        assert_eq!(swap_of(&all).is_some(), swaps, "load {load_ms} ms");
    }
}

#[test]
fn an_empty_slot_is_preferred_to_an_occupied_one() {
    let mut h = Harness::new(rules(0));
    h.up(
        1,
        spec(
            "n1",
            &[("a", 1, 100), ("b", 1, 100)],
            &[("gpu0", &["a", "b"], Some("a"))],
        ),
    );
    h.up(
        2,
        spec(
            "n2",
            &[("a", 1, 100), ("b", 1, 100)],
            &[("gpu0", &["a", "b"], None)],
        ),
    );
    let (_, actions) = h.call("b");
    assert_eq!(
        swap_of(&actions).map(|(n, _)| n),
        Some(2),
        "rule 6: empty first"
    );
}

#[test]
fn a_failed_swap_puts_the_call_back_at_the_head_and_blocks_the_slot() {
    let mut h = one_slot(rules(0), 100);
    let (first, actions) = h.call("b");
    let (_, request) = swap_of(&actions).unwrap();
    let (second, _) = h.call("b");
    let failed = report(
        &mut h,
        1,
        request.swap_id,
        Some("a"),
        Some("readiness probe failed"),
    );
    assert!(failed.iter().any(|a| matches!(
        a,
        Action::SwapEnded {
            outcome: "failed",
            ..
        }
    )));
    assert!(
        failed
            .iter()
            .any(|a| matches!(a, Action::Position { call, position: 1 } if *call == first))
    );
    assert!(
        failed
            .iter()
            .any(|a| matches!(a, Action::Position { call, position: 2 } if *call == second))
    );
    assert!(
        swap_of(&failed).is_none(),
        "blocked for the failure cooldown"
    );
    assert!(
        h.core.fleet().get(1).unwrap().is_loaded("a"),
        "the report says a is back"
    );
    h.advance(Duration::from_secs(31));
    let retry = h.send(Event::Tick);
    assert!(
        swap_of(&retry).is_some(),
        "after 30 s the slot may try again"
    );
}

#[test]
fn an_overdue_swap_fails_on_a_tick() {
    let mut config = rules(0);
    config.swap.timeout = Duration::from_secs(5);
    let mut h = one_slot(config, 100);
    let (call, _) = h.call("b");
    h.advance(Duration::from_secs(6));
    let actions = h.send(Event::Tick);
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::SwapEnded {
            outcome: "timeout",
            ..
        }
    )));
    assert_eq!(
        h.core.queue("b").unwrap().calls().next().map(|w| w.call),
        Some(call)
    );
}

#[test]
fn a_node_lost_mid_swap_sends_its_call_back_to_the_queue() {
    let mut h = one_slot(rules(0), 100);
    h.up(2, spec("n2", &[("b", 1, 0)], &[]));
    let (busy, _) = h.call("b");
    let (call, actions) = h.call("b");
    assert!(
        swap_of(&actions).is_none(),
        "no wait yet: not worth 100 ms of loading"
    );
    h.advance(Duration::from_millis(200));
    assert!(
        swap_of(&h.send(Event::Tick)).is_some(),
        "waited longer than a load"
    );
    let lost = h.send(Event::NodeDown { node: 1 });
    assert!(lost.iter().any(|a| matches!(
        a,
        Action::SwapEnded {
            outcome: "node_lost",
            ..
        }
    )));
    let served = h.finish(busy);
    assert_eq!(dispatched(&served, call), Some(2));
}

#[test]
fn a_reserved_call_that_leaves_frees_its_reservation() {
    let mut h = one_slot(rules(0), 100);
    let (call, actions) = h.call("b");
    let (_, request) = swap_of(&actions).unwrap();
    h.send(Event::CallLeft { call });
    assert_eq!(
        h.core
            .queue_views(h.now)
            .iter()
            .find(|q| q.service == "b")
            .unwrap()
            .reserved,
        0
    );
    let done = report(&mut h, 1, request.swap_id, Some("b"), None);
    assert!(!done.iter().any(|a| matches!(a, Action::Dispatch { .. })));
    assert_eq!(h.core.queue("b").unwrap().abandoned_total, 1);
    assert_eq!(h.core.calls_held(), 0);
}

#[test]
fn swapping_can_be_turned_off() {
    let mut config = rules(0);
    config.swap.enabled = false;
    let mut h = one_slot(config, 100);
    let (_, actions) = h.call("b");
    assert!(swap_of(&actions).is_none());
}

#[test]
fn an_unprompted_report_updates_the_slot_and_serves_waiters() {
    let mut config = rules(0);
    config.swap.enabled = false;
    let mut h = one_slot(config, 100);
    let (call, _) = h.call("b");
    let actions = report(&mut h, 1, 0, Some("b"), None);
    assert_eq!(dispatched(&actions, call), Some(1));
}
