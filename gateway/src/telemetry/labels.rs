//! Label values that come from a caller's input (a service or model name,
//! a tenant) are bounded: a name is its own label value only while the
//! fleet or the configuration knows it (a service some connected node
//! registered, a `[services.NAME]` or `[models]` target, a configured
//! tenant); any other name is counted under [`UNKNOWN`]. So a flood of
//! calls to made-up names adds one series, not one per name.
//!
//! Names are known through [`Known`] holds: a node's registration holds
//! its services for as long as its control stream lasts, a gateway holds
//! its configured names for as long as it runs. A name whose last hold is
//! gone stays known for the linger time (the metrics' idle timeout, see
//! [`set_linger`]), so a node that reconnects keeps its series. The table
//! is process-wide, as the `metrics` recorder it guards.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// The label value of every name the gateway does not know.
pub(crate) const UNKNOWN: &str = "_unknown";

/// Most names of one kind the table holds; past it, new names count as
/// [`UNKNOWN`] (a safety net: holds come from the configuration and from
/// authenticated agents).
const MAX_NAMES: usize = 10_000;

/// What a name names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A service (or the service a model name resolves to).
    Service,
    /// A tenant.
    Tenant,
}

impl Kind {
    fn index(self) -> usize {
        match self {
            Self::Service => 0,
            Self::Tenant => 1,
        }
    }
}

/// How long a name stays known after its last hold is released, s.
static LINGER_S: AtomicU64 = AtomicU64::new(600);

/// Sets how long a name stays known after its last hold is gone (the
/// metrics' idle timeout; default 10 min).
pub(crate) fn set_linger(linger: Duration) {
    LINGER_S.store(linger.as_secs(), Ordering::Relaxed);
}

fn linger() -> Duration {
    Duration::from_secs(LINGER_S.load(Ordering::Relaxed))
}

#[derive(Debug, Default)]
struct Entry {
    /// Live holds on the name.
    holds: u32,
    /// When the last hold was released (while `holds` is 0).
    released: Option<Instant>,
}

impl Entry {
    /// Whether the name is known at `now`, lingering `linger` after its
    /// last hold.
    fn known(&self, now: Instant, linger: Duration) -> bool {
        self.holds > 0
            || self
                .released
                .is_some_and(|at| now.duration_since(at) < linger)
    }
}

type Table = [HashMap<String, Entry>; 2];

static TABLE: LazyLock<RwLock<Table>> = LazyLock::new(RwLock::default);

/// A hold on names: they are label values of their own until it is
/// dropped (and for the linger time after).
#[derive(Debug)]
pub(crate) struct Known {
    kind: Kind,
    names: Vec<String>,
}

impl Known {
    /// Holds `names` of `kind` (duplicates are held once).
    pub(crate) fn new<I, S>(kind: Kind, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut names: Vec<String> = names.into_iter().map(Into::into).collect();
        names.sort_unstable();
        names.dedup();
        let mut table = TABLE.write().unwrap_or_else(PoisonError::into_inner);
        let map = &mut table[kind.index()];
        names.retain(|name| {
            if let Some(entry) = map.get_mut(name) {
                entry.holds += 1;
                entry.released = None;
                return true;
            }
            if map.len() >= MAX_NAMES {
                forget_stale(map, Instant::now());
            }
            if map.len() >= MAX_NAMES {
                return false;
            }
            map.insert(
                name.clone(),
                Entry {
                    holds: 1,
                    released: None,
                },
            );
            true
        });
        Self { kind, names }
    }
}

impl Drop for Known {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut table = TABLE.write().unwrap_or_else(PoisonError::into_inner);
        let map = &mut table[self.kind.index()];
        for name in &self.names {
            if let Some(entry) = map.get_mut(name) {
                entry.holds = entry.holds.saturating_sub(1);
                if entry.holds == 0 {
                    entry.released = Some(now);
                }
            }
        }
        forget_stale(map, now);
    }
}

/// Drops the names no longer known.
fn forget_stale(map: &mut HashMap<String, Entry>, now: Instant) {
    let linger = linger();
    map.retain(|_, entry| entry.known(now, linger));
}

/// `name` as a label value of `kind`: itself while known, else
/// [`UNKNOWN`].
pub(crate) fn label(kind: Kind, name: &str) -> String {
    let table = TABLE.read().unwrap_or_else(PoisonError::into_inner);
    match table[kind.index()].get(name) {
        Some(entry) if entry.known(Instant::now(), linger()) => name.to_string(),
        _ => UNKNOWN.to_string(),
    }
}

/// A service (or model) name as a label value: [`label`] of
/// [`Kind::Service`].
pub(crate) fn service(name: &str) -> String {
    label(Kind::Service, name)
}

/// A tenant's name as a label value: [`label`] of [`Kind::Tenant`].
pub(crate) fn tenant(name: &str) -> String {
    label(Kind::Tenant, name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    // The table is process-wide: every test uses names of its own.

    #[test]
    fn unknown_names_share_one_label_value() {
        let _held = Known::new(Kind::Service, ["labels-a", "labels-b"]);
        assert_eq!(service("labels-a"), "labels-a");
        assert_eq!(service("labels-b"), "labels-b");
        for i in 0..100 {
            assert_eq!(service(&format!("labels-flood-{i}")), UNKNOWN);
        }
        assert_eq!(service(""), UNKNOWN);
        // Kinds are apart: a service's name is no tenant.
        assert_eq!(tenant("labels-a"), UNKNOWN);
    }

    #[test]
    fn a_name_is_known_while_held_and_lingers() {
        let first = Known::new(Kind::Tenant, ["labels-t"]);
        let second = Known::new(Kind::Tenant, ["labels-t", "labels-t"]);
        drop(first);
        assert_eq!(tenant("labels-t"), "labels-t", "still held by the second");
        drop(second);
        // Released now: known for the linger time.
        assert_eq!(tenant("labels-t"), "labels-t");
        let table = TABLE.read().unwrap_or_else(PoisonError::into_inner);
        let entry = &table[Kind::Tenant.index()]["labels-t"];
        assert_eq!(entry.holds, 0);
        let released = entry.released.unwrap();
        let linger = Duration::from_secs(600);
        assert!(entry.known(released + Duration::from_secs(599), linger));
        assert!(
            !entry.known(released + Duration::from_secs(601), linger),
            "forgotten once the linger time is over"
        );
    }
}
