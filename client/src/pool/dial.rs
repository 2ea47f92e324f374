//! Dialing a gateway: one more connection when there is room, the QUIC
//! handshake within `connect_timeout`, and the client endpoints (one per
//! address family) with the pool's transport settings.

use super::*;

impl Pool {
    /// Opens a stream on a connection to `gateway` itself (no failover:
    /// for a request only that gateway can answer, such as releasing a
    /// lease it granted), dialling it if it has no usable connection.
    pub(crate) async fn open_at(
        self: &Arc<Self>,
        codec: Codec,
        gateway: &Arc<Gateway>,
    ) -> Result<(FramedSend, PooledRecv), ClientError> {
        let lease = match self.acquire_at(gateway, Dial::Always).await {
            Ok(lease) => lease,
            Err(Skip::Fatal(e)) => return Err(e),
            Err(Skip::Down | Skip::Failed) => {
                let why = gateway.lock().last_error.clone().unwrap_or_default();
                return Err(ClientError::Connect(format!(
                    "{}: unreachable {why}",
                    gateway.address
                )));
            }
        };
        let (send, recv) = transport::open_bi(&lease.connection, codec).await?;
        Ok((
            send,
            PooledRecv {
                recv,
                _lease: lease,
            },
        ))
    }

    /// How long a handshake may take ([`PoolConfig::connect_timeout`]).
    pub(crate) fn connect_timeout(&self) -> std::time::Duration {
        self.config.connect_timeout
    }

    /// Adds one connection to `gateway` if there is room.
    pub(super) async fn dial_once(&self, gateway: &Gateway) {
        let _dialing = gateway.dial.lock().await;
        {
            let mut state = gateway.lock();
            self.prune(gateway, &mut state);
            if state.connections.len() >= self.config.pool_size {
                return;
            }
            // Still needed? A call may have dialled (or calls ended) since
            // this was started: grow only while every connection is nearly
            // full, prove only a gateway still recovering.
            let cap = self.config.max_streams_per_connection as usize;
            let recovering = state.failures > 0;
            let busy = state
                .connections
                .iter()
                .all(|c| nearly_full(c.permits.available_permits(), cap));
            if !state.connections.is_empty() && !busy && !recovering {
                return;
            }
        }
        match self.dial(gateway).await {
            Ok(connection) => {
                self.install(gateway, &mut gateway.lock(), connection);
            }
            Err(DialError::Unreachable { message, resolve }) => {
                self.dial_failed(gateway, &mut gateway.lock(), message, resolve);
            }
            Err(DialError::Fatal(e)) => {
                tracing::debug!(gateway = %gateway.address, error = %e, "background dial failed");
            }
        }
    }

    /// Resolves `gateway` and completes a handshake with it.
    pub(super) async fn dial(&self, gateway: &Gateway) -> Result<quinn::Connection, DialError> {
        let address = &gateway.address;
        let unreachable =
            |message: String, resolve: bool| DialError::Unreachable { message, resolve };
        let peer = tokio::net::lookup_host(address.as_str())
            .await
            .map_err(|e| unreachable(format!("cannot resolve {address}: {e}"), true))?
            .next()
            .ok_or_else(|| unreachable(format!("{address} resolves to nothing"), true))?;
        let endpoint = self.endpoint(peer).map_err(DialError::Fatal)?;
        let connecting = endpoint
            .connect(peer, &self.server_name)
            .map_err(|e| match e {
                quinn::ConnectError::InvalidServerName(name) => DialError::Fatal(
                    ClientError::Config(format!("server name {name:?} is not a valid name")),
                ),
                other => unreachable(format!("{address}: {other}"), false),
            })?;
        match tokio::time::timeout(self.config.connect_timeout, connecting).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(e)) => Err(unreachable(format!("{address}: {e}"), false)),
            Err(_) => Err(unreachable(
                format!(
                    "{address}: no answer within {} ms",
                    self.config.connect_timeout.as_millis()
                ),
                false,
            )),
        }
    }

    /// The client endpoint for `peer`'s address family, made on first use.
    pub(crate) fn endpoint(&self, peer: SocketAddr) -> Result<quinn::Endpoint, ClientError> {
        let mut endpoints = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let slot = if peer.is_ipv6() {
            &mut endpoints.v6
        } else {
            &mut endpoints.v4
        };
        if let Some(endpoint) = slot {
            return Ok(endpoint.clone());
        }
        // A dead gateway is found by silence: the idle timeout is
        // `dead_after`, with pings at a third of it to keep a quiet
        // connection alive (the effective timeout is the smaller of the two
        // sides').
        let limits = EndpointConfig {
            max_wire_version: self.max_wire_version,
            idle_timeout: self.config.dead_after,
            keep_alive: self.config.dead_after / 3,
            ..EndpointConfig::default()
        };
        let endpoint = transport::client_endpoint(&self.ca, peer, &limits)
            .map_err(|e| ClientError::Config(e.to_string()))?;
        *slot = Some(endpoint.clone());
        Ok(endpoint)
    }
}
