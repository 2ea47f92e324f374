//! The prefix blocks a node reports holding, per service: what its agent
//! tells every gateway in its load reports (`NodeLoad::prefix_added`,
//! `prefix_evicted`, `prefix_full`), the block hashes of the calls it
//! served whichever gateway sent them. Policies ask it through the
//! `blocks.prefix-matched` import (the policy directory): how many
//! leading blocks of a call's prompt a candidate holds.
//!
//! Bounded: at most [`MAX_BLOCKS_PER_SERVICE`] hashes per service, and only
//! for services the node registered; the set goes with the [`super::Node`]
//! (its connection), and a new connection's first report is the whole set.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use protocol::NodeLoad;

/// Most blocks kept per (node, service): as many as an agent holds and
/// reports (`protocol::limits::MAX_PREFIX_HASHES`); more added blocks are
/// ignored until some are evicted.
pub(crate) const MAX_BLOCKS_PER_SERVICE: usize = protocol::limits::MAX_PREFIX_HASHES;

/// One node's reported blocks, per service.
#[derive(Debug, Default)]
pub(crate) struct ReportedBlocks {
    services: Mutex<HashMap<String, HashSet<u64>>>,
}

impl ReportedBlocks {
    /// Applies a load report's prefix fields (checked with
    /// `NodeLoad::validate`): the whole set replaced when `prefix_full`,
    /// then the evicted blocks removed, then the added ones inserted, for
    /// the services `hosts` says the node registered (others are ignored).
    pub(crate) fn apply(&self, load: &NodeLoad, hosts: impl Fn(&str) -> bool) {
        if !load.prefix_full && load.prefix_added.is_empty() && load.prefix_evicted.is_empty() {
            return;
        }
        let mut services = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        if load.prefix_full {
            services.clear();
        }
        for (service, hashes) in &load.prefix_evicted {
            if let Some(held) = services.get_mut(service) {
                for hash in hashes {
                    held.remove(hash);
                }
                if held.is_empty() {
                    services.remove(service);
                }
            }
        }
        for (service, hashes) in &load.prefix_added {
            if hashes.is_empty() || !hosts(service) {
                continue;
            }
            let held = services.entry(service.clone()).or_default();
            for &hash in hashes {
                if held.len() >= MAX_BLOCKS_PER_SERVICE {
                    break;
                }
                held.insert(hash);
            }
        }
    }

    /// How many leading blocks of `prefix_hashes` the node holds for
    /// `service`: k when the first k hashes are all held (chained hashes:
    /// block i's covers blocks 0..=i, so a hole ends the match).
    pub(crate) fn matched(&self, service: &str, prefix_hashes: &[u64]) -> u32 {
        let services = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(held) = services.get(service) else {
            return 0;
        };
        let k = prefix_hashes
            .iter()
            .take_while(|hash| held.contains(hash))
            .count();
        u32::try_from(k).unwrap_or(u32::MAX)
    }

    /// Blocks held for `service`.
    #[cfg(test)]
    pub(crate) fn len(&self, service: &str) -> usize {
        let services = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        services.get(service).map_or(0, HashSet::len)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn report(full: bool, added: &[(&str, &[u64])], evicted: &[(&str, &[u64])]) -> NodeLoad {
        let list = |l: &[(&str, &[u64])]| {
            l.iter()
                .map(|(s, h)| ((*s).to_owned(), h.to_vec()))
                .collect()
        };
        NodeLoad {
            in_flight: Vec::new(),
            prefix_added: list(added),
            prefix_evicted: list(evicted),
            prefix_full: full,
            ..NodeLoad::default()
        }
    }

    fn hosts_llm(service: &str) -> bool {
        service == "llm"
    }

    #[test]
    fn the_match_is_the_leading_blocks_all_held() {
        let blocks = ReportedBlocks::default();
        blocks.apply(&report(true, &[("llm", &[1, 2, 3, 5])], &[]), hosts_llm);
        assert_eq!(blocks.matched("llm", &[1, 2, 3, 4, 5]), 3);
        assert_eq!(blocks.matched("llm", &[1, 2, 3, 5]), 4);
        // A hole at the start: nothing matches, however much follows.
        assert_eq!(blocks.matched("llm", &[9, 2, 3]), 0);
        assert_eq!(blocks.matched("llm", &[]), 0);
        assert_eq!(blocks.matched("embed", &[1, 2]), 0);
    }

    #[test]
    fn deltas_add_and_evict_and_a_full_report_replaces() {
        let blocks = ReportedBlocks::default();
        blocks.apply(&report(true, &[("llm", &[1, 2])], &[]), hosts_llm);
        blocks.apply(
            &report(false, &[("llm", &[3])], &[("llm", &[1])]),
            hosts_llm,
        );
        assert_eq!(blocks.matched("llm", &[1, 2, 3]), 0);
        assert_eq!(blocks.matched("llm", &[2, 3]), 2);
        // A new session's whole set: what came before is gone.
        blocks.apply(&report(true, &[("llm", &[7])], &[]), hosts_llm);
        assert_eq!(blocks.len("llm"), 1);
        assert_eq!(blocks.matched("llm", &[2, 3]), 0);
        // An empty whole set empties it.
        blocks.apply(&report(true, &[], &[]), hosts_llm);
        assert_eq!(blocks.len("llm"), 0);
    }

    #[test]
    fn only_registered_services_and_at_most_the_cap_are_kept() {
        let blocks = ReportedBlocks::default();
        blocks.apply(&report(false, &[("other", &[1, 2])], &[]), hosts_llm);
        assert_eq!(blocks.len("other"), 0);
        assert!(blocks.services.lock().unwrap().is_empty());
        let many: Vec<u64> = (0..MAX_BLOCKS_PER_SERVICE as u64 + 10).collect();
        blocks.apply(&report(false, &[("llm", &many)], &[]), hosts_llm);
        assert_eq!(blocks.len("llm"), MAX_BLOCKS_PER_SERVICE);
        // Evictions make room again.
        blocks.apply(
            &report(false, &[("llm", &[u64::MAX])], &[("llm", &[0])]),
            hosts_llm,
        );
        assert_eq!(blocks.matched("llm", &[u64::MAX]), 1);
    }
}
