//! Admin messages: the policy table and changing a service's policy.

use minicbor::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// Gateway → client: the loaded policies and which service uses which.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct PolicyTable {
    /// The policy services use when none is configured.
    #[n(0)]
    pub default_policy: String,
    /// Whether a failing pick falls back to the built-in round-robin.
    #[n(1)]
    pub fail_open: bool,
    /// Loaded policies, sorted by name.
    #[n(2)]
    pub policies: Vec<PolicyView>,
    /// Services with a configured policy, and services that nodes host.
    #[n(3)]
    pub services: Vec<ServicePolicy>,
    /// Plugin files whose latest version was refused, with the reason.
    #[n(4)]
    pub rejected: Vec<RejectedFile>,
}

/// One loaded policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct PolicyView {
    /// The name its `name` export returned.
    #[n(0)]
    pub name: String,
    /// The file it was loaded from.
    #[n(1)]
    pub file: String,
    /// BLAKE3 of the component bytes, lowercase hex (64 characters).
    #[n(2)]
    pub content_hash: String,
    /// When this version was loaded, ms since the Unix epoch.
    #[n(3)]
    pub loaded_at_unix_ms: u64,
    /// Picks this version made (or attempted).
    #[n(4)]
    pub picks_total: u64,
    /// Picks or observes of this version that trapped.
    #[n(5)]
    pub traps_total: u64,
}

/// Which policy a service uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct ServicePolicy {
    /// Service name.
    #[n(0)]
    pub service: String,
    /// The policy configured for it (by `gateway.toml` or `policy set`), if any.
    #[n(1)]
    pub configured: Option<String>,
    /// The policy that picks for it now: the configured one if loaded, else
    /// the default if loaded, else the built-in round-robin.
    #[n(2)]
    pub active: String,
}

/// A plugin file that was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct RejectedFile {
    /// The file.
    #[n(0)]
    pub file: String,
    /// Why (compile, link or instantiate error).
    #[n(1)]
    pub reason: String,
    /// When, ms since the Unix epoch.
    #[n(2)]
    pub at_unix_ms: u64,
}

/// Client → gateway: make `service` use `policy` from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct SetPolicy {
    /// The gateway's admin token.
    #[n(0)]
    pub admin_token: String,
    /// Service name.
    #[n(1)]
    pub service: String,
    /// A loaded policy's name.
    #[n(2)]
    pub policy: String,
}

/// One service's queue, for `switchyard queue`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct QueueView {
    /// Service name.
    #[n(0)]
    pub service: String,
    /// Calls waiting now.
    #[n(1)]
    pub length: u32,
    /// Most calls that may wait.
    #[n(2)]
    pub capacity: u32,
    /// How long the oldest waiting call has waited, ms (0 when none waits).
    #[n(3)]
    pub oldest_wait_ms: u64,
    /// Calls held for a node that is loading the service.
    #[n(4)]
    pub reserved: u32,
    /// Calls that waited in the queue, then left it for a node, since the
    /// gateway started (a call that found a free slot at once never waited
    /// and is not counted).
    #[n(5)]
    pub dispatched_total: u64,
    /// Calls that timed out or left (client gone) while queued.
    #[n(6)]
    pub abandoned_total: u64,
    /// Calls refused because the queue was full.
    #[n(7)]
    pub overloaded_total: u64,
    /// Retries of the service's calls granted since the gateway started.
    /// Added in v2.
    #[serde(default, with = "crate::added")]
    #[cbor(n(8), default)]
    pub retries_total: u64,
    /// Retries refused by the retry budget or the retries breaker. Added
    /// in v2.
    #[serde(default, with = "crate::added")]
    #[cbor(n(9), default)]
    pub retries_refused_total: u64,
    /// Calls refused at once by a circuit breaker (`max_waiting`,
    /// `max_in_flight`). Added in v2.
    #[serde(default, with = "crate::added")]
    #[cbor(n(10), default)]
    pub breaker_trips_total: u64,
}
