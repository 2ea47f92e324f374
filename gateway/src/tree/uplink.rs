//! The link to the parent gateway: dial it as an agent does, register this
//! gateway's fleet as one node of kind `gateway`, then keep the parent up
//! to date until the link breaks (and dial again, with backoff) or this
//! gateway shuts down:
//! - the fleet's free capacity and its queues (`Load`: its `others` and
//!   `queued`) whenever they change, the first change after a quiet moment
//!   at once, those within [`LOAD_EVERY`] of a report together;
//! - its services (`Respec`) whenever they change (a node came, went or
//!   changed), or, with a parent that does not take `Respec`, by
//!   registering again;
//! - its summed stats every `[parent] stats_interval_ms`;
//! - the parent's ancestry (`Ancestry`) kept here, the link dropped if
//!   this gateway is in it (a loop);
//! - the parent's `HandUp` (rebalancing): that many of the calls waiting
//!   here go to the link to the parent, a drained node of this gateway's
//!   core that takes no other call, and run where the parent sends them.
//!
//! The parent's calls arrive as dispatch streams on the same connection
//! ([`super::serve`]).

use std::sync::Arc;
use std::time::Duration;

use protocol::codes::close;
use protocol::{
    Codec, Message, NodeLoad, NodeSpec, Register, Registered, ServiceSpec, WireVersion,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::watch;
use transport::{Backoff, EndpointConfig, FramedRecv, FramedSend};

use super::summary::{Summary, stats, summarize};
use crate::Shared;
use crate::config::ParentConfig;
use crate::fleet::Node;

/// Longest wait for the parent's answer to a dial or a registration.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Most load reports per this period: changes in between are sent
/// together.
const LOAD_EVERY: Duration = Duration::from_millis(5);

/// Most calls the parent may have open to this gateway at once (streams).
const MAX_PARENT_STREAMS: u32 = 4096;

/// How long a leaving gateway waits for the parent's calls to end.
const LEAVE_GRACE: Duration = Duration::from_secs(30);

/// What the last load report said: free capacity taken by others, and
/// the queues.
type LoadReport = (Vec<(String, u32)>, Vec<protocol::QueuedCalls>);

/// Why a dial did not give a registered link.
enum Attempt {
    /// Try again after a delay.
    Retry(String),
    /// The parent refused the registration (a wrong token, a loop): try
    /// again only after the longest delay, and say so loudly.
    Refused(String),
}

/// A registered link.
struct Link {
    connection: quinn::Connection,
    send: FramedSend,
    recv: FramedRecv,
    registered: Registered,
    /// What the registration said.
    sent: Summary,
}

/// Keeps the link to the parent until `leave` turns true.
pub(super) async fn run(
    shared: Arc<Shared>,
    config: ParentConfig,
    mut leave: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(
        Duration::from_millis(u64::from(config.reconnect_ms)),
        Duration::from_millis(u64::from(config.reconnect_max_ms)),
        StdRng::from_os_rng(),
    );
    let mut endpoint: Option<quinn::Endpoint> = None;
    loop {
        if *leave.borrow() {
            return;
        }
        let delay = match connect(&shared, &config, &mut endpoint).await {
            Ok(link) => {
                backoff.reset();
                tracing::info!(parent = %config.address, ancestry = ?link.registered.ancestry, "registered with the parent gateway");
                let why = serve(&shared, &config, link, &mut leave).await;
                shared.tree.set_above(&[]);
                if *leave.borrow() {
                    return;
                }
                tracing::warn!(parent = %config.address, "link to the parent gateway ended: {why}; dialling again");
                backoff.next_delay()
            }
            Err(Attempt::Retry(why)) => {
                tracing::warn!(parent = %config.address, "cannot reach the parent gateway: {why}");
                backoff.next_delay()
            }
            Err(Attempt::Refused(why)) => {
                tracing::error!(parent = %config.address, "the parent gateway refused this gateway: {why}");
                Duration::from_millis(u64::from(config.reconnect_max_ms))
            }
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = leave.changed() => {}
        }
    }
}

/// Dials the parent and registers the fleet as it is now.
async fn connect(
    shared: &Arc<Shared>,
    config: &ParentConfig,
    endpoint: &mut Option<quinn::Endpoint>,
) -> Result<Link, Attempt> {
    let peer = tokio::net::lookup_host(config.address.as_str())
        .await
        .map_err(|e| Attempt::Retry(format!("cannot resolve {}: {e}", config.address)))?
        .next()
        .ok_or_else(|| Attempt::Retry(format!("{} resolves to no address", config.address)))?;
    let endpoint = match endpoint {
        Some(e) => e.clone(),
        None => {
            let limits = EndpointConfig {
                max_concurrent_bidi_streams: MAX_PARENT_STREAMS,
                max_wire_version: shared.config.max_wire_version,
                ..EndpointConfig::default()
            };
            let identity = match (&config.client_cert, &config.client_key) {
                (Some(cert), Some(key)) => Some(transport::ClientIdentity { cert, key }),
                _ => None,
            };
            let made = transport::client_endpoint_with(&config.ca, identity, peer, &limits)
                .map_err(|e| Attempt::Retry(format!("tls: {e}")))?;
            endpoint.insert(made).clone()
        }
    };
    let connecting = endpoint
        .connect(peer, &config.server_name)
        .map_err(|e| Attempt::Retry(format!("cannot dial {peer}: {e}")))?;
    let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| Attempt::Retry(format!("no answer from {peer} within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| Attempt::Retry(format!("handshake with {peer}: {e}")))?;
    let (mut send, mut recv) = transport::open_bi(&connection, Codec::default())
        .await
        .map_err(|e| Attempt::Retry(format!("control stream: {e}")))?;
    let sent = summary(shared, config);
    let register = Register {
        token: config.token.clone(),
        node: sent.spec.clone(),
        follows_members: false,
        direct: None,
        holds_on_control: false,
    };
    let exchange = async {
        send.send(&Message::Register(register)).await?;
        recv.expect("the registration reply").await
    };
    let reply = tokio::time::timeout(CONNECT_TIMEOUT, exchange)
        .await
        .map_err(|_| Attempt::Retry(format!("no registration reply within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| Attempt::Retry(format!("registration: {e}")))?;
    match reply {
        Message::Registered(registered) => {
            if let Some(loop_at) = in_a_loop(shared, &registered.ancestry) {
                connection.close(close::REFUSED.into(), b"a loop of gateways");
                return Err(Attempt::Refused(loop_at));
            }
            shared.tree.set_above(&registered.ancestry);
            Ok(Link {
                connection,
                send,
                recv,
                registered,
                sent,
            })
        }
        Message::Refused(reason) => {
            connection.close(close::NORMAL.into(), b"registration refused");
            Err(Attempt::Refused(reason))
        }
        other => Err(Attempt::Retry(format!(
            "unexpected {:?} frame in reply to the registration",
            other.kind()
        ))),
    }
}

/// `Some(why)` when `above` (the parent's ancestry) holds this gateway.
fn in_a_loop(shared: &Shared, above: &[String]) -> Option<String> {
    let id = shared.tree.id();
    above.iter().any(|a| a == id).then(|| {
        format!(
            "this gateway ({id}) is already above its parent: {} (a loop)",
            above.join(" < ")
        )
    })
}

/// The fleet as one node now.
fn summary(shared: &Shared, config: &ParentConfig) -> Summary {
    let from_parent = shared.tree.from_parent.snapshot();
    shared.scheduler.read(|core| {
        summarize(
            core,
            shared.tree.id(),
            config.stats_interval_ms,
            &from_parent,
        )
    })
}

/// Serves a registered link until it ends; returns why.
async fn serve(
    shared: &Arc<Shared>,
    config: &ParentConfig,
    link: Link,
    leave: &mut watch::Receiver<bool>,
) -> String {
    let Link {
        connection,
        mut send,
        mut recv,
        registered,
        mut sent,
    } = link;
    let v2 = transport::wire_version(&connection) >= WireVersion::V2;
    let codec = transport::codec_for(&connection, Codec::default());
    let changes = shared.scheduler.changes();
    let mut stats_every =
        tokio::time::interval(Duration::from_millis(u64::from(config.stats_interval_ms)));
    stats_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first load report says what the registration could not: the
    // calls already taking the fleet's capacity.
    let mut last_load: Option<LoadReport> = None;
    let mut report_at: Option<tokio::time::Instant> = Some(tokio::time::Instant::now());
    let mut last_report = tokio::time::Instant::now();
    // The parent's calls (and waves) come on streams it opens: served on
    // their own task, so that no report or stats holds them up.
    let accepting = tokio::spawn(accept(shared.clone(), connection.clone(), codec));
    // The link as a node of this gateway's core, drained: it takes only
    // the waiting calls the parent asks for (rebalancing).
    let mut parent = add_parent(shared, &registered, &connection);
    // Set once this gateway leaves: until then the parent's calls finish.
    let mut leave_by: Option<tokio::time::Instant> = None;
    let why = loop {
        tokio::select! {
            () = changes.notified(), if report_at.is_none() => {
                // The first change after a quiet moment goes at once; the
                // next ones within LOAD_EVERY go together.
                let earliest = last_report + LOAD_EVERY;
                report_at = Some(earliest.max(tokio::time::Instant::now()));
            }
            () = sleep_until_some(report_at) => {
                report_at = None;
                last_report = tokio::time::Instant::now();
                let now = summary(shared, config);
                if now.spec != sent.spec {
                    if !registered.takes_respec {
                        break "the fleet's services changed: registering again".to_string();
                    }
                    let respec = Message::Respec(Box::new(protocol::Respec { node: now.spec.clone() }));
                    if let Err(e) = send.send(&respec).await {
                        break format!("control stream: {e}");
                    }
                }
                let report = (now.others.clone(), now.queued.clone());
                if v2 && last_load.as_ref() != Some(&report) {
                    let load = NodeLoad {
                        in_flight: Vec::new(),
                        others: Some(now.others.clone()),
                        queued: now.queued.clone(),
                        ..NodeLoad::default()
                    };
                    if let Err(e) = send.send(&Message::Load(load)).await {
                        break format!("control stream: {e}");
                    }
                    last_load = Some(report);
                }
                sent = now;
            }
            _ = stats_every.tick() => {
                let stats = shared.scheduler.read(stats);
                if let Err(e) = send.send(&Message::Stats(stats)).await {
                    break format!("control stream: {e}");
                }
                // A report missed by a change that came before the link.
                changes.notify_one();
            }
            frame = recv.recv() => match frame {
                Ok(Some(Message::Ancestry(ancestry))) => {
                    if let Err(e) = ancestry.validate() {
                        break format!("bad ancestry from the parent: {e}");
                    }
                    if let Some(why) = in_a_loop(shared, &ancestry.gateways) {
                        tracing::error!("{why}: leaving the parent");
                        break why;
                    }
                    shared.tree.set_above(&ancestry.gateways);
                }
                Ok(Some(Message::HandUp(ask))) => {
                    if let Err(e) = protocol::NodeSpec::validate_name("service name", &ask.service) {
                        break format!("bad hand-up from the parent: {e}");
                    }
                    parent = hand_up(shared, parent, &ask);
                }
                Ok(Some(other)) => {
                    tracing::debug!(kind = ?other.kind(), "ignoring a frame from the parent on the control stream");
                }
                Ok(None) => break "the parent closed the control stream".to_string(),
                Err(e) => break format!("control stream: {e}"),
            },
            closed = connection.closed() => break format!("connection: {closed}"),
            _ = leave.changed(), if leave_by.is_none() => {
                // No new call from the parent; those it sent finish (the
                // stats keep going meanwhile, or it would drop the link).
                if v2 && let Err(e) = send.send(&Message::Drain).await {
                    break format!("control stream: {e}");
                }
                leave_by = Some(tokio::time::Instant::now() + LEAVE_GRACE);
            }
            () = tokio::time::sleep(Duration::from_millis(20)), if leave_by.is_some() => {
                let over = leave_by.is_some_and(|by| tokio::time::Instant::now() >= by);
                if over || shared.tree.from_parent.snapshot().is_empty() {
                    break "this gateway is shutting down".to_string();
                }
            }
        }
    };
    accepting.abort();
    shared.registry.remove_parent(&parent);
    shared.scheduler.node_down(&parent);
    connection.close(close::NORMAL.into(), why.as_bytes());
    why
}

/// Adds the link to the parent as a drained node with no service yet.
fn add_parent(
    shared: &Shared,
    registered: &Registered,
    connection: &quinn::Connection,
) -> Arc<Node> {
    let id = registered
        .ancestry
        .first()
        .cloned()
        .unwrap_or_else(|| "parent".to_string());
    let spec = NodeSpec {
        id,
        region: String::new(),
        labels: Vec::new(),
        cost_per_hour: 0.0,
        services: Vec::new(),
        slots: Vec::new(),
        stats_interval_ms: 1000,
        heartbeat_ms: None,
        agent_version: registered.gateway_version.clone(),
        gateway: true,
    };
    let node = shared
        .registry
        .insert_parent(spec, connection.clone(), std::time::Instant::now());
    shared.scheduler.node_up(&node);
    shared.scheduler.drain(&node, true);
    node
}

/// Hands up to `ask.calls` waiting calls of `ask.service` to the parent
/// (adding the service to its node first); returns the parent's node now.
fn hand_up(shared: &Shared, parent: Arc<Node>, ask: &protocol::HandUp) -> Arc<Node> {
    let parent = if parent.services.contains_key(&ask.service) {
        parent
    } else {
        let mut spec = parent.spec.clone();
        spec.services.push(ServiceSpec {
            name: ask.service.clone(),
            // Its calls are the ones handed up: no other bound.
            max_concurrent: u32::MAX / 2,
            load_ms: 0,
            model: false,
            policy: None,
            idempotent: false,
        });
        match shared.registry.respec(&parent, spec) {
            Some(fresh) => {
                shared.scheduler.respec(&fresh);
                fresh
            }
            None => return parent,
        }
    };
    let waiting = shared
        .scheduler
        .read(|core| core.queue(&ask.service).map_or(0, |q| q.len()));
    let calls = ask.calls.min(u32::try_from(waiting).unwrap_or(u32::MAX));
    if calls > 0 {
        tracing::info!(service = %ask.service, calls, parent = %parent.spec.id, "handing waiting calls up to the parent gateway");
        metrics::counter!(
            "tree_handed_up_calls_total",
            "service" => crate::telemetry::labels::service(&ask.service)
        )
        .increment(u64::from(calls));
        shared.scheduler.hand_up(&ask.service, calls, &parent);
    }
    parent
}

/// Serves the streams the parent opens on `connection` until it closes.
async fn accept(shared: Arc<Shared>, connection: quinn::Connection, codec: Codec) {
    while let Ok((send, recv)) = connection.accept_bi().await {
        let from = super::serve::Origin::Parent(shared.tree.from_parent.clone());
        tokio::spawn(super::serve::call(shared.clone(), from, codec, send, recv));
    }
}

/// Completes at `at`; never when `None`.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
