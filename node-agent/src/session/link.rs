//! One gateway's session: dial, register, then report stats, load and swap
//! results and serve the gateway's calls and swap requests, reconnecting
//! with its own backoff when the connection goes, until the agent leaves
//! the gateway (drain, then close).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use protocol::codes::close;
use protocol::{Codec, MemberList, Message, NodeLoad, Register, Registered, WireVersion};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use transport::{EndpointConfig, FramedRecv, FramedSend};

use super::Agent;
use super::members::Target;
use super::quiet::Quiet;
use crate::AgentError;
use crate::backoff::Backoff;
use crate::config::{ConfigError, split_host_port};
use crate::leases::SessionKeys;
use crate::services::{Services, Tally};
use crate::slots::Reports;

/// Longest wait for the QUIC handshake
/// (quinn does not see ICMP errors, so an absent gateway costs this long).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the answer to `Register`.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Failed attempts in a row logged at warn; later ones at debug.
const LOUD_RETRIES: u32 = 3;
/// While draining, how long after the `Drain` frame went out the agent
/// still waits for calls the gateway dispatched before it read the frame.
const DRAIN_SETTLE: Duration = Duration::from_millis(200);
/// Shortest time between two load reports on one session: changes of the
/// calls in flight meanwhile go out together in the next one.
pub(crate) const LOAD_COALESCE: Duration = Duration::from_millis(25);

/// Lease frames (`Held`, `LeaseEnded`) queued for the control stream at
/// most; a lease's task waits past it (the stream is slow, not lossy).
const LEASE_FRAMES: usize = 256;

/// Why one connection attempt ended without a session.
enum Attempt {
    /// Worth retrying (network, gateway down, protocol hiccup).
    Retry(String),
    /// Not worth retrying: a configuration error or a refusal.
    Fatal(AgentError),
}

impl From<transport::IoError> for Attempt {
    fn from(e: transport::IoError) -> Self {
        Self::Retry(e.to_string())
    }
}

impl From<quinn::ConnectionError> for Attempt {
    fn from(e: quinn::ConnectionError) -> Self {
        Self::Retry(e.to_string())
    }
}

/// A registered connection.
struct Session {
    connection: quinn::Connection,
    send: FramedSend,
    recv: FramedRecv,
    registered: Registered,
    /// This session's swap reports (every slot's).
    reports: Reports,
    id: u64,
}

/// One gateway's session, as its task runs it.
pub(super) struct Link {
    pub(super) agent: Arc<Agent>,
    pub(super) target: Target,
    /// Where member lists from this gateway go, with its target.
    pub(super) lists: mpsc::Sender<(Target, MemberList)>,
    /// Whether it is registered now.
    pub(super) up: Arc<AtomicBool>,
    /// Failed attempts in a row.
    pub(super) failures: Arc<AtomicU32>,
    /// The address it reached, once registered.
    pub(super) peer: Arc<Mutex<Option<SocketAddr>>>,
}

impl Link {
    /// Keeps a session with the gateway until `leave` turns true: then
    /// drains it (`Drain`, the calls in flight finish) and closes it.
    ///
    /// # Errors
    /// A configuration error or the gateway's refusal (not retried).
    pub(super) async fn run(self, mut leave: watch::Receiver<bool>) -> Result<(), AgentError> {
        let reconnect = self.agent.config.reconnect;
        let mut backoff = Backoff::new(
            Duration::from_millis(reconnect.initial_ms),
            Duration::from_millis(reconnect.max_ms),
            StdRng::from_os_rng(),
        );
        let addr = self.target.addr.clone();
        loop {
            if *leave.borrow() {
                return Ok(());
            }
            let attempt = tokio::select! {
                biased;
                _ = leave.wait_for(|l| *l) => return Ok(()),
                attempt = self.connect() => attempt,
            };
            match attempt {
                Ok(session) => {
                    backoff.reset();
                    self.failures.store(0, Ordering::Release);
                    self.up.store(true, Ordering::Release);
                    tracing::info!(
                        gateway = %addr,
                        node_key = session.registered.node_key,
                        gateway_version = %session.registered.gateway_version,
                        "registered with gateway"
                    );
                    let reason = self.serve(session, leave.clone()).await;
                    self.up.store(false, Ordering::Release);
                    if *leave.borrow() {
                        tracing::info!(gateway = %addr, "left the gateway: {reason}");
                        return Ok(());
                    }
                    tracing::info!(gateway = %addr, "lost the gateway: {reason}; reconnecting");
                }
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(reason)) => {
                    let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
                    if failures <= LOUD_RETRIES {
                        tracing::warn!(gateway = %addr, attempt = failures, "cannot register with gateway: {reason}");
                    } else {
                        if failures == LOUD_RETRIES + 1 {
                            tracing::info!(
                                gateway = %addr,
                                "gateway still unreachable; retrying quietly (debug logs show each attempt)"
                            );
                        }
                        tracing::debug!(gateway = %addr, attempt = failures, "cannot register with gateway: {reason}");
                    }
                }
            }
            let delay = backoff.next_delay();
            tracing::debug!(gateway = %addr, delay_ms = delay.as_millis() as u64, "reconnecting after a delay");
            tokio::select! {
                biased;
                _ = leave.wait_for(|l| *l) => return Ok(()),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Resolves the gateway (again: its address may change between attempts).
    async fn resolve(&self) -> Result<SocketAddr, Attempt> {
        let gateway = &self.target.addr;
        let (host, port) =
            split_host_port(gateway).map_err(|e| Attempt::Fatal(ConfigError::Invalid(e).into()))?;
        let mut addrs = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| Attempt::Retry(format!("cannot resolve {gateway}: {e}")))?;
        addrs
            .next()
            .ok_or_else(|| Attempt::Retry(format!("{gateway} resolves to no address")))
    }

    /// The agent's client endpoint for `peer`'s address family.
    fn endpoint(&self, peer: SocketAddr) -> Result<quinn::Endpoint, Attempt> {
        let mut slot = self
            .agent
            .endpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((v6, endpoint)) = &*slot
            && *v6 == peer.is_ipv6()
        {
            return Ok(endpoint.clone());
        }
        let config = &self.agent.config;
        // The gateway opens one stream per call: cap them near the slots.
        let limits = EndpointConfig {
            max_concurrent_bidi_streams: config.max_call_streams(),
            max_wire_version: config.max_wire_version,
            ..EndpointConfig::default()
        };
        let identity = match (&config.client_cert, &config.client_key) {
            (Some(cert), Some(key)) => Some(transport::ClientIdentity { cert, key }),
            _ => None,
        };
        let endpoint = transport::client_endpoint_with(&config.ca, identity, peer, &limits)
            .map_err(|e| Attempt::Fatal(e.into()))?;
        if let Some((_, old)) = slot.replace((peer.is_ipv6(), endpoint.clone())) {
            old.close(close::NORMAL.into(), b"address family changed");
        }
        Ok(endpoint)
    }

    /// Dials the gateway and registers.
    async fn connect(&self) -> Result<Session, Attempt> {
        let peer = self.resolve().await?;
        let endpoint = self.endpoint(peer)?;
        let config = &self.agent.config;
        let connecting = endpoint
            .connect(peer, &config.server_name)
            .map_err(|e| match e {
                quinn::ConnectError::InvalidServerName(name) => Attempt::Fatal(
                    ConfigError::Invalid(format!("server_name {name:?} is not a valid name"))
                        .into(),
                ),
                other => Attempt::Retry(format!("cannot dial {peer}: {other}")),
            })?;
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| {
                Attempt::Retry(format!("no answer from {peer} within {CONNECT_TIMEOUT:?}"))
            })??;
        let (mut send, mut recv) = transport::open_bi(&connection, Codec::default()).await?;
        // Reports from now on: the registration tells the slots as they are.
        let reports = self.agent.slots.reports();
        let register = Register {
            token: config.token.clone(),
            node: self.agent.spec(),
            follows_members: true,
            direct: self.agent.direct.clone(),
            holds_on_control: self.agent.direct.is_some(),
        };
        send.send(&Message::Register(register)).await?;
        let reply = tokio::time::timeout(REGISTER_TIMEOUT, recv.expect("the registration reply"))
            .await
            .map_err(|_| {
                Attempt::Retry(format!("no registration reply within {REGISTER_TIMEOUT:?}"))
            })??;
        match reply {
            Message::Registered(registered) => {
                *self.peer.lock().unwrap_or_else(PoisonError::into_inner) = Some(peer);
                Ok(Session {
                    connection,
                    send,
                    recv,
                    registered,
                    reports,
                    id: self.agent.sessions.fetch_add(1, Ordering::AcqRel) + 1,
                })
            }
            Message::Refused(reason) => {
                connection.close(close::NORMAL.into(), b"registration refused");
                Err(Attempt::Fatal(AgentError::Refused(reason)))
            }
            other => Err(Attempt::Retry(format!(
                "unexpected {:?} frame in reply to the registration",
                other.kind()
            ))),
        }
    }

    /// Serves a registered connection until it ends; returns why. Stats,
    /// load reports (once the gateway sent a member list: it knows the
    /// frame) and swap reports go out on the control stream; swap requests
    /// from it run in the background (a load may take minutes); member
    /// lists from it go to the agent. Once `leave` turns true it sends
    /// `Drain` and returns when its calls in flight have ended (and
    /// [`DRAIN_SETTLE`] passed since the frame).
    async fn serve(&self, session: Session, leave: watch::Receiver<bool>) -> String {
        let Session {
            connection,
            mut send,
            mut recv,
            mut reports,
            id: session_id,
            registered,
        } = session;
        let agent = &*self.agent;
        // The lease keys this gateway sends, dropped when the session ends.
        let lease_keys = SessionKeys::new(&agent.dispatcher.leases, session_id);
        let interval = Duration::from_millis(u64::from(agent.config.stats_interval_ms));
        let v2 = transport::wire_version(&connection) >= WireVersion::V2;
        // Load reports go only to a gateway that tells its members (one
        // that knows the frame); the prefix blocks' first report is the
        // whole set.
        let follows_members = AtomicBool::new(false);
        let mut prefix = agent.dispatcher.prefix.reporter();
        let mut load_changes = agent.dispatcher.services.load_changes();
        // This session's calls and lease holds: its load reports tell the
        // gateway the others' apart.
        let tally = agent.dispatcher.services.tally();
        // Frames of this session's leases held on the control stream
        // (`Held`, `LeaseEnded`), written by the stats loop.
        let (lease_out, mut lease_frames) = tokio::sync::mpsc::channel(LEASE_FRAMES);
        let mut drain_told = leave.clone();
        let stats = async {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Samples with nothing new wait for the heartbeat, with a
            // gateway that follows it; an older one gets every sample.
            let heartbeat = if registered.takes_heartbeat {
                agent.config.stats_heartbeat()
            } else {
                interval
            };
            let mut quiet = Quiet::new(interval, heartbeat, agent.config.stats_change_pct);
            let mut told = false;
            // When the next load report is due, once the calls changed.
            let mut load_due: Option<tokio::time::Instant> = None;
            let mut last_load = tokio::time::Instant::now();
            loop {
                let follows = follows_members.load(Ordering::Acquire);
                let message = tokio::select! {
                    Ok(()) = drain_told.changed(), if !told => {
                        if !*drain_told.borrow_and_update() {
                            continue;
                        }
                        told = true;
                        // Drain came with wire v2: a v1 gateway would not
                        // know the frame, so there the agent only stops
                        // taking calls and closes when they are done.
                        if !v2 {
                            continue;
                        }
                        Message::Drain
                    }
                    _ = tick.tick() => {
                        let sample = agent.sample().await;
                        if !quiet.due(&sample, std::time::Instant::now()) {
                            continue;
                        }
                        Message::Stats(sample)
                    }
                    Some(frame) = lease_frames.recv() => frame,
                    report = reports.next(session_id) => Message::Swapped(report),
                    Ok(()) = load_changes.changed(), if follows && load_due.is_none() => {
                        load_due = Some((last_load + LOAD_COALESCE).max(tokio::time::Instant::now()));
                        continue;
                    }
                    () = sleep_until_some(load_due), if load_due.is_some() => {
                        load_due = None;
                        last_load = tokio::time::Instant::now();
                        load_changes.borrow_and_update();
                        let mut load = load_report(&agent.dispatcher.services, &tally);
                        prefix.fill(&mut load);
                        Message::Load(load)
                    }
                    () = prefix.changed(), if follows => {
                        let mut load = load_report(&agent.dispatcher.services, &tally);
                        if !prefix.fill(&mut load) {
                            continue;
                        }
                        Message::Load(load)
                    }
                };
                if let Err(e) = send.send(&message).await {
                    return format!("sending {:?} failed: {e}", message.kind());
                }
            }
        };
        let control = async {
            loop {
                match recv.recv().await {
                    Ok(Some(Message::Swap(request))) => {
                        agent.slots.request(request, session_id);
                    }
                    Ok(Some(Message::Members(list))) => {
                        if let Err(e) = list.validate() {
                            return format!("bad member list: {e}");
                        }
                        follows_members.store(true, Ordering::Release);
                        if self.lists.send((self.target.clone(), list)).await.is_err() {
                            return "the agent stopped".to_string();
                        }
                    }
                    Ok(Some(Message::LeaseKeys(keys))) => {
                        if let Err(e) = lease_keys.set(&keys) {
                            return format!("bad lease keys: {e}");
                        }
                    }
                    Ok(Some(Message::Hold(hold))) => {
                        let leases = &agent.dispatcher.leases;
                        let services = &agent.dispatcher.services;
                        leases
                            .hold_on_control(services, &tally, &lease_out, hold)
                            .await;
                    }
                    Ok(Some(Message::DropLease(drop))) => {
                        if let Err(e) = drop.validate() {
                            return format!("bad lease drop: {e}");
                        }
                        agent.dispatcher.leases.drop_lease(&tally, &drop);
                    }
                    Ok(Some(message)) => {
                        tracing::debug!(kind = ?message.kind(), "ignoring a control message");
                    }
                    Ok(None) => return "the gateway ended the control stream".to_string(),
                    Err(e) => return format!("control stream: {e}"),
                }
            }
        };
        // Every call stream speaks the version the connection negotiated.
        let codec = transport::codec_for(&connection, Codec::default());
        let mut draining = leave.clone();
        let calls = async {
            // Dropping the set (when the session ends) aborts the calls.
            let mut tasks = JoinSet::new();
            // When the drain began: then the calls end, and none come.
            let mut drain_since: Option<tokio::time::Instant> = None;
            loop {
                if let Some(since) = drain_since
                    && tasks.is_empty()
                    && since.elapsed() >= DRAIN_SETTLE
                {
                    return "drained: no call in flight".to_string();
                }
                let settle = drain_since.map(|since| since + DRAIN_SETTLE);
                tokio::select! {
                    Ok(()) = draining.changed(), if drain_since.is_none() => {
                        if *draining.borrow_and_update() {
                            drain_since = Some(tokio::time::Instant::now());
                        }
                    }
                    () = sleep_until_some(settle), if tasks.is_empty() => {}
                    accepted = connection.accept_bi() => match accepted {
                        Ok((send, recv)) => {
                            let tally = tally.clone();
                            tasks.spawn(agent.dispatcher.clone().handle(tally, codec, send, recv));
                        }
                        Err(e) => return format!("connection: {e}"),
                    },
                    Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                        if let Err(e) = done
                            && e.is_panic()
                        {
                            tracing::error!("a call task panicked: {e}");
                        }
                    }
                }
            }
        };
        let reason = tokio::select! {
            reason = stats => reason,
            reason = control => reason,
            reason = calls => reason,
        };
        if *leave.borrow() {
            connection.close(close::NORMAL.into(), b"agent shutting down");
        } else {
            connection.close(close::NORMAL.into(), b"agent reconnecting");
        }
        reason
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A load report's counts: every gateway's calls and, apart, the other
/// sessions' than `tally`'s.
fn load_report(services: &Services, tally: &Tally) -> NodeLoad {
    NodeLoad {
        in_flight: services.in_flight(),
        jobs_in_flight: Some(services.jobs_in_flight()),
        others: Some(services.others(tally)),
        jobs_others: Some(services.jobs_others(tally)),
        ..NodeLoad::default()
    }
}
