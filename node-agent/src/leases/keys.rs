//! The keys lease tokens are signed with: each gateway session's latest
//! set (`LeaseKeys` on its control stream), dropped when the session ends.
//! A token verifies with any key of any session.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use protocol::{CodecError, LEASE_KEY_LEN, LeaseKeys};

use super::Leases;

/// One session's keys: (key id, key).
type KeySet = Vec<(u64, [u8; LEASE_KEY_LEN])>;

/// The keys of every gateway session, by session number.
#[derive(Default)]
pub(crate) struct KeySets {
    sets: Mutex<HashMap<u64, KeySet>>,
}

impl KeySets {
    /// Replaces session `session`'s keys with `keys`.
    ///
    /// # Errors
    /// [`CodecError::Invalid`] for a set past its limits (the keys before
    /// stay).
    pub(crate) fn set(&self, session: u64, keys: &LeaseKeys) -> Result<(), CodecError> {
        keys.validate()?;
        let set = keys
            .keys
            .iter()
            .filter_map(|k| {
                Some((
                    k.id,
                    <[u8; LEASE_KEY_LEN]>::try_from(k.key.as_slice()).ok()?,
                ))
            })
            .collect();
        self.sets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(session, set);
        Ok(())
    }

    /// Drops session `session`'s keys.
    pub(crate) fn remove(&self, session: u64) {
        self.sets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&session);
    }

    /// The key of id `id`, from any session.
    pub(crate) fn find(&self, id: u64) -> Option<[u8; LEASE_KEY_LEN]> {
        self.sets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .flatten()
            .find(|(key_id, _)| *key_id == id)
            .map(|(_, key)| *key)
    }
}

/// A gateway session's hold on its keys: dropping it (the session ended)
/// drops them.
pub(crate) struct SessionKeys {
    leases: Leases,
    session: u64,
}

impl SessionKeys {
    /// Session `session`'s keys in `leases`' sets, dropped with the guard.
    pub(crate) fn new(leases: &Leases, session: u64) -> Self {
        Self {
            leases: leases.clone(),
            session,
        }
    }

    /// Takes `keys` as the session's set.
    ///
    /// # Errors
    /// As [`KeySets::set`].
    pub(crate) fn set(&self, keys: &LeaseKeys) -> Result<(), CodecError> {
        self.leases.keys().set(self.session, keys)
    }
}

impl Drop for SessionKeys {
    fn drop(&mut self) {
        self.leases.keys().remove(self.session);
    }
}

#[cfg(test)]
mod tests {
    use protocol::LeaseKey;

    use super::*;

    fn keys(ids: &[u64]) -> LeaseKeys {
        LeaseKeys {
            keys: ids
                .iter()
                .map(|&id| LeaseKey {
                    id,
                    key: vec![id as u8; LEASE_KEY_LEN],
                })
                .collect(),
        }
    }

    #[test]
    fn keys_live_as_long_as_their_session() {
        let leases = Leases::new("n");
        let a = SessionKeys::new(&leases, 1);
        let b = SessionKeys::new(&leases, 2);
        a.set(&keys(&[10, 11])).expect("valid");
        b.set(&keys(&[20])).expect("valid");
        assert_eq!(leases.keys().find(11), Some([11; LEASE_KEY_LEN]));
        assert_eq!(leases.keys().find(20), Some([20; LEASE_KEY_LEN]));
        // A new set replaces the session's previous one.
        a.set(&keys(&[12])).expect("valid");
        assert_eq!(leases.keys().find(10), None);
        assert!(leases.keys().find(12).is_some());
        drop(a);
        assert_eq!(leases.keys().find(12), None);
        assert!(leases.keys().find(20).is_some());
    }

    #[test]
    fn a_bad_set_is_refused_and_the_old_one_stays() {
        let leases = Leases::new("n");
        let a = SessionKeys::new(&leases, 1);
        a.set(&keys(&[1])).expect("valid");
        let short = LeaseKeys {
            keys: vec![LeaseKey {
                id: 2,
                key: vec![0; 5],
            }],
        };
        assert!(a.set(&short).is_err());
        assert!(a.set(&keys(&[1, 2, 3, 4, 5, 6, 7, 8, 9])).is_err());
        assert!(leases.keys().find(1).is_some());
    }
}
