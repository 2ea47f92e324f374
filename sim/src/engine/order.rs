//! Where calls went in the nodes' order by id: the counted calls each node
//! took, and the dispatches that passed over a node earlier by id with a
//! free slot for the call's service (none under `pick-first`).

use super::*;

/// The nodes' order by id and what the run's dispatches did with it.
pub(super) struct NodeOrder {
    /// Each node's position in the order by id (byte order).
    rank: Vec<usize>,
    /// The nodes by position in that order.
    by_rank: Vec<usize>,
    /// Each node's ids.
    ids: Vec<String>,
    /// Each node's admission cap per service (its group's `max_concurrent`).
    max_concurrent: Vec<u32>,
    /// Whether each node always has each service loaded (not in a slot).
    always: Vec<Vec<bool>>,
    /// Counted calls dispatched to each node.
    dispatched: Vec<u64>,
    /// Counted dispatches that passed over an earlier node with room.
    passed_over: u64,
    /// Calls arriving in `[from, until)` are counted.
    from: Nanos,
    until: Nanos,
}

impl NodeOrder {
    /// The order of the nodes `ids` (scenario order, one entry per node),
    /// with their caps and always-loaded services; counting calls that
    /// arrive in `[from, until)`.
    pub(super) fn new(
        ids: Vec<String>,
        max_concurrent: Vec<u32>,
        always: Vec<Vec<bool>>,
        from: Nanos,
        until: Nanos,
    ) -> Self {
        let mut by_rank: Vec<usize> = (0..ids.len()).collect();
        by_rank.sort_by(|&a, &b| ids[a].cmp(&ids[b]));
        let mut rank = vec![0; ids.len()];
        for (r, &node) in by_rank.iter().enumerate() {
            rank[node] = r;
        }
        Self {
            rank,
            by_rank,
            dispatched: vec![0; ids.len()],
            ids,
            max_concurrent,
            always,
            passed_over: 0,
            from,
            until,
        }
    }

    /// Counts a dispatch of a call of `service` that arrived at `arrived`
    /// to `node`, before the node counts it: whether a node earlier by id
    /// had room for it then (loaded, fewer than `max_concurrent` of the
    /// service dispatched and not ended).
    pub(super) fn dispatch(
        &mut self,
        nodes: &[SimNode],
        node: usize,
        service: usize,
        arrived: Nanos,
    ) {
        if arrived < self.from || arrived >= self.until {
            return;
        }
        self.dispatched[node] += 1;
        let earlier = &self.by_rank[..self.rank[node]];
        if earlier
            .iter()
            .any(|&other| self.has_room(nodes, other, service))
        {
            self.passed_over += 1;
        }
    }

    fn has_room(&self, nodes: &[SimNode], node: usize, service: usize) -> bool {
        let n = &nodes[node];
        let loaded = self.always[node].get(service).copied().unwrap_or(false)
            || n.slots
                .iter()
                .any(|s| s.loaded == Some(service) && s.load == SlotLoad::Idle);
        loaded
            && n.active
                .get(service)
                .is_some_and(|&a| a < self.max_concurrent[node])
    }

    /// Counted calls dispatched to each node, by node id in scenario order.
    pub(super) fn by_node(&self) -> Vec<(String, u64)> {
        self.ids
            .iter()
            .cloned()
            .zip(self.dispatched.clone())
            .collect()
    }

    /// Counted dispatches that passed over an earlier node with room.
    pub(super) fn passed_over(&self) -> u64 {
        self.passed_over
    }
}
