//! The agent's life: load the slots' initial services, dial the gateway,
//! register, send stats and swap reports, serve calls and swap requests, and
//! reconnect with backoff when the connection goes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use protocol::codes::close;
use protocol::{Codec, Message, NodeSpec, NodeStats, Register, Registered};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::task::JoinSet;
use transport::{EndpointConfig, FramedRecv, FramedSend};

use crate::AgentError;
use crate::backoff::Backoff;
use crate::config::{AgentConfig, ConfigError, split_host_port};
use crate::dispatch::Dispatcher;
use crate::health::HealthChecks;
use crate::model_load::ModelLoads;
use crate::services::Services;
use crate::slots::{Reports, Slots};
use crate::stats::StatsCollector;

/// Longest wait for the QUIC handshake
/// (quinn does not see ICMP errors, so an absent gateway costs this long).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the answer to `Register`.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the connection close to reach the gateway at shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Failed attempts in a row logged at warn; later ones at debug.
const LOUD_RETRIES: u32 = 3;
/// While draining, how long after the `Drain` frame went out the agent
/// still waits for calls the gateway dispatched before it read the frame.
const DRAIN_SETTLE: Duration = Duration::from_millis(200);

/// Runs the agent until `shutdown` completes: loads each slot's `loaded`
/// service (waiting for it to be ready; a failure is logged and leaves the
/// slot empty), then connects, registers, reports stats and serves calls
/// and swaps, reconnecting forever with backoff when the gateway is
/// unreachable or the connection drops. At shutdown it drains: it sends
/// [`protocol::Message::Drain`] (the gateway sends it no new call), lets
/// its calls in flight finish (at most `shutdown_grace_s`), then closes the
/// connection with code 0, reason `agent shutting down`, and stops every
/// slot's process (stop command, SIGTERM, SIGKILL after 5 s).
///
/// # Errors
/// [`AgentError::Config`] for an invalid configuration, [`AgentError::Tls`]
/// for an unusable CA file or UDP socket, [`AgentError::Services`] when the
/// services cannot be set up, and [`AgentError::Refused`] when the gateway
/// refuses the registration (a wrong token is not retried).
pub async fn run(
    mut config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    config.read_token_file()?;
    config.validate()?;
    // Fail fast on an unusable CA file, before any network.
    transport::tls::client_config(&config.ca)?;
    let services =
        Services::with_slots(&config.services, &config.slots).map_err(AgentError::Services)?;
    let (slots, mut reports) =
        Slots::new(&config, services.clone()).map_err(AgentError::Services)?;
    // Active health checks probe until `run` returns (the set drops).
    let health = HealthChecks::new(&config.services);
    let http_client = crate::services::http_client().map_err(AgentError::Services)?;
    let _probes = health.spawn(&http_client);
    // Model-server load scrapes, every stats interval, likewise.
    let model_load = ModelLoads::new(
        &config.services,
        Duration::from_millis(u64::from(config.stats_interval_ms)),
    );
    let _scrapes = model_load.spawn(&http_client);
    let stats = tokio::task::spawn_blocking(StatsCollector::new)
        .await
        .unwrap_or_default();
    let mut agent = Agent {
        dispatcher: Dispatcher {
            services,
            max_payload: config.max_payload_bytes,
            tracer: otel::Tracer::start(&config.tracing, "switchyard-agent")?,
            prefix: crate::prefix_blocks::PrefixBlocks::default(),
        },
        slots,
        stats: Arc::new(Mutex::new(stats)),
        health,
        model_load,
        endpoint: None,
        config,
    };
    let mut backoff = Backoff::new(agent.config.reconnect, StdRng::from_os_rng());
    tokio::pin!(shutdown);
    // Failed attempts in a row.
    let mut failures = 0u32;
    // Numbers the sessions, so that a swap asked for on an earlier one is
    // not reported as this one's.
    let mut session_id = 0u64;
    let result = 'run: {
        tokio::select! {
            biased;
            () = &mut shutdown => break 'run Ok(()),
            () = agent.slots.load_initial() => {}
        }
        tracing::info!(gateway = %agent.config.gateway, node = %agent.config.node_id, "connecting to gateway");
        loop {
            session_id += 1;
            // The registration tells the slots' state as it is now.
            reports.clear();
            let attempt = tokio::select! {
                biased;
                () = &mut shutdown => break Ok(()),
                attempt = agent.connect() => attempt,
            };
            match attempt {
                Ok(session) => {
                    backoff.reset();
                    failures = 0;
                    tracing::info!(
                        gateway = %agent.config.gateway,
                        node_key = session.registered.node_key,
                        gateway_version = %session.registered.gateway_version,
                        "registered with gateway"
                    );
                    let connection = session.connection.clone();
                    let (drain, draining) = tokio::sync::watch::channel(false);
                    let grace = Duration::from_secs(u64::from(agent.config.shutdown_grace_s));
                    let serving = agent.serve(session, &mut reports, session_id, draining);
                    tokio::pin!(serving);
                    let reason = tokio::select! {
                        biased;
                        () = &mut shutdown => {
                            tracing::info!(grace_s = grace.as_secs(), "draining: no new calls; finishing those in flight");
                            let _ = drain.send(true);
                            match tokio::time::timeout(grace, &mut serving).await {
                                Ok(reason) => tracing::info!("drained: {reason}"),
                                Err(_) => tracing::warn!("shutdown grace passed with calls in flight; closing"),
                            }
                            connection.close(close::NORMAL.into(), b"agent shutting down");
                            break Ok(());
                        }
                        reason = &mut serving => reason,
                    };
                    tracing::info!("lost the gateway: {reason}; reconnecting");
                }
                Err(Attempt::Fatal(e)) => break Err(e),
                Err(Attempt::Retry(reason)) => {
                    failures += 1;
                    if failures <= LOUD_RETRIES {
                        tracing::warn!(
                            attempt = failures,
                            "cannot register with gateway: {reason}"
                        );
                    } else {
                        if failures == LOUD_RETRIES + 1 {
                            tracing::info!(
                                "gateway still unreachable; retrying quietly (debug logs show each attempt)"
                            );
                        }
                        tracing::debug!(
                            attempt = failures,
                            "cannot register with gateway: {reason}"
                        );
                    }
                }
            }
            let delay = backoff.next_delay();
            tracing::debug!(
                delay_ms = delay.as_millis() as u64,
                "reconnecting after a delay"
            );
            tokio::select! {
                biased;
                () = &mut shutdown => break Ok(()),
                () = tokio::time::sleep(delay) => {}
            }
        }
    };
    let endpoint = agent.endpoint.take();
    let close = async {
        if let Some((_, endpoint)) = endpoint {
            endpoint.close(close::NORMAL.into(), b"agent shutting down");
            if tokio::time::timeout(CLOSE_TIMEOUT, endpoint.wait_idle())
                .await
                .is_err()
            {
                tracing::debug!("connection close did not finish in time");
            }
        }
    };
    // The slots' servers stop while the close reaches the gateway.
    tokio::join!(close, agent.slots.shutdown());
    if result.is_ok() {
        tracing::info!("agent shut down");
    }
    result
}

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
}

struct Agent {
    config: AgentConfig,
    dispatcher: Dispatcher,
    slots: Slots,
    stats: Arc<Mutex<StatsCollector>>,
    /// Active health checks' verdicts, sent in every stats report.
    health: HealthChecks,
    /// Model servers' latest load, sent in every stats report.
    model_load: ModelLoads,
    /// The client endpoint, made for the address family it was first
    /// needed for (IPv6 or not).
    endpoint: Option<(bool, quinn::Endpoint)>,
}

impl Agent {
    fn spec(&self) -> NodeSpec {
        let c = &self.config;
        NodeSpec {
            id: c.node_id.clone(),
            region: c.region.clone(),
            labels: c
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            cost_per_hour: c.cost_per_hour,
            services: self.dispatcher.services.specs(),
            slots: self.dispatcher.services.slot_specs(),
            stats_interval_ms: c.stats_interval_ms,
            agent_version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    /// Resolves the gateway (again: its address may change between attempts).
    async fn resolve(&self) -> Result<SocketAddr, Attempt> {
        let gateway = &self.config.gateway;
        let (host, port) =
            split_host_port(gateway).map_err(|e| Attempt::Fatal(ConfigError::Invalid(e).into()))?;
        let mut addrs = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| Attempt::Retry(format!("cannot resolve {gateway}: {e}")))?;
        addrs
            .next()
            .ok_or_else(|| Attempt::Retry(format!("{gateway} resolves to no address")))
    }

    fn endpoint(&mut self, peer: SocketAddr) -> Result<quinn::Endpoint, Attempt> {
        if let Some((v6, endpoint)) = &self.endpoint
            && *v6 == peer.is_ipv6()
        {
            return Ok(endpoint.clone());
        }
        // The gateway opens one stream per call: cap them near the slots.
        let limits = EndpointConfig {
            max_concurrent_bidi_streams: self.config.max_call_streams(),
            max_wire_version: self.config.max_wire_version,
            ..EndpointConfig::default()
        };
        let identity = match (&self.config.client_cert, &self.config.client_key) {
            (Some(cert), Some(key)) => Some(transport::ClientIdentity { cert, key }),
            _ => None,
        };
        let endpoint = transport::client_endpoint_with(&self.config.ca, identity, peer, &limits)
            .map_err(|e| Attempt::Fatal(e.into()))?;
        if let Some((_, old)) = self.endpoint.replace((peer.is_ipv6(), endpoint.clone())) {
            old.close(close::NORMAL.into(), b"address family changed");
        }
        Ok(endpoint)
    }

    /// Dials the gateway and registers.
    async fn connect(&mut self) -> Result<Session, Attempt> {
        let peer = self.resolve().await?;
        let endpoint = self.endpoint(peer)?;
        let connecting = endpoint
            .connect(peer, &self.config.server_name)
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
        let register = Register {
            token: self.config.token.clone(),
            node: self.spec(),
            follows_members: false,
        };
        send.send(&Message::Register(register)).await?;
        let reply = tokio::time::timeout(REGISTER_TIMEOUT, recv.expect("the registration reply"))
            .await
            .map_err(|_| {
                Attempt::Retry(format!("no registration reply within {REGISTER_TIMEOUT:?}"))
            })??;
        match reply {
            Message::Registered(registered) => Ok(Session {
                connection,
                send,
                recv,
                registered,
            }),
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

    /// Serves a registered connection until it ends; returns why. Swap
    /// reports go out on the control stream between stats; swap requests
    /// from it run in the background (a load may take minutes). Once
    /// `draining` turns true it sends `Drain` and returns when its calls in
    /// flight have ended (and [`DRAIN_SETTLE`] passed since the frame).
    async fn serve(
        &self,
        session: Session,
        reports: &mut Reports,
        session_id: u64,
        draining: tokio::sync::watch::Receiver<bool>,
    ) -> String {
        let Session {
            connection,
            mut send,
            mut recv,
            ..
        } = session;
        let interval = Duration::from_millis(u64::from(self.config.stats_interval_ms));
        // Load reports go only to a gateway that tells its members (one
        // that knows the frame); the prefix blocks' first report is the
        // whole set.
        let follows_members = std::sync::atomic::AtomicBool::new(false);
        let mut prefix = self.dispatcher.prefix.reporter();
        let mut drain_told = draining.clone();
        let shutting_down = draining.clone();
        let stats = async {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut told = false;
            loop {
                let message = tokio::select! {
                    Ok(()) = drain_told.changed(), if !told => {
                        if !*drain_told.borrow_and_update() {
                            continue;
                        }
                        told = true;
                        // Drain came with wire v2: a v1 gateway would not
                        // know the frame, so there the agent only stops
                        // taking calls and closes when they are done.
                        if transport::wire_version(&connection) < protocol::WireVersion::V2 {
                            continue;
                        }
                        Message::Drain
                    }
                    _ = tick.tick() => Message::Stats(self.sample().await),
                    report = reports.next(session_id) => Message::Swapped(report),
                    () = prefix.changed(), if follows_members.load(std::sync::atomic::Ordering::Relaxed) => {
                        let mut load = protocol::NodeLoad {
                            in_flight: self.dispatcher.services.in_flight(),
                            ..protocol::NodeLoad::default()
                        };
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
                        self.slots.request(request, session_id);
                    }
                    Ok(Some(Message::Members(_))) => {
                        follows_members.store(true, std::sync::atomic::Ordering::Relaxed);
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
        let mut draining = draining;
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
                            tasks.spawn(self.dispatcher.clone().handle(codec, send, recv));
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
        if *shutting_down.borrow() {
            connection.close(close::NORMAL.into(), b"agent shutting down");
        } else {
            connection.close(close::NORMAL.into(), b"agent reconnecting");
        }
        reason
    }

    async fn sample(&self) -> NodeStats {
        let collector = Arc::clone(&self.stats);
        let mut stats = tokio::task::spawn_blocking(move || {
            collector
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .sample()
        })
        .await
        .unwrap_or_default();
        stats.in_flight = self.dispatcher.services.in_flight();
        stats.unhealthy = self.health.unhealthy();
        stats.model_load = self.model_load.current(Instant::now());
        stats
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
