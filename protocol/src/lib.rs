//! The Switchyard wire protocol, sans-IO: frame codec and message types over
//! bytes, with no sockets and no clock (the style of quinn-proto and
//! linkerd's `transport-header`).
//!
//! Every QUIC stream carries a sequence of frames. A frame is an 8-byte
//! header followed by `len` body bytes:
//!
//! ```text
//! 0        1        2        4                 8
//! +--------+--------+--------+-----------------+----------------
//! |version | kind   | flags  | len (u32, BE)   | body (len bytes)
//! +--------+--------+--------+-----------------+----------------
//! ```
//!
//! The body is the message the `kind` names, encoded as the connection's
//! negotiated [`WireVersion`] says (v2: a CBOR map with numeric field keys,
//! see `v2`; v1: postcard, frozen, see `v1`), except
//! for [`FrameKind::Data`], whose body is raw payload bytes (payloads travel as
//! a head message giving their total length, then `Data` chunks). `len` is
//! checked against a configurable maximum before anything is allocated.
//!
//! Streams (see `ARCHITECTURE.md` for the sequences):
//! - agent → gateway, first stream: [`Message::Register`], answered by
//!   [`Message::Registered`] or [`Message::Refused`], then [`Message::Stats`]
//!   every interval (and swaps, below), and [`Message::Drain`] once when
//!   the agent shuts down (no new calls; it closes when its calls end);
//! - client → gateway, one stream per call: [`Message::Call`] + `Data`,
//!   answered by [`Message::Result`] + `Data`, or [`Message::Error`];
//! - gateway → agent, one stream per call: [`Message::Dispatch`] + `Data`,
//!   answered by [`Message::Reply`] + `Data`, or [`Message::Error`];
//! - client → gateway: [`Message::ListNodes`], answered by [`Message::Nodes`];
//!   [`Message::ListPolicies`], answered by [`Message::Policies`];
//!   [`Message::SetPolicy`] (with the admin token), answered by
//!   [`Message::Ack`] or [`Message::Error`]; [`Message::ListQueues`],
//!   answered by [`Message::Queues`]; [`Message::CacheStats`], answered by
//!   [`Message::CacheStatsView`]; [`Message::PurgeCache`] (with the admin
//!   token), answered by [`Message::Ack`] or [`Message::Error`].
//!
//! - leases (look-aside): see the `lease` module's streams ([`LeaseRequest`],
//!   [`LeaseHold`], [`LeaseKeys`], and direct calls to an agent carrying
//!   [`CallHead::lease`]).
//!
//! A result travels either with its length announced in its head
//! (`payload_len: Some(n)`, then `n` bytes of `Data`), or streamed
//! (`payload_len: None`): `Data` chunks as the service produces them, ended
//! by [`Message::End`], or by [`Message::Error`] when the service fails
//! after it started answering.
//!
//! A queued call's stream carries [`Message::Queued`] (its position, each
//! time it changes) and [`Message::Reserved`] (a node is loading the service
//! for it) before its result. The control stream carries
//! [`Message::Swap`] (gateway → agent) and [`Message::Swapped`] (agent →
//! gateway, after a swap or when a slot's service stops on its own).

mod admin;
mod cache;
mod call;
mod cluster;
pub mod codes;
mod error;
mod frame;
pub mod job;
mod lease;
mod message;
mod node;
pub mod request_id;
mod swap;
mod tree;
mod v1;
mod v2;
mod version;

pub use admin::{PolicyTable, PolicyView, QueueView, RejectedFile, ServicePolicy, SetPolicy};
pub use cache::{CacheStatsView, PurgeCache, ServiceCacheStats};
pub use call::{
    CacheInfo, CallError, CallHead, DispatchHead, ENDPOINTS, ReplyHead, Reserved, ResultHead,
    Timings, Trailer,
};
pub use cluster::{MAX_ADDR_LEN, MAX_MEMBERS, Member, MemberList, NodeLoad, QueuedCalls};
pub use error::{CodecError, ErrorKind, Side};
pub use frame::{Codec, Decoded, FrameHeader, FrameKind, HEADER_LEN};
pub use job::{
    JobFilter, JobOp, JobPage, JobReply, JobRequest, JobSettings, JobSpec, JobState, JobView,
    LogChunk, LogEntry, LogStream, Transition,
};
pub use lease::{
    LEASE_KEY_LEN, LeaseClaims, LeaseDrop, LeaseEnd, LeaseEndReason, LeaseGrant, LeaseHeld,
    LeaseHold, LeaseKey, LeaseKeys, LeaseRelease, LeaseRequest, MAX_LEASE_ID_LEN, MAX_LEASE_KEYS,
    MAX_TOKEN_LEN, TokenError,
};
pub use message::Message;
pub use node::{
    GpuStats, MAX_HEARTBEAT_MS, NodeSpec, NodeStats, NodeView, Register, Registered, ServiceLoad,
    ServiceSpec, ServiceView, SlotSpec, SlotView,
};
pub use swap::{SwapReport, SwapRequest};
pub use tree::{
    Ancestry, GatewayReport, HandUp, MAX_DEPTH, MAX_REPORT_NODES, MAX_WAVE_GATEWAYS, Probe, Push,
    Respec, Subtree, TreeNode,
};
pub use v1::added;
pub use version::{ALPN_V1, ALPN_V2, WireVersion};

/// The ALPN id of the newest wire version, `switchyard/2`; connections
/// offer every version ([`WireVersion::alpn_protocols`]) and negotiate one.
pub const ALPN: &[u8] = ALPN_V2;

/// The newest frame format version this crate speaks (the header's first
/// byte); it also speaks every older one in [`WireVersion::ALL`].
pub const VERSION: u8 = WireVersion::LATEST as u8;

/// Default largest frame body: 16 MiB.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 16 * 1024 * 1024;

/// Size of the `Data` chunks payloads are cut into: 256 KiB.
pub const CHUNK_LEN: usize = 256 * 1024;

/// Limits on the strings and lists in a message, checked by `validate` methods.
pub mod limits {
    /// Longest service name or node id, bytes.
    pub const MAX_NAME_LEN: usize = 256;
    /// Most hints on one call.
    pub const MAX_HINTS: usize = 64;
    /// Longest hint key or value, bytes.
    pub const MAX_HINT_LEN: usize = 1024;
    /// Most services one node may register.
    pub const MAX_SERVICES: usize = 1024;
    /// Longest API key a call may present, bytes.
    pub const MAX_API_KEY_LEN: usize = 512;
    /// Longest content type a result may carry, bytes.
    pub const MAX_CONTENT_TYPE_LEN: usize = 256;
    /// Longest explanation a result may carry (`ResultHead::explain`),
    /// bytes.
    pub const MAX_EXPLAIN_LEN: usize = 1024;
    /// Longest W3C `traceparent` a call or dispatch may carry, bytes (a
    /// version-00 value is 55).
    pub const MAX_TRACEPARENT_LEN: usize = 128;
    /// Longest service error body a call error carries
    /// (`CallError::body`), bytes.
    pub const MAX_ERROR_BODY_LEN: usize = 16 * 1024;
    /// Most prefix block hashes a dispatch carries
    /// (`DispatchHead::prefix_hashes`), and most a load report names per
    /// service in each of `NodeLoad::prefix_added` and `prefix_evicted`.
    pub const MAX_PREFIX_HASHES: usize = 4096;
}
