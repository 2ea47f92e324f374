//! What the admin API, the CLI and the dashboard show of the core.

use std::time::Instant;

use protocol::{NodeView, QueueView};

use crate::Core;
use crate::fleet::millis;

impl Core {
    /// A view of every node, by node id.
    pub fn node_views(&self, now: Instant) -> Vec<NodeView> {
        let mut views: Vec<NodeView> = self.fleet.iter().map(|n| n.view(now)).collect();
        views.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
        views
    }

    /// Every service's queue, plus services nodes host with nobody waiting,
    /// by service name.
    pub fn queue_views(&self, now: Instant) -> Vec<QueueView> {
        let mut names = self.fleet.service_names();
        names.extend(self.queues.keys().cloned());
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|service| {
                let reserved = self
                    .reservations
                    .values()
                    .filter(|r| r.service == service && r.waiter.is_some())
                    .count();
                let queue = self.queues.get(&service);
                QueueView {
                    length: queue.map_or(0, |q| u32::try_from(q.len()).unwrap_or(u32::MAX)),
                    capacity: queue
                        .map_or_else(|| self.config.queue_capacity(&service), |q| q.capacity),
                    oldest_wait_ms: queue
                        .and_then(|q| q.oldest())
                        .map_or(0, |t| millis(now.saturating_duration_since(t))),
                    reserved: u32::try_from(reserved).unwrap_or(u32::MAX),
                    dispatched_total: queue.map_or(0, |q| q.dispatched_total),
                    abandoned_total: queue.map_or(0, |q| q.abandoned_total),
                    overloaded_total: queue.map_or(0, |q| q.overloaded_total),
                    retries_total: self.retry_counters(&service).retries_total,
                    retries_refused_total: self.retry_counters(&service).refused_total,
                    breaker_trips_total: self.retry_counters(&service).tripped_total,
                    service,
                }
            })
            .collect()
    }
}
