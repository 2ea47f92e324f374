//! The gateway's lease-signing keys: a ring of random 32-byte keys, each
//! named by a random u64 id. The newest signs every token; a new one
//! replaces it every `[leases] key_rotate_s`, and the replaced ones stay
//! valid `max_ttl_ms` longer (every token they signed expires by then),
//! at most [`protocol::MAX_LEASE_KEYS`] keys in all. Agents with a direct
//! port are sent the whole set ([`LeaseKeys`]) when they register and on
//! every change ([`KeyRing::subscribe`]).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use protocol::{LEASE_KEY_LEN, LeaseKey, LeaseKeys, MAX_LEASE_KEYS};
use tokio::sync::watch;

/// One signing key.
#[derive(Clone)]
struct Key {
    id: u64,
    key: [u8; LEASE_KEY_LEN],
}

impl Key {
    fn random() -> Self {
        Self {
            id: rand::random(),
            key: rand::random(),
        }
    }
}

/// The keys now: the signing one, and the replaced ones with when each
/// stops being valid (newest first).
struct Ring {
    current: Key,
    /// When `current` is replaced.
    rotate_at: Instant,
    previous: Vec<(Key, Instant)>,
}

/// The gateway's signing keys (see the module docs).
pub(crate) struct KeyRing {
    ring: Mutex<Ring>,
    /// How long a key signs before it is replaced.
    rotate: Duration,
    /// How long a replaced key stays valid.
    keep: Duration,
    /// The set agents are sent, updated on every rotation.
    published: watch::Sender<LeaseKeys>,
}

impl KeyRing {
    /// A ring with one fresh key at `now`, replaced every `rotate`, replaced
    /// keys valid `keep` longer.
    pub(crate) fn new(rotate: Duration, keep: Duration, now: Instant) -> Self {
        let ring = Ring {
            current: Key::random(),
            rotate_at: now + rotate,
            previous: Vec::new(),
        };
        let (published, _) = watch::channel(wire(&ring));
        Self {
            ring: Mutex::new(ring),
            rotate,
            keep,
            published,
        }
    }

    /// A ring as [`KeyRing::new`] whose keys rotate on a task of the
    /// current tokio runtime, until the ring is dropped.
    pub(crate) fn start(rotate: Duration, keep: Duration) -> Arc<Self> {
        let ring = Arc::new(Self::new(rotate, keep, Instant::now()));
        tokio::spawn(rotate_while_alive(Arc::downgrade(&ring)));
        ring
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The signing key: its id and bytes.
    pub(crate) fn current(&self) -> (u64, [u8; LEASE_KEY_LEN]) {
        let ring = self.ring();
        (ring.current.id, ring.current.key)
    }

    /// The key of id `id`, while it is valid at `now`.
    pub(crate) fn key(&self, id: u64, now: Instant) -> Option<[u8; LEASE_KEY_LEN]> {
        let ring = self.ring();
        if ring.current.id == id {
            return Some(ring.current.key);
        }
        ring.previous
            .iter()
            .find(|(key, until)| key.id == id && *until > now)
            .map(|(key, _)| key.key)
    }

    /// Replaces the signing key when its time is up at `now`, and forgets
    /// keys past their validity; tells subscribers when anything changed.
    /// Returns when to look again.
    pub(crate) fn rotate_if_due(&self, now: Instant) -> Instant {
        let mut ring = self.ring();
        let before = ring.previous.len();
        ring.previous.retain(|(_, until)| *until > now);
        let mut changed = ring.previous.len() != before;
        if now >= ring.rotate_at {
            let old = std::mem::replace(&mut ring.current, Key::random());
            ring.previous.insert(0, (old, now + self.keep));
            ring.previous.truncate(MAX_LEASE_KEYS - 1);
            ring.rotate_at = now + self.rotate;
            changed = true;
        }
        let next = ring
            .previous
            .iter()
            .map(|(_, until)| *until)
            .fold(ring.rotate_at, Instant::min);
        if changed {
            self.published.send_replace(wire(&ring));
        }
        next
    }

    /// The keys now, as agents are sent them (the signing key first).
    #[cfg(test)]
    pub(crate) fn keys(&self) -> LeaseKeys {
        wire(&self.ring())
    }

    /// Every change of [`KeyRing::keys`] from now on.
    pub(crate) fn subscribe(&self) -> watch::Receiver<LeaseKeys> {
        self.published.subscribe()
    }
}

fn wire(ring: &Ring) -> LeaseKeys {
    LeaseKeys {
        keys: std::iter::once(&ring.current)
            .chain(ring.previous.iter().map(|(key, _)| key))
            .map(|k| LeaseKey {
                id: k.id,
                key: k.key.to_vec(),
            })
            .collect(),
    }
}

/// Rotates `ring`'s keys when due, until it is dropped.
async fn rotate_while_alive(ring: Weak<KeyRing>) {
    loop {
        let next = match ring.upgrade() {
            Some(ring) => ring.rotate_if_due(tokio::time::Instant::now().into_std()),
            None => return,
        };
        tokio::time::sleep_until(next.into()).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const TEN_MIN: Duration = Duration::from_secs(600);

    #[test]
    fn keys_are_random_and_the_current_one_signs() {
        let now = Instant::now();
        let (a, b) = (
            KeyRing::new(HOUR, TEN_MIN, now),
            KeyRing::new(HOUR, TEN_MIN, now),
        );
        assert_ne!(a.current().0, b.current().0);
        assert_ne!(a.current().1, b.current().1);
        let (id, key) = a.current();
        assert_eq!(a.key(id, now), Some(key));
        assert_eq!(a.key(b.current().0, now), None, "another ring's key");
        let keys = a.keys();
        assert_eq!(keys.keys.len(), 1);
        assert_eq!(
            (keys.keys[0].id, keys.keys[0].key.as_slice()),
            (id, &key[..])
        );
    }

    #[test]
    fn a_rotated_key_stays_valid_for_the_longest_lease_then_goes() {
        let t0 = Instant::now();
        let ring = KeyRing::new(HOUR, TEN_MIN, t0);
        let mut seen = ring.subscribe();
        let (old, old_key) = ring.current();
        assert_eq!(ring.rotate_if_due(t0 + HOUR / 2), t0 + HOUR, "not due");
        assert_eq!(ring.current().0, old);
        assert!(!seen.has_changed().unwrap());

        let t1 = t0 + HOUR;
        let next = ring.rotate_if_due(t1);
        let (new, _) = ring.current();
        assert_ne!(new, old, "a new key signs");
        assert_eq!(next, t1 + TEN_MIN, "next look: when the old key lapses");
        assert!(seen.has_changed().unwrap(), "agents are told");
        let sent = seen.borrow_and_update().clone();
        let ids: Vec<u64> = sent.keys.iter().map(|k| k.id).collect();
        assert_eq!(ids, vec![new, old], "newest first");
        assert_eq!(ring.key(old, t1 + TEN_MIN / 2), Some(old_key));

        assert_eq!(ring.rotate_if_due(t1 + TEN_MIN), t1 + HOUR);
        assert_eq!(ring.key(old, t1 + TEN_MIN), None, "lapsed");
        assert_eq!(ring.keys().keys.len(), 1);
        assert!(seen.has_changed().unwrap(), "the lapse is sent too");
    }

    #[test]
    fn fast_rotation_keeps_at_most_the_wire_limit() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let ring = KeyRing::new(second, TEN_MIN, t0);
        for i in 1..=20 {
            ring.rotate_if_due(t0 + second * i);
        }
        assert_eq!(ring.keys().keys.len(), MAX_LEASE_KEYS);
    }

    #[tokio::test]
    async fn the_task_rotates_on_time() {
        let ring = KeyRing::start(Duration::from_millis(100), Duration::from_secs(1));
        let first = ring.current().0;
        let mut seen = ring.subscribe();
        tokio::time::timeout(Duration::from_secs(10), seen.changed())
            .await
            .expect("rotated within its period")
            .expect("ring alive");
        assert_ne!(ring.current().0, first);
    }
}
