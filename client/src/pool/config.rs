//! The pool's settings (on [`ClientConfig`]), its statistics, and the
//! down-backoff schedule.

use std::time::Duration;

use crate::{Client, ClientConfig};

/// Default connections per gateway address: several, so that callers wait
/// for a stream only past 4 × 256 calls in flight.
pub const DEFAULT_POOL_SIZE: usize = 4;
/// Default cap of concurrent calls (streams) per connection.
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// Default longest wait for a QUIC handshake.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time a gateway stays down after its first failure.
pub const DEFAULT_DOWN_BACKOFF: Duration = Duration::from_secs(1);
/// Default longest time a gateway stays down.
pub const DEFAULT_MAX_DOWN_BACKOFF: Duration = Duration::from_secs(30);
/// Default silence after which a connection counts as dead.
pub const DEFAULT_DEAD_AFTER: Duration = Duration::from_secs(3);

/// How the [`Client`] pools its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Most connections per gateway address (default 4, at least 1). One
    /// connection carries many calls at once (up to
    /// `max_streams_per_connection`); the pool opens another when every
    /// connection is at that cap, before a call waits, and in the
    /// background once the least-loaded one carries 3/4 of the cap.
    pub pool_size: usize,
    /// Most calls in flight on one connection, i.e. open streams (default
    /// 256, at least 1). A call waits for a free stream when every
    /// connection is at the cap and the pool is full; the wait counts
    /// against the call's timeout. The gateway accepts up to 1024 streams per
    /// connection; a cap above that waits on the gateway instead.
    pub max_streams_per_connection: u32,
    /// Longest wait for a gateway's QUIC handshake (default 5 s). QUIC does
    /// not see "port unreachable", so an absent gateway costs this long.
    pub connect_timeout: Duration,
    /// How long a gateway stays down after a failed connect or a lost
    /// connection (default 1 s), doubled for each further failure in a row.
    pub down_backoff: Duration,
    /// The longest a gateway stays down (default 30 s).
    pub max_down_backoff: Duration,
    /// How long a connection may hear nothing from its gateway before it
    /// counts as dead (default 3 s): the SDK's QUIC idle timeout, with a
    /// keep-alive ping every third of it, so a live but quiet connection
    /// never reaches it. A gateway that dies without closing (kill -9, a
    /// lost host) is then left for the next one after this long, not after
    /// the gateway's own idle timeout (10 s); its calls in flight end at
    /// their deadline or when the connection is declared dead. At least
    /// 300 ms.
    pub dead_after: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            pool_size: DEFAULT_POOL_SIZE,
            max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            down_backoff: DEFAULT_DOWN_BACKOFF,
            max_down_backoff: DEFAULT_MAX_DOWN_BACKOFF,
            dead_after: DEFAULT_DEAD_AFTER,
        }
    }
}

impl ClientConfig {
    /// Sets every gateway address, in the order they are tried: the first
    /// becomes [`ClientConfig::gateway`], the others
    /// [`ClientConfig::fallback_gateways`]. An empty list changes nothing.
    #[must_use]
    pub fn with_gateways<I, S>(mut self, gateways: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut all = gateways.into_iter().map(Into::into);
        if let Some(first) = all.next() {
            self.gateway = first;
            self.fallback_gateways = all.collect();
        }
        self
    }

    /// Every gateway address, in the order they are tried.
    pub fn gateways(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.gateway.as_str())
            .chain(self.fallback_gateways.iter().map(String::as_str))
    }

    /// Sets [`PoolConfig::pool_size`], connections per gateway.
    #[must_use]
    pub fn with_pool_size(mut self, connections: usize) -> Self {
        self.pool.pool_size = connections;
        self
    }

    /// Sets [`PoolConfig::max_streams_per_connection`].
    #[must_use]
    pub fn with_max_streams_per_connection(mut self, streams: u32) -> Self {
        self.pool.max_streams_per_connection = streams;
        self
    }

    /// Sets [`PoolConfig::connect_timeout`].
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.pool.connect_timeout = timeout;
        self
    }

    /// Sets [`PoolConfig::dead_after`].
    #[must_use]
    pub fn with_dead_after(mut self, silence: Duration) -> Self {
        self.pool.dead_after = silence;
        self
    }
}

/// A snapshot of the pool, from [`Client::pool_stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStats {
    /// One entry per gateway address, in the order they are tried.
    pub gateways: Vec<GatewayStats>,
}

impl PoolStats {
    /// Live connections, all gateways together.
    pub fn connections(&self) -> usize {
        self.gateways.iter().map(|g| g.connections).sum()
    }

    /// Calls in flight (open streams), all connections together.
    pub fn streams_in_use(&self) -> u32 {
        self.gateways.iter().flat_map(|g| &g.streams_in_use).sum()
    }
}

/// The pool's view of one gateway address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayStats {
    /// The address as configured.
    pub address: String,
    /// Live connections.
    pub connections: usize,
    /// Calls in flight on each live connection (at most the stream cap).
    pub streams_in_use: Vec<u32>,
    /// Whether the gateway is down (within its backoff after a failure).
    pub down: bool,
    /// Connections opened so far.
    pub connects: u64,
    /// Connects that failed so far.
    pub failed_connects: u64,
    /// Connections lost so far (closed by anything but [`Client::close`]).
    pub losses: u64,
    /// The latest failure, if any.
    pub last_error: Option<String>,
}

impl Client {
    /// A snapshot of the connection pool: live connections and calls in
    /// flight per gateway address, which are down, and counters.
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }
}

/// The down time after `failures` failures in a row (at least 1).
pub(super) fn backoff(config: &PoolConfig, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    config
        .down_backoff
        .saturating_mul(1u32 << doublings)
        .min(config.max_down_backoff)
}
