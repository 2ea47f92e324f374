//! Building a run: the scenario's nodes, services, arrival streams and
//! the policy, each random stream seeded from the scenario's seed.

use super::*;

impl Sim {
    /// Builds a run of `scenario` with the policy at `policy_path`.
    ///
    /// # Errors
    /// The scenario's trace files or the policy cannot be loaded.
    pub fn new(
        scenario: &Scenario,
        engine: &PolicyEngine,
        policy_path: &Path,
    ) -> Result<Self, SimError> {
        let base = Instant::now();
        let directory = Directory::default();
        let balance = crate::policy::load(
            engine,
            policy_path,
            directory.clone(),
            base,
            derive_seed(scenario.seed, 1),
        )
        .map_err(|source| SimError::Policy {
            path: policy_path.display().to_string(),
            source,
        })?;
        let mut services = Vec::new();
        for s in &scenario.services {
            services.push(ServiceRt {
                name: s.name.clone(),
                sampler: Sampler::new(&s.service_time, scenario)?,
                load_ms: s.load_ms,
            });
        }
        let index = |name: &str| services.iter().position(|s| s.name == name);
        let mut nodes = Vec::new();
        let mut node_specs = Vec::new();
        let mut ids = Vec::new();
        let mut caps = Vec::new();
        let mut always = Vec::new();
        for g in &scenario.nodes {
            let hosted = g.hosted();
            for id in g.ids() {
                let slots = g
                    .slots
                    .iter()
                    .map(|s| SimSlot {
                        name: s.name.clone(),
                        loaded: s.loaded.as_deref().and_then(index),
                        load: SlotLoad::Idle,
                    })
                    .collect();
                nodes.push(SimNode {
                    workers: g.workers,
                    busy: 0,
                    queue: VecDeque::new(),
                    speed: g.speed,
                    cost_per_hour: g.cost_per_hour,
                    windows: g.windows.clone(),
                    slots,
                    active: vec![0; services.len()],
                    gpus: g.gpus,
                    gpu_mem_mib: g.gpu_mem_mib,
                    model: g.model.as_ref().map(NodeModel::new),
                    hosts: services.iter().map(|s| hosted.contains(&s.name)).collect(),
                });
                let labels: Vec<(String, String)> = g
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                node_specs.push(NodeSpec {
                    id: id.clone(),
                    region: g.region.clone(),
                    labels: labels.clone(),
                    cost_per_hour: g.cost_per_hour as f32,
                    services: hosted
                        .iter()
                        .map(|name| ServiceSpec {
                            name: name.clone(),
                            max_concurrent: g.max_concurrent,
                            load_ms: if g.services.contains(name) {
                                0
                            } else {
                                index(name).map_or(0, |i| services[i].load_ms)
                            },
                            model: false,
                            policy: None,
                            idempotent: false,
                        })
                        .collect(),
                    slots: g
                        .slots
                        .iter()
                        .map(|s| SlotSpec {
                            name: s.name.clone(),
                            can_host: s.can_host.clone(),
                            loaded: s.loaded.clone(),
                        })
                        .collect(),
                    stats_interval_ms: scenario.stats_interval_ms,
                    heartbeat_ms: None,
                    agent_version: "switchyard-sim".into(),
                    gateway: false,
                });
                directory.set(
                    key(nodes.len() - 1),
                    NodeInfo {
                        id: id.clone(),
                        region: g.region.clone(),
                        labels,
                        gpus: Vec::new(),
                    },
                );
                ids.push(id);
                caps.push(g.max_concurrent);
                always.push(
                    services
                        .iter()
                        .map(|s| g.services.contains(&s.name))
                        .collect(),
                );
            }
        }
        let mut streams = Vec::new();
        for (i, a) in scenario.arrivals.iter().enumerate() {
            let mut head = CallHead::new(a.service.clone(), 0, a.timeout_ms.unwrap_or(u32::MAX));
            head.priority = a.priority;
            head.hints = a
                .hints
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let i = i as u64;
            streams.push(Stream {
                arrivals: Arrivals::new(&a.process, scenario)?,
                rng: StdRng::seed_from_u64(derive_seed(scenario.seed, 100 + i)),
                work_rng: StdRng::seed_from_u64(derive_seed(scenario.seed, 10_000 + i)),
                service: index(&a.service).unwrap_or(0),
                head: Arc::new(head),
                timeout: a.timeout_ms.map(|ms| ns(f64::from(ms) / 1000.0)),
                chat: match &a.process {
                    crate::scenario::Process::Chat(chat) => {
                        Some(ChatRt::new(chat, derive_seed(scenario.seed, 20_000 + i)))
                    }
                    _ => None,
                },
            });
        }
        let preloads = scenario
            .preloads
            .iter()
            .filter_map(|p| {
                let node = ids.iter().position(|id| *id == p.node)?;
                let slot = nodes[node].slots.iter().position(|s| s.name == p.slot)?;
                Some(PreloadRt {
                    at: ns(p.at_s),
                    every: p.every_s.map(ns),
                    node,
                    slot,
                    service: index(&p.service)?,
                })
            })
            .collect();
        let end = ns(scenario.duration_s);
        Ok(Self {
            scenario: scenario.name.clone(),
            core: Core::new(switchyard_core::CoreConfig {
                seed: derive_seed(scenario.seed, 3),
                ..scenario.core.config()
            }),
            balance,
            directory,
            base,
            now: 0,
            heap: BinaryHeap::new(),
            seq: 0,
            services,
            nodes,
            node_specs,
            streams,
            preloads,
            calls: HashMap::new(),
            next_call: 1,
            tenant: Arc::from("sim"),
            tick_at: None,
            end,
            stop: end + ns(scenario.drain_s),
            stats_interval: Nanos::from(scenario.stats_interval_ms) * 1_000_000,
            fail_rng: StdRng::seed_from_u64(derive_seed(scenario.seed, 2)),
            recorder: Recorder::new(scenario.warmup_s, scenario.duration_s),
            order: NodeOrder::new(ids, caps, always, ns(scenario.warmup_s), end),
            swaps: 0,
            events: 0,
        })
    }
}
