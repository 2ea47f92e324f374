//! The SDK's error type.

use protocol::{CallError, ErrorKind, Side};
use transport::IoError;

/// Why a call or request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The gateway answered with a typed error.
    #[error("{kind}: {message}")]
    Call {
        /// What kind of failure.
        kind: ErrorKind,
        /// Details.
        message: String,
    },
    /// The configuration is unusable (address, CA file).
    #[error("configuration: {0}")]
    Config(String),
    /// The gateway could not be reached.
    #[error("cannot connect to the gateway: {0}")]
    Connect(String),
    /// The connection failed during the call.
    #[error("connection: {0}")]
    Io(#[from] IoError),
    /// The gateway broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
}

impl From<CallError> for ClientError {
    fn from(e: CallError) -> Self {
        Self::Call {
            kind: e.kind,
            message: e.message,
        }
    }
}

impl ClientError {
    /// The gateway's error kind, when it sent one. A result stream the gateway
    /// reset because the node vanished reads as [`ErrorKind::NodeLost`], one
    /// reset for time as [`ErrorKind::Timeout`].
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            Self::Call { kind, .. } => Some(*kind),
            Self::Io(IoError::Reset(code)) => protocol::codes::reset::error_kind(*code),
            _ => None,
        }
    }

    /// Which side failed: the caller, the node, or the gateway (connection
    /// problems count as the gateway's).
    pub fn side(&self) -> Side {
        match (self, self.kind()) {
            (_, Some(kind)) => kind.side(),
            (Self::Config(_), None) => Side::Client,
            _ => Side::Gateway,
        }
    }

    /// Whether calling again is safe (the call cannot have run): typed errors
    /// say so themselves; a failed connect is safe; a connection lost during
    /// a call is not (it may have run).
    pub fn retry_safe(&self) -> bool {
        match (self, self.kind()) {
            (_, Some(kind)) => kind.retry_safe(),
            (Self::Connect(_), None) => true,
            _ => false,
        }
    }
}
