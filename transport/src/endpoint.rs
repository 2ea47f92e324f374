//! Building quinn endpoints with Switchyard's ALPN and transport limits.
//!
//! Every limit is explicit (quinn's own defaults leave the connection receive
//! window unbounded): what one peer can make this side buffer is at most
//! `receive_window` of stream data plus per-stream state for
//! `max_concurrent_bidi_streams` streams, and at most `send_window` of
//! unacknowledged writes (quinn's `TransportConfig`).

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
    /// It also bounds a handshake that stops making progress.
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
    /// Bytes the peer may send on one stream before this side reads them,
    /// bytes (default 1 MiB; quinn's default is 1.25 MB).
    pub stream_receive_window: u32,
    /// Bytes the peer may send across all streams of one connection before
    /// this side reads them, bytes (default 2 MiB; quinn's default is
    /// unbounded). The bound on one connection's buffered input.
    pub receive_window: u32,
    /// Bytes of this side's writes kept per connection until the peer
    /// acknowledges them, bytes (default 2 MiB).
    pub send_window: u32,
    /// Ack-eliciting packets the peer may receive from this side before it
    /// must acknowledge them, asked of it with QUIC's acknowledgement
    /// frequency extension (draft-ietf-quic-ack-frequency, as quinn
    /// implements it; a peer without it ignores the ask). Default
    /// [`DEFAULT_ACK_ELICITING_THRESHOLD`]; 1 is QUIC's own rule (an ACK
    /// for every other packet). A streamed answer is one packet per token
    /// event: a larger threshold saves the other side most of its ACKs.
    /// The peer still acknowledges within its `max_ack_delay` (25 ms), and
    /// at once when packets arrive out of order, so loss is found as soon.
    pub ack_eliciting_threshold: u32,
}

/// Default [`EndpointConfig::ack_eliciting_threshold`]: an ACK at least
/// every 10 packets.
pub const DEFAULT_ACK_ELICITING_THRESHOLD: u32 = 9;

/// Default per-stream receive window, bytes (1 MiB).
pub const DEFAULT_STREAM_RECEIVE_WINDOW: u32 = 1024 * 1024;
/// Default per-connection receive window, bytes (2 MiB).
pub const DEFAULT_RECEIVE_WINDOW: u32 = 2 * 1024 * 1024;
/// Default per-connection send window, bytes (2 MiB).
pub const DEFAULT_SEND_WINDOW: u32 = 2 * 1024 * 1024;

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(2),
            max_concurrent_bidi_streams: 1024,
            max_wire_version: WireVersion::LATEST,
            stream_receive_window: DEFAULT_STREAM_RECEIVE_WINDOW,
            receive_window: DEFAULT_RECEIVE_WINDOW,
            send_window: DEFAULT_SEND_WINDOW,
            ack_eliciting_threshold: DEFAULT_ACK_ELICITING_THRESHOLD,
        }
    }
}

impl EndpointConfig {
    /// The quinn transport configuration these settings describe.
    pub fn transport(&self) -> Arc<quinn::TransportConfig> {
        let mut transport = quinn::TransportConfig::default();
        // An idle timeout beyond the QUIC varint range only happens with absurd
        // configuration; fall back to no idle timeout rather than panic.
        transport.max_idle_timeout(self.idle_timeout.try_into().ok());
        transport.keep_alive_interval(Some(self.keep_alive));
        transport.max_concurrent_bidi_streams(self.max_concurrent_bidi_streams.into());
        transport.max_concurrent_uni_streams(0u8.into());
        transport.stream_receive_window(self.stream_receive_window.into());
        transport.receive_window(self.receive_window.into());
        transport.send_window(u64::from(self.send_window));
        // Switchyard sends no datagrams: none are buffered.
        transport.datagram_receive_buffer_size(None);
        if self.ack_eliciting_threshold != 1 {
            let mut ack = quinn::AckFrequencyConfig::default();
            ack.ack_eliciting_threshold(self.ack_eliciting_threshold.into());
            transport.ack_frequency_config(Some(ack));
        }
        Arc::new(transport)
    }
}

/// A quinn server configuration presenting the certificate in `files`, with
/// Switchyard's ALPN and `config`'s limits. With `client_ca`, clients may
/// present a certificate, which must then be signed by that CA (clients
/// without one are still accepted: see [`TlsFiles::server_config_with_clients`]).
///
/// # Errors
/// [`TlsError`] for unusable certificate files.
pub fn server_config(
    files: &TlsFiles,
    client_ca: Option<&Path>,
    config: &EndpointConfig,
) -> Result<quinn::ServerConfig, TlsError> {
    let mut crypto = match client_ca {
        Some(ca) => files.server_config_with_clients(ca)?,
        None => files.server_config()?,
    };
    crypto.alpn_protocols = config.max_wire_version.alpn_protocols();
    let crypto = QuicServerConfig::try_from(crypto)
        .map_err(|e| TlsError::Generate(format!("quic server config: {e}")))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(config.transport());
    Ok(server)
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
    let server = server_config(files, None, config)?;
    quinn::Endpoint::server(server, listen).map_err(|source| TlsError::Io {
        path: listen.to_string().into(),
        source,
    })
}

/// A client certificate and its key (PEM files) a client presents.
#[derive(Debug, Clone, Copy)]
pub struct ClientIdentity<'a> {
    /// The certificate chain, PEM.
    pub cert: &'a Path,
    /// Its private key, PEM.
    pub key: &'a Path,
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
    client_endpoint_with(ca, None, peer, config)
}

/// As [`client_endpoint`], presenting `identity` (a client certificate)
/// when given.
///
/// # Errors
/// As [`client_endpoint`], plus [`TlsError`] for unusable identity files.
pub fn client_endpoint_with(
    ca: &Path,
    identity: Option<ClientIdentity<'_>>,
    peer: SocketAddr,
    config: &EndpointConfig,
) -> Result<quinn::Endpoint, TlsError> {
    let mut crypto = match identity {
        Some(id) => tls::client_config_with_cert(ca, id.cert, id.key)?,
        None => tls::client_config(ca)?,
    };
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
