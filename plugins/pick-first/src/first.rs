//! The pick-first algorithm, independent of WebAssembly.

use std::collections::HashMap;

use policy_sdk::{Candidate, Context, NodeFacts, NodeKey, Policy, Request, Scored, index_u32};

/// The most node ids the policy remembers (unless one pick has more
/// candidates); past it, it forgets them all and asks the host again.
pub const MAX_REMEMBERED: usize = 4096;

/// Pick first: the candidates ordered by node id, the first with room
/// first (see the crate docs).
#[derive(Debug, Default, Clone)]
pub struct PickFirst {
    /// Node id per node key, as the host answered: a key never names
    /// another node id while the gateway runs, so an entry stays true.
    ids: HashMap<NodeKey, String>,
}

impl PickFirst {
    /// The policy, knowing no node id yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// How many node ids it remembers.
    #[must_use]
    pub fn remembered(&self) -> usize {
        self.ids.len()
    }

    /// Remembers the id of every candidate it does not know yet, asking
    /// `facts` once per unknown node (a node the host does not know stays
    /// unknown and is asked again next time).
    ///
    /// When the new ones would take it past [`MAX_REMEMBERED`], it forgets
    /// every id first, so one pick always knows all of its candidates (and
    /// it remembers at most `MAX_REMEMBERED` ids, or one pick's candidates
    /// if there are more).
    fn learn(&mut self, candidates: &[Candidate], facts: &dyn Fn(NodeKey) -> Option<NodeFacts>) {
        let unknown = candidates
            .iter()
            .filter(|c| !self.ids.contains_key(&c.node))
            .count();
        if unknown == 0 {
            return;
        }
        if self.ids.len() + unknown > MAX_REMEMBERED {
            self.ids.clear();
        }
        for c in candidates {
            if !self.ids.contains_key(&c.node)
                && let Some(f) = facts(c.node)
            {
                self.ids.insert(c.node, f.id);
            }
        }
    }

    /// The candidate indices in pick-first order: rows with room before
    /// full ones, then by node id (known ids before unknown ones), then
    /// by node key (each id looked up once, not per comparison).
    fn order(&self, candidates: &[Candidate]) -> Vec<usize> {
        let mut keyed: Vec<(bool, bool, &str, NodeKey, usize)> = candidates
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let id = self.ids.get(&c.node);
                (
                    c.in_flight >= c.max_concurrent,
                    id.is_none(),
                    id.map_or("", String::as_str),
                    c.node,
                    i,
                )
            })
            .collect();
        keyed.sort_unstable();
        keyed.into_iter().map(|k| k.4).collect()
    }
}

impl Policy for PickFirst {
    const NAME: &'static str = crate::NAME;

    /// Every candidate in pick-first order; score `-position`; the reason
    /// names the first node and its calls in flight.
    ///
    /// # Errors
    /// `no candidates` when `candidates` is empty (the gateway never sends
    /// an empty list).
    fn score(
        &mut self,
        _req: &Request,
        candidates: &[Candidate],
        _ctx: &Context,
        facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
    ) -> Result<Scored, String> {
        if candidates.is_empty() {
            return Err("no candidates".to_owned());
        }
        self.learn(candidates, facts);
        let order = self.order(candidates);
        let mut scores = vec![0.0_f32; candidates.len()];
        for (position, &i) in order.iter().enumerate() {
            // Exact: positions stay far below 2^24.
            #[allow(clippy::cast_precision_loss)]
            let score = -(position as f32);
            scores[i] = score + 0.0;
        }
        let first = &candidates[order[0]];
        let name = self
            .ids
            .get(&first.node)
            .map_or_else(|| format!("key {}", first.node), Clone::clone);
        let reason = format!(
            "first by node id: {name} ({}/{} in flight)",
            first.in_flight, first.max_concurrent
        );
        Ok(Scored {
            order: order.into_iter().map(index_u32).collect::<Result<_, _>>()?,
            scores,
            reason,
        })
    }
}

#[cfg(test)]
mod tests;
