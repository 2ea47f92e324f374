//! A gateway's health: connections installed and pruned, failures and
//! the down backoff, retirement when it shuts down, and the error when no
//! gateway answers.

use super::*;

impl Pool {
    /// Adds a fresh connection to `gateway`, which is up again.
    pub(super) fn install(
        &self,
        gateway: &Gateway,
        state: &mut State,
        connection: quinn::Connection,
    ) -> Conn {
        let conn = Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            connection,
            permits: Arc::new(Semaphore::new(
                self.config.max_streams_per_connection as usize,
            )),
        };
        if state.failures > 0 {
            tracing::info!(gateway = %gateway.address, "gateway reachable again");
        }
        tracing::debug!(gateway = %gateway.address, connection = conn.id, "connected");
        state.connections.push(conn.clone());
        state.connects += 1;
        state.failures = 0;
        state.down_until = None;
        conn
    }

    pub(super) fn dial_failed(
        &self,
        gateway: &Gateway,
        state: &mut State,
        message: String,
        resolve: bool,
    ) {
        state.failed_connects += 1;
        self.mark_down(gateway, state, message, resolve);
    }

    /// Records a failure: the gateway is down for the backoff.
    pub(super) fn mark_down(
        &self,
        gateway: &Gateway,
        state: &mut State,
        message: String,
        resolve: bool,
    ) {
        state.failures = state.failures.saturating_add(1);
        let backoff = backoff(&self.config, state.failures);
        state.down_until = Some(Instant::now() + backoff);
        tracing::warn!(
            gateway = %gateway.address,
            error = %message,
            down_ms = backoff.as_millis() as u64,
            "gateway marked down"
        );
        state.last_error = Some(message);
        state.last_error_resolve = resolve;
    }

    /// Drops connections that are closed; a loss marks the gateway down
    /// (a gateway's shutdown close too: its other connections are retired).
    pub(super) fn prune(&self, gateway: &Gateway, state: &mut State) {
        let mut lost = None;
        let mut count = 0u64;
        let mut shutdown = false;
        state
            .connections
            .retain(|conn| match conn.connection.close_reason() {
                None => true,
                Some(reason) => {
                    // Wakes the calls waiting for a stream on it.
                    conn.permits.close();
                    if !matches!(reason, quinn::ConnectionError::LocallyClosed) {
                        count += 1;
                        shutdown |= is_shutdown(&reason);
                        lost = Some(reason);
                    }
                    false
                }
            });
        if shutdown {
            state.losses += count;
            self.retire(gateway, state);
        } else if let Some(reason) = lost {
            state.losses += count;
            self.mark_down(gateway, state, format!("connection lost: {reason}"), false);
        }
        if count > 0 {
            self.lost.notify_one();
        }
    }

    /// `gateway` said it is shutting down (a call answered `shutting
    /// down`): no new call goes there while it is down.
    pub(crate) fn shutting_down(&self, gateway: &Gateway) {
        self.retire(gateway, &mut gateway.lock());
    }

    /// Drops `gateway`'s connections that are closed, marking it down if
    /// one was lost (a call saw its connection die).
    pub(crate) fn check(&self, gateway: &Gateway) {
        self.prune(gateway, &mut gateway.lock());
    }

    /// Retires every connection of a draining gateway (calls in flight on
    /// them keep their own handles and finish) and marks it down.
    pub(super) fn retire(&self, gateway: &Gateway, state: &mut State) {
        for conn in state.connections.drain(..) {
            // Calls waiting for a stream there look elsewhere.
            conn.permits.close();
        }
        if !state.is_down(Instant::now()) {
            self.mark_down(gateway, state, "gateway shutting down".into(), false);
        }
    }

    /// The error when no gateway gave a stream: each one's latest failure.
    pub(super) fn unreachable(&self) -> ClientError {
        let mut resolve_only = true;
        let reasons: Vec<String> = self
            .gateways()
            .iter()
            .map(|gateway| {
                let state = gateway.lock();
                resolve_only &= state.last_error_resolve;
                state
                    .last_error
                    .clone()
                    .unwrap_or_else(|| format!("{}: down", gateway.address))
            })
            .collect();
        let message = reasons.join("; ");
        if resolve_only {
            ClientError::Config(message)
        } else {
            ClientError::Connect(message)
        }
    }
}
