//! The gauges one node's stats reports set, looked up in the metrics
//! registry once per connection instead of on every report: a lookup
//! builds the label strings, hashes them and compares the key, for each of
//! a report's gauges, every second for every node.
//!
//! Gauges stay in the registry (only counters and histograms idle out), so
//! a handle kept here sets the same series `/metrics` renders.

use metrics::Gauge;
use protocol::{GpuStats, NodeSpec, NodeStats};

/// One GPU's gauges, `{node, gpu}`.
struct GpuGauges {
    index: u32,
    utilization: Gauge,
    memory_used: Gauge,
    memory_total: Gauge,
    temperature: Gauge,
    power: Gauge,
}

impl GpuGauges {
    fn new(node: &str, index: u32) -> Self {
        let gauge = |name: &'static str| metrics::gauge!(name, "node" => node.to_string(), "gpu" => index.to_string());
        Self {
            index,
            utilization: gauge("gpu_utilization_percent"),
            memory_used: gauge("gpu_memory_used_bytes"),
            memory_total: gauge("gpu_memory_total_bytes"),
            temperature: gauge("gpu_temperature_celsius"),
            power: gauge("gpu_power_watts"),
        }
    }

    fn set(&self, gpu: &GpuStats) {
        self.utilization.set(f64::from(gpu.util_pct));
        self.memory_used.set(mib(gpu.mem_used_mib));
        self.memory_total.set(mib(gpu.mem_total_mib));
        self.temperature.set(f64::from(gpu.temperature_c));
        self.power.set(f64::from(gpu.power_w));
    }
}

/// A node's resource, GPU, in-flight and health gauges.
pub(super) struct NodeGauges {
    node: String,
    cpu: Gauge,
    memory_used: Gauge,
    memory_total: Gauge,
    in_flight: Gauge,
    /// `GpuGauges` by GPU index, made when a report first names the index;
    /// at most [`MAX_GPUS`](super::agents::MAX_GPUS), further indices are
    /// not recorded.
    gpus: Vec<GpuGauges>,
    /// `service_healthy{node, service}` for each service of the spec.
    health: Vec<(String, Gauge)>,
}

impl NodeGauges {
    /// The gauges of the node `spec` describes.
    pub(super) fn new(spec: &NodeSpec) -> Self {
        let node = spec.id.clone();
        let gauge = |name: &'static str| metrics::gauge!(name, "node" => node.clone());
        Self {
            cpu: gauge("node_cpu_percent"),
            memory_used: gauge("node_memory_used_bytes"),
            memory_total: gauge("node_memory_total_bytes"),
            in_flight: gauge("node_in_flight"),
            health: spec
                .services
                .iter()
                .map(|s| {
                    let g = metrics::gauge!(
                        "service_healthy",
                        "node" => node.clone(),
                        "service" => s.name.clone()
                    );
                    (s.name.clone(), g)
                })
                .collect(),
            gpus: Vec::new(),
            node,
        }
    }

    /// Sets the resource and GPU gauges from `stats`.
    pub(super) fn record_stats(&mut self, stats: &NodeStats) {
        self.cpu.set(f64::from(stats.cpu_pct));
        self.memory_used.set(mib(stats.mem_used_mib));
        self.memory_total.set(mib(stats.mem_total_mib));
        for gpu in &stats.gpus {
            match self.gpus.iter().find(|g| g.index == gpu.index) {
                Some(gauges) => gauges.set(gpu),
                None if self.gpus.len() < super::agents::MAX_GPUS => {
                    let gauges = GpuGauges::new(&self.node, gpu.index);
                    gauges.set(gpu);
                    self.gpus.push(gauges);
                }
                None => {}
            }
        }
    }

    /// Sets `service_healthy` for every service of the spec: 0 for those
    /// named in `unhealthy`, 1 for the rest.
    pub(super) fn record_health(&self, unhealthy: &[String]) {
        for (service, gauge) in &self.health {
            let healthy = !unhealthy.contains(service);
            gauge.set(if healthy { 1.0 } else { 0.0 });
        }
    }

    /// Sets `node_in_flight`.
    pub(super) fn record_in_flight(&self, calls: u32) {
        self.in_flight.set(f64::from(calls));
    }
}

/// MiB to bytes, as a gauge value.
fn mib(value: u64) -> f64 {
    value as f64 * 1024.0 * 1024.0
}
