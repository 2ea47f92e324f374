//! Single flight: the leader of a key's node call, and the calls that wait
//! for it (see the parent module's docs for who gets what).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::{CallError, ErrorKind};
use tokio::sync::watch;

use super::{Entry, Key, ResultCache};

/// What a follower got from the call it waited for.
pub(crate) enum Followed {
    /// The result.
    Done(Arc<Entry>),
    /// The same error the leader got (`service failed`, result too large).
    Failed(CallError),
    /// The leader failed for reasons of its own: look up again.
    Retry,
}

/// What a leader publishes: nothing yet, then its result or a shared error.
pub(super) type Outcome = Option<Result<Arc<Entry>, CallError>>;

/// A key's node call in progress.
pub(super) struct Flight {
    pub(super) id: u64,
    pub(super) outcome: watch::Receiver<Outcome>,
}

/// The call that runs on a node for a key; dropping it without
/// [`Leader::complete`] or a shared [`Leader::fail`] wakes the followers to
/// try again.
pub(crate) struct Leader {
    pub(super) cache: Arc<ResultCache>,
    pub(super) key: Key,
    /// The flight it leads (`None` for a `no_cache` call running beside
    /// another flight).
    pub(super) flight: Option<(u64, watch::Sender<Outcome>)>,
}

impl Leader {
    /// Stores the node's result (unless it alone outweighs `max_bytes`),
    /// hands it to the followers, and returns it.
    pub(crate) fn complete(
        self,
        data: Bytes,
        node_id: String,
        policy: String,
        content_type: Option<String>,
        status: Option<u16>,
        now: Instant,
    ) -> Arc<Entry> {
        let books = &self.cache.books;
        let service = books.services.get(&*self.key.service);
        let entry = Arc::new(Entry {
            data,
            node_id,
            policy,
            content_type,
            status,
            stored_at: now,
            ttl: service.map_or(Duration::ZERO, |s| s.ttl),
        });
        let weight = entry.weight();
        if let Some(service) = service
            && weight <= self.cache.max_bytes
        {
            // Booked before the insert, so that its removal, which the
            // listener books, always finds it.
            books.added(service, weight);
            self.cache.store.insert(self.key.clone(), entry.clone());
        }
        self.publish(Ok(entry.clone()));
        entry
    }

    /// Reports the node call's failure: followers get the same error when it
    /// is about the input (`service failed`, result too large); otherwise
    /// they try again themselves.
    pub(crate) fn fail(self, error: &CallError) {
        if matches!(
            error.kind,
            ErrorKind::ServiceFailed | ErrorKind::PayloadTooLarge
        ) {
            self.publish(Err(error.clone()));
        }
    }

    fn publish(&self, outcome: Result<Arc<Entry>, CallError>) {
        if let Some((_, publish)) = &self.flight {
            publish.send_replace(Some(outcome));
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        let Some((id, _)) = &self.flight else {
            return;
        };
        let mut flights = self.cache.flights();
        if flights.get(&self.key).is_some_and(|f| f.id == *id) {
            flights.remove(&self.key);
        }
        // The sender drops after this: followers that saw no outcome retry.
    }
}

/// A call waiting for an identical call in flight.
pub(crate) struct Follower {
    pub(super) cache: Arc<ResultCache>,
    pub(super) service: Arc<str>,
    pub(super) outcome: watch::Receiver<Outcome>,
}

impl Follower {
    /// Waits for the leader's outcome.
    pub(crate) async fn wait(mut self) -> Followed {
        let followed = match self.outcome.wait_for(Option::is_some).await {
            Ok(outcome) => match outcome.as_ref() {
                Some(Ok(entry)) => Followed::Done(entry.clone()),
                Some(Err(error)) => Followed::Failed(error.clone()),
                None => Followed::Retry,
            },
            Err(_) => Followed::Retry,
        };
        if !matches!(followed, Followed::Retry)
            && let Some(service) = self.cache.books.services.get(&*self.service)
        {
            service.counters.coalesced.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("cache_coalesced_total", "service" => service.name.to_string())
                .increment(1);
        }
        followed
    }
}
