//! `max_candidates`: past the bound a policy is offered a uniform random
//! sample of the free nodes, in key order, drawn from the service's hosts
//! as nodes come, go and change their services.

use super::*;

/// A core whose policies see at most `bound` candidates, with `nodes` echo
/// nodes (keys 1..=nodes) of `max_concurrent` 1.
fn fleet(bound: usize, nodes: u32) -> Harness {
    let mut h = Harness::new(CoreConfig {
        max_candidates: bound,
        seed: 7,
        ..CoreConfig::default()
    });
    for key in 1..=nodes {
        h.up(key, spec(&format!("n{key}"), &[("echo", 1, 0)], &[]));
    }
    h
}

/// The nodes offered to one new call of `service`.
fn offered(h: &mut Harness, service: &str) -> Vec<NodeKey> {
    h.candidates(service).iter().map(|c| c.node).collect()
}

#[test]
fn a_sample_is_bound_sized_sorted_and_fair() {
    let mut h = fleet(3, 10);
    let mut seen = [0u32; 11];
    let picks = 2000;
    for _ in 0..picks {
        let nodes = offered(&mut h, "echo");
        assert_eq!(nodes.len(), 3);
        assert!(
            nodes.windows(2).all(|w| w[0] < w[1]),
            "key order, no repeats: {nodes:?}"
        );
        for key in nodes {
            seen[key as usize] += 1;
        }
    }
    // Each node is offered with chance 3/10: 600 of 2000, within ±25%.
    for (key, count) in seen.iter().enumerate().skip(1) {
        assert!(
            (450..=750).contains(count),
            "node {key} offered {count} times: {seen:?}"
        );
    }
}

#[test]
fn only_free_nodes_are_drawn_and_fewer_than_the_bound_are_all_offered() {
    let mut h = fleet(3, 10);
    // Fill eight of the ten nodes (one slot each): the round-robin picks
    // among the free ones.
    for _ in 0..8 {
        h.call("echo");
    }
    let free: Vec<NodeKey> = (1..=10).filter(|&k| h.in_flight(k, "echo") == 0).collect();
    assert_eq!(free.len(), 2);
    for _ in 0..20 {
        assert_eq!(offered(&mut h, "echo"), free);
    }
}

#[test]
fn no_bound_or_a_small_fleet_offers_every_free_node() {
    let mut h = fleet(0, 10);
    assert_eq!(offered(&mut h, "echo"), (1..=10).collect::<Vec<_>>());
    let mut h = fleet(10, 10);
    assert_eq!(offered(&mut h, "echo"), (1..=10).collect::<Vec<_>>());
    let mut h = fleet(3, 10);
    h.core
        .config
        .service_max_candidates
        .insert("echo".into(), 0);
    assert_eq!(
        offered(&mut h, "echo").len(),
        10,
        "a service's own bound wins"
    );
}

#[test]
fn nodes_that_leave_or_drop_the_service_are_never_drawn() {
    let mut h = fleet(2, 6);
    h.send(Event::NodeDown { node: 1 });
    h.send(Event::Respec {
        node: 2,
        spec: spec("n2", &[("other", 1, 0)], &[]),
    });
    h.up(7, spec("n7", &[("echo", 1, 0), ("other", 1, 0)], &[]));
    assert_eq!(h.core.fleet().hosts("echo"), [3, 4, 5, 6, 7]);
    assert_eq!(h.core.fleet().hosts("other"), [2, 7]);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        seen.extend(offered(&mut h, "echo"));
    }
    assert_eq!(seen, [3, 4, 5, 6, 7].into_iter().collect());
    // A node registering again under its key replaces its entries.
    h.up(7, spec("n7", &[("other", 1, 0)], &[]));
    assert_eq!(h.core.fleet().hosts("echo"), [3, 4, 5, 6]);
    h.send(Event::NodeDown { node: 2 });
    h.send(Event::NodeDown { node: 7 });
    assert!(h.core.fleet().hosts("other").is_empty());
}

#[test]
fn the_same_seed_draws_the_same_samples() {
    let draws = |seed: u64| {
        let mut h = fleet(3, 20);
        h.core.rng = rand::SeedableRng::seed_from_u64(seed);
        (0..20).map(|_| offered(&mut h, "echo")).collect::<Vec<_>>()
    };
    assert_eq!(draws(1), draws(1));
    assert_ne!(draws(1), draws(2));
}
