//! A call's messages: the client's call, the dispatch to a node, the node's
//! reply, the result, queue notices and errors.

use serde::{Deserialize, Serialize};

use crate::message::check_name;
use crate::{CodecError, ErrorKind, limits};

/// A client's call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallHead {
    /// The service to call.
    pub service: String,
    /// Payload length, bytes; that many bytes of `Data` follow.
    pub payload_len: u64,
    /// How long the caller waits, ms, from when the gateway reads this frame.
    pub timeout_ms: u32,
    /// Key/value hints for the policy (e.g. `policy=latency`, `max_cost=0.5`).
    pub hints: Vec<(String, String)>,
    /// Queue priority: higher is served first, FIFO within a priority
    /// (default 0).
    pub priority: i32,
    /// Never queue: with no free slot now, fail at once with
    /// [`ErrorKind::Occupied`] (seed 004's `need_realtime`).
    pub realtime: bool,
    /// Do not answer from the gateway's result cache nor by joining an
    /// identical call in flight: run the call on a node, and store its result
    /// (when the service is cached) for later calls (default false).
    pub no_cache: bool,
    /// Accept a cached result only if it is at most this old, s (default
    /// none: any entry within the service's `cache_ttl_s`). An older entry
    /// counts as a miss and is replaced by the fresh result.
    pub max_age_s: Option<u32>,
}

/// Gateway → client: the call waits for a node that is loading its service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reserved {
    /// The node the call is reserved for.
    pub node_id: String,
    /// The service the node is loading (the call's).
    pub service: String,
    /// The service it held before, if any.
    pub from: Option<String>,
    /// How long loading usually takes, ms (the node's report).
    pub expected_ms: u32,
}

/// A call the gateway hands to an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchHead {
    /// The gateway's id for the call (for logs).
    pub call_id: u64,
    /// The service to run.
    pub service: String,
    /// Payload length, bytes; that many bytes of `Data` follow.
    pub payload_len: u64,
    /// Time left for the call, ms: the agent kills the work past it.
    pub timeout_ms: u32,
}

/// Gateway → client: a successful call's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultHead {
    /// Result length, bytes; that many bytes of `Data` follow.
    pub payload_len: u64,
    /// The node that served the call.
    pub node_id: String,
    /// The policy that picked the node.
    pub policy: String,
    /// Where the time went.
    pub timings: Timings,
    /// Set when the result came from the gateway's result cache (a stored
    /// entry, or an identical call in flight that this one waited for);
    /// `None` when a node ran this call.
    pub cache: Option<CacheInfo>,
}

/// How a call was answered from the gateway's result cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheInfo {
    /// Age of the result, ms: from when the node's result was stored to when
    /// this call was answered.
    pub age_ms: u64,
    /// True when the call found no stored result but an identical call in
    /// flight, and waited for that call's result (single flight); false
    /// for a stored entry.
    pub coalesced: bool,
}

/// Where a call's time went, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Waiting for a node (queue and pick), ms.
    pub queue_ms: f32,
    /// From dispatch to the node's answer, ms.
    pub node_ms: f32,
    /// From the call's arrival to the answer, ms.
    pub total_ms: f32,
}

/// Agent → gateway: a successful service run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReplyHead {
    /// Result length, bytes; that many bytes of `Data` follow.
    pub payload_len: u64,
    /// Time the service took on the node, ms.
    pub exec_ms: f32,
}

/// A failed call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// Details in words, e.g. the command's stderr.
    pub message: String,
}

impl CallHead {
    /// A call of `service` with a `payload_len`-byte payload and `timeout_ms`,
    /// no hints, priority 0, queueable, any cached result accepted.
    pub fn new(service: impl Into<String>, payload_len: u64, timeout_ms: u32) -> Self {
        Self {
            service: service.into(),
            payload_len,
            timeout_ms,
            hints: Vec::new(),
            priority: 0,
            realtime: false,
            no_cache: false,
            max_age_s: None,
        }
    }

    /// Checks the service name and hints against [`crate::limits`].
    ///
    /// # Errors
    /// [`CodecError::Invalid`] naming the broken limit.
    pub fn validate(&self) -> Result<(), CodecError> {
        check_name("service name", &self.service)?;
        if self.hints.len() > limits::MAX_HINTS {
            return Err(CodecError::Invalid(format!(
                "{} hints, at most {} allowed",
                self.hints.len(),
                limits::MAX_HINTS
            )));
        }
        for (key, value) in &self.hints {
            if key.len() > limits::MAX_HINT_LEN || value.len() > limits::MAX_HINT_LEN {
                return Err(CodecError::Invalid(format!(
                    "hint {key:.32} longer than {} bytes",
                    limits::MAX_HINT_LEN
                )));
            }
        }
        Ok(())
    }

    /// The value of hint `key`, if the call carries it.
    pub fn hint(&self, key: &str) -> Option<&str> {
        self.hints
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}
