//! The agent's life: load the slots' initial services, then keep a session
//! with every live gateway of the cluster, serving calls and swap requests
//! from each, until shutdown drains them all.
//!
//! The agent starts on its bootstrap addresses (`gateway`, `gateways`). A
//! gateway that registered it sends its cluster's member list; the newest
//! list (highest revision) from any session names the gateways to keep a
//! session with ([`members`]): the agent dials new members and leaves
//! members gone (telling them `Drain` and letting their calls finish). Each
//! session ([`link`]) has its own reconnect backoff; all share the node's
//! services, so calls from every gateway run against the same
//! `max_concurrent` counts, and the slots, whose swap reports go to every
//! gateway. When every member is unreachable the agent falls back to the
//! bootstrap addresses.

mod link;
mod members;
mod quiet;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use protocol::codes::close;
use protocol::{MemberList, NodeSpec, NodeStats};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::AgentError;
use crate::config::AgentConfig;
use crate::dispatch::Dispatcher;
use crate::health::HealthChecks;
use crate::leases::Leases;
use crate::leases::direct::{DirectCalls, DirectServer};
use crate::model_load::ModelLoads;
use crate::services::Services;
use crate::services::hosted::Handlers;
use crate::slots::Slots;
use crate::stats::StatsCollector;
use link::Link;
use members::{Target, Targets};

/// Longest wait for the connection close to reach the gateways at
/// shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the agent checks whether every member is unreachable.
const FALLBACK_CHECK: Duration = Duration::from_secs(1);
/// Failed attempts in a row of every member's session after which the
/// agent falls back to its bootstrap addresses.
const FALLBACK_FAILURES: u32 = 3;
/// Member lists waiting for the agent to take them, at most.
const MEMBERS_QUEUE: usize = 64;

/// Runs the agent until `shutdown` completes: loads each slot's `loaded`
/// service (waiting for it to be ready; a failure is logged and leaves the
/// slot empty), then connects to the gateways, registers, reports stats and
/// load and serves calls and swaps, reconnecting to each gateway forever
/// with backoff while it is unreachable. With `[direct]` it opens the
/// direct port first (its address goes in every registration) and serves
/// look-aside calls on the leases the gateways have it hold. At shutdown
/// it drains: it ends every lease (reason `draining`, once its call in
/// flight is done), sends [`protocol::Message::Drain`] to every gateway
/// (which sends it no new call), lets the calls in flight from all of them
/// finish (at most `shutdown_grace_s`), then closes the connections with
/// code 0, reason `agent shutting down`, closes the direct port, and stops
/// every slot's process (stop command, SIGTERM, SIGKILL after 5 s).
///
/// # Errors
/// [`AgentError::Config`] for an invalid configuration, [`AgentError::Tls`]
/// for an unusable CA file, direct port certificate or UDP socket, [`AgentError::Services`] when the
/// services cannot be set up, and [`AgentError::Refused`] when a gateway
/// refuses the registration (a wrong token is not retried).
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    run_hosting(config, Handlers::new(), shutdown).await
}

/// As [`run`], each `hosted` service of `config` answered by the handler
/// of its name in `handlers` (the program embedding the agent supplies
/// them: the Python package's functions).
///
/// # Errors
/// As [`run`]; [`AgentError::Services`] for a `hosted` service without a
/// handler.
pub async fn run_hosting(
    mut config: AgentConfig,
    handlers: Handlers,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    config.read_token_file()?;
    config.validate()?;
    // Fail fast on an unusable CA file, before any network.
    transport::tls::client_config(&config.ca)?;
    let services = Services::hosting(&config.services, &config.slots, &handlers)
        .map_err(AgentError::Services)?;
    let (slots, _reports) = Slots::new(&config, services.clone()).map_err(AgentError::Services)?;
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
    let dispatcher = Dispatcher {
        services,
        max_payload: config.max_payload_bytes,
        tracer: otel::Tracer::start(&config.tracing, "switchyard-agent")?,
        prefix: crate::prefix_blocks::PrefixBlocks::default(),
        leases: Leases::new(&config.node_id),
    };
    // The direct port opens before the registrations, which advertise it.
    let direct = match &config.direct {
        Some(direct) => Some(DirectServer::start(
            direct,
            &config.ca,
            config.max_wire_version,
            DirectCalls {
                max_payload: dispatcher.max_payload,
                tracer: dispatcher.tracer.clone(),
                leases: dispatcher.leases.clone(),
            },
        )?),
        None => None,
    };
    let agent = Arc::new(Agent {
        direct: direct.as_ref().map(|d| d.advertised.clone()),
        dispatcher,
        slots,
        stats: Arc::new(Mutex::new(stats)),
        health,
        model_load,
        endpoint: Mutex::new(None),
        sessions: AtomicU64::new(0),
        config,
    });
    tokio::pin!(shutdown);
    let result = 'run: {
        tokio::select! {
            biased;
            () = &mut shutdown => break 'run Ok(()),
            () = agent.slots.load_initial() => {}
        }
        let mut fleet = Sessions::new(&agent);
        tracing::info!(
            gateways = ?fleet.targets.current().iter().map(|t| &t.addr).collect::<Vec<_>>(),
            node = %agent.config.node_id,
            "connecting to gateway"
        );
        fleet.sync();
        let mut check = tokio::time::interval(FALLBACK_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(ended) = fleet.tasks.join_next() => match ended {
                    Ok((target, Err(e))) => {
                        tracing::error!(gateway = %target.addr, "giving up: {e}");
                        fleet.drain_all();
                        break 'run Err(e);
                    }
                    Ok((_, Ok(()))) => {}
                    Err(e) if e.is_panic() => tracing::error!("a gateway session panicked: {e}"),
                    Err(_) => {}
                },
                Some((from, list)) = fleet.lists.recv() => fleet.offer(&from, &list),
                _ = check.tick() => fleet.check_fallback(),
            }
        }
        let grace = Duration::from_secs(u64::from(agent.config.shutdown_grace_s));
        tracing::info!(
            grace_s = grace.as_secs(),
            "draining: no new calls; finishing those in flight"
        );
        // Every lease ends (`Draining`) and says so while the sessions
        // still stand.
        agent.dispatcher.leases.drain();
        fleet.drain_all();
        let leases = agent.dispatcher.leases.clone();
        let drained = async {
            while fleet.tasks.join_next().await.is_some() {}
            leases.ended().await;
        };
        match tokio::time::timeout(grace, drained).await {
            Ok(()) => tracing::info!("drained every gateway session"),
            Err(_) => {
                tracing::warn!("shutdown grace passed with calls in flight; closing");
                fleet.tasks.shutdown().await;
            }
        }
        Ok(())
    };
    // Leases end on every way out (a refused registration too).
    agent.dispatcher.leases.drain();
    let endpoint = agent
        .endpoint
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
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
    let direct = async {
        if let Some(direct) = direct {
            direct.stop().await;
        }
    };
    // The slots' servers stop while the close reaches the gateways.
    tokio::join!(close, direct, agent.slots.shutdown());
    if result.is_ok() {
        tracing::info!("agent shut down");
    }
    result
}

/// What the node shares between its gateway sessions.
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
    /// needed for (IPv6 or not); every session dials from it.
    endpoint: Mutex<Option<(bool, quinn::Endpoint)>>,
    /// Numbers the sessions, so that a swap asked for on one is reported
    /// with its `swap_id` on that one only.
    sessions: AtomicU64,
    /// The direct port's advertised address (`[direct]`), registered with
    /// every gateway.
    direct: Option<String>,
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
            heartbeat_ms: Some(c.stats_heartbeat_ms()),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            gateway: false,
        }
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

/// One gateway session's state, as the agent follows it.
struct Running {
    /// Turned true to leave the gateway (drain, then close).
    leave: watch::Sender<bool>,
    /// Whether it is registered now.
    up: Arc<AtomicBool>,
    /// Its failed attempts in a row.
    failures: Arc<AtomicU32>,
    /// The address it reached, once registered.
    peer: Arc<Mutex<Option<SocketAddr>>>,
}

/// The gateway sessions: one per target, plus those leaving.
struct Sessions {
    agent: Arc<Agent>,
    targets: Targets,
    running: BTreeMap<Target, Running>,
    /// Sessions told to leave, still finishing their calls.
    leaving: Vec<watch::Sender<bool>>,
    tasks: JoinSet<(Target, Result<(), AgentError>)>,
    lists_tx: mpsc::Sender<(Target, MemberList)>,
    lists: mpsc::Receiver<(Target, MemberList)>,
    /// A bootstrap session known to be with a member (it sent a list of
    /// one: itself), for [`Sessions::sync`] to keep as that member's.
    known: Option<(Target, Target)>,
}

impl Sessions {
    fn new(agent: &Arc<Agent>) -> Self {
        let config = &agent.config;
        let targets = Targets::new(
            &config.node_id,
            std::iter::once(&config.gateway).chain(&config.gateways),
            config.max_gateways,
        );
        let (lists_tx, lists) = mpsc::channel(MEMBERS_QUEUE);
        Self {
            agent: Arc::clone(agent),
            targets,
            running: BTreeMap::new(),
            leaving: Vec::new(),
            tasks: JoinSet::new(),
            lists_tx,
            lists,
            known: None,
        }
    }

    /// Starts a session to every target without one and leaves the
    /// gateways no longer targets. A bootstrap session whose gateway turns
    /// out to be a member (same address, or the one member of the list it
    /// sent) is kept, as that member's.
    fn sync(&mut self) {
        let wanted: Vec<Target> = self.targets.current().to_vec();
        let known = self.known.take();
        let stale: Vec<Target> = self
            .running
            .keys()
            .filter(|t| !wanted.contains(t))
            .cloned()
            .collect();
        for old in stale {
            let Some(running) = self.running.remove(&old) else {
                continue;
            };
            let adopt = old.is_bootstrap().then(|| {
                let peer = *running.peer.lock().unwrap_or_else(PoisonError::into_inner);
                wanted.iter().find(|t| {
                    !self.running.contains_key(*t)
                        && (t.addr == old.addr
                            || peer.is_some_and(|p| t.addr.parse::<SocketAddr>() == Ok(p))
                            || known.as_ref() == Some(&(old.clone(), (*t).clone())))
                })
            });
            if let Some(Some(member)) = adopt {
                tracing::debug!(gateway = %old.addr, member = %member.name, "the bootstrap gateway is a member");
                self.running.insert(member.clone(), running);
                continue;
            }
            tracing::info!(gateway = %old.addr, member = %old.name, "leaving a gateway no longer in the member list");
            let _ = running.leave.send(true);
            self.leaving.push(running.leave);
        }
        self.leaving.retain(|leave| !leave.is_closed());
        for target in wanted {
            if self.running.contains_key(&target) {
                continue;
            }
            let (leave, leaving) = watch::channel(false);
            let link = Link {
                agent: Arc::clone(&self.agent),
                target: target.clone(),
                lists: self.lists_tx.clone(),
                up: Arc::new(AtomicBool::new(false)),
                failures: Arc::new(AtomicU32::new(0)),
                peer: Arc::new(Mutex::new(None)),
            };
            self.running.insert(
                target.clone(),
                Running {
                    leave,
                    up: Arc::clone(&link.up),
                    failures: Arc::clone(&link.failures),
                    peer: Arc::clone(&link.peer),
                },
            );
            self.tasks.spawn(async move {
                let result = link.run(leaving).await;
                (target, result)
            });
        }
    }

    /// Takes a member list from the session with `from`: a newer one
    /// replaces the set. A list of one member came from that member
    /// (whatever address it advertises): its session is kept.
    fn offer(&mut self, from: &Target, list: &MemberList) {
        if self.targets.offer(list) {
            if let [member] = list.members.as_slice() {
                self.known = Some((from.clone(), Target::member(member)));
            }
            tracing::info!(
                revision = list.revision,
                gateways = ?self.targets.current().iter().map(|t| &t.name).collect::<Vec<_>>(),
                "member list taken"
            );
            self.sync();
        }
    }

    /// Falls back to the bootstrap addresses when no session is registered
    /// and every member's failed [`FALLBACK_FAILURES`] times in a row.
    fn check_fallback(&mut self) {
        if self.targets.on_bootstrap() || self.running.is_empty() {
            return;
        }
        let lost = self.running.values().all(|r| {
            !r.up.load(Ordering::Acquire) && r.failures.load(Ordering::Acquire) >= FALLBACK_FAILURES
        });
        if lost && self.targets.fall_back() {
            tracing::warn!("every member gateway is unreachable; back to the bootstrap addresses");
            self.sync();
        }
    }

    /// Tells every session to leave: each drains and closes.
    fn drain_all(&mut self) {
        for running in self.running.values() {
            let _ = running.leave.send(true);
        }
        for leave in &self.leaving {
            let _ = leave.send(true);
        }
    }
}

#[cfg(test)]
mod tests;
