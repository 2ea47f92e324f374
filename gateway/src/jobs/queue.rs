//! The waiting jobs, per service: higher priority first, then submission
//! order (job ids are time-ordered). Plain data, no IO; the dispatcher
//! takes from the front when a slot is free.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One waiting job's place: priority (higher first), then id (older
/// first).
type Place = (Reverse<i32>, String);

/// Every service's waiting jobs.
#[derive(Debug, Default)]
pub(crate) struct Waiting {
    by_service: BTreeMap<String, BTreeSet<Place>>,
    /// Where each job sits: its service and priority.
    index: HashMap<String, (String, i32)>,
}

impl Waiting {
    /// Adds a job (again: a job already waiting keeps its place).
    pub(crate) fn push(&mut self, id: &str, service: &str, priority: i32) {
        if self.index.contains_key(id) {
            return;
        }
        self.index
            .insert(id.to_owned(), (service.to_owned(), priority));
        self.by_service
            .entry(service.to_owned())
            .or_default()
            .insert((Reverse(priority), id.to_owned()));
    }

    /// Takes a job out (cancelled, deleted, claimed elsewhere); false when
    /// it was not waiting.
    pub(crate) fn remove(&mut self, id: &str) -> bool {
        let Some((service, priority)) = self.index.remove(id) else {
            return false;
        };
        if let Some(set) = self.by_service.get_mut(&service) {
            set.remove(&(Reverse(priority), id.to_owned()));
            if set.is_empty() {
                self.by_service.remove(&service);
            }
        }
        true
    }

    /// Takes the next job of `service`: the highest priority, oldest.
    pub(crate) fn pop(&mut self, service: &str) -> Option<String> {
        let set = self.by_service.get_mut(service)?;
        let (_, id) = set.pop_first()?;
        if set.is_empty() {
            self.by_service.remove(service);
        }
        self.index.remove(&id);
        Some(id)
    }

    /// The services with jobs waiting.
    pub(crate) fn services(&self) -> Vec<String> {
        self.by_service.keys().cloned().collect()
    }

    /// Whether `id` is waiting.
    #[cfg(test)]
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// A waiting job's position in its service's queue (1 = next).
    pub(crate) fn position(&self, id: &str) -> Option<u32> {
        let (service, priority) = self.index.get(id)?;
        let set = self.by_service.get(service)?;
        let place = (Reverse(*priority), id.to_owned());
        let ahead = set.range(..place).count();
        u32::try_from(ahead + 1).ok()
    }

    /// Jobs waiting, all services.
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no job waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_then_submission_order() {
        let mut q = Waiting::default();
        q.push("01", "sleep", 0);
        q.push("02", "sleep", 5);
        q.push("03", "sleep", 0);
        q.push("04", "sleep", 5);
        q.push("05", "other", 9);
        assert_eq!(q.position("02"), Some(1));
        assert_eq!(q.position("04"), Some(2));
        assert_eq!(q.position("03"), Some(4));
        assert_eq!(q.len(), 5);
        let order: Vec<_> = std::iter::from_fn(|| q.pop("sleep")).collect();
        assert_eq!(order, ["02", "04", "01", "03"]);
        assert_eq!(q.services(), ["other"]);
    }

    #[test]
    fn remove_and_push_twice() {
        let mut q = Waiting::default();
        q.push("a", "s", 1);
        q.push("a", "s", 7);
        assert_eq!(q.len(), 1);
        assert!(q.remove("a"));
        assert!(!q.remove("a"));
        assert!(!q.contains("a"));
        assert_eq!(q.pop("s"), None);
        assert!(q.services().is_empty());
    }
}
