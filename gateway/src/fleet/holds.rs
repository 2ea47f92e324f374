//! The lease holds a node keeps for this gateway on its control stream:
//! per lease id, where the agent's answers go (`Held`, then `LeaseEnded`
//! with the id), for the lease's task to read. Frames of many leases share
//! the one stream, so a lease costs the agent link no stream of its own.
//!
//! Bounded: an entry exists only from the `Hold` this gateway sent until
//! the lease's end (or its task gives up on it); frames naming an unknown
//! id are dropped, and each lease takes at most [`WORDS`] frames queued.
//! When the node's session ends every entry goes ([`Holds::close`]): their
//! tasks read the end of their channel as the node lost.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use protocol::{CallError, LeaseEnd};
use tokio::sync::mpsc;

/// Frames one lease can have queued: its `Held` and its `LeaseEnded`.
const WORDS: usize = 2;

/// What the agent said of a hold on the control stream.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum HoldWord {
    /// `Held`: the slot is held (`None`), or why the hold was refused.
    Held(Option<CallError>),
    /// `LeaseEnded`: the lease ended and its slot is free.
    Ended(LeaseEnd),
}

/// A node's holds for this gateway, by lease id.
#[derive(Debug, Default)]
pub(crate) struct Holds {
    waiting: Mutex<HashMap<String, mpsc::Sender<HoldWord>>>,
}

impl Holds {
    fn waiting(&self) -> MutexGuard<'_, HashMap<String, mpsc::Sender<HoldWord>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts waiting for the agent's words on `lease_id` (before its
    /// `Hold` goes out); `None` when that id waits already.
    pub(crate) fn expect(&self, lease_id: &str) -> Option<mpsc::Receiver<HoldWord>> {
        let mut waiting = self.waiting();
        if waiting.contains_key(lease_id) {
            return None;
        }
        let (tx, rx) = mpsc::channel(WORDS);
        waiting.insert(lease_id.to_owned(), tx);
        Some(rx)
    }

    /// Hands the agent's `word` on `lease_id` to its task; `false` for an
    /// id nobody waits for (or one past its [`WORDS`]). The entry goes
    /// with a refusal or an end: nothing more comes for it.
    pub(crate) fn deliver(&self, lease_id: &str, word: HoldWord) -> bool {
        let mut waiting = self.waiting();
        let last = matches!(word, HoldWord::Held(Some(_)) | HoldWord::Ended(_));
        let delivered = waiting
            .get(lease_id)
            .is_some_and(|tx| tx.try_send(word).is_ok());
        if last {
            waiting.remove(lease_id);
        }
        delivered
    }

    /// Stops waiting for `lease_id` (its task gave up on it).
    pub(crate) fn forget(&self, lease_id: &str) {
        self.waiting().remove(lease_id);
    }

    /// Ends every wait: the node's session is over.
    pub(crate) fn close(&self) {
        self.waiting().clear();
    }

    /// Leases waited for.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.waiting().len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use protocol::{ErrorKind, LeaseEndReason};

    use super::*;

    fn end(id: &str) -> LeaseEnd {
        LeaseEnd {
            calls: 1,
            reason: LeaseEndReason::Used,
            busy_ms: 1.0,
            lease_id: Some(id.into()),
        }
    }

    #[tokio::test]
    async fn words_reach_their_lease_and_its_entry_goes_with_the_end() {
        let holds = Holds::default();
        let mut a = holds.expect("a").expect("first wait");
        assert!(holds.expect("a").is_none(), "one wait per id");
        let mut b = holds.expect("b").expect("wait");
        assert!(holds.deliver("a", HoldWord::Held(None)));
        assert!(!holds.deliver("zz", HoldWord::Held(None)), "unknown id");
        assert_eq!(a.recv().await, Some(HoldWord::Held(None)));
        assert!(holds.deliver("a", HoldWord::Ended(end("a"))));
        assert_eq!(a.recv().await, Some(HoldWord::Ended(end("a"))));
        assert_eq!(holds.len(), 1, "only b waits");
        let refused = CallError::new(ErrorKind::Occupied, "full");
        assert!(holds.deliver("b", HoldWord::Held(Some(refused.clone()))));
        assert_eq!(b.recv().await, Some(HoldWord::Held(Some(refused))));
        assert_eq!(holds.len(), 0);
        assert_eq!(a.recv().await, None, "nothing more for an ended lease");
    }

    #[tokio::test]
    async fn a_flood_on_one_id_is_dropped_and_a_closed_session_ends_every_wait() {
        let holds = Holds::default();
        let mut a = holds.expect("a").expect("wait");
        let delivered = (0..10)
            .filter(|_| holds.deliver("a", HoldWord::Held(None)))
            .count();
        assert_eq!(delivered, WORDS, "at most WORDS queued");
        holds.close();
        assert_eq!(holds.len(), 0);
        for _ in 0..WORDS {
            assert_eq!(a.recv().await, Some(HoldWord::Held(None)));
        }
        assert_eq!(a.recv().await, None, "read as the node lost");
    }
}
