//! A bounded record of the prefix block hashes each node was sent, for
//! prefix-aware (cache-aware) policies.

use std::collections::{HashMap, VecDeque};

use crate::NodeKey;

/// The default cap on recorded hashes, over every service and node of one
/// [`PrefixTable`]: 32 768 entries. Measured natively at the cap: about
/// 4.2 MiB held (about 130 bytes an entry: the map, the use log and their
/// slack), 5.6 MiB at peak; a plugin's linear memory is capped at 16 MiB by
/// default.
pub const DEFAULT_MAX_ENTRIES: usize = 32 * 1024;

/// Per (service, node), the chained prefix block hashes (WIT
/// `scorer.context.prefix-hashes`) of the calls routed there, so that a
/// policy can tell how many leading blocks of a call a node probably still
/// holds in its KV cache.
///
/// Bounded two ways:
/// - **Memory**: at most `max_entries` hashes in all. When a record takes the
///   table over the cap, the largest records give up their least recently
///   used hashes first, down to a common level (max-min fairness: a node sent
///   little keeps all of it; a busy node cannot push the others out).
///   Within a node, the oldest hashes go first, and of one call the deepest
///   blocks before the first ones.
/// - **Time**: a (service, node) not seen for `ttl_ms` (neither recorded nor
///   among a call's candidates, see [`PrefixTable::seen`]) matches nothing
///   and is dropped by a sweep that runs at most once per `ttl_ms / 10`: a
///   node that left is forgotten.
#[derive(Debug, Clone)]
pub struct PrefixTable {
    services: HashMap<String, HashMap<NodeKey, Record>>,
    max_entries: usize,
    ttl_ms: u64,
    entries: usize,
    /// Use counter: a larger tick is a more recent use.
    tick: u64,
    next_sweep_ms: u64,
}

/// One (service, node)'s hashes with their last-use ticks, and a log of
/// uses, oldest first: a use appends to the log, leaving the earlier entry of
/// that hash stale (its tick is no longer the map's), so a use costs O(1);
/// stale entries are skipped when evicting and dropped when the log grows
/// past twice the hashes.
#[derive(Debug, Clone, Default)]
struct Record {
    last_use: HashMap<u64, u64>,
    log: VecDeque<(u64, u64)>,
    seen_ms: u64,
}

impl Record {
    /// Records a use of `hash` at `tick`; true when the hash is new.
    fn touch(&mut self, hash: u64, tick: u64) -> bool {
        let new = self.last_use.insert(hash, tick).is_none();
        self.log.push_back((tick, hash));
        if self.log.len() > 2 * self.last_use.len() + 64 {
            let last_use = &self.last_use;
            self.log.retain(|(t, h)| last_use.get(h) == Some(t));
        }
        new
    }

    fn live(&self, (tick, hash): (u64, u64)) -> bool {
        self.last_use.get(&hash) == Some(&tick)
    }

    /// The tick of the least recently used hash (`u64::MAX` when empty).
    fn oldest_tick(&self) -> u64 {
        self.log
            .iter()
            .find(|&&use_| self.live(use_))
            .map_or(u64::MAX, |(tick, _)| *tick)
    }

    /// Drops the `count` least recently used hashes; returns how many went.
    fn evict(&mut self, count: usize) -> usize {
        let mut evicted = 0;
        while evicted < count {
            let Some(use_) = self.log.pop_front() else {
                break;
            };
            if self.live(use_) {
                self.last_use.remove(&use_.1);
                evicted += 1;
            }
        }
        // A record that shrank a lot (its node's share fell) gives back its
        // memory, so the cap bounds memory, not only entries.
        let len = self.last_use.len();
        if self.last_use.capacity() > 4 * len.max(64) {
            self.last_use.shrink_to(2 * len);
            self.log.retain(|(t, h)| self.last_use.get(h) == Some(t));
            self.log.shrink_to(2 * len);
        }
        evicted
    }
}

impl Default for PrefixTable {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_ENTRIES, crate::FORGET_AFTER_MS)
    }
}

impl PrefixTable {
    /// An empty table holding at most `max_entries` hashes in all (at least
    /// 1), forgetting a (service, node) not seen for `ttl_ms`.
    #[must_use]
    pub fn new(max_entries: usize, ttl_ms: u64) -> Self {
        Self {
            services: HashMap::new(),
            max_entries: max_entries.max(1),
            ttl_ms: ttl_ms.max(1),
            entries: 0,
            tick: 0,
            next_sweep_ms: 0,
        }
    }

    /// How many leading blocks of `hashes` (chained: hash i covers blocks
    /// 0..=i) are recorded for (`service`, `node`): the largest k such that
    /// hash k−1 is recorded, found by binary search (records of whole
    /// prefixes, evicted deepest first, are prefix-closed; where eviction
    /// left a hole the answer may fall short of the longest). 0 for a node
    /// not seen for `ttl_ms` before `now_ms`.
    #[must_use]
    pub fn matched(&self, service: &str, node: NodeKey, hashes: &[u64], now_ms: u64) -> usize {
        let Some(record) = self
            .services
            .get(service)
            .and_then(|nodes| nodes.get(&node))
            .filter(|r| now_ms.saturating_sub(r.seen_ms) < self.ttl_ms)
        else {
            return 0;
        };
        let (mut lo, mut hi) = (0, hashes.len());
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if record.last_use.contains_key(&hashes[mid - 1]) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }

    /// Records that a call with these prefix `hashes` went to (`service`,
    /// `node`) at `now_ms`, evicting older hashes when the table goes over
    /// its cap. The first blocks count as the most recently used.
    pub fn record(&mut self, service: &str, node: NodeKey, hashes: &[u64], now_ms: u64) {
        self.maybe_sweep(now_ms);
        let nodes = match self.services.get_mut(service) {
            Some(nodes) => nodes,
            None => self.services.entry(service.to_owned()).or_default(),
        };
        let record = nodes.entry(node).or_default();
        if now_ms.saturating_sub(record.seen_ms) >= self.ttl_ms {
            // Forgotten but not swept yet: it starts afresh.
            self.entries -= record.last_use.len();
            *record = Record::default();
        }
        record.seen_ms = record.seen_ms.max(now_ms);
        for &hash in hashes.iter().rev() {
            self.tick += 1;
            if record.touch(hash, self.tick) {
                self.entries += 1;
            }
        }
        if self.entries > self.max_entries {
            self.evict(self.entries - self.max_entries);
        }
    }

    /// Marks `nodes` of `service` (a call's candidates) as seen at `now_ms`,
    /// so that their records live on while nothing is routed to them. Only
    /// nodes already recorded are touched.
    pub fn seen(&mut self, service: &str, nodes: impl IntoIterator<Item = NodeKey>, now_ms: u64) {
        self.maybe_sweep(now_ms);
        let ttl_ms = self.ttl_ms;
        let Some(records) = self.services.get_mut(service) else {
            return;
        };
        for node in nodes {
            if let Some(r) = records.get_mut(&node)
                && now_ms.saturating_sub(r.seen_ms) < ttl_ms
            {
                r.seen_ms = r.seen_ms.max(now_ms);
            }
        }
    }

    /// How many hashes the table holds in all (never above the cap).
    #[must_use]
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// How many hashes are recorded for (`service`, `node`), stale or not.
    #[must_use]
    pub fn node_entries(&self, service: &str, node: NodeKey) -> usize {
        self.services
            .get(service)
            .and_then(|nodes| nodes.get(&node))
            .map_or(0, |r| r.last_use.len())
    }

    /// How many (service, node) records are held (stale ones not yet swept
    /// included).
    #[must_use]
    pub fn records(&self) -> usize {
        self.services.values().map(HashMap::len).sum()
    }

    /// The cap on [`PrefixTable::entries`].
    #[must_use]
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    fn maybe_sweep(&mut self, now_ms: u64) {
        if now_ms < self.next_sweep_ms {
            return;
        }
        let ttl_ms = self.ttl_ms;
        let mut dropped = 0;
        self.services.retain(|_, nodes| {
            nodes.retain(|_, r| {
                let keep = now_ms.saturating_sub(r.seen_ms) < ttl_ms;
                if !keep {
                    dropped += r.last_use.len();
                }
                keep
            });
            !nodes.is_empty()
        });
        self.entries -= dropped;
        self.next_sweep_ms = now_ms.saturating_add(ttl_ms / 10);
    }

    /// Evicts `excess` hashes, max-min fair: every record above a level L
    /// comes down to L (the lowest level that frees enough), and the few
    /// more needed come from the records at L+1 whose oldest hash is oldest.
    fn evict(&mut self, excess: usize) {
        let lens: Vec<(usize, u64)> = self
            .services
            .values()
            .flat_map(HashMap::values)
            .map(|r| (r.last_use.len(), r.oldest_tick()))
            .collect();
        let above =
            |level: usize| -> usize { lens.iter().map(|(n, _)| n.saturating_sub(level)).sum() };
        // The largest level whose records above it hold at least `excess`.
        let (mut lo, mut hi) = (0, lens.iter().map(|(n, _)| *n).max().unwrap_or(0));
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if above(mid) >= excess {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let level = lo;
        // Coming down to level + 1 frees less than `excess`; `extra` records
        // among those longer than `level` give up one more each.
        let extra = excess.saturating_sub(above(level + 1));
        let mut longer: Vec<(u64, usize)> = lens
            .iter()
            .enumerate()
            .filter(|(_, (n, _))| *n > level)
            .map(|(i, (_, oldest))| (*oldest, i))
            .collect();
        longer.sort_unstable();
        let mut one_more = vec![false; lens.len()];
        for (_, i) in longer.into_iter().take(extra) {
            one_more[i] = true;
        }
        // Same iteration order as `lens`: the maps were not changed since.
        let records = self.services.values_mut().flat_map(HashMap::values_mut);
        for (i, record) in records.enumerate() {
            let target = if one_more[i] { level } else { level + 1 };
            let len = record.last_use.len();
            if len > target {
                self.entries -= record.evict(len - target);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PrefixTable;

    fn chain(seed: u64, n: usize) -> Vec<u64> {
        (0..n as u64).map(|i| seed * 1000 + i).collect()
    }

    #[test]
    fn matches_the_longest_recorded_prefix() {
        let mut t = PrefixTable::new(1000, 10_000);
        let a = chain(1, 10);
        t.record("svc", 1, &a[..6], 0);
        assert_eq!(t.matched("svc", 1, &a, 0), 6);
        assert_eq!(t.matched("svc", 1, &a[..3], 0), 3);
        assert_eq!(t.matched("svc", 2, &a, 0), 0);
        assert_eq!(t.matched("other", 1, &a, 0), 0);
        assert_eq!(t.matched("svc", 1, &chain(2, 5), 0), 0);
        assert_eq!(t.matched("svc", 1, &[], 0), 0);
        t.record("svc", 1, &a, 1);
        assert_eq!(t.matched("svc", 1, &a, 1), 10);
        assert_eq!(t.entries(), 10, "re-recorded hashes count once");
    }

    #[test]
    fn never_exceeds_the_cap_and_evicts_the_oldest_deepest_first() {
        let mut t = PrefixTable::new(8, 10_000);
        let (a, b) = (chain(1, 6), chain(2, 6));
        t.record("svc", 1, &a, 0);
        t.record("svc", 1, &b, 1);
        assert_eq!(t.entries(), 8);
        // The 4 evicted were a's deepest blocks: a keeps its first 2.
        assert_eq!(t.matched("svc", 1, &a, 1), 2);
        assert_eq!(t.matched("svc", 1, &b, 1), 6);
        for seed in 3..50 {
            t.record(
                "svc",
                (seed % 3) as u32,
                &chain(seed, 1 + seed as usize % 9),
                seed,
            );
            assert!(t.entries() <= 8, "{} entries", t.entries());
        }
        let held: usize = (0..3).map(|n| t.node_entries("svc", n)).sum();
        assert_eq!(held, t.entries());
    }

    #[test]
    fn eviction_is_fair_between_nodes() {
        let mut t = PrefixTable::new(10, 10_000);
        t.record("svc", 1, &chain(1, 8), 0);
        t.record("svc", 2, &chain(2, 4), 1);
        // 12 > 10: the larger record gives up its two oldest.
        assert_eq!((t.node_entries("svc", 1), t.node_entries("svc", 2)), (6, 4));
        t.record("other", 3, &chain(3, 6), 2);
        // 16 > 10: everyone above level 3 or 4 comes down.
        assert_eq!(t.entries(), 10);
        let lens = [
            t.node_entries("svc", 1),
            t.node_entries("svc", 2),
            t.node_entries("other", 3),
        ];
        assert!(lens.iter().all(|n| (3..=4).contains(n)), "{lens:?}");
    }

    #[test]
    fn nodes_not_seen_are_forgotten() {
        let mut t = PrefixTable::new(100, 1000);
        let a = chain(1, 4);
        t.record("svc", 1, &a, 0);
        t.record("svc", 2, &a, 0);
        // Node 1 stays a candidate; node 2 left.
        t.seen("svc", [1, 3], 900);
        assert_eq!(t.matched("svc", 1, &a, 1500), 4);
        assert_eq!(t.matched("svc", 2, &a, 1500), 0, "stale reads as nothing");
        t.record("svc", 1, &chain(2, 1), 1500);
        assert_eq!(t.records(), 1, "the sweep dropped node 2");
        assert_eq!(t.entries(), 5);
        assert_eq!(t.node_entries("svc", 2), 0);
        // Forgotten but not swept yet (sweeps run once per ttl / 10): a new
        // record starts afresh rather than reviving the old hashes.
        t.record("svc", 4, &a, 1500);
        t.seen("svc", [1], 2450);
        t.record("svc", 4, &chain(3, 2), 2520);
        assert_eq!(t.matched("svc", 4, &a, 2520), 0);
        assert_eq!(t.node_entries("svc", 4), 2);
        assert_eq!(t.entries(), 5 + 2);
    }
}
