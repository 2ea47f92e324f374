//! The leases this gateway granted that have not ended yet, by lease id:
//! what `GET /api/leases` lists and what a release finds. An entry lives
//! exactly as long as its lease's hold task ([`super::hold`]), which
//! removes it when the lease ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use tokio::sync::{Notify, watch};

/// One active lease, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct LeaseInfo {
    /// Its id (32 hex digits).
    pub(crate) lease_id: String,
    /// The service it holds a slot of.
    pub(crate) service: String,
    /// The node holding the slot.
    pub(crate) node_id: String,
    /// The tenant it was granted to.
    pub(crate) tenant: String,
    /// Calls it may serve.
    pub(crate) max_calls: u32,
    /// When it was granted, ms since the Unix epoch.
    pub(crate) granted_unix_ms: u64,
    /// When it expires, ms since the Unix epoch.
    pub(crate) expires_unix_ms: u64,
}

/// An active lease: what it is, how to ask its hold task to release it,
/// and whether that task saw it end.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) info: LeaseInfo,
    /// Wakes the hold task to release the lease.
    pub(crate) release: Notify,
    /// Turns true when the lease ended (its slot is free).
    pub(crate) ended: watch::Receiver<bool>,
}

/// The active leases.
#[derive(Debug, Default)]
pub(crate) struct Table {
    leases: Mutex<HashMap<String, Arc<Entry>>>,
}

impl Table {
    fn leases(&self) -> MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.leases.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a granted lease; the returned sender marks it ended (the hold
    /// task keeps it and calls [`Table::remove`] when it ends).
    pub(crate) fn insert(&self, info: LeaseInfo) -> (Arc<Entry>, watch::Sender<bool>) {
        let (ended_tx, ended) = watch::channel(false);
        let entry = Arc::new(Entry {
            info,
            release: Notify::new(),
            ended,
        });
        self.leases()
            .insert(entry.info.lease_id.clone(), entry.clone());
        (entry, ended_tx)
    }

    /// The active lease of id `lease_id`.
    pub(crate) fn get(&self, lease_id: &str) -> Option<Arc<Entry>> {
        self.leases().get(lease_id).cloned()
    }

    /// Forgets lease `lease_id` (it ended).
    pub(crate) fn remove(&self, lease_id: &str) {
        self.leases().remove(lease_id);
    }

    /// Every active lease, the oldest grant first.
    pub(crate) fn list(&self) -> Vec<LeaseInfo> {
        let mut all: Vec<LeaseInfo> = self.leases().values().map(|e| e.info.clone()).collect();
        all.sort_by(|a, b| (a.granted_unix_ms, &a.lease_id).cmp(&(b.granted_unix_ms, &b.lease_id)));
        all
    }

    /// Active leases now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.leases().len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn info(id: &str, granted: u64) -> LeaseInfo {
        LeaseInfo {
            lease_id: id.into(),
            service: "echo".into(),
            node_id: "node-a".into(),
            tenant: "anonymous".into(),
            max_calls: 1,
            granted_unix_ms: granted,
            expires_unix_ms: granted + 1000,
        }
    }

    #[test]
    fn leases_are_found_listed_in_grant_order_and_removed() {
        let table = Table::default();
        let (_b, _) = table.insert(info("b", 20));
        let (a, ended) = table.insert(info("a", 10));
        assert_eq!(table.len(), 2);
        assert_eq!(table.get("a").map(|e| e.info.granted_unix_ms), Some(10));
        assert!(table.get("c").is_none());
        let ids: Vec<String> = table.list().into_iter().map(|i| i.lease_id).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(!*a.ended.borrow());
        ended.send_replace(true);
        assert!(*a.ended.borrow(), "a release sees the end");
        table.remove("a");
        assert!(table.get("a").is_none());
        assert_eq!(table.len(), 1);
    }
}
