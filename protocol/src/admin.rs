//! Admin messages: the policy table and changing a service's policy.

use serde::{Deserialize, Serialize};

/// Gateway → client: the loaded policies and which service uses which.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyTable {
    /// The policy services use when none is configured.
    pub default_policy: String,
    /// Whether a failing pick falls back to the built-in round-robin.
    pub fail_open: bool,
    /// Loaded policies, sorted by name.
    pub policies: Vec<PolicyView>,
    /// Services with a configured policy, and services that nodes host.
    pub services: Vec<ServicePolicy>,
    /// Plugin files whose latest version was refused, with the reason.
    pub rejected: Vec<RejectedFile>,
}

/// One loaded policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyView {
    /// The name its `name` export returned.
    pub name: String,
    /// The file it was loaded from.
    pub file: String,
    /// SHA-256 of the file, hex.
    pub content_hash: String,
    /// When this version was loaded, ms since the Unix epoch.
    pub loaded_at_unix_ms: u64,
    /// Picks this version made (or attempted).
    pub picks_total: u64,
    /// Picks or observes of this version that trapped.
    pub traps_total: u64,
}

/// Which policy a service uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePolicy {
    /// Service name.
    pub service: String,
    /// The policy configured for it (by `gateway.toml` or `policy set`), if any.
    pub configured: Option<String>,
    /// The policy that picks for it now: the configured one if loaded, else
    /// the default if loaded, else the built-in round-robin.
    pub active: String,
}

/// A plugin file that was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedFile {
    /// The file.
    pub file: String,
    /// Why (compile, link or instantiate error).
    pub reason: String,
    /// When, ms since the Unix epoch.
    pub at_unix_ms: u64,
}

/// Client → gateway: make `service` use `policy` from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetPolicy {
    /// The gateway's admin token.
    pub admin_token: String,
    /// Service name.
    pub service: String,
    /// A loaded policy's name.
    pub policy: String,
}

/// One service's queue, for `switchyard queue`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueView {
    /// Service name.
    pub service: String,
    /// Calls waiting now.
    pub length: u32,
    /// Most calls that may wait.
    pub capacity: u32,
    /// How long the oldest waiting call has waited, ms (0 when none waits).
    pub oldest_wait_ms: u64,
    /// Calls held for a node that is loading the service.
    pub reserved: u32,
    /// Calls that left the queue for a node since the gateway started.
    pub dispatched_total: u64,
    /// Calls that timed out or left (client gone) while queued.
    pub abandoned_total: u64,
    /// Calls refused because the queue was full.
    pub overloaded_total: u64,
    /// Retries of the service's calls granted since the gateway started
    /// (appended after `overloaded_total`).
    pub retries_total: u64,
    /// Retries refused by the retry budget or the retries breaker.
    pub retries_refused_total: u64,
    /// Calls refused at once by a circuit breaker (`max_waiting`,
    /// `max_in_flight`).
    pub breaker_trips_total: u64,
}
