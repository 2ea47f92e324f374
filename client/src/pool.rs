//! The connection pool behind [`Client`]: QUIC connections to one or more
//! gateway addresses, shared by every call (one stream per call).
//!
//! The rules:
//!
//! - **Order.** Gateways are tried in the configured order
//!   ([`ClientConfig::gateway`], then [`ClientConfig::fallback_gateways`]);
//!   a call goes to the first gateway that has a usable connection or can
//!   get one. A cluster client ([`ClientConfig::cluster`]) starts each call
//!   one gateway further (round-robin), so calls spread over the members,
//!   and its gateways are replaced as the member list changes
//!   (`pool/members.rs`); a gateway a call just failed on is tried last.
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
//!   ([`ClientError::GatewayLost`], not retry-safe): it is never sent
//!   twice. Which failures send a call to another gateway is `call/attempt.rs`'s
//!   business.

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Instant;

use protocol::Codec;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use transport::{EndpointConfig, FramedRecv, FramedSend, IoError};

use crate::{ClientConfig, ClientError};

mod config;
mod dial;
mod health;
mod members;

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
    /// The gateways calls go to, in the order they are tried; replaced as
    /// a whole when a cluster's member list changes.
    gateways: RwLock<Arc<[Arc<Gateway>]>>,
    /// Whether calls spread over the gateways (round-robin start) instead
    /// of going to the first one up.
    spread: bool,
    /// Where the next call's round-robin starts.
    next_start: AtomicUsize,
    /// Woken when a connection is lost, so the member list is asked again.
    pub(crate) lost: Arc<tokio::sync::Notify>,
    endpoints: Mutex<Endpoints>,
    next_id: AtomicU64,
}

#[derive(Debug, Default)]
struct Endpoints {
    v4: Option<quinn::Endpoint>,
    v6: Option<quinn::Endpoint>,
}

#[derive(Debug)]
pub(crate) struct Gateway {
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
    gateway: Arc<Gateway>,
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
    /// The gateway the call went to.
    pub(crate) fn gateway(&self) -> &Arc<Gateway> {
        &self._lease.gateway
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
            gateways: RwLock::new(config.gateways().map(Gateway::new).collect()),
            spread: config.cluster,
            next_start: AtomicUsize::new(0),
            lost: Arc::new(tokio::sync::Notify::new()),
            endpoints: Mutex::new(Endpoints::default()),
            next_id: AtomicU64::new(1),
        })
    }

    /// Makes sure one gateway is reachable (opens its first connection).
    pub(crate) async fn warm_up(self: &Arc<Self>) -> Result<(), ClientError> {
        self.acquire(None).await.map(drop)
    }

    /// The gateways now, in the order they are tried.
    pub(crate) fn gateways(&self) -> Arc<[Arc<Gateway>]> {
        Arc::clone(&self.gateways.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Opens a stream for one call, retrying on another connection while
    /// opening fails (which sends nothing, so it is always safe). `avoid`,
    /// a gateway that just failed the call, is tried last.
    pub(crate) async fn open(
        self: &Arc<Self>,
        codec: Codec,
        avoid: Option<&Arc<Gateway>>,
    ) -> Result<(FramedSend, PooledRecv), ClientError> {
        // Each failed open removes a dead connection, so this bounds the
        // retries by the connections the pool can hold, plus one.
        let attempts = self.gateway_count().saturating_mul(self.config.pool_size) + 1;
        let mut last: Option<IoError> = None;
        for _ in 0..attempts {
            let lease = self.acquire(avoid).await?;
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
                    let gateway = Arc::clone(&lease.gateway);
                    tracing::debug!(gateway = %gateway.address, error = %e, "cannot open a stream; trying another connection");
                    drop(lease);
                    self.prune(&gateway, &mut gateway.lock());
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
    async fn acquire(self: &Arc<Self>, avoid: Option<&Arc<Gateway>>) -> Result<Lease, ClientError> {
        let order = self.order(avoid);
        let mut down = Vec::new();
        for gateway in &order {
            match self.acquire_at(gateway, Dial::IfUp).await {
                Ok(lease) => return Ok(lease),
                Err(Skip::Down) => down.push(Arc::clone(gateway)),
                Err(Skip::Failed) => {}
                Err(Skip::Fatal(e)) => return Err(e),
            }
        }
        // Nothing up answered: dial the down ones anyway, soonest back first.
        down.sort_by_key(|gateway| gateway.lock().down_until);
        for gateway in &down {
            match self.acquire_at(gateway, Dial::Always).await {
                Ok(lease) => return Ok(lease),
                Err(Skip::Fatal(e)) => return Err(e),
                Err(Skip::Down | Skip::Failed) => {}
            }
        }
        Err(self.unreachable())
    }

    /// The order a call tries the gateways in: as configured, or for a
    /// cluster rotated by one per call (round-robin); `avoid` last.
    fn order(&self, avoid: Option<&Arc<Gateway>>) -> Vec<Arc<Gateway>> {
        let gateways = self.gateways();
        let mut order: Vec<Arc<Gateway>> = gateways.iter().cloned().collect();
        if self.spread && !order.is_empty() {
            let start = self.next_start.fetch_add(1, Ordering::Relaxed) % order.len();
            order.rotate_left(start);
        }
        if let Some(avoid) = avoid
            && let Some(at) = order.iter().position(|g| Arc::ptr_eq(g, avoid))
        {
            let last = order.remove(at);
            order.push(last);
        }
        order
    }

    /// A stream permit at `gateway`, or why not.
    async fn acquire_at(
        self: &Arc<Self>,
        gateway: &Arc<Gateway>,
        dial: Dial,
    ) -> Result<Lease, Skip> {
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
                        self.dial_in_background(gateway, &mut state);
                    }
                    match Arc::clone(&conn.permits).try_acquire_owned() {
                        Ok(permit) => return Ok(self.lease(gateway, &conn, permit)),
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
                        self.dial_in_background(gateway, &mut state);
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
                        return Ok(self.lease(gateway, &conn, permit));
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
                    let connection = match self.dial(gateway).await {
                        Ok(connection) => connection,
                        Err(DialError::Fatal(e)) => return Err(Skip::Fatal(e)),
                        Err(DialError::Unreachable { message, resolve }) => {
                            self.dial_failed(gateway, &mut gateway.lock(), message, resolve);
                            return Err(Skip::Failed);
                        }
                    };
                    let conn = self.install(gateway, &mut gateway.lock(), connection);
                    match Arc::clone(&conn.permits).try_acquire_owned() {
                        Ok(permit) => return Ok(self.lease(gateway, &conn, permit)),
                        // A fresh connection has every permit; should some
                        // call have been quicker, look again.
                        Err(_) => continue,
                    }
                }
            }
        }
    }

    fn lease(&self, gateway: &Arc<Gateway>, conn: &Conn, permit: OwnedSemaphorePermit) -> Lease {
        Lease {
            connection: conn.connection.clone(),
            gateway: Arc::clone(gateway),
            _permit: permit,
        }
    }

    /// Starts a dial of `gateway` in the background unless one is under
    /// way (or there is no runtime to run it on).
    fn dial_in_background(self: &Arc<Self>, gateway: &Arc<Gateway>, state: &mut State) {
        if state.background_dial {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        state.background_dial = true;
        let flag = BackgroundDial {
            pool: Arc::clone(self),
            gateway: Arc::clone(gateway),
        };
        runtime.spawn(async move {
            flag.pool.dial_once(&flag.gateway).await;
            drop(flag);
        });
    }

    /// How many gateway addresses the pool has.
    pub(crate) fn gateway_count(&self) -> usize {
        self.gateways
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let now = Instant::now();
        let cap = self.config.max_streams_per_connection as usize;
        PoolStats {
            gateways: self
                .gateways()
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
        for gateway in self.gateways().iter() {
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
    fn new(address: &str) -> Arc<Self> {
        Arc::new(Self {
            address: address.to_string(),
            state: Mutex::new(State::default()),
            dial: tokio::sync::Mutex::new(()),
        })
    }

    /// The gateway's address, `host:port`.
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Clears the gateway's background-dial flag when the dial ends, however it
/// ends (also when its runtime drops the task).
struct BackgroundDial {
    pool: Arc<Pool>,
    gateway: Arc<Gateway>,
}

impl Drop for BackgroundDial {
    fn drop(&mut self) {
        self.gateway.lock().background_dial = false;
    }
}

#[cfg(test)]
mod tests;
