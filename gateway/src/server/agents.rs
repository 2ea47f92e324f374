//! An agent's control stream: registration with the shared token (and the
//! client certificate's node id, see [`super::certs::check_agent`]), then stats
//! every interval until the connection closes or three intervals pass with
//! none (the node is then dropped from the registry and disconnected). The
//! same stream carries swap requests to the agent and its swap reports and,
//! for an agent that follows the cluster (`Register::follows_members`, wire
//! v2), the member list (after `Registered` and on every change) to it and
//! its load reports (`Load`: calls in flight on the node, every gateway's)
//! from it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::{Message, NodeLoad, NodeStats, Register, Registered, SwapReport, WireVersion};
use switchyard_core::Counted;
use transport::{FramedRecv, FramedSend};

use crate::Shared;
use crate::fleet::HoldWord;

use super::node_gauges::NodeGauges;

/// Frames waiting for the control stream, at most (swap requests are rare:
/// one per slot at a time).
const CONTROL_QUEUE: usize = 64;

/// Heartbeats (stats intervals, from an agent that sends no heartbeat) a
/// node may miss before it is dropped.
pub(super) const MISSED_INTERVALS: u32 = 3;

/// Most GPUs one stats report may list, and most GPU series one node's
/// connection makes.
pub(super) const MAX_GPUS: usize = 256;

/// Serves an agent whose first frame was `register`.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    connection: quinn::Connection,
    register: Register,
    mut send: FramedSend,
    mut recv: FramedRecv,
    ticket: &mut super::admission::Ticket,
) {
    let remote = connection.remote_address();
    let wire = transport::wire_version(&connection);
    let require_cert = shared.config.agents.require_client_cert;
    let refusal = if !crate::token_matches(&register.token, &shared.agent_token) {
        Some("wrong agent token".to_string())
    } else if let Err(why) = register.validate() {
        Some(why.to_string())
    } else if let Err(why) = super::certs::check_agent(&connection, &register.node.id, require_cert)
    {
        Some(why)
    } else if register.node.gateway && shared.tree.is_ancestor(&register.node.id) {
        Some(format!(
            "gateway {} is this gateway or above it ({}): a loop",
            register.node.id,
            shared.tree.ancestry().join(" < ")
        ))
    } else {
        ticket.register_agent().err()
    };
    if let Some(reason) = refusal {
        tracing::warn!(%remote, node = %register.node.id, %reason, "agent refused");
        let _ = send.send(&Message::Refused(reason.clone())).await;
        let _ = send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
        connection.close(protocol::codes::close::REFUSED.into(), reason.as_bytes());
        return;
    }
    let follows = register.follows_members && wire >= WireVersion::V2;
    // Only a v2 agent that takes holds on its control stream can be
    // leased: holds and keys are v2 frames, and this gateway sends its
    // holds on that stream alone.
    if register.direct.is_some() && !register.holds_on_control {
        tracing::warn!(
            node = %register.node.id,
            "the agent has a direct port but takes lease holds only on streams of their own: it is not leased (upgrade the agent)"
        );
    }
    let direct = register.direct.filter(|_| {
        wire >= WireVersion::V2 && shared.config.leases.enabled && register.holds_on_control
    });
    let spec = register.node;
    // The longest the agent stays silent: its heartbeat (or, from an older
    // agent, its stats interval).
    let interval = Duration::from_millis(u64::from(spec.report_period_ms()));
    let (control, mut control_rx) = tokio::sync::mpsc::channel(CONTROL_QUEUE);
    let mut node =
        shared
            .registry
            .insert(spec, connection.clone(), control, direct, Instant::now());
    // Its services are label values of their own while it is registered.
    let mut _known = crate::telemetry::labels::Known::new(
        crate::telemetry::labels::Kind::Service,
        node.spec.services.iter().map(|s| s.name.as_str()),
    );
    // A child gateway learns which gateways are above it (loops), now
    // and whenever that changes.
    let child = node.spec.gateway;
    let mut ancestry = shared.tree.watch_ancestry();
    let registered = Message::Registered(Registered {
        node_key: node.key,
        gateway_version: env!("CARGO_PKG_VERSION").to_string(),
        ancestry: if child {
            ancestry.borrow_and_update().clone()
        } else {
            Vec::new()
        },
        takes_respec: true,
        takes_heartbeat: true,
    });
    if let Err(error) = send.send(&registered).await {
        tracing::warn!(node = %node.spec.id, %error, "agent left during registration");
        shared.registry.remove(&node);
        return;
    }
    tracing::info!(
        node = %node.spec.id,
        key = node.key,
        %remote,
        %wire,
        services = ?node.spec.services.iter().map(|s| &s.name).collect::<Vec<_>>(),
        slots = ?node.spec.slots.iter().map(|s| (&s.name, &s.loaded)).collect::<Vec<_>>(),
        "node registered"
    );
    // The member list goes out right after `Registered`, then on every
    // change.
    let mut members = shared.cluster.subscribe();
    if follows {
        let list = members.borrow_and_update().clone();
        if let Err(error) = send.send(&Message::Members(list)).await {
            tracing::warn!(node = %node.spec.id, %error, "agent left during registration");
            shared.registry.remove(&node);
            return;
        }
    }
    // An agent with a direct port checks lease tokens with this gateway's
    // keys: sent after `Registered` (and `Members`), then on every rotation.
    let leased = node.direct.is_some();
    let mut lease_keys = shared.leases.keys().subscribe();
    if leased {
        let keys = lease_keys.borrow_and_update().clone();
        if let Err(error) = send.send(&Message::LeaseKeys(keys)).await {
            tracing::warn!(node = %node.spec.id, %error, "agent left during registration");
            shared.registry.remove(&node);
            return;
        }
    }
    shared.policies.asked_by(&node.spec);
    shared.scheduler.node_up(&node);
    metrics::gauge!("connected_agents").set(shared.registry.len() as f64);
    shared.announce(crate::events::AdminEvent::new(
        "node_up",
        node.spec.id.clone(),
    ));

    let grace = interval * MISSED_INTERVALS;
    // Made at the first stats report, so no series shows before one.
    let mut gauges: Option<NodeGauges> = None;
    // Whether the agent's load reports count the other gateways' calls
    // apart (`NodeLoad::others`).
    let mut counts_others = false;
    let reason = loop {
        tokio::select! {
            message = tokio::time::timeout(grace, recv.recv()) => match message {
                Ok(Ok(Some(Message::Stats(stats)))) => {
                    let stats = sanitize(stats);
                    let g = gauges.get_or_insert_with(|| NodeGauges::new(&node.spec));
                    g.record_stats(&stats);
                    g.record_health(&stats.unhealthy);
                    record_model_load(&node.spec.id, &stats.model_load);
                    g.record_in_flight(node.in_flight_total());
                    // An agent that does not follow members serves this
                    // gateway alone: no other gateway's calls (which also
                    // ends a node's being taken as full). One that follows
                    // sends a load report on every change; those that
                    // count the others' calls apart are not second-guessed
                    // by the stats' every-gateway figures.
                    if !follows && !counts_others {
                        let none = node.services.keys().map(|s| (s.clone(), 0)).collect();
                        shared.scheduler.load(&node, none, None, Counted::Others);
                    } else if !counts_others {
                        let all = stats.in_flight.clone();
                        shared.scheduler.load(&node, all, None, Counted::All);
                    }
                    shared.scheduler.stats(&node, stats);
                }
                Ok(Ok(Some(Message::Load(load)))) => match check_load(&load) {
                    Ok(()) => {
                        if child {
                            // A child gateway's queues, for rebalancing.
                            let queued = (Instant::now(), load.queued.clone());
                            *node.queued.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(queued);
                        }
                        // The prefix blocks it holds, for the policies.
                        node.blocks.apply(&load, |s| node.services.contains_key(s));
                        match load.others {
                            Some(others) => {
                                counts_others = true;
                                let jobs = load.jobs_others;
                                shared.scheduler.load(&node, others, jobs, Counted::Others);
                            }
                            None => {
                                let jobs = load.jobs_in_flight;
                                let all = load.in_flight;
                                shared.scheduler.load(&node, all, jobs, Counted::All);
                            }
                        }
                    }
                    Err(why) => break format!("bad load report: {why}"),
                },
                Ok(Ok(Some(Message::Drain))) => {
                    // The agent shuts down: no new calls; those in flight
                    // finish, then it closes the connection.
                    tracing::info!(node = %node.spec.id, "node draining (agent shutting down)");
                    shared.scheduler.drain(&node, true);
                    shared.announce(crate::events::AdminEvent::new(
                        "drain",
                        format!("{}: agent shutting down", node.spec.id),
                    ));
                }
                Ok(Ok(Some(Message::Held(held)))) => match held.validate() {
                    Ok(()) => {
                        let word = HoldWord::Held(held.error);
                        if !node.holds.deliver(&held.lease_id, word) {
                            tracing::debug!(lease_id = %held.lease_id, "ignoring a hold answer nobody waits for");
                        }
                    }
                    Err(why) => break format!("bad hold answer: {why}"),
                },
                Ok(Ok(Some(Message::LeaseEnded(end)))) => match (end.validate(), end.lease_id.clone()) {
                    (Ok(()), Some(lease_id)) => {
                        if !node.holds.deliver(&lease_id, HoldWord::Ended(end)) {
                            tracing::debug!(%lease_id, "ignoring the end of a lease nobody waits for");
                        }
                    }
                    (Ok(()), None) => break "a lease end without its id on the control stream".to_string(),
                    (Err(why), _) => break format!("bad lease end: {why}"),
                },
                Ok(Ok(Some(Message::Respec(respec)))) => match check_respec(&node, &respec) {
                    Ok(()) => {
                        let Some(fresh) = shared.registry.respec(&node, respec.node) else {
                            break "replaced by a newer connection".to_string();
                        };
                        node = fresh;
                        gauges = None;
                        _known = crate::telemetry::labels::Known::new(
                            crate::telemetry::labels::Kind::Service,
                            node.spec.services.iter().map(|s| s.name.as_str()),
                        );
                        shared.policies.asked_by(&node.spec);
                        shared.scheduler.respec(&node);
                        tracing::info!(
                            node = %node.spec.id,
                            services = ?node.spec.services.iter().map(|s| (&s.name, s.max_concurrent)).collect::<Vec<_>>(),
                            "node's services changed"
                        );
                    }
                    Err(why) => break format!("bad respec: {why}"),
                },
                Ok(Ok(Some(Message::Swapped(report)))) => match check_report(&report) {
                    Ok(()) => shared.scheduler.swapped(&node, report),
                    Err(why) => break format!("bad swap report: {why}"),
                },
                Ok(Ok(Some(other))) => {
                    break format!("unexpected {:?} frame on the control stream", other.kind());
                }
                Ok(Ok(None)) => break "control stream closed".to_string(),
                Ok(Err(error)) => break format!("control stream failed: {error}"),
                Err(_) => {
                    connection.close(protocol::codes::close::STATS_MISSED.into(), b"missed stats");
                    break format!("no stats for {MISSED_INTERVALS} heartbeats ({} ms)", grace.as_millis());
                }
            },
            Some(frame) = control_rx.recv() => {
                if let Err(error) = send.send(&frame).await {
                    break format!("control stream failed: {error}");
                }
            }
            Ok(()) = members.changed(), if follows => {
                let list = members.borrow_and_update().clone();
                if let Err(error) = send.send(&Message::Members(list)).await {
                    break format!("control stream failed: {error}");
                }
            }
            Ok(()) = ancestry.changed(), if child && wire >= WireVersion::V2 => {
                let gateways = ancestry.borrow_and_update().clone();
                let frame = Message::Ancestry(protocol::Ancestry { gateways });
                if let Err(error) = send.send(&frame).await {
                    break format!("control stream failed: {error}");
                }
            }
            Ok(()) = lease_keys.changed(), if leased => {
                let keys = lease_keys.borrow_and_update().clone();
                if let Err(error) = send.send(&Message::LeaseKeys(keys)).await {
                    break format!("control stream failed: {error}");
                }
            }
            // A child gateway hands waiting calls up on streams it opens.
            accepted = connection.accept_bi(), if child && wire >= WireVersion::V2 => match accepted {
                Ok((s, r)) => {
                    let codec = transport::codec_for(&connection, shared.codec);
                    let (shared, child) = (shared.clone(), node.clone());
                    tokio::spawn(async move { crate::tree::handed_up(shared, &child, codec, s, r).await });
                }
                Err(error) => break format!("connection closed: {error}"),
            },
            closed = connection.closed() => break format!("connection closed: {closed}"),
        }
    };
    // The leases it held for this gateway end as the node lost.
    node.holds.close();
    if shared.registry.remove(&node) {
        // Only the registered connection of the id leaves the core: a
        // replaced one was replaced there by the newer one's `node_up`.
        shared.scheduler.node_down(&node);
        tracing::info!(node = %node.spec.id, %reason, "node dropped");
        shared.announce(crate::events::AdminEvent::new(
            "node_down",
            format!("{}: {reason}", node.spec.id),
        ));
    }
    metrics::gauge!("connected_agents").set(shared.registry.len() as f64);
    connection.close(
        protocol::codes::close::STATS_MISSED.into(),
        reason.as_bytes(),
    );
}

/// Checks a swap report's names against the protocol limits.
fn check_report(report: &SwapReport) -> Result<(), String> {
    protocol::NodeSpec::validate_name("slot name", &report.slot).map_err(|e| e.to_string())?;
    if let Some(loaded) = &report.loaded {
        protocol::NodeSpec::validate_name("service name", loaded).map_err(|e| e.to_string())?;
    }
    if report.error.as_ref().is_some_and(|e| e.len() > 64 * 1024) {
        return Err("error message longer than 64 KiB".into());
    }
    Ok(())
}

/// Checks a respec: valid, the same node id, the same slots (a node whose
/// slots change registers again).
fn check_respec(node: &crate::fleet::Node, respec: &protocol::Respec) -> Result<(), String> {
    respec.validate().map_err(|e| e.to_string())?;
    if respec.node.id != node.spec.id {
        return Err(format!(
            "node {} cannot become {}",
            node.spec.id, respec.node.id
        ));
    }
    if respec.node.gateway != node.spec.gateway {
        return Err("a node cannot become a gateway, nor stop being one: register again".into());
    }
    if respec.node.slots != node.spec.slots {
        return Err("its slots changed: register again".into());
    }
    Ok(())
}

/// Checks a load report against the protocol limits.
fn check_load(load: &NodeLoad) -> Result<(), String> {
    load.validate().map_err(|e| e.to_string())
}

/// Clamps figures from the wire to sane ranges and bounds the lists.
fn sanitize(mut stats: NodeStats) -> NodeStats {
    fn pct(v: f32) -> f32 {
        if v.is_finite() {
            v.clamp(0.0, 100.0)
        } else {
            0.0
        }
    }
    fn finite(v: f32) -> f32 {
        if v.is_finite() { v.max(0.0) } else { 0.0 }
    }
    stats.cpu_pct = pct(stats.cpu_pct);
    stats.gpus.truncate(MAX_GPUS);
    for gpu in &mut stats.gpus {
        gpu.util_pct = pct(gpu.util_pct);
        gpu.temperature_c = finite(gpu.temperature_c);
        gpu.power_w = finite(gpu.power_w);
    }
    stats.in_flight.truncate(protocol::limits::MAX_SERVICES);
    stats.unhealthy.truncate(protocol::limits::MAX_SERVICES);
    stats
        .model_load
        .retain(|l| l.service.len() <= protocol::limits::MAX_NAME_LEN);
    stats.model_load.truncate(protocol::limits::MAX_SERVICES);
    for load in &mut stats.model_load {
        load.kv_cache_pct = pct(load.kv_cache_pct);
    }
    stats
}

/// Help texts of the node series (resources, GPUs, health, model-server load).
pub(crate) fn describe_metrics() {
    metrics::describe_gauge!("node_in_flight", "Calls in flight, by node.");
    metrics::describe_gauge!("node_cpu_percent", "Node CPU utilisation, %.");
    metrics::describe_gauge!("node_memory_used_bytes", "Node memory used, bytes.");
    metrics::describe_gauge!("node_memory_total_bytes", "Node memory installed, bytes.");
    metrics::describe_gauge!(
        "gpu_utilization_percent",
        "GPU utilisation, %, by node and GPU."
    );
    metrics::describe_gauge!("gpu_memory_used_bytes", "GPU memory used, bytes.");
    metrics::describe_gauge!("gpu_memory_total_bytes", "GPU memory installed, bytes.");
    metrics::describe_gauge!("gpu_temperature_celsius", "GPU temperature, °C.");
    metrics::describe_gauge!("gpu_power_watts", "GPU power draw, W.");
    metrics::describe_gauge!("connected_agents", "Node agents registered now.");
    metrics::describe_gauge!(
        "service_healthy",
        "1 while a node's active health check of a service passes (or it has none), 0 while it fails, by node and service."
    );
    metrics::describe_gauge!(
        "model_server_waiting_requests",
        "Requests waiting in a node's model server for a service (vLLM num_requests_waiting), as its agent last reported, by node and service."
    );
    metrics::describe_gauge!(
        "model_server_running_requests",
        "Requests running in a node's model server for a service (vLLM num_requests_running), as its agent last reported, by node and service."
    );
    metrics::describe_gauge!(
        "model_server_kv_cache_percent",
        "KV-cache use of a node's model server for a service, 0..100 (vLLM gpu_cache_usage_perc x 100), as its agent last reported, by node and service."
    );
}

/// Sets `model_server_waiting_requests`, `model_server_running_requests`
/// and `model_server_kv_cache_percent` `{node,service}` for every service
/// whose model-server load `node`'s latest stats carry (a service left out
/// keeps its last value).
fn record_model_load(node: &str, loads: &[protocol::ServiceLoad]) {
    for load in loads {
        let labels = [
            ("node", node.to_string()),
            ("service", load.service.clone()),
        ];
        metrics::gauge!("model_server_waiting_requests", &labels).set(f64::from(load.waiting));
        metrics::gauge!("model_server_running_requests", &labels).set(f64::from(load.running));
        metrics::gauge!("model_server_kv_cache_percent", &labels).set(f64::from(load.kv_cache_pct));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        use crate::token_matches;
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abd", "abc"));
        assert!(!token_matches("ab", "abc"));
        assert!(!token_matches("", "abc"));
    }

    #[test]
    fn stats_are_clamped() {
        let stats = sanitize(NodeStats {
            cpu_pct: f32::NAN,
            gpus: vec![protocol::GpuStats {
                util_pct: 250.0,
                power_w: -3.0,
                ..Default::default()
            }],
            model_load: vec![
                protocol::ServiceLoad {
                    service: "llm".into(),
                    kv_cache_pct: f32::INFINITY,
                    ..Default::default()
                },
                protocol::ServiceLoad {
                    service: "x".repeat(protocol::limits::MAX_NAME_LEN + 1),
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        assert_eq!(stats.model_load.len(), 1, "an overlong name is dropped");
        assert_eq!(stats.model_load[0].kv_cache_pct, 0.0);
        assert_eq!(stats.cpu_pct, 0.0);
        assert_eq!(stats.gpus[0].util_pct, 100.0);
        assert_eq!(stats.gpus[0].power_w, 0.0);
    }
}
