//! `[quic]` and `[agents]`: the QUIC endpoint's resource limits, the accept
//! policy (per-source-IP limit, stateless retry, pending-handshake cap) and
//! the agents' identity and connection limits. README "QUIC limits" has
//! the table and the worst-case memory bound.

use serde::Deserialize;

use super::ConfigError;

/// `[quic]`: limits of the gateway's QUIC endpoint, for every connection
/// (callers and agents share it). Windows and streams are quinn's
/// `TransportConfig`; the accept policy is the gateway's (`Incoming::retry`,
/// `Incoming::refuse`, as quinn's examples and Cloudflare's quiche advise
/// for address validation under load).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuicConfig {
    /// Bytes a peer may send on one stream before the gateway reads them,
    /// bytes (default 1 MiB).
    pub stream_receive_window: u32,
    /// Bytes a peer may send across all streams of one connection before the
    /// gateway reads them, bytes (default 2 MiB): the bound on one
    /// connection's unread input.
    pub receive_window: u32,
    /// Bytes of the gateway's writes kept per connection until acknowledged,
    /// bytes (default 2 MiB).
    pub send_window: u32,
    /// Bytes one caller connection's streams may hold in frames and payloads
    /// being read, bytes (default: `max_payload_bytes`, 16 MiB; at least
    /// that). A read waits for its declared length to be free (its bytes
    /// wait in the receive windows meanwhile), so a peer that declares large
    /// payloads and stalls holds at most this.
    pub read_buffer_per_connection: Option<u64>,
    /// Most streams (calls) one connection may have open at once (default
    /// 1024). Unidirectional streams: none.
    pub max_streams_per_connection: u32,
    /// A connection silent this long is closed, ms (default 10 000).
    pub idle_timeout_ms: u32,
    /// Keep-alive ping period, ms (default 2000; below `idle_timeout_ms`).
    pub keep_alive_ms: u32,
    /// A handshake not done within this is dropped, ms (default 5000).
    pub handshake_timeout_ms: u32,
    /// Most connections at once, handshakes included (default 1024); past it
    /// new ones are refused.
    pub max_connections: u32,
    /// Most connections at once from one source IP address, handshakes
    /// included (default 256); past it new ones from it are refused.
    pub max_connections_per_ip: u32,
    /// With this many handshakes pending, a new connection whose address is
    /// not validated yet gets a stateless retry first (default 16; 0: always).
    pub retry_above_pending: u32,
    /// Most handshakes pending at once (default 1024); past it new
    /// connections are refused (and quinn buffers at most this many
    /// unanswered incoming connections).
    pub max_pending_handshakes: u32,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            stream_receive_window: transport::endpoint::DEFAULT_STREAM_RECEIVE_WINDOW,
            receive_window: transport::endpoint::DEFAULT_RECEIVE_WINDOW,
            send_window: transport::endpoint::DEFAULT_SEND_WINDOW,
            read_buffer_per_connection: None,
            max_streams_per_connection: 1024,
            idle_timeout_ms: 10_000,
            keep_alive_ms: 2000,
            handshake_timeout_ms: 5000,
            max_connections: 1024,
            max_connections_per_ip: 256,
            retry_above_pending: 16,
            max_pending_handshakes: 1024,
        }
    }
}

impl QuicConfig {
    /// The endpoint's transport settings.
    pub fn endpoint(&self) -> transport::EndpointConfig {
        transport::EndpointConfig {
            idle_timeout: std::time::Duration::from_millis(u64::from(self.idle_timeout_ms)),
            keep_alive: std::time::Duration::from_millis(u64::from(self.keep_alive_ms)),
            max_concurrent_bidi_streams: self.max_streams_per_connection,
            stream_receive_window: self.stream_receive_window,
            receive_window: self.receive_window,
            send_window: self.send_window,
            ..transport::EndpointConfig::default()
        }
    }

    /// The read budget of one caller connection, bytes (with
    /// `max_payload_bytes`, the configuration's payload limit).
    pub fn read_buffer(&self, max_payload_bytes: u64) -> u64 {
        self.read_buffer_per_connection
            .unwrap_or(max_payload_bytes)
            .max(max_payload_bytes)
    }

    /// The handshake timeout.
    pub fn handshake_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(u64::from(self.handshake_timeout_ms))
    }

    /// Checks ranges.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the bad value.
    pub fn validate(&self, max_payload_bytes: u64) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(format!("quic.{m}")));
        if self
            .read_buffer_per_connection
            .is_some_and(|b| b < max_payload_bytes)
        {
            return invalid("read_buffer_per_connection must be >= max_payload_bytes");
        }
        if self.stream_receive_window < 1024 || self.receive_window < self.stream_receive_window {
            return invalid("stream_receive_window must be >= 1024 and <= receive_window");
        }
        if self.send_window < 1024 {
            return invalid("send_window must be >= 1024");
        }
        if self.max_streams_per_connection == 0 {
            return invalid("max_streams_per_connection must be > 0");
        }
        if self.idle_timeout_ms == 0 || self.keep_alive_ms == 0 {
            return invalid("idle_timeout_ms and keep_alive_ms must be > 0");
        }
        if self.keep_alive_ms >= self.idle_timeout_ms {
            return invalid("keep_alive_ms must be below idle_timeout_ms");
        }
        if self.handshake_timeout_ms == 0 {
            return invalid("handshake_timeout_ms must be > 0");
        }
        if self.max_connections == 0
            || self.max_connections_per_ip == 0
            || self.max_pending_handshakes == 0
        {
            return invalid(
                "max_connections, max_connections_per_ip and max_pending_handshakes must be > 0",
            );
        }
        Ok(())
    }
}

/// `[agents]`: who may register as a node, and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentsConfig {
    /// Whether an agent must present a client certificate signed by the
    /// gateway's CA (`gateway cert issue`) to register (default false: the
    /// shared token alone, for the quick start). Either way, an agent that
    /// presents one registers under the certificate's node id (its common
    /// name); a `Register` naming another id is refused.
    pub require_client_cert: bool,
    /// Most agents registered at once (default 1024); past it a
    /// registration is refused.
    pub max_agents: u32,
    /// Most agents registered at once from one source IP address (default
    /// 64; stricter than `[quic] max_connections_per_ip`).
    pub max_agents_per_ip: u32,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        Self {
            require_client_cert: false,
            max_agents: 1024,
            max_agents_per_ip: 64,
        }
    }
}

impl AgentsConfig {
    /// Checks ranges.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the bad value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_agents == 0 || self.max_agents_per_ip == 0 {
            return Err(ConfigError::Invalid(
                "agents.max_agents and agents.max_agents_per_ip must be > 0".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::GatewayConfig;

    #[test]
    fn quic_and_agents_defaults_and_bounds() {
        let config = GatewayConfig::from_toml_str("").expect("parse");
        assert_eq!(config.quic.receive_window, 2 << 20);
        assert_eq!(config.quic.read_buffer(16 << 20), 16 << 20);
        assert_eq!(config.quic.max_connections_per_ip, 256);
        assert!(!config.agents.require_client_cert);
        let config = GatewayConfig::from_toml_str(
            "[quic]\nmax_connections_per_ip = 4\nretry_above_pending = 0\n\
             [agents]\nrequire_client_cert = true\nmax_agents_per_ip = 2\n",
        )
        .expect("parse");
        assert_eq!(config.quic.max_connections_per_ip, 4);
        assert_eq!(config.quic.retry_above_pending, 0);
        assert!(config.agents.require_client_cert);
        assert_eq!(config.quic.endpoint().max_concurrent_bidi_streams, 1024);
        for bad in [
            "[quic]\nmax_connections_per_ip = 0",
            "[quic]\nstream_receive_window = 9000000",
            "[quic]\nkeep_alive_ms = 20000",
            "[quic]\nhandshake_timeout_ms = 0",
            "[agents]\nmax_agents = 0",
            "[quic]\nwindow = 1",
            "[quic]\nread_buffer_per_connection = 1024",
        ] {
            assert!(GatewayConfig::from_toml_str(bad).is_err(), "{bad}");
        }
    }
}
