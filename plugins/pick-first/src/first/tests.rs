use std::cell::Cell;

use policy_sdk::{Candidate, Context, NodeFacts, NodeKey, Policy, Request, no_facts};

use super::{MAX_REMEMBERED, PickFirst};

/// Node ids by key: key 0 is `node-c`, 1 `node-a`, 2 `node-b` (keys come in
/// the order nodes connected, not by id).
fn facts(key: NodeKey) -> Option<NodeFacts> {
    let id = match key {
        0 => "node-c",
        1 => "node-a",
        2 => "node-b",
        _ => return None,
    };
    Some(NodeFacts {
        id: id.to_owned(),
        ..NodeFacts::default()
    })
}

fn row(node: NodeKey, in_flight: u32, max_concurrent: u32) -> Candidate {
    Candidate {
        node,
        in_flight,
        max_concurrent,
        ..Candidate::default()
    }
}

fn req() -> Request {
    Request {
        service: "svc".into(),
        ..Request::default()
    }
}

/// A fleet as the gateway presents it: the nodes with a free slot, in key
/// order, each with its calls in flight (`None`: the node is gone).
struct Fleet {
    max: u32,
    in_flight: Vec<Option<u32>>,
}

impl Fleet {
    fn new(nodes: usize, max: u32) -> Self {
        Self {
            max,
            in_flight: vec![Some(0); nodes],
        }
    }

    fn candidates(&self) -> Vec<Candidate> {
        self.in_flight
            .iter()
            .zip(0..)
            .filter_map(|(n, key)| {
                let n = (*n)?;
                (n < self.max).then(|| row(key, n, self.max))
            })
            .collect()
    }

    /// Places one call with `p` and counts it in flight; the node's key.
    fn call(&mut self, p: &mut PickFirst) -> NodeKey {
        let c = self.candidates();
        let i = p.pick(&req(), &c, &facts).expect("a candidate");
        let key = c[i as usize].node;
        if let Some(Some(n)) = self.in_flight.get_mut(key as usize) {
            *n += 1;
        }
        key
    }

    fn end(&mut self, key: NodeKey) {
        if let Some(Some(n)) = self.in_flight.get_mut(key as usize) {
            *n -= 1;
        }
    }
}

#[test]
fn calls_go_to_the_first_node_by_id_until_it_is_full_then_the_next() {
    let mut p = PickFirst::new();
    let mut fleet = Fleet::new(3, 2);
    let picks: Vec<NodeKey> = (0..6).map(|_| fleet.call(&mut p)).collect();
    // node-a (key 1) twice, node-b (key 2) twice, node-c (key 0) twice.
    assert_eq!(picks, [1, 1, 2, 2, 0, 0]);
    assert!(fleet.candidates().is_empty());
    // A slot frees on node-b: the next call takes it; then one on node-a.
    fleet.end(2);
    assert_eq!(fleet.call(&mut p), 2);
    fleet.end(0);
    fleet.end(1);
    assert_eq!(
        fleet.call(&mut p),
        1,
        "back to the first as soon as it has room"
    );
}

#[test]
fn a_free_first_node_takes_every_call() {
    let mut p = PickFirst::new();
    let mut fleet = Fleet::new(3, 4);
    for _ in 0..100 {
        let key = fleet.call(&mut p);
        assert_eq!(key, 1);
        fleet.end(key);
    }
}

#[test]
fn when_the_first_node_is_gone_the_next_takes_its_place() {
    let mut p = PickFirst::new();
    let mut fleet = Fleet::new(3, 2);
    assert_eq!(fleet.call(&mut p), 1);
    fleet.in_flight[1] = None;
    assert_eq!(fleet.call(&mut p), 2);
    assert_eq!(fleet.call(&mut p), 2);
    assert_eq!(fleet.call(&mut p), 0);
}

#[test]
fn the_ranking_is_the_whole_order_so_a_lost_race_takes_the_next() {
    let mut p = PickFirst::new();
    let c = [row(0, 0, 4), row(1, 3, 4), row(2, 1, 4)];
    let s = p
        .score(&req(), &c, &Context::default(), &facts)
        .expect("scored");
    // node-a (index 1), node-b (index 2), node-c (index 0).
    assert_eq!(s.order, vec![1, 2, 0]);
    assert_eq!(s.scores, vec![-2.0, 0.0, -1.0]);
    assert!(s.scores[1].is_sign_positive(), "0, not -0");
    assert_eq!(s.reason, "first by node id: node-a (3/4 in flight)");
    assert_eq!(p.rank(&req(), &c, &facts), Ok(vec![1, 2, 0]));
    assert_eq!(p.pick(&req(), &c, &facts), Ok(1));
}

#[test]
fn a_row_marked_full_goes_after_every_row_with_room() {
    let mut p = PickFirst::new();
    let c = [row(0, 0, 4), row(1, 4, 4), row(2, 1, 0)];
    assert_eq!(p.rank(&req(), &c, &facts), Ok(vec![0, 1, 2]));
}

#[test]
fn ids_order_by_bytes_and_unknown_nodes_go_last_by_key() {
    let mut p = PickFirst::new();
    let c = [row(9, 0, 4), row(2, 0, 4), row(7, 0, 4), row(1, 0, 4)];
    // Keys 9 and 7 are unknown to the host.
    assert_eq!(p.rank(&req(), &c, &facts), Ok(vec![3, 1, 2, 0]));
    let s = p
        .score(&req(), &[row(9, 1, 4)], &Context::default(), &facts)
        .expect("scored");
    assert_eq!(s.reason, "first by node id: key 9 (1/4 in flight)");
    // Byte order: "n10" sorts before "n9".
    let ids = |key: NodeKey| {
        Some(NodeFacts {
            id: format!("n{key}"),
            ..NodeFacts::default()
        })
    };
    let c = [row(9, 0, 4), row(10, 0, 4)];
    assert_eq!(PickFirst::new().pick(&req(), &c, &ids), Ok(1));
}

#[test]
fn each_node_id_is_asked_once() {
    let asked = Cell::new(0);
    let counting = |key: NodeKey| {
        asked.set(asked.get() + 1);
        facts(key)
    };
    let mut p = PickFirst::new();
    let c = [row(0, 0, 4), row(1, 0, 4), row(2, 0, 4)];
    for _ in 0..10 {
        assert_eq!(p.pick(&req(), &c, &counting), Ok(1));
    }
    assert_eq!(asked.get(), 3);
    assert_eq!(p.remembered(), 3);
}

#[test]
fn the_memory_of_ids_is_bounded() {
    let mut p = PickFirst::new();
    let ids = |key: NodeKey| {
        Some(NodeFacts {
            id: format!("n{key:08}"),
            ..NodeFacts::default()
        })
    };
    let total = u32::try_from(MAX_REMEMBERED).unwrap_or(u32::MAX) + 10;
    for chunk in (0..total).collect::<Vec<_>>().chunks(100) {
        let c: Vec<Candidate> = chunk.iter().map(|&k| row(k, 0, 1)).collect();
        assert_eq!(p.pick(&req(), &c, &ids), Ok(0));
        assert!(p.remembered() <= MAX_REMEMBERED);
    }
}

#[test]
fn no_candidates_is_an_error_and_no_facts_still_orders() {
    let mut p = PickFirst::new();
    assert_eq!(p.pick(&req(), &[], &facts), Err("no candidates".to_owned()));
    let c = [row(5, 0, 4), row(3, 0, 4)];
    assert_eq!(p.rank(&req(), &c, &no_facts), Ok(vec![1, 0]));
}
