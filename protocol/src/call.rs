//! A call's messages: the client's call, the dispatch to a node, the node's
//! reply, the result, queue notices and errors.

use minicbor::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::message::check_name;
use crate::{CodecError, ErrorKind, limits};

/// A client's call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct CallHead {
    /// The service to call.
    #[n(0)]
    pub service: String,
    /// Payload length, bytes; that many bytes of `Data` follow.
    #[n(1)]
    pub payload_len: u64,
    /// How long the caller waits, ms, from when the gateway reads this frame.
    #[n(2)]
    pub timeout_ms: u32,
    /// Key/value hints for the policy (e.g. `policy=latency`, `max_cost=0.5`).
    #[n(3)]
    pub hints: Vec<(String, String)>,
    /// Queue priority: higher is served first, FIFO within a priority
    /// (default 0).
    #[n(4)]
    pub priority: i32,
    /// Never queue: with no free slot now, fail at once with
    /// [`ErrorKind::Occupied`].
    #[n(5)]
    pub realtime: bool,
    /// Do not answer from the gateway's result cache nor by joining an
    /// identical call in flight: run the call on a node, and store its result
    /// (when the service is cached) for later calls (default false).
    #[n(6)]
    pub no_cache: bool,
    /// Accept a cached result only if it is at most this old, s (default
    /// none: any entry within the service's `cache_ttl_s`). An older entry
    /// counts as a miss and is replaced by the fresh result.
    #[n(7)]
    pub max_age_s: Option<u32>,
    /// The caller's API key, naming its tenant (`[[tenants]] api_keys` in
    /// the gateway's configuration); `None` for an anonymous call. At most
    /// [`limits::MAX_API_KEY_LEN`] bytes; never logged.
    #[n(8)]
    pub api_key: Option<String>,
    /// For an OpenAI-compatible service (agent kind `openai`): the API
    /// endpoint the payload is for, one of [`ENDPOINTS`]
    /// (default `None`: `/chat/completions`). Other kinds ignore it.
    #[n(9)]
    pub endpoint: Option<String>,
    /// Send the service's output as it runs ([`crate::Message::Log`]
    /// frames: stderr, besides stdout in `Data`), for a job's log (default
    /// false). Added in v2.
    #[serde(default, with = "crate::added")]
    #[cbor(n(10), default, skip_if = "crate::call::is_false")]
    pub log: bool,
    /// The caller's W3C trace context, a `traceparent` header value
    /// (`00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>`), at
    /// most [`limits::MAX_TRACEPARENT_LEN`] bytes: the gateway's spans of
    /// the call join that trace (default `None`: a new trace, when the
    /// gateway traces). Added in v2.
    #[serde(default, with = "crate::added")]
    #[n(11)]
    pub traceparent: Option<String>,
    /// The caller's request id (an HTTP `x-request-id`), at most
    /// [`crate::request_id::MAX_LEN`] bytes of visible ASCII; the gateway
    /// makes one up when it is `None` (or invalid) and returns it with the
    /// answer. Added in v2.
    #[serde(default, with = "crate::added")]
    #[n(12)]
    pub request_id: Option<String>,
    /// On a direct call to a node (look-aside), the lease's token
    /// ([`crate::LeaseGrant::token`]), at most [`crate::MAX_TOKEN_LEN`]
    /// bytes; `None` on a call to a gateway (a gateway refuses a call that
    /// carries one). Added in v2.
    #[serde(default, with = "crate::added")]
    #[n(13)]
    pub lease: Option<String>,
}

/// The OpenAI API endpoints a call may name in [`CallHead::endpoint`],
/// relative to a model server's `/v1` base URL.
pub const ENDPOINTS: [&str; 3] = ["/chat/completions", "/completions", "/embeddings"];

/// Gateway → client: the call waits for a node that is loading its service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct Reserved {
    /// The node the call is reserved for.
    #[n(0)]
    pub node_id: String,
    /// The service the node is loading (the call's).
    #[n(1)]
    pub service: String,
    /// The service it held before, if any.
    #[n(2)]
    pub from: Option<String>,
    /// How long loading usually takes, ms (the node's report).
    #[n(3)]
    pub expected_ms: u32,
}

/// A call the gateway hands to an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct DispatchHead {
    /// The gateway's id for the call (for logs).
    #[n(0)]
    pub call_id: u64,
    /// The service to run.
    #[n(1)]
    pub service: String,
    /// Payload length, bytes; that many bytes of `Data` follow.
    #[n(2)]
    pub payload_len: u64,
    /// Time left for the call, ms: the agent kills the work past it.
    #[n(3)]
    pub timeout_ms: u32,
    /// The call's [`CallHead::endpoint`], for `openai` services.
    #[n(4)]
    pub endpoint: Option<String>,
    /// The call's [`CallHead::log`]: also send the service's stderr as
    /// [`crate::Message::Log`] frames while it runs. Added in v2.
    #[serde(default, with = "crate::added")]
    #[cbor(n(5), default, skip_if = "crate::call::is_false")]
    pub log: bool,
    /// The trace context of the gateway's dispatch span, a W3C
    /// `traceparent` value (as [`CallHead::traceparent`]): the agent's span
    /// of the service call is its child, and an `http`/`openai` service's
    /// request carries it on (default `None`: the call is not traced).
    /// Added in v2.
    #[serde(default, with = "crate::added")]
    #[n(6)]
    pub traceparent: Option<String>,
    /// The call's request id ([`ResultHead::request_id`]), for the agent's
    /// logs (default `None`). Added in v2.
    #[serde(default, with = "crate::added")]
    #[n(7)]
    pub request_id: Option<String>,
    /// The chained block hashes of the call's prompt (first block first, at
    /// most [`limits::MAX_PREFIX_HASHES`]) the gateway computed for its
    /// cache-aware policies; the agent counts them as held by its node for
    /// the service and reports them in [`crate::NodeLoad::prefix_added`].
    /// Empty (and not sent) when the gateway computed none. Added in v2.
    #[serde(default, with = "crate::added")]
    #[cbor(n(8), default, skip_if = "Vec::is_empty")]
    pub prefix_hashes: Vec<u64>,
    /// Whether the call runs a job (default `false`, not sent): the agent
    /// counts its job calls in flight, every gateway's, and reports them in
    /// [`crate::NodeLoad::jobs_in_flight`] for the per-node job limit.
    /// Added in v2.
    #[serde(default, with = "crate::added")]
    #[cbor(n(9), default, skip_if = "crate::call::is_false")]
    pub job: bool,
    /// The caller's tenant as the dispatching gateway admitted it, for a
    /// node that is a gateway ([`crate::NodeSpec::gateway`]): the child
    /// trusts its parent and counts the call against that tenant there
    /// (at most 256 bytes; default `None`, not sent to plain nodes).
    /// Added in v2.
    #[serde(default, with = "crate::added")]
    #[n(10)]
    pub tenant: Option<String>,
    /// The call's [`CallHead::priority`], for a node that is a gateway
    /// (default 0, not sent). Added in v2.
    #[serde(default, with = "crate::added")]
    #[cbor(n(11), default, skip_if = "crate::call::is_zero_i32")]
    pub priority: i32,
    /// The call's [`CallHead::hints`], for a node that is a gateway (its
    /// policies and cache read them; at most [`limits::MAX_HINTS`];
    /// default empty, not sent). Added in v2.
    #[serde(default, with = "crate::added")]
    #[cbor(n(12), default, skip_if = "Vec::is_empty")]
    pub hints: Vec<(String, String)>,
}

impl DispatchHead {
    /// Checks the limits a gateway must respect.
    ///
    /// # Errors
    /// [`CodecError::Invalid`] for more than
    /// [`limits::MAX_PREFIX_HASHES`] prefix hashes.
    pub fn validate(&self) -> Result<(), CodecError> {
        if self.prefix_hashes.len() > limits::MAX_PREFIX_HASHES {
            return Err(CodecError::Invalid(format!(
                "a dispatch carries at most {} prefix hashes, got {}",
                limits::MAX_PREFIX_HASHES,
                self.prefix_hashes.len()
            )));
        }
        if let Some(tenant) = &self.tenant {
            crate::message::check_name("tenant", tenant)?;
        }
        if self.hints.len() > limits::MAX_HINTS
            || self
                .hints
                .iter()
                .any(|(k, v)| k.len() > limits::MAX_HINT_LEN || v.len() > limits::MAX_HINT_LEN)
        {
            return Err(CodecError::Invalid(format!(
                "a dispatch carries at most {} hints of at most {} bytes each",
                limits::MAX_HINTS,
                limits::MAX_HINT_LEN
            )));
        }
        Ok(())
    }
}

impl ReplyHead {
    /// Checks what a node that is a gateway adds: its path (at most
    /// [`crate::MAX_DEPTH`] valid names) and its explanation (at most
    /// [`limits::MAX_EXPLAIN_LEN`] bytes).
    ///
    /// # Errors
    /// [`CodecError::Invalid`] naming the broken rule.
    pub fn validate(&self) -> Result<(), CodecError> {
        crate::tree::check_path("reply path", &self.path)?;
        if self
            .explain
            .as_ref()
            .is_some_and(|e| e.len() > limits::MAX_EXPLAIN_LEN)
        {
            return Err(CodecError::Invalid(format!(
                "a reply's explanation is at most {} bytes",
                limits::MAX_EXPLAIN_LEN
            )));
        }
        Ok(())
    }
}

/// Gateway → client: a successful call's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct ResultHead {
    /// Result length, bytes, when known up front: that many bytes of `Data`
    /// follow. `None` for a streamed result: `Data` chunks as the node
    /// produces them, then [`crate::Message::End`] (or
    /// [`crate::Message::Error`] if the service fails midway).
    #[n(0)]
    pub payload_len: Option<u64>,
    /// The node that served the call.
    #[n(1)]
    pub node_id: String,
    /// The policy that picked the node.
    #[n(2)]
    pub policy: String,
    /// Where the time went.
    #[n(3)]
    pub timings: Timings,
    /// Set when the result came from the gateway's result cache (a stored
    /// entry, or an identical call in flight that this one waited for);
    /// `None` when a node ran this call.
    #[n(4)]
    pub cache: Option<CacheInfo>,
    /// The result's media type when the service named one (an `http` or
    /// `openai` service's response `Content-Type`, e.g.
    /// `text/event-stream`), at most [`limits::MAX_CONTENT_TYPE_LEN`] bytes.
    #[n(5)]
    pub content_type: Option<String>,
    /// The HTTP status the service answered with (`http`/`openai` kinds, a
    /// 2xx); `None` for the other kinds.
    #[n(6)]
    pub status: Option<u16>,
    /// Why the policy chose the node, in one line (policy, node, reason, the
    /// best candidates' scores), when the call asked with the hint
    /// `explain=1`; at most [`limits::MAX_EXPLAIN_LEN`] bytes. Added in v2.
    #[serde(default, with = "crate::added")]
    #[cbor(n(7), default)]
    pub explain: Option<String>,
    /// The call's request id: the caller's (`CallHead::request_id`, HTTP
    /// `x-request-id`) or one the gateway made up; `None` from a gateway
    /// that predates request ids. Added in v2.
    #[serde(default, with = "crate::added")]
    #[n(8)]
    pub request_id: Option<String>,
    /// The gateways below this one the call went through, top first, when
    /// a child gateway served it (a tree of gateways); [`Self::node_id`]
    /// is then the node at the end of that path. Empty when this
    /// gateway's own node ran it. Added in v2.
    #[serde(default, with = "crate::added")]
    #[cbor(n(9), default, skip_if = "Vec::is_empty")]
    pub via: Vec<String>,
}

/// How a call was answered from the gateway's result cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct CacheInfo {
    /// Age of the result, ms: from when the node's result was stored to when
    /// this call was answered.
    #[n(0)]
    pub age_ms: u64,
    /// True when the call found no stored result but an identical call in
    /// flight, and waited for that call's result (single flight); false
    /// for a stored entry.
    #[n(1)]
    pub coalesced: bool,
}

/// Where a call's time went, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct Timings {
    /// Waiting for a node (queue and pick), ms.
    #[n(0)]
    pub queue_ms: f32,
    /// From dispatch to the node's answer, ms.
    #[n(1)]
    pub node_ms: f32,
    /// From the call's arrival to the answer, ms.
    #[n(2)]
    pub total_ms: f32,
    /// Nodes the call was sent to: 1, more when an idempotent call was
    /// retried after a failure; 0 for an answer from the result cache (and
    /// from a gateway that predates retries). Added in v2.
    #[serde(default, with = "crate::added")]
    #[cbor(n(3), default)]
    pub attempts: u32,
}

/// Agent → gateway: the service answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct ReplyHead {
    /// Result length, bytes, when known up front: that many bytes of `Data`
    /// follow. `None` for a streamed result: `Data` chunks as the service
    /// writes them, then [`crate::Message::End`] (or
    /// [`crate::Message::Error`] if the service fails midway).
    #[n(0)]
    pub payload_len: Option<u64>,
    /// Time the service took on the node until this head, ms (the whole run
    /// for a result of known length; until the first bytes for a streamed
    /// one, whose total is in its [`Trailer`]).
    #[n(1)]
    pub exec_ms: f32,
    /// The result's media type, as [`ResultHead::content_type`].
    #[n(2)]
    pub content_type: Option<String>,
    /// The service's HTTP status, as [`ResultHead::status`].
    #[n(3)]
    pub status: Option<u16>,
    /// From a node that is a gateway: the gateways below it the call went
    /// through, then the node that ran it, top first (`["site-b-rack-2",
    /// "gpu-7"]`; at most [`crate::MAX_DEPTH`]); empty from a plain node.
    /// Added in v2.
    #[serde(default, with = "crate::added")]
    #[cbor(n(4), default, skip_if = "Vec::is_empty")]
    pub path: Vec<String>,
    /// From a node that is a gateway, when the dispatch's hints asked
    /// (`explain=1`): why its policy chose the node below, as
    /// [`ResultHead::explain`]. Added in v2.
    #[serde(default, with = "crate::added")]
    #[n(5)]
    pub explain: Option<String>,
}

/// The end of a streamed result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct Trailer {
    /// Result bytes sent in `Data` chunks, in all.
    #[n(0)]
    pub len: u64,
    /// Time the service took on the node, from the call's start to its last
    /// byte, ms.
    #[n(1)]
    pub exec_ms: f32,
}

/// A failed call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct CallError {
    /// What kind of failure.
    #[n(0)]
    pub kind: ErrorKind,
    /// Details in words, e.g. the command's stderr.
    #[n(1)]
    pub message: String,
    /// The service never received the call: its server refused the
    /// connection, or the request failed before any byte of it was
    /// written. It ran nothing, so the gateway may send it to another node
    /// whatever the service's `idempotent` says (default false). Added in
    /// v2.
    #[serde(default, with = "crate::added")]
    #[cbor(n(2), default, skip_if = "crate::call::is_false")]
    pub not_run: bool,
    /// The HTTP status the service answered with, when it answered with an
    /// error status (`http`/`openai` kinds, 4xx or 5xx; default `None`).
    /// Added in v2.
    #[serde(default, with = "crate::added")]
    #[n(3)]
    pub status: Option<u16>,
    /// The service's own error body when it is JSON (an OpenAI-compatible
    /// server's `{"error": {...}}`), at most [`limits::MAX_ERROR_BODY_LEN`]
    /// bytes: the HTTP ingress answers with it unchanged, with
    /// [`CallError::status`] (default `None`). Added in v2.
    #[serde(default, with = "crate::added")]
    #[n(4)]
    pub body: Option<Box<str>>,
    /// The node the call failed on, when it reached one (default `None`).
    /// Added in v2.
    #[serde(default, with = "crate::added")]
    #[n(5)]
    pub node_id: Option<Box<str>>,
    /// The call's request id (as [`ResultHead::request_id`]), when the
    /// gateway knows it (default `None`). Added in v2.
    #[serde(default, with = "crate::added")]
    #[n(6)]
    pub request_id: Option<Box<str>>,
}

impl CallError {
    /// An error of `kind` saying `message`, with no other detail.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            not_run: false,
            status: None,
            body: None,
            node_id: None,
            request_id: None,
        }
    }
}

impl std::fmt::Display for CallError {
    /// `kind: message`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
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
            api_key: None,
            endpoint: None,
            log: false,
            traceparent: None,
            request_id: None,
            lease: None,
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
        if self
            .api_key
            .as_ref()
            .is_some_and(|k| k.len() > limits::MAX_API_KEY_LEN)
        {
            return Err(CodecError::Invalid(format!(
                "api key longer than {} bytes",
                limits::MAX_API_KEY_LEN
            )));
        }
        check_traceparent(self.traceparent.as_deref())?;
        if let Some(id) = &self.request_id
            && !crate::request_id::is_valid(id)
        {
            return Err(CodecError::Invalid(format!(
                "request id is not 1..={} bytes of visible ascii",
                crate::request_id::MAX_LEN
            )));
        }
        if self
            .lease
            .as_ref()
            .is_some_and(|t| t.len() > crate::MAX_TOKEN_LEN)
        {
            return Err(CodecError::Invalid(format!(
                "lease token longer than {} bytes",
                crate::MAX_TOKEN_LEN
            )));
        }
        check_endpoint(self.endpoint.as_deref())
    }

    /// The OpenAI endpoint the call is for (`/chat/completions` when it
    /// names none).
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_deref().unwrap_or(ENDPOINTS[0])
    }

    /// The value of hint `key`, if the call carries it.
    pub fn hint(&self, key: &str) -> Option<&str> {
        self.hints
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Checks that `endpoint`, if set, is one of [`ENDPOINTS`].
///
/// # Errors
/// [`CodecError::Invalid`] naming the endpoint.
pub(crate) fn check_endpoint(endpoint: Option<&str>) -> Result<(), CodecError> {
    match endpoint {
        Some(e) if !ENDPOINTS.contains(&e) => Err(CodecError::Invalid(format!(
            "endpoint {e:.64} is not one of {}",
            ENDPOINTS.join(", ")
        ))),
        _ => Ok(()),
    }
}

/// Checks that `traceparent`, if set, is at most
/// [`limits::MAX_TRACEPARENT_LEN`] bytes of visible ASCII (its W3C syntax is
/// the tracer's to judge: a malformed one starts a new trace).
///
/// # Errors
/// [`CodecError::Invalid`] saying what is wrong.
pub(crate) fn check_traceparent(traceparent: Option<&str>) -> Result<(), CodecError> {
    match traceparent {
        Some(t) if t.len() > limits::MAX_TRACEPARENT_LEN => Err(CodecError::Invalid(format!(
            "traceparent longer than {} bytes",
            limits::MAX_TRACEPARENT_LEN
        ))),
        Some(t) if !t.bytes().all(|b| b.is_ascii_graphic()) => Err(CodecError::Invalid(
            "traceparent is not visible ascii".into(),
        )),
        _ => Ok(()),
    }
}

/// A `false` flag is not written (older peers' bytes stay as they were).
#[allow(clippy::trivially_copy_pass_by_ref)] // the derive passes a reference
pub(crate) fn is_false(flag: &bool) -> bool {
    !*flag
}

/// Whether an `i32` field is 0 (minicbor's `skip_if` for a default-0
/// field added later).
#[allow(clippy::trivially_copy_pass_by_ref)]
pub(crate) fn is_zero_i32(value: &i32) -> bool {
    *value == 0
}
