//! Fetching node facts lazily, at most once per candidate per pick.

use std::cell::OnceCell;

use crate::{Candidate, NodeFacts, NodeKey};

/// The host's `node-info` answers for one pick, fetched on first use and at
/// most once per candidate.
pub struct FactsCache<'a> {
    fetch: &'a dyn Fn(NodeKey) -> Option<NodeFacts>,
    candidates: &'a [Candidate],
    slots: Vec<OnceCell<Option<NodeFacts>>>,
}

impl<'a> FactsCache<'a> {
    /// A cache for `candidates`, fetching through `fetch` (nothing is fetched
    /// yet).
    #[must_use]
    pub fn new(
        fetch: &'a dyn Fn(NodeKey) -> Option<NodeFacts>,
        candidates: &'a [Candidate],
    ) -> Self {
        Self {
            fetch,
            candidates,
            slots: (0..candidates.len()).map(|_| OnceCell::new()).collect(),
        }
    }

    /// The facts of `candidates[index]`: `None` for a node the host does not
    /// know (or an index out of range).
    pub fn get(&self, index: usize) -> Option<&NodeFacts> {
        let candidate = self.candidates.get(index)?;
        self.slots
            .get(index)?
            .get_or_init(|| (self.fetch)(candidate.node))
            .as_ref()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::FactsCache;
    use crate::{Candidate, NodeFacts};

    #[test]
    fn fetches_each_candidate_at_most_once_and_only_on_use() {
        let calls = Cell::new(0);
        let fetch = |node: u32| {
            calls.set(calls.get() + 1);
            (node != 7).then(|| NodeFacts {
                id: format!("n{node}"),
                ..NodeFacts::default()
            })
        };
        let candidates = [
            Candidate {
                node: 3,
                ..Candidate::default()
            },
            Candidate {
                node: 7,
                ..Candidate::default()
            },
        ];
        let cache = FactsCache::new(&fetch, &candidates);
        assert_eq!(calls.get(), 0);
        assert_eq!(cache.get(0).map(|f| f.id.as_str()), Some("n3"));
        assert_eq!(cache.get(0).map(|f| f.id.as_str()), Some("n3"));
        assert_eq!(cache.get(1), None);
        assert_eq!(cache.get(1), None);
        assert_eq!(cache.get(2), None);
        assert_eq!(calls.get(), 2);
    }
}
