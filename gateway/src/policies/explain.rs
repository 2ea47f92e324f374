//! A pick's [`Explanation`]: the policy's order and scores over the
//! candidates it was offered, kept with the call until it is dispatched
//! (then [`super::decisions`] records it).

use switchyard_core::{NodeKey, PickRequest, Ranking};

use super::decisions::{Explanation, Ranked};

/// The explanation of a pick by `policy` over `request`'s candidates, from
/// its `ranking`: the nodes best first, the scores (one per candidate, in
/// the order of the candidates, or none) and the reason. With scores the
/// top `top` candidates by score, the chosen one first; without, the
/// ranking's first `top`.
pub(crate) fn explain(
    policy: &str,
    ranking: &Ranking,
    request: &PickRequest,
    top: usize,
) -> Explanation {
    let candidates = &request.candidates;
    let index_of = |node: NodeKey| candidates.iter().position(|c| c.node == node);
    let ranked = |i: usize, score: Option<f32>| {
        candidates.get(i).map(|c| Ranked {
            node: c.node,
            score,
            in_flight: c.in_flight,
            max_concurrent: c.max_concurrent,
        })
    };
    let scores = &ranking.scores;
    let top = if scores.len() == candidates.len() && !scores.is_empty() {
        let mut by_score: Vec<usize> = (0..scores.len()).collect();
        // The chosen first, then the rest by score (NaN never reaches here:
        // the host turns it into 0).
        let first = ranking.nodes.first().and_then(|&node| index_of(node));
        let order = |a: &usize, b: &usize| {
            (Some(*b) == first)
                .cmp(&(Some(*a) == first))
                .then(scores[*b].total_cmp(&scores[*a]))
                .then(a.cmp(b))
        };
        // The top few only: a selection, then a sort of those (O(n), not
        // O(n log n) over a whole fleet's candidates).
        if top < by_score.len() {
            by_score.select_nth_unstable_by(top, order);
            by_score.truncate(top);
        }
        by_score.sort_by(order);
        by_score
            .into_iter()
            .filter_map(|i| ranked(i, Some(scores[i])))
            .collect()
    } else {
        ranking
            .nodes
            .iter()
            .take(top)
            .filter_map(|&node| ranked(index_of(node)?, None))
            .collect()
    };
    Explanation {
        policy: policy.to_string(),
        reason: ranking.reason.clone(),
        top,
        offered: candidates.len(),
        prefix_blocks: request.prefix.len(),
    }
}

/// The explanation of a pick the gateway made without a policy: `policy`
/// names it ([`super::BUILTIN_ROUND_ROBIN`], [`super::SWAP_PICK`]), `reason`
/// says why.
pub(crate) fn without_policy(policy: &str, reason: String) -> Explanation {
    Explanation {
        policy: policy.to_string(),
        reason,
        ..Explanation::default()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use protocol::CallHead;
    use switchyard_core::balance::Candidate;

    use super::*;

    fn request(n: u32) -> PickRequest {
        PickRequest {
            call: 1,
            head: Arc::new(CallHead::new("svc", 0, 1000)),
            candidates: (0..n)
                .map(|i| Candidate {
                    node: 10 + i,
                    in_flight: i,
                    max_concurrent: 8,
                    ..Candidate::default()
                })
                .collect(),
            prefix: Arc::from(vec![1, 2, 3]),
        }
    }

    fn ranking(nodes: &[NodeKey], scores: &[f32], reason: &str) -> Ranking {
        Ranking {
            nodes: nodes.to_vec(),
            scores: scores.to_vec(),
            reason: reason.to_owned(),
        }
    }

    #[test]
    fn scores_put_the_chosen_first_then_the_best() {
        let r = ranking(&[12, 10], &[0.5, 0.9, 0.7], "r");
        let e = explain("p", &r, &request(3), 2);
        let nodes: Vec<u32> = e.top.iter().map(|r| r.node).collect();
        assert_eq!(
            nodes,
            vec![12, 11],
            "the chosen (index 2), then the best other"
        );
        assert_eq!(e.top[0].score, Some(0.7));
        assert_eq!(e.offered, 3);
        assert_eq!(e.prefix_blocks, 3);
        assert_eq!(e.reason, "r");
    }

    #[test]
    fn without_scores_the_ranking_order() {
        let e = explain("p", &ranking(&[11, 12], &[], ""), &request(3), 8);
        let nodes: Vec<(u32, Option<f32>)> = e.top.iter().map(|r| (r.node, r.score)).collect();
        assert_eq!(nodes, vec![(11, None), (12, None)]);
        // Scores of the wrong length count as none.
        let e = explain("p", &ranking(&[10], &[1.0], ""), &request(3), 8);
        assert_eq!(e.top[0].score, None);
    }
}
