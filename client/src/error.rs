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
        /// The node the call failed on, when it reached one (a gateway of
        /// this release or later says).
        node_id: Option<String>,
        /// The call's request id (the one the call set, or the gateway's).
        request_id: Option<String>,
    },
    /// The configuration is unusable (address, CA file).
    #[error("configuration: {0}")]
    Config(String),
    /// The gateway could not be reached, or its connection was lost before
    /// it had the call (with no other gateway left to try): nothing ran.
    #[error("cannot connect to the gateway: {0}")]
    Connect(String),
    /// The node's direct port could not be reached for a direct call
    /// ([`crate::Lease::call`]): it could not be resolved, the connection
    /// or its handshake failed or timed out (its certificate must name the
    /// host of its direct address), or it does not speak wire version 2.
    /// Nothing was sent: retry-safe. A look-aside call
    /// ([`crate::Mode::LookAside`]) goes through the gateway instead.
    #[error("cannot reach node {node_id}'s direct port: {message} (nothing was sent)")]
    NodeUnreachable {
        /// The node the lease is on.
        node_id: String,
        /// Its direct address, `host:port`.
        address: String,
        /// Why, e.g. `no answer within 5000 ms`.
        message: String,
    },
    /// The connection failed during the call.
    #[error("connection: {0}")]
    Io(#[from] IoError),
    /// The connection to the gateway was lost after the gateway had the
    /// call (it had acknowledged all of it, or answered with a queue
    /// position or a result head): the call may have run, so the SDK did
    /// not send it to another gateway (it does for a call marked
    /// [`crate::Call::idempotent`]). Not retry-safe.
    #[error(
        "gateway {gateway} lost during the call: {message} (the call may have run; a retry is not known to be safe)"
    )]
    GatewayLost {
        /// The gateway's address, `host:port`.
        gateway: String,
        /// How the connection ended.
        message: String,
    },
    /// The gateway broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The call's timeout ([`crate::Call::timeout`]) passed on the
    /// client's side: while it waited for a stream (every pooled
    /// connection at its cap) or a connection (`sent: false`: nothing left
    /// this side, so calling again is safe), or after the call was sent
    /// while the gateway's own timeout answer was late (`sent: true`: it
    /// may have run).
    #[error("timeout on the client side after {timeout_ms} ms ({})", sent_note(*sent))]
    Timeout {
        /// Whether any of the call may have reached the gateway.
        sent: bool,
        /// The call's timeout, ms.
        timeout_ms: u64,
    },
}

fn sent_note(sent: bool) -> &'static str {
    if sent {
        "the call was sent and may have run"
    } else {
        "nothing was sent: safe to retry"
    }
}

impl From<CallError> for ClientError {
    fn from(e: CallError) -> Self {
        Self::Call {
            kind: e.kind,
            message: e.message,
            node_id: e.node_id.map(String::from),
            request_id: e.request_id.map(String::from),
        }
    }
}

impl ClientError {
    /// The gateway's error kind, when it sent one. A result stream the gateway
    /// reset because the node vanished reads as [`ErrorKind::NodeLost`], one
    /// reset for time as [`ErrorKind::Timeout`], and so does a timeout on
    /// the client's side ([`ClientError::Timeout`]).
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            Self::Call { kind, .. } => Some(*kind),
            Self::Timeout { .. } => Some(ErrorKind::Timeout),
            Self::Io(IoError::Reset(code)) => protocol::codes::reset::error_kind(*code),
            _ => None,
        }
    }

    /// The node the call failed on, when the gateway named one.
    pub fn node_id(&self) -> Option<&str> {
        match self {
            Self::Call { node_id, .. } => node_id.as_deref(),
            _ => None,
        }
    }

    /// The call's request id, when the gateway's error carried it.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Self::Call { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }

    /// Which side failed: the caller, the node, or the gateway (connection
    /// problems count as the gateway's, a node's unreachable direct port as
    /// the node's; a timeout measured by the SDK is the client's).
    pub fn side(&self) -> Side {
        match (self, self.kind()) {
            (Self::Timeout { .. }, _) => Side::Client,
            (_, Some(kind)) => kind.side(),
            (Self::Config(_), None) => Side::Client,
            (Self::NodeUnreachable { .. }, None) => Side::Node,
            _ => Side::Gateway,
        }
    }

    /// Whether calling again is safe (the call cannot have run): typed errors
    /// say so themselves; a failed connect (to a gateway, or to a node's
    /// direct port) is safe; a connection lost during
    /// a call ([`ClientError::GatewayLost`], [`ClientError::Io`]) is not (it
    /// may have run); a client-side timeout is safe only when nothing was
    /// sent.
    pub fn retry_safe(&self) -> bool {
        match (self, self.kind()) {
            (Self::Timeout { sent, .. }, _) => !sent,
            (_, Some(kind)) => kind.retry_safe(),
            (Self::Connect(_) | Self::NodeUnreachable { .. }, None) => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_side_timeout_is_typed_and_safe_only_when_nothing_was_sent() {
        let waiting = ClientError::Timeout {
            sent: false,
            timeout_ms: 5000,
        };
        assert_eq!(waiting.kind(), Some(ErrorKind::Timeout));
        assert_eq!(waiting.side(), Side::Client);
        assert!(waiting.retry_safe());
        assert!(waiting.to_string().contains("safe to retry"), "{waiting}");
        let sent = ClientError::Timeout {
            sent: true,
            timeout_ms: 5000,
        };
        assert_eq!(sent.kind(), Some(ErrorKind::Timeout));
        assert!(!sent.retry_safe());
        assert!(sent.to_string().contains("may have run"), "{sent}");
    }

    #[test]
    fn a_gateway_lost_mid_call_is_the_gateways_and_not_retry_safe() {
        let lost = ClientError::GatewayLost {
            gateway: "10.0.0.2:4433".into(),
            message: "connection lost: timed out".into(),
        };
        assert_eq!(lost.kind(), None);
        assert_eq!(lost.side(), Side::Gateway);
        assert!(!lost.retry_safe());
        let text = lost.to_string();
        assert!(text.contains("10.0.0.2:4433"), "{text}");
        assert!(text.contains("may have run"), "{text}");
        assert!(text.contains("not known to be safe"), "{text}");
    }

    #[test]
    fn a_lease_ended_answer_is_the_clients_typed_and_retry_safe() {
        // As a node's direct port answers a call whose lease is over.
        let mut refusal = CallError::new(ErrorKind::LeaseEnded, "lease used its 1 calls");
        refusal.node_id = Some("node-a".into());
        let error = ClientError::from(refusal);
        assert_eq!(error.kind(), Some(ErrorKind::LeaseEnded));
        assert_eq!(error.side(), Side::Client);
        assert!(error.retry_safe(), "the call did not run: lease again");
        assert_eq!(error.node_id(), Some("node-a"));
        assert_eq!(error.to_string(), "lease ended: lease used its 1 calls");
    }

    #[test]
    fn an_unreachable_direct_port_is_the_nodes_and_retry_safe() {
        let error = ClientError::NodeUnreachable {
            node_id: "node-a".into(),
            address: "10.0.0.5:7443".into(),
            message: "10.0.0.5:7443: no answer within 5000 ms".into(),
        };
        assert_eq!(error.kind(), None);
        assert_eq!(error.side(), Side::Node);
        assert!(error.retry_safe());
        let text = error.to_string();
        assert!(
            text.contains("node-a") && text.contains("10.0.0.5:7443"),
            "{text}"
        );
        assert!(text.contains("nothing was sent"), "{text}");
    }
}
