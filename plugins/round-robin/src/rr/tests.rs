use policy_sdk::{Candidate, Context, Policy, Request, no_facts};

use super::RoundRobin;

#[test]
fn cycles_over_candidates() {
    let mut rr = RoundRobin::new();
    let picks: Vec<_> = (0..7).filter_map(|_| rr.next_in_turn("svc", 3)).collect();
    assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
}

#[test]
fn services_are_independent() {
    let mut rr = RoundRobin::new();
    assert_eq!(rr.next_in_turn("a", 3), Some(0));
    assert_eq!(rr.next_in_turn("a", 3), Some(1));
    assert_eq!(rr.next_in_turn("b", 3), Some(0));
    assert_eq!(rr.next_in_turn("a", 3), Some(2));
    assert_eq!(rr.next_in_turn("b", 3), Some(1));
    assert_eq!(rr.services(), 2);
}

#[test]
fn empty_candidates_pick_nothing_and_keep_the_counter() {
    let mut rr = RoundRobin::new();
    assert_eq!(rr.next_in_turn("a", 0), None);
    assert_eq!(rr.next_in_turn("a", 2), Some(0));
}

#[test]
fn candidate_count_changes_stay_in_bounds() {
    let mut rr = RoundRobin::new();
    for len in [5, 1, 4, 2, 3, 1, 7] {
        let i = rr.next_in_turn("svc", len).expect("non-empty");
        assert!((i as usize) < len);
    }
}

fn req(service: &str) -> Request {
    Request {
        service: service.into(),
        ..Request::default()
    }
}

fn nodes(n: u32) -> Vec<Candidate> {
    (0..n)
        .map(|node| Candidate {
            node,
            max_concurrent: 4,
            ..Candidate::default()
        })
        .collect()
}

#[test]
fn score_follows_the_turn_and_advances_it_once() {
    let (mut picker, mut scorer) = (RoundRobin::new(), RoundRobin::new());
    let candidates = nodes(4);
    for _ in 0..9 {
        let want = Policy::pick(&mut picker, &req("svc"), &candidates, &no_facts);
        let s = scorer
            .score(&req("svc"), &candidates, &Context::default(), &no_facts)
            .expect("non-empty");
        let first = want.expect("non-empty");
        assert_eq!(s.order[0], first);
        let rest: Vec<u32> = (1..4).map(|k| (first + k) % 4).collect();
        assert_eq!(s.order[1..], rest, "then in turn");
        assert_eq!(s.scores.len(), 4);
        for (i, score) in s.scores.iter().enumerate() {
            let want = if i == first as usize { 1.0 } else { 0.0 };
            assert!((score - want).abs() < f32::EPSILON, "{:?}", s.scores);
        }
        assert!(s.reason.contains("next in turn"), "{}", s.reason);
        assert!(
            s.reason.contains(&format!("index {first} of 4")),
            "{}",
            s.reason
        );
    }
}

#[test]
fn rank_and_score_share_the_counter_with_pick() {
    let mut rr = RoundRobin::new();
    let candidates = nodes(3);
    let ctx = Context::default();
    assert_eq!(
        Policy::pick(&mut rr, &req("svc"), &candidates, &no_facts),
        Ok(0)
    );
    assert_eq!(
        rr.rank(&req("svc"), &candidates, &no_facts),
        Ok(vec![1, 2, 0])
    );
    let s = rr
        .score(&req("svc"), &candidates, &ctx, &no_facts)
        .expect("non-empty");
    assert_eq!(s.order, vec![2, 0, 1]);
    assert_eq!(
        Policy::pick(&mut rr, &req("svc"), &candidates, &no_facts),
        Ok(0)
    );
}

#[test]
fn no_candidates_is_still_a_rejection() {
    let mut rr = RoundRobin::new();
    let r = req("svc");
    assert_eq!(
        Policy::pick(&mut rr, &r, &[], &no_facts),
        Err("no candidates".to_owned())
    );
    assert_eq!(rr.rank(&r, &[], &no_facts), Err("no candidates".to_owned()));
    assert_eq!(
        rr.score(&r, &[], &Context::default(), &no_facts),
        Err("no candidates".to_owned())
    );
    // The rejections left the counter alone.
    assert_eq!(Policy::pick(&mut rr, &r, &nodes(2), &no_facts), Ok(0));
}
