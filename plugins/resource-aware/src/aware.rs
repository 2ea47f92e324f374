//! The resource-aware algorithm, independent of WebAssembly.

use policy_sdk::{
    Candidate, Context, EXCLUDED, FactsCache, NodeFacts, NodeKey, Policy, Request, Requirement,
    Scored, fmt_num, order_after, requirements, to_score,
};

use crate::{Weights, cpu_score, gpu_score, load_score, mem_score, unmet};

/// Filter by requirements, then route to the most free resources (see the
/// crate docs).
#[derive(Debug, Default, Clone)]
pub struct ResourceAware;

/// What [`ResourceAware::choose`] found.
struct Choice {
    /// The best-scoring candidate meeting every requirement.
    index: usize,
    /// The call's requirements, numeric ones first.
    reqs: Vec<Requirement>,
    /// The weights of the four scores.
    weights: Weights,
}

impl ResourceAware {
    /// The policy (it keeps no state).
    #[must_use]
    pub fn new() -> Self {
        Self
    }

    /// The ranking, every candidate's score ([`EXCLUDED`] for those missing a
    /// requirement) and the choice.
    fn evaluate(
        req: &Request,
        candidates: &[Candidate],
        facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
    ) -> Result<(Vec<u32>, Vec<f32>, Choice), String> {
        let mut scores = vec![f64::NAN; candidates.len()];
        let mut alive = Vec::new();
        let choice = Self::choose(req, candidates, facts, |i, score| {
            alive.push(i);
            if let Some(s) = scores.get_mut(i) {
                *s = score;
            }
        })?;
        let order = order_after(choice.index, alive, |a, b| scores[b].total_cmp(&scores[a]))?;
        let scores = scores.into_iter().map(to_score).collect();
        Ok((order, scores, choice))
    }

    /// The one code path of every answer: filters by the requirements, then
    /// takes the best score (each candidate meeting them passed to `scored`
    /// with its score on the way).
    fn choose(
        req: &Request,
        candidates: &[Candidate],
        facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
        mut scored: impl FnMut(usize, f64),
    ) -> Result<Choice, String> {
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
            scored(i, score);
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((i, score));
            }
        }
        let (index, _) = best.ok_or("no candidates")?;
        Ok(Choice {
            index,
            reqs,
            weights,
        })
    }
}

impl Policy for ResourceAware {
    const NAME: &'static str = crate::NAME;

    /// The candidates meeting every requirement by score, highest first
    /// (ties by index; candidates missing a requirement are not named);
    /// each candidate's score, the weighted mean in 0..=1 ([`EXCLUDED`] for
    /// a candidate missing a requirement); the reason, e.g. `most free
    /// resources: 0.575 (gpu 0.55, cpu 0.75, mem 0.25, load 0.75), best of
    /// 3 meeting gpu_mem_mib>=16000`.
    ///
    /// # Errors
    /// A malformed requirement or weight, or no candidate meeting the
    /// requirements (see the crate docs for the messages).
    fn score(
        &mut self,
        req: &Request,
        candidates: &[Candidate],
        _ctx: &Context,
        facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
    ) -> Result<Scored, String> {
        let (order, scores, choice) = Self::evaluate(req, candidates, facts)?;
        let fitting = scores.iter().filter(|&&s| s != EXCLUDED).count();
        let reason = candidates.get(choice.index).map_or_else(String::new, |c| {
            let three = |x: f64| fmt_num((x * 1000.0).round() / 1000.0);
            let meeting = if choice.reqs.is_empty() {
                String::new()
            } else {
                let names: Vec<String> = choice.reqs.iter().map(ToString::to_string).collect();
                format!(" meeting {}", names.join(", "))
            };
            format!(
                "most free resources: {} (gpu {}, cpu {}, mem {}, load {}), best of {fitting}{meeting}",
                three(choice.weights.score(c)),
                three(gpu_score(c)),
                three(cpu_score(c)),
                three(mem_score(c)),
                three(load_score(c)),
            )
        });
        Ok(Scored {
            order,
            scores,
            reason,
        })
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod score_tests;
