//! Which queued calls a parent moves between its children's subtrees.
//!
//! Every period the parent looks, per service, at each child's queue (calls
//! waiting there, admitted but not started: nothing moved has run) and
//! free capacity. A child whose oldest call has waited past the threshold
//! gives calls to siblings with free capacity and nothing waiting. Sources
//! are taken most loaded first and sinks with the most free capacity
//! first, each kept in a heap as the moves change them (the rebalancing of
//! the balancer this design comes from: a heap keyed by load over
//! capacity). Ties go to the lower child name, so a plan is deterministic.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

use crate::ChildId;

/// One child's queue for one service, as the parent sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    /// The child.
    pub child: ChildId,
    /// The service.
    pub service: String,
    /// Calls waiting there (admitted, not started).
    pub waiting: u32,
    /// How long its oldest waiting call has waited.
    pub oldest_wait: Duration,
    /// Calls its subtree can run at once for the service.
    pub capacity: u32,
    /// Of those, free now.
    pub free: u32,
}

impl Queue {
    /// Busy plus waiting over capacity, in millionths (an integer key).
    fn load(&self) -> u64 {
        let busy = u64::from(self.capacity.saturating_sub(self.free));
        let demand = busy + u64::from(self.waiting);
        demand * 1_000_000 / u64::from(self.capacity.max(1))
    }
}

/// When and how much to move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// A child's queue gives calls once its oldest call waited this long.
    pub threshold: Duration,
    /// Most calls moved per service in one round.
    pub max_moves: u32,
}

/// Calls to move from one child to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The service.
    pub service: String,
    /// The child whose queue gives them (its oldest first).
    pub from: ChildId,
    /// The child that takes them.
    pub to: ChildId,
    /// How many.
    pub calls: u32,
}

/// A heap entry: its key, then the child name reversed (the lower name
/// first on ties).
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    key: u64,
    index: usize,
    child: ChildId,
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key
            .cmp(&other.key)
            .then_with(|| other.child.cmp(&self.child))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The moves of one round over `queues` (any order, any services) under
/// `rules`, per service in name order.
pub fn plan(queues: &[Queue], rules: Rules) -> Vec<Move> {
    let mut by_service: BTreeMap<&str, Vec<Queue>> = BTreeMap::new();
    for q in queues {
        by_service.entry(&q.service).or_default().push(q.clone());
    }
    let mut moves = Vec::new();
    for (service, mut queues) in by_service {
        let mut sources: BinaryHeap<Entry> = queues
            .iter()
            .enumerate()
            .filter(|(_, q)| q.waiting > 0 && q.oldest_wait >= rules.threshold)
            .map(|(index, q)| Entry {
                key: q.load(),
                index,
                child: q.child.clone(),
            })
            .collect();
        let mut sinks: BinaryHeap<Entry> = queues
            .iter()
            .enumerate()
            .filter(|(_, q)| q.free > 0 && q.waiting == 0)
            .map(|(index, q)| Entry {
                key: u64::from(q.free),
                index,
                child: q.child.clone(),
            })
            .collect();
        let mut budget = rules.max_moves;
        while budget > 0 {
            let (Some(source), Some(sink)) = (sources.pop(), sinks.pop()) else {
                break;
            };
            let calls = queues[source.index]
                .waiting
                .min(queues[sink.index].free)
                .min(budget);
            budget -= calls;
            queues[source.index].waiting -= calls;
            queues[sink.index].free -= calls;
            moves.push(Move {
                service: service.to_string(),
                from: source.child.clone(),
                to: sink.child.clone(),
                calls,
            });
            if queues[source.index].waiting > 0 {
                sources.push(Entry {
                    key: queues[source.index].load(),
                    ..source
                });
            }
            if queues[sink.index].free > 0 {
                sinks.push(Entry {
                    key: u64::from(queues[sink.index].free),
                    ..sink
                });
            }
        }
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(child: &str, waiting: u32, oldest_ms: u64, capacity: u32, free: u32) -> Queue {
        Queue {
            child: child.into(),
            service: "svc".into(),
            waiting,
            oldest_wait: Duration::from_millis(oldest_ms),
            capacity,
            free,
        }
    }

    const RULES: Rules = Rules {
        threshold: Duration::from_millis(100),
        max_moves: 64,
    };

    #[test]
    fn a_long_queue_gives_calls_to_a_sibling_with_free_capacity() {
        let moves = plan(&[q("a", 10, 500, 8, 0), q("b", 0, 0, 8, 6)], RULES);
        assert_eq!(
            moves,
            vec![Move {
                service: "svc".into(),
                from: "a".into(),
                to: "b".into(),
                calls: 6
            }]
        );
    }

    #[test]
    fn nothing_moves_below_the_threshold_or_without_free_room() {
        assert!(plan(&[q("a", 10, 50, 8, 0), q("b", 0, 0, 8, 6)], RULES).is_empty());
        assert!(plan(&[q("a", 10, 500, 8, 0), q("b", 0, 0, 8, 0)], RULES).is_empty());
        // A sibling with its own queue takes nothing.
        assert!(plan(&[q("a", 10, 500, 8, 0), q("b", 1, 0, 8, 2)], RULES).is_empty());
    }

    #[test]
    fn the_most_loaded_gives_first_to_the_most_free_within_the_budget() {
        let queues = [
            q("light", 2, 300, 8, 0),  // (8 + 2) / 8
            q("heavy", 12, 300, 4, 0), // (4 + 12) / 4
            q("small", 0, 0, 8, 1),
            q("big", 0, 0, 8, 5),
        ];
        let moves = plan(
            &queues,
            Rules {
                max_moves: 7,
                ..RULES
            },
        );
        let seen: Vec<(&str, &str, u32)> = moves
            .iter()
            .map(|m| (m.from.as_str(), m.to.as_str(), m.calls))
            .collect();
        // Heavy's load 4.0 beats light's 1.25; the free room (6) runs out
        // before the budget (7).
        assert_eq!(seen, vec![("heavy", "big", 5), ("heavy", "small", 1)]);
    }

    #[test]
    fn services_are_planned_apart() {
        let mut other = q("b", 5, 500, 4, 0);
        other.service = "other".into();
        let moves = plan(&[q("a", 3, 500, 4, 0), q("b", 0, 0, 4, 4), other], RULES);
        assert_eq!(moves.len(), 1);
        assert_eq!((moves[0].service.as_str(), moves[0].calls), ("svc", 3));
    }
}
