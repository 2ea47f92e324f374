//! Building quinn endpoints with Switchyard's ALPN and transport limits.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use protocol::WireVersion;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};

use crate::tls::{self, TlsError, TlsFiles};

/// Transport settings of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointConfig {
    /// A connection with no traffic for this long is closed (default 10 s).
    pub idle_timeout: Duration,
    /// Keep-alive ping period (default 2 s); keeps idle connections open.
    pub keep_alive: Duration,
    /// Most bidirectional streams the peer may have open at once towards this
    /// endpoint (default 1024): one call is one stream, so this caps the calls
    /// one connection can push at once.
    pub max_concurrent_bidi_streams: u32,
    /// Newest wire version offered (client) or accepted (server) by ALPN
    /// (default [`WireVersion::LATEST`], 2): every version up to it is
    /// offered, newest first, and the handshake picks one per connection
    /// ([`crate::wire_version`]). Set to 1 to speak only the first release's
    /// format, e.g. to pin a fleet during an upgrade.
    pub max_wire_version: WireVersion,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(2),
            max_concurrent_bidi_streams: 1024,
            max_wire_version: WireVersion::LATEST,
        }
    }
}

impl EndpointConfig {
    fn transport(&self) -> Arc<quinn::TransportConfig> {
        let mut transport = quinn::TransportConfig::default();
        // An idle timeout beyond the QUIC varint range only happens with absurd
        // configuration; fall back to no idle timeout rather than panic.
        transport.max_idle_timeout(self.idle_timeout.try_into().ok());
        transport.keep_alive_interval(Some(self.keep_alive));
        transport.max_concurrent_bidi_streams(self.max_concurrent_bidi_streams.into());
        transport.max_concurrent_uni_streams(0u8.into());
        Arc::new(transport)
    }
}

/// A server endpoint on `listen`, presenting the certificate in `files`.
///
/// # Errors
/// [`TlsError`] for unusable certificate files; [`TlsError::Io`] (with the
/// address as path) when the socket cannot be bound.
pub fn server_endpoint(
    listen: SocketAddr,
    files: &TlsFiles,
    config: &EndpointConfig,
) -> Result<quinn::Endpoint, TlsError> {
    let mut crypto = files.server_config()?;
    crypto.alpn_protocols = config.max_wire_version.alpn_protocols();
    let crypto = QuicServerConfig::try_from(crypto)
        .map_err(|e| TlsError::Generate(format!("quic server config: {e}")))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(config.transport());
    quinn::Endpoint::server(server, listen).map_err(|source| TlsError::Io {
        path: listen.to_string().into(),
        source,
    })
}

/// A client endpoint that trusts the CA in `ca` and dials offering
/// Switchyard's ALPN ids (`switchyard/2`, `switchyard/1`, up to
/// `config.max_wire_version`). It binds an ephemeral UDP port of the family of `peer`.
///
/// # Errors
/// [`TlsError`] for an unusable CA file; [`TlsError::Io`] when no UDP socket
/// can be bound.
pub fn client_endpoint(
    ca: &Path,
    peer: SocketAddr,
    config: &EndpointConfig,
) -> Result<quinn::Endpoint, TlsError> {
    let mut crypto = tls::client_config(ca)?;
    crypto.alpn_protocols = config.max_wire_version.alpn_protocols();
    let crypto = QuicClientConfig::try_from(crypto)
        .map_err(|e| TlsError::Generate(format!("quic client config: {e}")))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(config.transport());
    let bind: SocketAddr = if peer.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let mut endpoint = quinn::Endpoint::client(bind).map_err(|source| TlsError::Io {
        path: bind.to_string().into(),
        source,
    })?;
    endpoint.set_default_client_config(client);
    Ok(endpoint)
}
