//! The connection pool behind [`Client`]: QUIC connections to one or more
//! gateway addresses, shared by every call (one stream per call).
//!
//! The rules:
//!
//! - **Order.** Gateways are tried in the configured order
//!   ([`ClientConfig::gateway`], then [`ClientConfig::fallback_gateways`]);
//!   a call goes to the first gateway that has a usable connection or can
//!   get one.
//! - **Size.** Each gateway gets at most [`PoolConfig::pool_size`]
//!   connections (default 4). One is opened when a call finds none; more
//!   are opened in the background once the least-loaded connection carries
//!   3/4 of its stream cap, and in the call's own time when every
//!   connection is at the cap, up to the size: a call waits for a stream
//!   only when the pool is full.
//! - **Stream cap.** A connection carries at most
//!   [`PoolConfig::max_streams_per_connection`] calls at once (default 256),
//!   counted by a semaphore: a call takes the least-loaded connection with a
//!   free stream, and when every connection of the gateway is at its cap and
//!   the pool is full it waits for a stream to free. That wait counts
//!   against the call's timeout (the caller bounds [`Pool::open`]); past it
//!   the call fails with [`ClientError::Timeout`] `{ sent: false }`.
//! - **Shutdown.** A gateway that answers `shutting down` or closes its
//!   connection with `protocol::codes::close::SHUTDOWN` is draining: its connections are
//!   retired (calls in flight on them finish; no new call takes them) and
//!   it is marked down, so the next call goes to the next gateway at once,
//!   with no idle-timeout wait.
//! - **Down.** A failed connect (no answer within
//!   [`PoolConfig::connect_timeout`], refused handshake, unresolvable name)
//!   or a lost connection marks the gateway down for a backoff
//!   ([`PoolConfig::down_backoff`], doubling per failure in a row up to
//!   [`PoolConfig::max_down_backoff`]). While down, no call dials it (its
//!   live connections, if any, still serve) and calls fail over to the next
//!   gateway. After the backoff a connection is dialled in the background
//!   before calls rely on the gateway again. When every gateway is down,
//!   calls dial them anyway, soonest-back first, so a single gateway that
//!   restarted is reached by the next call.
//! - **Retry.** Opening a stream sends nothing, so a call whose stream cannot
//!   be opened (its connection died) moves to another connection. Once the
//!   call's first frame may have left, a lost connection fails the call
//!   ([`ClientError::Io`], not retry-safe): it is never sent twice.

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use protocol::Codec;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use transport::{EndpointConfig, FramedRecv, FramedSend, IoError};

use crate::{ClientConfig, ClientError};

mod config;
mod dial;

use config::backoff;
pub use config::{GatewayStats, PoolConfig, PoolStats};

/// The pool: one [`Gateway`] per configured address, and the client
/// endpoints (one UDP socket per address family) its connections share.
#[derive(Debug)]
pub(crate) struct Pool {
    config: PoolConfig,
    server_name: String,
    ca: PathBuf,
    max_wire_version: protocol::WireVersion,
    gateways: Vec<Gateway>,
    endpoints: Mutex<Endpoints>,
    next_id: AtomicU64,
}

#[derive(Debug, Default)]
struct Endpoints {
    v4: Option<quinn::Endpoint>,
    v6: Option<quinn::Endpoint>,
}

#[derive(Debug)]
struct Gateway {
    address: String,
    state: Mutex<State>,
    /// Held while dialling, so that one call dials and the others wait to
    /// see how it went instead of dialling too.
    dial: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct State {
    /// Connections not yet seen dead; pruned on each look.
    connections: Vec<Conn>,
    /// Failures (connects and losses) since the last successful connect.
    failures: u32,
    /// Down until then.
    down_until: Option<Instant>,
    last_error: Option<String>,
    /// Whether the latest failure was name resolution.
    last_error_resolve: bool,
    connects: u64,
    /// Also lets a call that waited for another's dial see that it failed.
    failed_connects: u64,
    losses: u64,
    /// A background dial is under way.
    background_dial: bool,
    /// Round-robin over full connections for calls that must wait.
    next_wait: usize,
}

impl State {
    fn is_down(&self, now: Instant) -> bool {
        self.down_until.is_some_and(|until| now < until)
    }
}

/// One pooled connection and its stream permits.
#[derive(Debug, Clone)]
struct Conn {
    id: u64,
    connection: quinn::Connection,
    permits: Arc<Semaphore>,
}

/// A permit to open one stream on a pooled connection.
#[derive(Debug)]
struct Lease {
    connection: quinn::Connection,
    gateway: usize,
    _permit: OwnedSemaphorePermit,
}

/// The receiving half of a call's stream; it holds the call's stream
/// permit, so the call counts against its connection's cap until this is
/// dropped. Dereferences to [`FramedRecv`].
#[derive(Debug)]
pub(crate) struct PooledRecv {
    recv: FramedRecv,
    _lease: Lease,
}

impl PooledRecv {
    /// The index of the gateway the call went to.
    pub(crate) fn gateway(&self) -> usize {
        self._lease.gateway
    }
}

impl Deref for PooledRecv {
    type Target = FramedRecv;

    fn deref(&self) -> &FramedRecv {
        &self.recv
    }
}

impl DerefMut for PooledRecv {
    fn deref_mut(&mut self) -> &mut FramedRecv {
        &mut self.recv
    }
}

/// What a call may do at a gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dial {
    /// Dial only if the gateway is up (first pass over the gateways).
    IfUp,
    /// Dial even if it is down (every gateway failed the first pass).
    Always,
}

/// Why a gateway did not give a call a stream.
enum Skip {
    /// It is down and has no live connection.
    Down,
    /// Dialling it failed (now or while this call waited for another call's
    /// dial); the reason is in its state.
    Failed,
    /// A configuration problem: no gateway would do better.
    Fatal(ClientError),
}

enum DialError {
    Unreachable { message: String, resolve: bool },
    Fatal(ClientError),
}

enum Step {
    Wait(Conn),
    Dial { epoch: u64, connects: u64 },
}

impl Pool {
    /// Checks `config` and the CA file; connects nothing yet.
    pub(crate) fn new(config: &ClientConfig) -> Result<Self, ClientError> {
        let pool = config.pool;
        if pool.pool_size == 0 {
            return Err(ClientError::Config("pool_size must be at least 1".into()));
        }
        if pool.max_streams_per_connection == 0 {
            return Err(ClientError::Config(
                "max_streams_per_connection must be at least 1".into(),
            ));
        }
        if pool.dead_after < std::time::Duration::from_millis(300) {
            return Err(ClientError::Config(
                "dead_after must be at least 300 ms".into(),
            ));
        }
        if let Some(empty) = config.gateways().find(|a| a.trim().is_empty()) {
            return Err(ClientError::Config(format!(
                "empty gateway address {empty:?}"
            )));
        }
        // Fail fast on an unusable CA file, before any network.
        transport::tls::client_config(&config.ca)
            .map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(Self {
            config: pool,
            server_name: config.server_name.clone(),
            ca: config.ca.clone(),
            max_wire_version: config.max_wire_version,
            gateways: config
                .gateways()
                .map(|address| Gateway {
                    address: address.to_string(),
                    state: Mutex::new(State::default()),
                    dial: tokio::sync::Mutex::new(()),
                })
                .collect(),
            endpoints: Mutex::new(Endpoints::default()),
            next_id: AtomicU64::new(1),
        })
    }

    /// Makes sure one gateway is reachable (opens its first connection).
    pub(crate) async fn warm_up(self: &Arc<Self>) -> Result<(), ClientError> {
        self.acquire().await.map(drop)
    }

    /// Opens a stream for one call, retrying on another connection while
    /// opening fails (which sends nothing, so it is always safe).
    pub(crate) async fn open(
        self: &Arc<Self>,
        codec: Codec,
    ) -> Result<(FramedSend, PooledRecv), ClientError> {
        // Each failed open removes a dead connection, so this bounds the
        // retries by the connections the pool can hold, plus one.
        let attempts = self.gateways.len().saturating_mul(self.config.pool_size) + 1;
        let mut last: Option<IoError> = None;
        for _ in 0..attempts {
            let lease = self.acquire().await?;
            match transport::open_bi(&lease.connection, codec).await {
                Ok((send, recv)) => {
                    return Ok((
                        send,
                        PooledRecv {
                            recv,
                            _lease: lease,
                        },
                    ));
                }
                Err(e) => {
                    let gateway = &self.gateways[lease.gateway];
                    tracing::debug!(gateway = %gateway.address, error = %e, "cannot open a stream; trying another connection");
                    drop(lease);
                    self.prune(gateway, &mut gateway.lock());
                    last = Some(e);
                }
            }
        }
        Err(last.map_or_else(
            || ClientError::Connect("no connection could open a stream".into()),
            ClientError::from,
        ))
    }

    /// A stream permit on some gateway's connection, dialling and failing
    /// over as the module's rules say.
    async fn acquire(self: &Arc<Self>) -> Result<Lease, ClientError> {
        let mut down = Vec::new();
        for index in 0..self.gateways.len() {
            match self.acquire_at(index, Dial::IfUp).await {
                Ok(lease) => return Ok(lease),
                Err(Skip::Down) => down.push(index),
                Err(Skip::Failed) => {}
                Err(Skip::Fatal(e)) => return Err(e),
            }
        }
        // Nothing up answered: dial the down ones anyway, soonest back first.
        down.sort_by_key(|&index| self.gateways[index].lock().down_until);
        for index in down {
            match self.acquire_at(index, Dial::Always).await {
                Ok(lease) => return Ok(lease),
                Err(Skip::Fatal(e)) => return Err(e),
                Err(Skip::Down | Skip::Failed) => {}
            }
        }
        Err(self.unreachable())
    }

    /// A stream permit at gateway `index`, or why not.
    async fn acquire_at(self: &Arc<Self>, index: usize, dial: Dial) -> Result<Lease, Skip> {
        let gateway = &self.gateways[index];
        let cap = self.config.max_streams_per_connection as usize;
        loop {
            let step = {
                let mut state = gateway.lock();
                self.prune(gateway, &mut state);
                let down = state.is_down(Instant::now());
                // Back from a failure but not yet shown to work.
                let recovering = !down && state.failures > 0;
                let room = state.connections.len() < self.config.pool_size;
                let least_loaded = state
                    .connections
                    .iter()
                    .max_by_key(|c| c.permits.available_permits())
                    .filter(|c| c.permits.available_permits() > 0)
                    .cloned();
                if let Some(conn) = least_loaded {
                    // Grow (or prove a recovering gateway) in the background
                    // while this call uses what is there.
                    let busy = nearly_full(conn.permits.available_permits(), cap);
                    if room && !down && (busy || recovering) {
                        self.dial_in_background(index, &mut state);
                    }
                    match Arc::clone(&conn.permits).try_acquire_owned() {
                        Ok(permit) => return Ok(self.lease(index, &conn, permit)),
                        // Another call took the last permit: look again.
                        Err(_) => continue,
                    }
                }
                let may_dial = room
                    && match dial {
                        Dial::IfUp => !down && !recovering,
                        Dial::Always => true,
                    };
                if may_dial {
                    Step::Dial {
                        epoch: state.failed_connects,
                        connects: state.connects,
                    }
                } else {
                    if room && recovering {
                        self.dial_in_background(index, &mut state);
                    }
                    if state.connections.is_empty() {
                        return Err(Skip::Down);
                    }
                    state.next_wait = state.next_wait.wrapping_add(1);
                    let at = state.next_wait % state.connections.len();
                    Step::Wait(state.connections[at].clone())
                }
            };
            match step {
                Step::Wait(conn) => {
                    // Closed when the connection leaves the pool.
                    if let Ok(permit) = Arc::clone(&conn.permits).acquire_owned().await
                        && conn.connection.close_reason().is_none()
                    {
                        return Ok(self.lease(index, &conn, permit));
                    }
                }
                Step::Dial { epoch, connects } => {
                    let _dialing = gateway.dial.lock().await;
                    {
                        let state = gateway.lock();
                        if state.failed_connects != epoch {
                            // It failed while this call waited for the dial.
                            return Err(Skip::Failed);
                        }
                        if state.connects != connects {
                            // Another call connected meanwhile: use that.
                            continue;
                        }
                    }
                    let connection = match self.dial(index).await {
                        Ok(connection) => connection,
                        Err(DialError::Fatal(e)) => return Err(Skip::Fatal(e)),
                        Err(DialError::Unreachable { message, resolve }) => {
                            self.dial_failed(gateway, &mut gateway.lock(), message, resolve);
                            return Err(Skip::Failed);
                        }
                    };
                    let conn = self.install(gateway, &mut gateway.lock(), connection);
                    match Arc::clone(&conn.permits).try_acquire_owned() {
                        Ok(permit) => return Ok(self.lease(index, &conn, permit)),
                        // A fresh connection has every permit; should some
                        // call have been quicker, look again.
                        Err(_) => continue,
                    }
                }
            }
        }
    }

    fn lease(&self, gateway: usize, conn: &Conn, permit: OwnedSemaphorePermit) -> Lease {
        Lease {
            connection: conn.connection.clone(),
            gateway,
            _permit: permit,
        }
    }

    /// Starts a dial of gateway `index` in the background unless one is
    /// under way (or there is no runtime to run it on).
    fn dial_in_background(self: &Arc<Self>, index: usize, state: &mut State) {
        if state.background_dial {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        state.background_dial = true;
        let flag = BackgroundDial {
            pool: Arc::clone(self),
            index,
        };
        runtime.spawn(async move {
            flag.pool.dial_once(flag.index).await;
            drop(flag);
        });
    }

    /// Adds a fresh connection to `gateway`, which is up again.
    fn install(&self, gateway: &Gateway, state: &mut State, connection: quinn::Connection) -> Conn {
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

    fn dial_failed(&self, gateway: &Gateway, state: &mut State, message: String, resolve: bool) {
        state.failed_connects += 1;
        self.mark_down(gateway, state, message, resolve);
    }

    /// Records a failure: the gateway is down for the backoff.
    fn mark_down(&self, gateway: &Gateway, state: &mut State, message: String, resolve: bool) {
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
    fn prune(&self, gateway: &Gateway, state: &mut State) {
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
    }

    /// Gateway `index` said it is shutting down (a call answered
    /// `shutting down`): no new call goes there while it is down.
    pub(crate) fn shutting_down(&self, index: usize) {
        if let Some(gateway) = self.gateways.get(index) {
            self.retire(gateway, &mut gateway.lock());
        }
    }

    /// Retires every connection of a draining gateway (calls in flight on
    /// them keep their own handles and finish) and marks it down.
    fn retire(&self, gateway: &Gateway, state: &mut State) {
        for conn in state.connections.drain(..) {
            // Calls waiting for a stream there look elsewhere.
            conn.permits.close();
        }
        if !state.is_down(Instant::now()) {
            self.mark_down(gateway, state, "gateway shutting down".into(), false);
        }
    }

    /// How many gateway addresses the pool has.
    pub(crate) fn gateway_count(&self) -> usize {
        self.gateways.len()
    }

    /// The error when no gateway gave a stream: each one's latest failure.
    fn unreachable(&self) -> ClientError {
        let mut resolve_only = true;
        let reasons: Vec<String> = self
            .gateways
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

    pub(crate) fn stats(&self) -> PoolStats {
        let now = Instant::now();
        let cap = self.config.max_streams_per_connection as usize;
        PoolStats {
            gateways: self
                .gateways
                .iter()
                .map(|gateway| {
                    let mut state = gateway.lock();
                    self.prune(gateway, &mut state);
                    GatewayStats {
                        address: gateway.address.clone(),
                        connections: state.connections.len(),
                        streams_in_use: state
                            .connections
                            .iter()
                            .map(|c| {
                                let used = cap.saturating_sub(c.permits.available_permits());
                                u32::try_from(used).unwrap_or(u32::MAX)
                            })
                            .collect(),
                        down: state.is_down(now),
                        connects: state.connects,
                        failed_connects: state.failed_connects,
                        losses: state.losses,
                        last_error: state.last_error.clone(),
                    }
                })
                .collect(),
        }
    }

    /// Closes every connection and waits until the gateways know.
    pub(crate) async fn close(&self) {
        for gateway in &self.gateways {
            let connections = std::mem::take(&mut gateway.lock().connections);
            for conn in connections {
                conn.permits.close();
                conn.connection
                    .close(protocol::codes::close::NORMAL.into(), b"client closed");
            }
        }
        let endpoints: Vec<quinn::Endpoint> = {
            let endpoints = self
                .endpoints
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            endpoints.v4.iter().chain(&endpoints.v6).cloned().collect()
        };
        for endpoint in endpoints {
            endpoint.wait_idle().await;
        }
    }
}

/// Whether a connection with `available` of `cap` streams free carries
/// 3/4 of its cap or more: then the pool grows in the background.
fn nearly_full(available: usize, cap: usize) -> bool {
    available.saturating_mul(4) <= cap
}

/// Whether a connection was closed by its gateway's graceful shutdown.
fn is_shutdown(reason: &quinn::ConnectionError) -> bool {
    matches!(reason, quinn::ConnectionError::ApplicationClosed(close)
        if close.error_code == quinn::VarInt::from_u32(protocol::codes::close::SHUTDOWN))
}

impl Gateway {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Clears the gateway's background-dial flag when the dial ends, however it
/// ends (also when its runtime drops the task).
struct BackgroundDial {
    pool: Arc<Pool>,
    index: usize,
}

impl Drop for BackgroundDial {
    fn drop(&mut self) {
        self.pool.gateways[self.index].lock().background_dial = false;
    }
}

#[cfg(test)]
mod tests;
