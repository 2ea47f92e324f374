//! Codec errors and the typed call errors every side shares.

use serde::{Deserialize, Serialize};

/// Why bytes could not be decoded into a frame or a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The peer speaks another frame version.
    #[error(
        "unsupported frame version {0} (this stream speaks the version its connection negotiated; this side knows 1 and 2)"
    )]
    UnsupportedVersion(u8),
    /// The `kind` byte names no known frame kind.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The reserved flag bits were set.
    #[error("reserved frame flags set: {0:#06x}")]
    ReservedFlags(u16),
    /// The frame body is longer than this side accepts.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// Declared body length, bytes.
        len: u64,
        /// Largest accepted body, bytes.
        max: u32,
    },
    /// The body did not decode as the message its kind names.
    #[error("malformed {kind:?} frame: {reason}")]
    Malformed {
        /// The frame's kind.
        kind: crate::FrameKind,
        /// What the decoder said.
        reason: String,
    },
    /// A frame arrived that this stream does not expect here.
    #[error("unexpected {got:?} frame, expected {expected}")]
    Unexpected {
        /// The kind that arrived.
        got: crate::FrameKind,
        /// What the stream expected, in words.
        expected: &'static str,
    },
    /// A field broke a protocol limit (see [`crate::limits`]).
    #[error("invalid message: {0}")]
    Invalid(String),
}

/// What went wrong with a call, as every side reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    /// No node has registered the service.
    UnknownService,
    /// Nodes host the service but none has a free slot.
    NoNodeAvailable,
    /// The call's timeout expired.
    Timeout,
    /// The node serving the call went away before answering.
    NodeLost,
    /// The payload is larger than the gateway accepts.
    PayloadTooLarge,
    /// The service ran and failed (non-zero exit, HTTP error, bad input).
    ServiceFailed,
    /// The agent token (or admin token) was wrong.
    Unauthorized,
    /// The request was malformed.
    BadRequest,
    /// The policy refused the call.
    Rejected,
    /// Every slot is busy and the caller asked not to wait.
    Occupied,
    /// The queue for the service is full.
    Overloaded,
    /// The gateway is shutting down.
    ShuttingDown,
    /// A bug or resource failure inside the gateway or agent.
    Internal,
    /// The caller's key is valid but its tenant may not call this service
    /// (`[[tenants]] services`). Appended after `Internal` so the existing
    /// kinds keep their wire codes.
    Forbidden,
    /// The caller's tenant is over its `calls_per_s` or `max_in_flight`;
    /// the message says when to try again.
    RateLimited,
    /// A direct call's lease is over (expired, released, idle too long or
    /// its calls used up) or its token was already used for all of them:
    /// the call did not run; lease again.
    LeaseEnded,
}

/// Which side of a call failed (pingora's split of client, upstream and
/// internal errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Side {
    /// The caller sent something wrong.
    Client,
    /// The node (or the service on it) failed.
    Node,
    /// The gateway itself failed or refused.
    Gateway,
}

impl ErrorKind {
    /// Which side the failure belongs to.
    pub fn side(self) -> Side {
        match self {
            Self::UnknownService
            | Self::PayloadTooLarge
            | Self::Unauthorized
            | Self::BadRequest
            | Self::Forbidden
            | Self::RateLimited
            | Self::LeaseEnded => Side::Client,
            Self::NodeLost | Self::ServiceFailed | Self::Timeout => Side::Node,
            Self::NoNodeAvailable
            | Self::Rejected
            | Self::Occupied
            | Self::Overloaded
            | Self::ShuttingDown
            | Self::Internal => Side::Gateway,
        }
    }

    /// Whether sending the same call again is safe: true only where the call
    /// never reached a service, so it cannot have run.
    pub fn retry_safe(self) -> bool {
        matches!(
            self,
            Self::NoNodeAvailable
                | Self::Occupied
                | Self::Overloaded
                | Self::ShuttingDown
                | Self::RateLimited
                | Self::LeaseEnded
        )
    }

    /// A short lowercase name, e.g. `unknown service`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownService => "unknown service",
            Self::NoNodeAvailable => "no node available",
            Self::Timeout => "timeout",
            Self::NodeLost => "node lost",
            Self::PayloadTooLarge => "payload too large",
            Self::ServiceFailed => "service failed",
            Self::Unauthorized => "unauthorized",
            Self::BadRequest => "bad request",
            Self::Rejected => "rejected by policy",
            Self::Occupied => "occupied",
            Self::Overloaded => "overloaded",
            Self::ShuttingDown => "shutting down",
            Self::Internal => "internal error",
            Self::Forbidden => "forbidden",
            Self::RateLimited => "rate limited",
            Self::LeaseEnded => "lease ended",
        }
    }
}

impl ErrorKind {
    /// Every kind, in wire-code order (a kind's code is its index here).
    pub const ALL: [ErrorKind; 16] = [
        Self::UnknownService,
        Self::NoNodeAvailable,
        Self::Timeout,
        Self::NodeLost,
        Self::PayloadTooLarge,
        Self::ServiceFailed,
        Self::Unauthorized,
        Self::BadRequest,
        Self::Rejected,
        Self::Occupied,
        Self::Overloaded,
        Self::ShuttingDown,
        Self::Internal,
        Self::Forbidden,
        Self::RateLimited,
        Self::LeaseEnded,
    ];

    /// The kind's wire code: its place in the declaration (the same number
    /// postcard gives it in v1). Never changes; a new kind is appended.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The kind for a wire code. A code this side does not know (a kind a
    /// newer peer added) decodes as [`ErrorKind::Internal`]: a failure that
    /// is not retry-safe, so nothing runs twice because of it.
    pub fn from_code(code: u64) -> Self {
        usize::try_from(code)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
            .unwrap_or(Self::Internal)
    }
}

impl<C> minicbor::Encode<C> for ErrorKind {
    fn encode<W: minicbor::encode::Write>(
        &self,
        e: &mut minicbor::Encoder<W>,
        _: &mut C,
    ) -> Result<(), minicbor::encode::Error<W::Error>> {
        e.u32(self.code())?;
        Ok(())
    }
}

impl<'b, C> minicbor::Decode<'b, C> for ErrorKind {
    fn decode(d: &mut minicbor::Decoder<'b>, _: &mut C) -> Result<Self, minicbor::decode::Error> {
        Ok(Self::from_code(d.u64()?))
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorKind;

    #[test]
    fn codes_follow_the_declaration_and_unknown_ones_are_internal() {
        for (i, kind) in ErrorKind::ALL.into_iter().enumerate() {
            assert_eq!(kind.code() as usize, i);
            assert_eq!(ErrorKind::from_code(i as u64), kind);
        }
        assert_eq!(ErrorKind::from_code(16), ErrorKind::Internal);
        assert_eq!(ErrorKind::from_code(u64::MAX), ErrorKind::Internal);
        assert!(!ErrorKind::from_code(99).retry_safe());
    }
}
