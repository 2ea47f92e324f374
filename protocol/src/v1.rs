//! Wire version 1, frozen: each body is one postcard-encoded value of the
//! message's type, with no trailing bytes.
//!
//! Postcard writes no field tags, so the v1 bytes of a type are its fields
//! in declaration order. To keep them frozen, every field added after v1 is
//! `#[serde(default, with = "crate::added")]` ([`added`]: never written
//! to v1, its default when read from v1, present in JSON), no field of v1
//! changes its type or place, and error kinds added after v1
//! are written to v1 peers as [`ErrorKind::Internal`]
//! ([`v1_error_kind`]). The golden vectors in `tests/golden/v1.hex` hold
//! the bytes of every message kind and fail on any change.

use bytes::Bytes;

/// Serde for a field added after v1: in postcard (v1, not human-readable)
/// it is written as `()`, zero bytes, and read back as its default, so v1
/// bytes stay frozen; in human-readable formats (the admin API's JSON) it
/// is the value itself, and `default` fills it when missing. Use as
/// `#[serde(default, with = "crate::added")]` (re-exported as
/// `protocol::added`).
pub mod added {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Writes `value` (human-readable formats) or nothing (postcard).
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<T: Serialize, S: Serializer>(
        value: &T,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            value.serialize(serializer)
        } else {
            ().serialize(serializer)
        }
    }

    /// Reads the value (human-readable formats) or gives the default
    /// (postcard).
    ///
    /// # Errors
    /// The deserializer's.
    pub fn deserialize<'de, T, D>(deserializer: D) -> Result<T, D::Error>
    where
        T: Deserialize<'de> + Default,
        D: Deserializer<'de>,
    {
        if deserializer.is_human_readable() {
            T::deserialize(deserializer)
        } else {
            <()>::deserialize(deserializer).map(|()| T::default())
        }
    }
}
use serde::{Serialize, de::DeserializeOwned};

use crate::{CallError, CodecError, ErrorKind, FrameKind, Message};

/// The kind a v1 peer is told: the kinds of the first release are sent as
/// they are, any later one as [`ErrorKind::Internal`] (a v1 decoder refuses
/// unknown variants).
pub(crate) fn v1_error_kind(kind: ErrorKind) -> ErrorKind {
    if kind.code() <= ErrorKind::RateLimited.code() {
        kind
    } else {
        ErrorKind::Internal
    }
}

impl Message {
    /// What a v1 peer reads back of this message: the fields added in v2
    /// take their defaults and error kinds added later read as
    /// [`ErrorKind::Internal`]; `None` for a message v1 does not have
    /// ([`Message::Drain`]). The compatibility rule above, as a function
    /// (the golden and round-trip tests compare v1 decodes with it).
    #[must_use]
    pub fn as_v1(&self) -> Option<Message> {
        let mut m = self.clone();
        match &mut m {
            Message::Drain
            | Message::Job(_)
            | Message::JobReply(_)
            | Message::Log(_)
            | Message::Members(_)
            | Message::ListMembers
            | Message::Load(_)
            | Message::Lease(_)
            | Message::Leased(_)
            | Message::Hold(_)
            | Message::LeaseEnded(_)
            | Message::ReleaseLease(_)
            | Message::LeaseKeys(_)
            | Message::Held(_)
            | Message::DropLease(_)
            | Message::Respec(_)
            | Message::Ancestry(_)
            | Message::Probe(_)
            | Message::Subtree(_)
            | Message::HandUp(_) => {
                return None;
            }
            Message::Stats(stats) => {
                stats.unhealthy.clear();
                stats.model_load.clear();
            }
            Message::Register(register) => {
                register.follows_members = false;
                register.direct = None;
                register.holds_on_control = false;
                register.node.gateway = false;
                register.node.heartbeat_ms = None;
                for service in &mut register.node.services {
                    service.model = false;
                    service.policy = None;
                    service.idempotent = false;
                }
            }
            Message::Nodes(nodes) => {
                for node in nodes.iter_mut() {
                    node.jobs_in_flight = 0;
                    node.direct = None;
                    node.spec.gateway = false;
                    node.spec.heartbeat_ms = None;
                    for service in &mut node.spec.services {
                        service.model = false;
                        service.policy = None;
                        service.idempotent = false;
                    }
                    if let Some(stats) = &mut node.stats {
                        stats.unhealthy.clear();
                        stats.model_load.clear();
                    }
                    for service in &mut node.services {
                        service.unhealthy = false;
                        service.ejected_for_ms = 0;
                        service.ejections = 0;
                        service.ejected_why = None;
                    }
                }
            }
            Message::Error(error) => {
                *error = CallError::new(v1_error_kind(error.kind), &*error.message)
            }
            Message::Call(head) => {
                head.traceparent = None;
                head.request_id = None;
                head.lease = None;
            }
            Message::Dispatch(head) => {
                head.traceparent = None;
                head.request_id = None;
                head.prefix_hashes.clear();
                head.job = false;
                head.tenant = None;
                head.priority = 0;
                head.hints.clear();
            }
            Message::Registered(registered) => {
                registered.ancestry.clear();
                registered.takes_respec = false;
                registered.takes_heartbeat = false;
            }
            Message::Reply(head) => {
                head.path.clear();
                head.explain = None;
            }
            Message::Result(head) => {
                head.timings.attempts = 0;
                head.explain = None;
                head.request_id = None;
                head.via.clear();
            }
            Message::Queues(queues) => {
                for queue in queues.iter_mut() {
                    queue.retries_total = 0;
                    queue.retries_refused_total = 0;
                    queue.breaker_trips_total = 0;
                }
            }
            _ => {}
        }
        Some(m)
    }
}

pub(crate) fn encode_body(message: &Message, out: &mut Vec<u8>) {
    fn put<T: Serialize>(value: &T, out: &mut Vec<u8>) {
        // Serializing into a Vec cannot fail for these plain types:
        // postcard only fails on unsupported serde features (none used).
        if let Ok(bytes) = postcard::to_extend(value, std::mem::take(out)) {
            *out = bytes;
        }
    }
    match message {
        Message::Register(m) => put(m, out),
        Message::Registered(m) => put(m, out),
        Message::Refused(m) => put(m, out),
        Message::Stats(m) => put(m, out),
        Message::Call(m) => put(m, out),
        Message::Dispatch(m) => put(m, out),
        Message::Queued(m) => put(m, out),
        Message::Result(m) => put(m, out),
        Message::Reply(m) => put(m, out),
        Message::Data(bytes) => out.extend_from_slice(bytes),
        Message::Error(m) => put(
            &CallError::new(v1_error_kind(m.kind), m.message.clone()),
            out,
        ),
        Message::ListNodes
        | Message::ListPolicies
        | Message::ListQueues
        | Message::CacheStats
        | Message::Drain
        | Message::Job(_)
        | Message::JobReply(_)
        | Message::Log(_)
        | Message::Members(_)
        | Message::ListMembers
        | Message::Load(_)
        | Message::Lease(_)
        | Message::Leased(_)
        | Message::Hold(_)
        | Message::LeaseEnded(_)
        | Message::ReleaseLease(_)
        | Message::LeaseKeys(_)
        | Message::Held(_)
        | Message::DropLease(_)
        | Message::Respec(_)
        | Message::Ancestry(_)
        | Message::Probe(_)
        | Message::Subtree(_)
        | Message::HandUp(_) => {}
        Message::Nodes(m) => put(m, out),
        Message::Policies(m) => put(m, out),
        Message::SetPolicy(m) => put(m, out),
        Message::Ack(m) => put(m, out),
        Message::Swap(m) => put(m, out),
        Message::Swapped(m) => put(m, out),
        Message::Reserved(m) => put(m, out),
        Message::Queues(m) => put(m, out),
        Message::CacheStatsView(m) => put(m, out),
        Message::PurgeCache(m) => put(m, out),
        Message::End(m) => put(m, out),
    }
}

pub(crate) fn decode_body(kind: FrameKind, body: &[u8]) -> Result<Message, CodecError> {
    fn get<T: DeserializeOwned>(kind: FrameKind, body: &[u8]) -> Result<T, CodecError> {
        let malformed = |reason: String| CodecError::Malformed { kind, reason };
        let (value, rest) =
            postcard::take_from_bytes(body).map_err(|e| malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(malformed(format!("{} trailing bytes", rest.len())));
        }
        Ok(value)
    }
    Ok(match kind {
        FrameKind::Register => Message::Register(get(kind, body)?),
        FrameKind::Registered => Message::Registered(get(kind, body)?),
        FrameKind::Refused => Message::Refused(get(kind, body)?),
        FrameKind::Stats => Message::Stats(get(kind, body)?),
        FrameKind::Call => Message::Call(get(kind, body)?),
        FrameKind::Dispatch => Message::Dispatch(get(kind, body)?),
        FrameKind::Queued => Message::Queued(get(kind, body)?),
        FrameKind::Result => Message::Result(get(kind, body)?),
        FrameKind::Reply => Message::Reply(get(kind, body)?),
        FrameKind::Data => Message::Data(Bytes::copy_from_slice(body)),
        FrameKind::Error => Message::Error(get(kind, body)?),
        // Drain came with v2: a v1 peer neither sends nor knows it (an agent
        // on a v1 connection shuts down without announcing its drain).
        // So did the job frames.
        FrameKind::Drain
        | FrameKind::Job
        | FrameKind::JobReply
        | FrameKind::Log
        | FrameKind::Members
        | FrameKind::ListMembers
        | FrameKind::Load
        | FrameKind::Lease
        | FrameKind::Leased
        | FrameKind::Hold
        | FrameKind::LeaseEnded
        | FrameKind::ReleaseLease
        | FrameKind::LeaseKeys
        | FrameKind::Held
        | FrameKind::DropLease
        | FrameKind::Respec
        | FrameKind::Ancestry
        | FrameKind::Probe
        | FrameKind::Subtree
        | FrameKind::HandUp => {
            return Err(CodecError::UnknownKind(kind as u8));
        }
        FrameKind::ListNodes
        | FrameKind::ListPolicies
        | FrameKind::ListQueues
        | FrameKind::CacheStats => {
            if !body.is_empty() {
                return Err(CodecError::Malformed {
                    kind,
                    reason: format!("{} trailing bytes", body.len()),
                });
            }
            match kind {
                FrameKind::ListNodes => Message::ListNodes,
                FrameKind::ListPolicies => Message::ListPolicies,
                FrameKind::ListQueues => Message::ListQueues,
                _ => Message::CacheStats,
            }
        }
        FrameKind::Nodes => Message::Nodes(get(kind, body)?),
        FrameKind::Policies => Message::Policies(get(kind, body)?),
        FrameKind::SetPolicy => Message::SetPolicy(get(kind, body)?),
        FrameKind::Ack => Message::Ack(get(kind, body)?),
        FrameKind::Swap => Message::Swap(get(kind, body)?),
        FrameKind::Swapped => Message::Swapped(get(kind, body)?),
        FrameKind::Reserved => Message::Reserved(get(kind, body)?),
        FrameKind::Queues => Message::Queues(get(kind, body)?),
        FrameKind::CacheStatsView => Message::CacheStatsView(get(kind, body)?),
        FrameKind::PurgeCache => Message::PurgeCache(get(kind, body)?),
        FrameKind::End => Message::End(get(kind, body)?),
    })
}
