//! The round-robin algorithm, independent of WebAssembly.

use std::collections::HashMap;

use policy_sdk::{Candidate, Context, NodeFacts, NodeKey, Policy, Request, Scored, index_u32};

/// Per-service round-robin state: one counter per service name.
#[derive(Debug, Default, Clone)]
pub struct RoundRobin {
    counters: HashMap<String, u64>,
}

impl RoundRobin {
    /// Creates a state with no counters (each service starts at index 0).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The index of the next candidate in turn for `service` among `len`
    /// candidates, advancing that service's counter: the one code path of
    /// every answer.
    ///
    /// Returns `None` (and leaves the counter alone) when `len` is 0, or when
    /// the index would not fit the WIT `u32` (more than `u32::MAX` candidates).
    pub fn next_in_turn(&mut self, service: &str, len: usize) -> Option<u32> {
        let len = u64::try_from(len).ok().filter(|&n| n > 0)?;
        // Look up by `&str` first so that the steady state allocates nothing.
        let counter = match self.counters.get_mut(service) {
            Some(c) => c,
            None => self.counters.entry(service.to_owned()).or_insert(0),
        };
        let index = u32::try_from(*counter % len).ok()?;
        *counter = counter.wrapping_add(1);
        Some(index)
    }

    /// How many services have a counter.
    #[must_use]
    pub fn services(&self) -> usize {
        self.counters.len()
    }
}

impl Policy for RoundRobin {
    const NAME: &'static str = crate::NAME;

    /// The next candidate in turn, then the others in turn after it
    /// (advancing the counter once); score 1 for the node in turn, 0 for
    /// the others.
    fn score(
        &mut self,
        req: &Request,
        candidates: &[Candidate],
        _ctx: &Context,
        _facts: &dyn Fn(NodeKey) -> Option<NodeFacts>,
    ) -> Result<Scored, String> {
        let len = candidates.len();
        let first = self
            .next_in_turn(&req.service, len)
            .ok_or("no candidates")?;
        let order = (0..len)
            .map(|k| index_u32((first as usize + k) % len))
            .collect::<Result<Vec<u32>, String>>()?;
        let scores = (0..len)
            .map(|i| if i == first as usize { 1.0 } else { 0.0 })
            .collect();
        let reason = format!("round robin: next in turn (index {first} of {len})");
        Ok(Scored {
            order,
            scores,
            reason,
        })
    }
}

#[cfg(test)]
mod tests;
