//! [`QuicTarget`]: a call through the SDK over QUIC.

use bytes::Bytes;
use client::{CallOptions, Client, ClientError};

use crate::{CallFailure, Target};

/// Calls `service` with the same payload and options each time through a
/// [`Client`] (its pool of QUIC connections), reading the whole result
/// before the call counts as done.
#[derive(Debug, Clone)]
pub struct QuicTarget {
    client: Client,
    service: String,
    payload: Bytes,
    options: CallOptions,
}

impl QuicTarget {
    /// A target calling `service` with `payload` and `options` through
    /// `client`.
    pub fn new(client: Client, service: String, payload: Bytes, options: CallOptions) -> Self {
        Self {
            client,
            service,
            payload,
            options,
        }
    }

    /// The client the calls go through (its pool statistics, `close`).
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl Target for QuicTarget {
    async fn call(&self) -> Result<(), CallFailure> {
        self.client
            .call(&self.service, self.payload.clone())
            .options(self.options.clone())
            .await
            .map(drop)
            .map_err(|e| CallFailure::new(kind_of(&e)))
    }
}

/// The kind a failed call counts as: the typed error's name with dashes
/// (`timeout`, `overloaded`, `unknown-service`), else `connect`, `io`,
/// `protocol` or `config`.
pub(crate) fn kind_of(e: &ClientError) -> String {
    match (e.kind(), e) {
        (Some(kind), _) => kind.as_str().replace(' ', "-"),
        (None, ClientError::Connect(_)) => "connect".into(),
        (None, ClientError::Io(_) | ClientError::GatewayLost { .. }) => "io".into(),
        (None, ClientError::Config(_)) => "config".into(),
        (None, _) => "protocol".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::ErrorKind;

    #[test]
    fn typed_errors_count_by_their_name_and_the_others_by_what_failed() {
        let typed = |kind| ClientError::Call {
            kind,
            message: String::new(),
            node_id: None,
            request_id: None,
        };
        assert_eq!(kind_of(&typed(ErrorKind::Overloaded)), "overloaded");
        assert_eq!(
            kind_of(&typed(ErrorKind::UnknownService)),
            "unknown-service"
        );
        assert_eq!(
            kind_of(&typed(ErrorKind::NoNodeAvailable)),
            "no-node-available"
        );
        let late = ClientError::Timeout {
            sent: true,
            timeout_ms: 10,
        };
        assert_eq!(kind_of(&late), "timeout");
        assert_eq!(kind_of(&ClientError::Connect("refused".into())), "connect");
        assert_eq!(kind_of(&ClientError::Protocol("odd".into())), "protocol");
    }
}
