//! What the simulated nodes report every `stats_interval_ms`: CPU and GPU
//! use (busy workers) and, with a model, its server's load.

use super::*;

impl Sim {
    /// Every node's stats: CPU and GPU use = busy workers.
    pub(super) fn stats(&mut self) {
        for i in 0..self.nodes.len() {
            let n = &self.nodes[i];
            let util = match n.workers {
                Some(w) => 100.0 * n.busy as f32 / w as f32,
                None => 0.0,
            };
            let gpus: Vec<GpuStats> = (0..n.gpus)
                .map(|index| GpuStats {
                    index,
                    name: "simulated GPU".into(),
                    util_pct: util,
                    mem_used_mib: 0,
                    mem_total_mib: n.gpu_mem_mib,
                    temperature_c: 0.0,
                    power_w: 0.0,
                })
                .collect();
            self.directory.update(key(i), |info| {
                info.gpus = gpus.iter().map(Gpu::from).collect();
            });
            self.core(Event::Stats {
                node: key(i),
                stats: NodeStats {
                    cpu_pct: util,
                    mem_used_mib: 0,
                    mem_total_mib: 0,
                    gpus,
                    in_flight: Vec::new(),
                    unhealthy: Vec::new(),
                    model_load: self.nodes[i].model_load(&self.services),
                },
            });
        }
        if self.now + self.stats_interval < self.end || !self.calls.is_empty() {
            self.at(self.now + self.stats_interval, Ev::Stats);
        }
    }
}

impl SimNode {
    /// What its model server reports (vLLM's waiting, running, KV-cache
    /// use), for every service it hosts; none without a model.
    fn model_load(&self, services: &[ServiceRt]) -> Vec<ServiceLoad> {
        let Some(model) = &self.model else {
            return Vec::new();
        };
        services
            .iter()
            .zip(&self.hosts)
            .filter(|(_, hosted)| **hosted)
            .map(|(s, _)| ServiceLoad {
                service: s.name.clone(),
                waiting: u32::try_from(self.queue.len()).unwrap_or(u32::MAX),
                running: self.busy,
                kv_cache_pct: model.kv.usage() * 100.0,
            })
            .collect()
    }
}
