//! The resource-aware algorithm, independent of WebAssembly.

use policy_sdk::{
    Candidate, FactsCache, NodeFacts, NodeKey, Outcome, Policy, Request, index_u32, requirements,
};

use crate::{Weights, unmet};

/// Filter by requirements, then route to the most free resources (see the
/// crate docs).
#[derive(Debug, Default, Clone)]
pub struct ResourceAware;

impl ResourceAware {
    /// The policy (it keeps no state).
    #[must_use]
    pub fn new() -> Self {
        Self
    }

    /// Routes to the best-scoring candidate that meets every requirement.
    ///
    /// # Errors
    /// A malformed requirement or weight, or no candidate meeting the
    /// requirements (see the crate docs for the messages).
    pub fn pick(
        &mut self,
        req: &Request,
        candidates: &[Candidate],
        facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
    ) -> Result<u32, String> {
        let hints = req.hints();
        let mut reqs = requirements(hints)?;
        // Numeric requirements first (stable): they need no host call, and
        // they narrow the candidates whose facts are fetched.
        reqs.sort_by_key(policy_sdk::Requirement::needs_facts);
        let weights = Weights::from_hints(hints)?;
        let cache = FactsCache::new(facts, candidates);

        let mut alive: Vec<usize> = (0..candidates.len()).collect();
        for (k, r) in reqs.iter().enumerate() {
            let meets = |&i: &usize| {
                let on = if r.needs_facts() { cache.get(i) } else { None };
                candidates.get(i).is_some_and(|c| r.holds(c, on))
            };
            let next: Vec<usize> = alive.iter().copied().filter(meets).collect();
            if next.is_empty() {
                return Err(unmet::reason(r, &reqs[..k], &alive, candidates, &cache));
            }
            alive = next;
        }

        let mut best: Option<(usize, f64)> = None;
        for i in alive {
            let Some(c) = candidates.get(i) else { continue };
            let score = weights.score(c);
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((i, score));
            }
        }
        let (index, _) = best.ok_or("no candidates")?;
        index_u32(index)
    }

    /// Does nothing: every figure this policy uses comes with the pick.
    pub fn observe(&mut self, _outcome: &Outcome) {}
}

impl Policy for ResourceAware {
    const NAME: &'static str = crate::NAME;

    fn pick(
        &mut self,
        req: &Request,
        candidates: &[Candidate],
        facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
    ) -> Result<u32, String> {
        ResourceAware::pick(self, req, candidates, facts)
    }

    fn observe(&mut self, outcome: &Outcome) {
        ResourceAware::observe(self, outcome);
    }
}

#[cfg(test)]
mod tests;
