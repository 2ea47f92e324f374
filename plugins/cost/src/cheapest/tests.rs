use policy_sdk::{
    Candidate, Context, EXCLUDED, FORGET_AFTER_MS, NodeFacts, Outcome, Policy, Request, Scored,
    SplitMix64, no_facts,
};

use super::Cost;

/// Node `node` (id `gpu-<node>`) at `cost_per_hour`, with a gateway latency
/// estimate of `latency_ms` (none when 0).
fn node(node: u32, cost_per_hour: f32, latency_ms: f32) -> Candidate {
    Candidate {
        node,
        max_concurrent: 8,
        cost_per_hour,
        latency_ms,
        latency_samples: u32::from(latency_ms > 0.0),
        ..Candidate::default()
    }
}

fn facts(node: u32) -> Option<NodeFacts> {
    (node < 100).then(|| NodeFacts {
        id: format!("gpu-{node}"),
        ..NodeFacts::default()
    })
}

fn pick(p: &mut Cost, candidates: &[Candidate], hints: &[(&str, &str)]) -> Result<u32, String> {
    let req = Request {
        service: "svc".into(),
        hints: hints
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Request::default()
    };
    p.pick(&req, candidates, &facts)
}

#[test]
fn picks_the_cheapest_expected_call() {
    let mut p = Cost::new();
    assert_eq!(
        pick(
            &mut p,
            &[
                node(0, 3.0, 100.0),
                node(1, 1.0, 100.0),
                node(2, 2.0, 100.0)
            ],
            &[]
        ),
        Ok(1)
    );
    // Cheap per hour but slow loses to dear but fast: 1 × 10 s > 4 × 1 s.
    assert_eq!(
        pick(&mut p, &[node(0, 1.0, 10_000.0), node(1, 4.0, 1000.0)], &[]),
        Ok(1)
    );
    // Ties: the lower expected latency, then the lower index.
    assert_eq!(
        pick(
            &mut p,
            &[
                node(0, 2.0, 100.0),
                node(1, 1.0, 200.0),
                node(2, 0.0, 500.0),
                node(3, 0.0, 300.0)
            ],
            &[]
        ),
        Ok(3)
    );
    assert_eq!(
        pick(&mut p, &[node(0, 1.0, 100.0), node(1, 1.0, 100.0)], &[]),
        Ok(0)
    );
}

#[test]
fn durations_fall_back_to_own_observations_then_one_second() {
    let mut p = Cost::new();
    let c = node(5, 1.0, 0.0);
    assert!((p.expected_ms("svc", &c, 0) - 1000.0).abs() < 1e-9);
    p.observe(&Outcome {
        service: "svc".into(),
        node: 5,
        latency_ms: 100.0,
        ok: true,
        now_ms: 0,
    });
    assert!((p.expected_ms("svc", &c, 0) - 100.0).abs() < 1e-9);
    p.observe(&Outcome {
        service: "svc".into(),
        node: 5,
        latency_ms: 200.0,
        ok: true,
        now_ms: 1,
    });
    assert!((p.expected_ms("svc", &c, 1) - 130.0).abs() < 1e-9);
    p.observe(&Outcome {
        service: "svc".into(),
        node: 5,
        latency_ms: 10.0,
        ok: false,
        now_ms: 2,
    });
    assert!((p.expected_ms("svc", &c, 2) - (130.0 + 0.3 * (1000.0 - 130.0))).abs() < 1e-9);
    assert!((p.expected_ms("svc", &c, 2 + FORGET_AFTER_MS) - 1000.0).abs() < 1e-9);
    // The gateway's estimate wins when it has samples.
    assert!((p.expected_ms("svc", &node(5, 1.0, 42.0), 2) - 42.0).abs() < 1e-6);
    assert!((p.expected_ms("other", &c, 2) - 1000.0).abs() < 1e-9);
}

#[test]
fn honours_max_cost_and_max_latency_ms() {
    let mut p = Cost::new();
    // Expected costs: 0.00025 @ 1000 ms, 0.0005 @ 200 ms, 0.001 @ 100 ms.
    let nodes = [
        node(0, 0.9, 1000.0),
        node(1, 9.0, 200.0),
        node(2, 36.0, 100.0),
    ];
    assert_eq!(pick(&mut p, &nodes, &[]), Ok(0));
    assert_eq!(pick(&mut p, &nodes, &[("max_latency_ms", "500")]), Ok(1));
    assert_eq!(pick(&mut p, &nodes, &[("max_latency_ms", "150")]), Ok(2));
    assert_eq!(pick(&mut p, &nodes, &[("max_cost", "0.00025")]), Ok(0));
    assert_eq!(
        pick(
            &mut p,
            &nodes,
            &[("max_cost", "0.001"), ("max_latency_ms", "200")]
        ),
        Ok(1)
    );
    assert_eq!(pick(&mut p, &nodes, &[("max_latency_ms", "100")]), Ok(2));
}

#[test]
fn rejects_clearly_when_no_node_qualifies() {
    let mut p = Cost::new();
    let nodes = [
        node(0, 9.0, 200.0),
        node(3, 0.9, 1000.0),
        node(200, 36.0, 100.0),
    ];
    assert_eq!(
        pick(&mut p, &nodes, &[("max_cost", "0.0001")]),
        Err(
            "no node meets max_cost=0.0001: cheapest expected cost is 0.00025 (node gpu-3)"
                .to_owned()
        )
    );
    assert_eq!(
        pick(&mut p, &nodes, &[("max_latency_ms", "50")]),
        Err(
            "no node meets max_latency_ms=50: fastest expected latency is 100 ms (node key 200)"
                .to_owned()
        )
    );
    assert_eq!(
        pick(
            &mut p,
            &nodes,
            &[("max_latency_ms", "300"), ("max_cost", "0.0004")]
        ),
        Err(
            "no node meets max_cost=0.0004 with max_latency_ms=300: cheapest expected cost among \
             nodes meeting max_latency_ms is 0.0005 (node gpu-0)"
                .to_owned()
        )
    );
    assert_eq!(
        pick(
            &mut p,
            &nodes,
            &[("max_latency_ms", "50"), ("max_cost", "1")]
        ),
        Err(
            "no node meets max_latency_ms=50: fastest expected latency is 100 ms (node key 200)"
                .to_owned()
        )
    );
}

#[test]
fn rejects_malformed_limits() {
    let mut p = Cost::new();
    let nodes = [node(0, 1.0, 100.0)];
    assert_eq!(
        pick(&mut p, &nodes, &[("max_cost", "abc")]),
        Err("bad hint max_cost=\"abc\": expected a number >= 0".to_owned())
    );
    assert_eq!(
        pick(&mut p, &nodes, &[("max_latency_ms", "-5")]),
        Err("bad hint max_latency_ms=\"-5\": expected a number >= 0".to_owned())
    );
    // Unknown hints are ignored.
    assert_eq!(pick(&mut p, &nodes, &[("optimize", "whatever")]), Ok(0));
}

#[test]
fn any_pick_is_in_range() {
    let mut p = Cost::new();
    let mut rng = SplitMix64::new(11);
    for step in 0..3000u64 {
        let len = 1 + rng.below(20);
        let candidates: Vec<Candidate> = (0..len)
            .map(|_| {
                let latency = if rng.below(3) == 0 {
                    0.0
                } else {
                    (rng.next_f64() * 500.0) as f32
                };
                node(
                    rng.below(30) as u32,
                    (rng.next_f64() * 10.0) as f32,
                    latency,
                )
            })
            .collect();
        let req = Request {
            service: "svc".into(),
            now_ms: step,
            random: rng.next_u64(),
            ..Request::default()
        };
        let i = p
            .pick(&req, &candidates, &no_facts)
            .expect("no limits: always routes") as usize;
        assert!(i < len);
        p.observe(&Outcome {
            service: "svc".into(),
            node: candidates[i].node,
            latency_ms: 50.0,
            ok: true,
            now_ms: step,
        });
    }
}

fn score(p: &mut Cost, candidates: &[Candidate], hints: &[(&str, &str)]) -> Result<Scored, String> {
    let req = Request {
        service: "svc".into(),
        hints: hints
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Request::default()
    };
    p.score(&req, candidates, &Context::default(), &facts)
}

#[test]
fn score_ranks_the_fitting_by_cost_and_explains_the_cheapest() {
    let mut p = Cost::new();
    let candidates = [
        node(0, 3.0, 100.0),
        node(1, 0.4, 1000.0),
        node(2, 2.0, 100.0),
        node(3, 0.5, 2000.0),
    ];
    // Per call: 0.0000833, 0.000111, 0.0000556, 0.000278.
    let s = score(&mut p, &candidates, &[]).expect("fits");
    assert_eq!(s.order[0], pick(&mut p, &candidates, &[]).expect("fits"));
    assert_eq!(s.order, vec![2, 0, 1, 3]);
    assert_eq!(s.scores.len(), 4);
    assert!((f64::from(s.scores[2]) + 2.0 * 100.0 / 3_600_000.0).abs() < 1e-9);
    assert_eq!(
        s.reason,
        "cheapest expected 0.0000555556 per call (2/h × 100 ms) of 4 fitting"
    );
    // Limits filter first: outside them, no score and no place in the order.
    let hints = [("max_latency_ms", "500")];
    let s = score(&mut p, &candidates, &hints).expect("fits");
    assert_eq!(s.order, vec![2, 0]);
    assert!(
        s.scores[1] == EXCLUDED && s.scores[3] == EXCLUDED,
        "{:?}",
        s.scores
    );
    assert!(s.reason.ends_with("of 2 fitting"), "{}", s.reason);
    let hints = [("max_latency_ms", "2000"), ("max_cost", "0.0001")];
    let s = score(&mut p, &candidates, &hints).expect("fits");
    assert_eq!(s.order[0], pick(&mut p, &candidates, &hints).expect("fits"));
    assert_eq!(s.order, vec![2, 0]);
}

#[test]
fn score_rejects_as_pick_does() {
    let mut p = Cost::new();
    let candidates = [node(0, 3.0, 100.0), node(1, 1.0, 120.0)];
    for hints in [
        &[("max_latency_ms", "50")][..],
        &[("max_cost", "0.00001")][..],
        &[("max_cost", "abc")][..],
    ] {
        let want = pick(&mut p, &candidates, hints);
        assert!(want.is_err(), "{hints:?}");
        assert_eq!(
            score(&mut p, &candidates, hints),
            want.map(|_| Scored::default())
        );
    }
}
