//! The prefix blocks this node holds, per service, as every gateway it is
//! registered with learns them.
//!
//! A gateway sends a call's chained prompt block hashes with its dispatch
//! (`DispatchHead::prefix_hashes`). Once the service has answered, its model
//! server holds the KV cache of those blocks, so the node counts them as
//! held: [`PrefixBlocks`] keeps, per service, the most recently served
//! blocks, at most [`MAX_BLOCKS_PER_SERVICE`], and forgets the least
//! recently used beyond that (about what a model server's cache evicts).
//! The calls served are the only source today; a model server that
//! publishes its KV-cache events could feed the same set.
//!
//! Each gateway session has a [`Reporter`]: what it told that gateway, so
//! that each report (`NodeLoad::prefix_added` / `prefix_evicted`) carries
//! the changes since its previous one, and the first report of a session
//! the whole set (`prefix_full`), for a gateway that registered the node
//! anew. Reports are coalesced: a session waits for a change, then
//! [`COALESCE`] more, then reports everything that changed meanwhile.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hashlink::LinkedHashSet;
use protocol::NodeLoad;
use tokio::sync::watch;

/// Most blocks the node counts as held per service (the least recently
/// served beyond it are evicted): as many as one load report may name per
/// service, so a whole set fits one report.
pub(crate) const MAX_BLOCKS_PER_SERVICE: usize = protocol::limits::MAX_PREFIX_HASHES;

/// How long a session gathers changes before it reports them: at most one
/// prefix report per session per 100 ms.
pub(crate) const COALESCE: Duration = Duration::from_millis(100);

/// The node's prefix blocks per service; cheap to clone (shared).
#[derive(Debug, Clone)]
pub(crate) struct PrefixBlocks {
    inner: Arc<Mutex<HashMap<String, LinkedHashSet<u64>>>>,
    /// Bumped on every change, so sessions wake to report.
    changes: Arc<watch::Sender<u64>>,
    capacity: usize,
}

impl Default for PrefixBlocks {
    fn default() -> Self {
        Self::with_capacity(MAX_BLOCKS_PER_SERVICE)
    }
}

impl PrefixBlocks {
    /// An empty set holding at most `capacity` blocks per service (at most
    /// [`MAX_BLOCKS_PER_SERVICE`]).
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            inner: Arc::default(),
            changes: Arc::new(watch::Sender::new(0)),
            capacity: capacity.min(MAX_BLOCKS_PER_SERVICE),
        }
    }

    /// Counts `hashes` as held for `service` (a call with them was served),
    /// most recently used; evicts the least recently used blocks past the
    /// capacity. Nothing happens for an empty list.
    pub(crate) fn record(&self, service: &str, hashes: &[u64]) {
        if hashes.is_empty() || self.capacity == 0 {
            return;
        }
        {
            let mut services = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            let blocks = services.entry(service.to_owned()).or_default();
            // The last `capacity` hashes are the ones that would stay.
            let start = hashes.len().saturating_sub(self.capacity);
            for &hash in &hashes[start..] {
                if !blocks.to_back(&hash) {
                    blocks.insert(hash);
                }
            }
            while blocks.len() > self.capacity {
                blocks.pop_front();
            }
        }
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A reporter for a new gateway session: its first report is the whole
    /// set.
    pub(crate) fn reporter(&self) -> Reporter {
        let mut changes = self.changes.subscribe();
        changes.mark_changed();
        Reporter {
            blocks: self.clone(),
            changes,
            told: HashMap::new(),
            full: true,
            due: None,
        }
    }

    /// The blocks held for `service`, least recently used first.
    #[cfg(test)]
    fn held(&self, service: &str) -> Vec<u64> {
        let services = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        services
            .get(service)
            .map(|blocks| blocks.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// What one gateway session was told of the node's blocks.
#[derive(Debug)]
pub(crate) struct Reporter {
    blocks: PrefixBlocks,
    changes: watch::Receiver<u64>,
    /// Per service, the blocks this session's gateway knows the node holds.
    told: HashMap<String, HashSet<u64>>,
    /// Whether the next report is the whole set.
    full: bool,
    /// When the changes seen are to be reported (a change seen, no report
    /// since): kept across a cancelled [`Reporter::changed`].
    due: Option<tokio::time::Instant>,
}

impl Reporter {
    /// Waits until there may be something to report (at once for a new
    /// session), then [`COALESCE`] more to gather changes. Cancel-safe: a
    /// change seen by a call dropped before it returned is still reported
    /// by the next call (or by [`Reporter::fill`]).
    pub(crate) async fn changed(&mut self) {
        if self.due.is_none() {
            if self.changes.changed().await.is_err() {
                // The set is gone (the agent stops): never report again.
                std::future::pending::<()>().await;
            }
            self.due = Some(tokio::time::Instant::now() + COALESCE);
        }
        if let Some(due) = self.due {
            tokio::time::sleep_until(due).await;
        }
    }

    /// Fills `load`'s prefix fields with the changes since this session's
    /// previous report (the whole set in its first); returns whether there
    /// is anything to send.
    pub(crate) fn fill(&mut self, load: &mut NodeLoad) -> bool {
        self.changes.mark_unchanged();
        self.due = None;
        let services = self
            .blocks
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        load.prefix_full = std::mem::take(&mut self.full);
        for (service, blocks) in services.iter() {
            let told = self.told.entry(service.clone()).or_default();
            let added: Vec<u64> = blocks
                .iter()
                .copied()
                .filter(|h| load.prefix_full || !told.contains(h))
                .collect();
            let evicted: Vec<u64> = if load.prefix_full {
                Vec::new()
            } else {
                told.iter()
                    .copied()
                    .filter(|h| !blocks.contains(h))
                    .collect()
            };
            if added.is_empty() && evicted.is_empty() {
                continue;
            }
            told.clear();
            told.extend(blocks.iter().copied());
            if !added.is_empty() {
                load.prefix_added.push((service.clone(), added));
            }
            if !evicted.is_empty() {
                load.prefix_evicted.push((service.clone(), evicted));
            }
        }
        load.prefix_full || !load.prefix_added.is_empty() || !load.prefix_evicted.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn report(reporter: &mut Reporter) -> NodeLoad {
        let mut load = NodeLoad::default();
        reporter.fill(&mut load);
        load
    }

    #[test]
    fn the_least_recently_served_blocks_are_evicted_past_the_capacity() {
        let blocks = PrefixBlocks::with_capacity(4);
        blocks.record("llm", &[1, 2, 3]);
        blocks.record("llm", &[1, 4]);
        // 1 was served again: 2 is now the least recently used.
        blocks.record("llm", &[5]);
        assert_eq!(blocks.held("llm"), vec![3, 1, 4, 5]);
        // A call longer than the capacity keeps its last blocks.
        blocks.record("llm", &[10, 11, 12, 13, 14, 15]);
        assert_eq!(blocks.held("llm"), vec![12, 13, 14, 15]);
        blocks.record("embed", &[]);
        assert!(blocks.held("embed").is_empty());
        assert!(blocks.inner.lock().unwrap().get("embed").is_none());
    }

    #[test]
    fn each_session_is_told_the_whole_set_first_then_the_changes() {
        let blocks = PrefixBlocks::with_capacity(3);
        blocks.record("llm", &[1, 2]);
        let mut a = blocks.reporter();
        let first = report(&mut a);
        assert!(first.prefix_full);
        assert_eq!(first.prefix_added, vec![("llm".to_string(), vec![1, 2])]);
        assert!(first.prefix_evicted.is_empty());
        // Nothing changed: nothing to send.
        let mut nothing = NodeLoad::default();
        assert!(!a.fill(&mut nothing));
        assert_eq!(nothing, NodeLoad::default());

        blocks.record("llm", &[3, 4]);
        let delta = report(&mut a);
        assert!(!delta.prefix_full);
        assert_eq!(delta.prefix_added, vec![("llm".to_string(), vec![3, 4])]);
        assert_eq!(delta.prefix_evicted, vec![("llm".to_string(), vec![1])]);

        // A session that starts later (another gateway, or a reconnect) gets
        // the whole set as it is now.
        let mut b = blocks.reporter();
        let late = report(&mut b);
        assert!(late.prefix_full);
        assert_eq!(late.prefix_added, vec![("llm".to_string(), vec![2, 3, 4])]);
        assert!(late.validate().is_ok());
    }

    #[test]
    fn an_empty_node_still_tells_a_new_session_it_holds_nothing() {
        let blocks = PrefixBlocks::default();
        let mut reporter = blocks.reporter();
        let mut load = NodeLoad::default();
        assert!(reporter.fill(&mut load));
        assert!(load.prefix_full && load.prefix_added.is_empty());
    }

    #[tokio::test]
    async fn a_session_wakes_on_a_change_and_gathers_the_burst() {
        let blocks = PrefixBlocks::default();
        let mut reporter = blocks.reporter();
        // A new session reports at once.
        reporter.changed().await;
        assert!(reporter.fill(&mut NodeLoad::default()));
        let waiting = tokio::spawn(async move {
            reporter.changed().await;
            let mut load = NodeLoad::default();
            reporter.fill(&mut load);
            load
        });
        tokio::task::yield_now().await;
        blocks.record("llm", &[1]);
        tokio::task::yield_now().await;
        blocks.record("llm", &[2]);
        let load = waiting.await.unwrap();
        assert_eq!(load.prefix_added, vec![("llm".to_string(), vec![1, 2])]);
    }

    #[tokio::test]
    async fn a_change_seen_by_a_cancelled_wait_is_still_reported() {
        let blocks = PrefixBlocks::default();
        let mut reporter = blocks.reporter();
        reporter.fill(&mut NodeLoad::default());
        blocks.record("llm", &[1]);
        // Another branch of the session's loop wins while this one gathers.
        let cancelled = tokio::time::timeout(COALESCE / 4, reporter.changed()).await;
        assert!(cancelled.is_err());
        // No further change: the next wait still ends, and reports block 1.
        tokio::time::timeout(COALESCE * 20, reporter.changed())
            .await
            .expect("the change seen before is reported");
        let mut load = NodeLoad::default();
        assert!(reporter.fill(&mut load));
        assert_eq!(load.prefix_added, vec![("llm".to_string(), vec![1])]);
    }
}
