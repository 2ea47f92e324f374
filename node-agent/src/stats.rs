//! Node resource figures: CPU and memory from sysinfo, GPUs from NVML.

use std::collections::HashSet;

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::error::NvmlError;
use protocol::{GpuStats, NodeStats};
use sysinfo::System;

const MIB: u64 = 1024 * 1024;

/// Samples the node's CPU, memory and GPUs.
///
/// Keep one collector for the agent's life: CPU utilisation is the average
/// since the previous sample, and NVML is initialised once.
pub struct StatsCollector {
    system: Option<System>,
    nvml: Option<Nvml>,
    /// GPU fields that failed once already, logged at debug only once.
    failed: HashSet<(u32, &'static str)>,
}

impl std::fmt::Debug for StatsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsCollector")
            .field("system", &self.system.is_some())
            .field("nvml", &self.nvml.is_some())
            .finish()
    }
}

impl Default for StatsCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl StatsCollector {
    /// A collector. Where NVML cannot start (no driver, no GPU) it logs once
    /// at info and reports no GPUs; where sysinfo cannot start it warns and
    /// reports zero CPU and memory.
    pub fn new() -> Self {
        let system = match System::new() {
            Ok(mut system) => {
                // CPU usage is a difference between two refreshes: take the first.
                system.refresh_cpu_usage();
                Some(system)
            }
            Err(e) => {
                tracing::warn!("system statistics unavailable: {e}; reporting zero cpu and memory");
                None
            }
        };
        let nvml = match Nvml::init() {
            Ok(nvml) => {
                match nvml.device_count() {
                    Ok(n) => tracing::info!("NVML ready: {n} GPUs"),
                    Err(e) => tracing::info!("NVML ready, but counting GPUs failed: {e}"),
                }
                Some(nvml)
            }
            Err(e) => {
                tracing::info!("NVML unavailable: {e}; reporting no GPUs");
                None
            }
        };
        Self {
            system,
            nvml,
            failed: HashSet::new(),
        }
    }

    /// Whether NVML started (GPUs are reported).
    pub fn has_nvml(&self) -> bool {
        self.nvml.is_some()
    }

    /// Takes a sample: CPU % since the previous sample (0..=100, all cores),
    /// memory in MiB, one entry per GPU. `in_flight` is left empty for the
    /// caller to fill. Blocks briefly (reads /proc, calls NVML): call it off
    /// the async executor.
    pub fn sample(&mut self) -> NodeStats {
        let mut stats = NodeStats::default();
        if let Some(system) = &mut self.system {
            system.refresh_cpu_usage();
            system.refresh_memory();
            stats.cpu_pct = system.global_cpu_usage().clamp(0.0, 100.0);
            stats.mem_used_mib = system.used_memory() / MIB;
            stats.mem_total_mib = system.total_memory() / MIB;
        }
        stats.gpus = self.gpus();
        stats
    }

    fn gpus(&mut self) -> Vec<GpuStats> {
        let Self { nvml, failed, .. } = self;
        let Some(nvml) = nvml else {
            return Vec::new();
        };
        let mut note = |index: u32, field: &'static str, e: NvmlError| {
            if failed.insert((index, field)) {
                tracing::debug!("GPU {index}: reading {field} failed: {e}; reporting 0");
            }
        };
        let count = match nvml.device_count() {
            Ok(count) => count,
            Err(e) => {
                note(u32::MAX, "device count", e);
                return Vec::new();
            }
        };
        let mut gpus = Vec::new();
        for index in 0..count {
            let device = match nvml.device_by_index(index) {
                Ok(device) => device,
                Err(e) => {
                    note(index, "device handle", e);
                    continue;
                }
            };
            let mut gpu = GpuStats {
                index,
                ..GpuStats::default()
            };
            match device.name() {
                Ok(name) => gpu.name = name,
                Err(e) => note(index, "name", e),
            }
            match device.utilization_rates() {
                Ok(u) => gpu.util_pct = u.gpu as f32,
                Err(e) => note(index, "utilization", e),
            }
            match device.memory_info() {
                Ok(m) => {
                    gpu.mem_used_mib = m.used / MIB;
                    gpu.mem_total_mib = m.total / MIB;
                }
                Err(e) => note(index, "memory", e),
            }
            match device.temperature(TemperatureSensor::Gpu) {
                Ok(t) => gpu.temperature_c = t as f32,
                Err(e) => note(index, "temperature", e),
            }
            match device.power_usage() {
                Ok(mw) => gpu.power_w = mw as f32 / 1000.0,
                Err(e) => note(index, "power", e),
            }
            gpus.push(gpu);
        }
        gpus
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_sane() {
        let mut collector = StatsCollector::new();
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        let stats = collector.sample();
        assert!(stats.mem_total_mib > 0, "{stats:?}");
        assert!(stats.mem_used_mib <= stats.mem_total_mib, "{stats:?}");
        assert!((0.0..=100.0).contains(&stats.cpu_pct), "{stats:?}");
        assert!(stats.in_flight.is_empty());
        if !collector.has_nvml() {
            assert!(stats.gpus.is_empty());
        }
        for gpu in &stats.gpus {
            assert!(gpu.mem_used_mib <= gpu.mem_total_mib, "{gpu:?}");
        }
        // A second sample works too (CPU from the difference).
        let again = collector.sample();
        assert!(again.mem_total_mib > 0);
    }
}
