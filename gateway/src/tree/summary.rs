//! This gateway's fleet as one node of its parent: the spec it registers
//! (every service some node can run now, each with the fleet's capacity),
//! the load it reports (what of that capacity is taken by calls the
//! parent did not send), and its stats (its nodes' summed).

use std::collections::BTreeMap;

use protocol::{GpuStats, NodeSpec, NodeStats, ServiceSpec, limits};
use switchyard_core::{Core, fleet::Capacity};

/// What the parent is told, read from the core at one instant.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Summary {
    /// The node spec: this gateway as a node.
    pub(super) spec: NodeSpec,
    /// Per service: calls that hold the fleet's capacity and did not come
    /// from the parent (the parent counts those it sent itself), so that
    /// the parent's free count is the fleet's free slots.
    pub(super) others: Vec<(String, u32)>,
    /// Calls waiting in this gateway's queues, per service with any.
    pub(super) queued: Vec<protocol::QueuedCalls>,
}

/// The summary of `core`'s fleet for gateway `id`, given the calls the
/// parent has in flight here per service.
pub(super) fn summarize(
    core: &Core,
    id: &str,
    stats_interval_ms: u32,
    from_parent: &BTreeMap<String, u32>,
) -> Summary {
    let capacity = core.fleet().capacity();
    let cost: f32 = core
        .fleet()
        .iter()
        .map(|n| n.spec.cost_per_hour)
        .filter(|c| c.is_finite() && *c >= 0.0)
        .sum();
    let services: Vec<(&String, &Capacity)> = capacity
        .iter()
        .filter(|(_, c)| c.total > 0)
        .take(limits::MAX_SERVICES)
        .collect();
    let spec = NodeSpec {
        id: id.to_string(),
        region: String::new(),
        labels: Vec::new(),
        cost_per_hour: cost,
        services: services
            .iter()
            .map(|(name, c)| ServiceSpec {
                name: (*name).clone(),
                max_concurrent: c.total,
                load_ms: 0,
                model: c.model,
                policy: None,
                idempotent: c.idempotent,
            })
            .collect(),
        slots: Vec::new(),
        stats_interval_ms,
        heartbeat_ms: None,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        gateway: true,
    };
    let others = services
        .iter()
        .map(|(name, c)| {
            let parents = from_parent.get(*name).copied().unwrap_or(0);
            let taken = c.total.saturating_sub(c.free).saturating_sub(parents);
            ((*name).clone(), taken)
        })
        .collect();
    let queued = core
        .queue_views(std::time::Instant::now())
        .into_iter()
        .filter(|q| q.length > 0)
        .take(limits::MAX_SERVICES)
        .map(|q| protocol::QueuedCalls {
            service: q.service,
            calls: q.length,
            oldest_wait_ms: u32::try_from(q.oldest_wait_ms).unwrap_or(u32::MAX),
        })
        .collect();
    Summary {
        spec,
        others,
        queued,
    }
}

/// The fleet's stats as one node's: memory summed, CPU the mean of the
/// nodes that reported, every node's GPUs (numbered anew, at most 256),
/// calls running per service.
pub(super) fn stats(core: &Core) -> NodeStats {
    let mut out = NodeStats::default();
    let mut cpu = (0.0f64, 0u32);
    for node in core.fleet().iter() {
        let Some(stats) = &node.stats else { continue };
        cpu = (cpu.0 + f64::from(stats.cpu_pct), cpu.1 + 1);
        out.mem_used_mib = out.mem_used_mib.saturating_add(stats.mem_used_mib);
        out.mem_total_mib = out.mem_total_mib.saturating_add(stats.mem_total_mib);
        for gpu in stats
            .gpus
            .iter()
            .take(256usize.saturating_sub(out.gpus.len()))
        {
            out.gpus.push(GpuStats {
                index: out.gpus.len() as u32,
                name: format!("{}/{}", node.spec.id, gpu.name),
                ..gpu.clone()
            });
        }
    }
    if cpu.1 > 0 {
        out.cpu_pct = (cpu.0 / f64::from(cpu.1)) as f32;
    }
    out.in_flight = core
        .fleet()
        .capacity()
        .into_iter()
        .filter(|(_, c)| c.total > 0)
        .map(|(name, c)| (name, c.load))
        .take(limits::MAX_SERVICES)
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use protocol::{NodeSpec, ServiceSpec};
    use switchyard_core::{CoreConfig, Event};

    use super::*;

    fn node(id: &str, services: &[(&str, u32)]) -> NodeSpec {
        NodeSpec {
            id: id.into(),
            region: String::new(),
            labels: Vec::new(),
            cost_per_hour: 1.5,
            services: services
                .iter()
                .map(|(name, max)| ServiceSpec {
                    name: (*name).into(),
                    max_concurrent: *max,
                    load_ms: 0,
                    model: false,
                    policy: None,
                    idempotent: true,
                })
                .collect(),
            slots: Vec::new(),
            heartbeat_ms: None,
            stats_interval_ms: 1000,
            agent_version: String::new(),
            gateway: false,
        }
    }

    #[test]
    fn the_fleet_registers_as_one_gateway_node_with_its_capacity() {
        let mut core = Core::new(CoreConfig::default());
        let now = Instant::now();
        for (key, spec) in [
            (1, node("a", &[("echo", 4), ("sum", 1)])),
            (2, node("b", &[("echo", 2)])),
        ] {
            core.handle(Event::NodeUp { node: key, spec }, now);
        }
        core.handle(
            Event::Load {
                node: 1,
                in_flight: vec![("echo".into(), 3)],
                jobs_in_flight: None,
                counted: switchyard_core::Counted::Others,
            },
            now,
        );
        // The parent has one echo call here (running or queued).
        let from_parent = [("echo".to_string(), 1)].into();
        let summary = summarize(&core, "site-b", 500, &from_parent);
        assert!(summary.spec.gateway);
        assert_eq!(summary.spec.id, "site-b");
        assert!(summary.spec.validate().is_ok());
        let services: Vec<_> = summary
            .spec
            .services
            .iter()
            .map(|s| (s.name.as_str(), s.max_concurrent, s.idempotent))
            .collect();
        assert_eq!(services, [("echo", 6, true), ("sum", 1, true)]);
        // 3 of 6 echo slots taken, one of them by the parent's call: the
        // parent sees 2 taken by others, plus its own 1: 3 free.
        assert_eq!(summary.others, [("echo".into(), 2), ("sum".into(), 0)]);
        assert_eq!(summary.spec.cost_per_hour, 3.0);
        // No node: a gateway node with no service, still valid.
        let empty = summarize(
            &Core::new(CoreConfig::default()),
            "site-c",
            500,
            &BTreeMap::new(),
        );
        assert!(empty.spec.services.is_empty() && empty.spec.validate().is_ok());
    }
}
