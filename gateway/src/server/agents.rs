//! An agent's control stream: registration with the shared token (and the
//! client certificate's node id, see [`crate::certs::check_agent`]), then stats
//! every interval until the connection closes or three intervals pass with
//! none (the node is then dropped from the registry and disconnected). The
//! same stream carries swap requests to the agent and its swap reports.

use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::{Message, NodeStats, Register, Registered, SwapReport};
use transport::{FramedRecv, FramedSend};

use crate::Shared;

/// Frames waiting for the control stream, at most (swap requests are rare:
/// one per slot at a time).
const CONTROL_QUEUE: usize = 64;

/// Stats intervals a node may miss before it is dropped.
pub const MISSED_INTERVALS: u32 = 3;

/// Most GPUs one stats report may list.
const MAX_GPUS: usize = 256;

/// Serves an agent whose first frame was `register`.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    connection: quinn::Connection,
    register: Register,
    mut send: FramedSend,
    mut recv: FramedRecv,
    ticket: &mut crate::admission::Ticket,
) {
    let remote = connection.remote_address();
    let wire = transport::wire_version(&connection);
    let require_cert = shared.config.agents.require_client_cert;
    let refusal = if !crate::token_matches(&register.token, &shared.agent_token) {
        Some("wrong agent token".to_string())
    } else if let Err(why) = register.node.validate() {
        Some(why.to_string())
    } else if let Err(why) = crate::certs::check_agent(&connection, &register.node.id, require_cert)
    {
        Some(why)
    } else {
        ticket.register_agent().err()
    };
    if let Some(reason) = refusal {
        tracing::warn!(%remote, node = %register.node.id, %reason, "agent refused");
        let _ = send.send(&Message::Refused(reason.clone())).await;
        let _ = send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
        connection.close(crate::CLOSE_REFUSED.into(), reason.as_bytes());
        return;
    }
    let spec = register.node;
    let interval = Duration::from_millis(u64::from(spec.stats_interval_ms));
    let (control, mut control_rx) = tokio::sync::mpsc::channel(CONTROL_QUEUE);
    let node = shared
        .registry
        .insert(spec, connection.clone(), control, Instant::now());
    let registered = Message::Registered(Registered {
        node_key: node.key,
        gateway_version: env!("CARGO_PKG_VERSION").to_string(),
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
    shared.scheduler.node_up(&node);
    metrics::gauge!("connected_agents").set(shared.registry.len() as f64);
    shared.announce(crate::http::AdminEvent::new(
        "node_up",
        node.spec.id.clone(),
    ));

    let grace = interval * MISSED_INTERVALS;
    let reason = loop {
        tokio::select! {
            message = tokio::time::timeout(grace, recv.recv()) => match message {
                Ok(Ok(Some(Message::Stats(stats)))) => {
                    let stats = sanitize(stats);
                    crate::telemetry::record_stats(&node.spec.id, &stats);
                    crate::telemetry::record_health(&node.spec, &stats.unhealthy);
                    crate::telemetry::record_model_load(&node.spec.id, &stats.model_load);
                    metrics::gauge!("node_in_flight", "node" => node.spec.id.clone())
                        .set(f64::from(node.in_flight_total()));
                    shared.scheduler.stats(&node, stats);
                }
                Ok(Ok(Some(Message::Drain))) => {
                    // The agent shuts down: no new calls; those in flight
                    // finish, then it closes the connection.
                    tracing::info!(node = %node.spec.id, "node draining (agent shutting down)");
                    shared.scheduler.drain(&node, true);
                    shared.announce(crate::http::AdminEvent::new(
                        "drain",
                        format!("{}: agent shutting down", node.spec.id),
                    ));
                }
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
                    connection.close(crate::CLOSE_STATS_MISSED.into(), b"missed stats");
                    break format!("no stats for {MISSED_INTERVALS} intervals ({} ms)", grace.as_millis());
                }
            },
            Some(frame) = control_rx.recv() => {
                if let Err(error) = send.send(&frame).await {
                    break format!("control stream failed: {error}");
                }
            }
            closed = connection.closed() => break format!("connection closed: {closed}"),
        }
    };
    if shared.registry.remove(&node) {
        // Only the registered connection of the id leaves the core: a
        // replaced one was replaced there by the newer one's `node_up`.
        shared.scheduler.node_down(&node);
        tracing::info!(node = %node.spec.id, %reason, "node dropped");
        shared.announce(crate::http::AdminEvent::new(
            "node_down",
            format!("{}: {reason}", node.spec.id),
        ));
    }
    metrics::gauge!("connected_agents").set(shared.registry.len() as f64);
    connection.close(crate::CLOSE_STATS_MISSED.into(), reason.as_bytes());
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
