//! Choosing a node: builds the policy's view of a call and its candidates,
//! runs the policy's `pick`, and falls back to the built-in round-robin when a
//! policy is missing or fails (fail-open, configurable).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use policy_host::types::{Candidate, Decision, Gpu, NodeInfo, Outcome, Request};
use policy_host::{NativeRoundRobin, NodeDirectory, Policy, PolicyEngine};
use protocol::{CallError, CallHead, ErrorKind};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::registry::{Node, Registry};

/// The name a pick reports when the built-in round-robin made it.
pub const BUILTIN_ROUND_ROBIN: &str = "builtin-round-robin";

/// The loaded policies and the rules for choosing one per call.
pub struct Policies {
    engine: PolicyEngine,
    directory: Arc<dyn NodeDirectory>,
    loaded: RwLock<HashMap<String, Arc<Policy>>>,
    fallback: NativeRoundRobin,
    default_policy: String,
    service_policy: HashMap<String, String>,
    fail_open: bool,
    start: Instant,
    rng: Mutex<StdRng>,
}

/// A pick: which candidate, and which policy chose it.
pub struct Picked {
    /// Index into the candidates.
    pub index: usize,
    /// The policy's name (or [`BUILTIN_ROUND_ROBIN`]).
    pub policy_name: String,
    policy: Option<Arc<Policy>>,
}

impl Policies {
    /// Loads every `*.wasm` in `plugins_dir`; a file that fails to load is
    /// logged and skipped.
    ///
    /// # Errors
    /// A [`policy_host::PolicyError`] when the wasm engine cannot start.
    pub fn load(
        config: &crate::GatewayConfig,
        registry: Arc<Registry>,
    ) -> Result<Self, policy_host::PolicyError> {
        let engine = PolicyEngine::new(policy_host::EngineConfig::default())?;
        let directory: Arc<dyn NodeDirectory> = Arc::new(Directory(registry));
        let policies = Self {
            engine,
            directory,
            loaded: RwLock::new(HashMap::new()),
            fallback: NativeRoundRobin::default(),
            default_policy: config.default_policy.clone(),
            service_policy: config
                .services
                .iter()
                .filter_map(|(name, s)| Some((name.clone(), s.policy.clone()?)))
                .collect(),
            fail_open: config.fail_open,
            start: Instant::now(),
            rng: Mutex::new(match config.seed {
                Some(seed) => StdRng::seed_from_u64(seed),
                None => StdRng::from_os_rng(),
            }),
        };
        policies.load_dir(&config.plugins_dir);
        if !policies.is_loaded(&policies.default_policy) {
            tracing::warn!(
                policy = %policies.default_policy,
                dir = %config.plugins_dir.display(),
                "default policy not loaded; picks use the built-in round-robin"
            );
        }
        Ok(policies)
    }

    fn load_dir(&self, dir: &Path) {
        if !dir.is_dir() {
            tracing::warn!(dir = %dir.display(), "plugins folder missing; no policy loaded");
            return;
        }
        for (path, result) in policy_host::load_dir(&self.engine, dir, self.directory.clone()) {
            match result {
                Ok(policy) => {
                    tracing::info!(
                        policy = policy.name(),
                        file = %path.display(),
                        hash = policy.content_hash(),
                        "policy loaded"
                    );
                    if let Ok(mut loaded) = self.loaded.write() {
                        loaded.insert(policy.name().to_string(), Arc::new(policy));
                    }
                }
                Err(error) => {
                    tracing::error!(file = %path.display(), %error, "policy rejected");
                }
            }
        }
    }

    /// Whether a policy named `name` is loaded.
    pub fn is_loaded(&self, name: &str) -> bool {
        self.loaded.read().is_ok_and(|l| l.contains_key(name))
    }

    /// Names of the loaded policies, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<_> = self
            .loaded
            .read()
            .map(|l| l.keys().cloned().collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Milliseconds since the gateway started: the clock policies see.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The policy for a call: the `policy` hint, else the service's configured
    /// policy, else the default. `None` means the built-in round-robin.
    ///
    /// # Errors
    /// `BadRequest` when the call names a policy that is not loaded.
    fn choose(&self, head: &CallHead) -> Result<Option<Arc<Policy>>, CallError> {
        let loaded = self
            .loaded
            .read()
            .map_err(|_| internal("policy table poisoned"))?;
        if let Some(name) = head.hint("policy") {
            return match loaded.get(name) {
                Some(p) => Ok(Some(p.clone())),
                None => Err(CallError {
                    kind: ErrorKind::BadRequest,
                    message: format!(
                        "unknown policy {name:?} (loaded: {})",
                        loaded.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                }),
            };
        }
        let configured = self.service_policy.get(&head.service);
        let name = configured.unwrap_or(&self.default_policy);
        if let Some(p) = loaded.get(name) {
            return Ok(Some(p.clone()));
        }
        if configured.is_some() {
            tracing::warn!(service = %head.service, policy = %name, "configured policy not loaded; using the default");
        }
        Ok(loaded.get(&self.default_policy).cloned())
    }

    /// Picks one of `nodes` (all hosting the service with a free slot).
    ///
    /// # Errors
    /// `BadRequest` for an unknown `policy` hint, `Rejected` when the policy
    /// refuses, `Internal` when the policy fails and the gateway fails closed.
    pub fn pick(
        &self,
        head: &CallHead,
        payload_bytes: u64,
        nodes: &[Arc<Node>],
    ) -> Result<Picked, CallError> {
        let Some(policy) = self.choose(head)? else {
            return Ok(self.builtin(nodes.len()));
        };
        let request = Request {
            service: head.service.clone(),
            payload_bytes,
            hints: head.hints.clone(),
            now_ms: self.now_ms(),
            random: self.rng.lock().map(|mut r| r.random()).unwrap_or_default(),
        };
        let candidates: Vec<Candidate> =
            nodes.iter().map(|n| candidate(n, &head.service)).collect();
        match policy.pick(&request, &candidates) {
            Ok(Decision::Route(i)) => Ok(Picked {
                index: i as usize,
                policy_name: policy.name().to_string(),
                policy: Some(policy),
            }),
            Ok(Decision::Reject(reason)) => Err(CallError {
                kind: ErrorKind::Rejected,
                message: format!("policy {} rejected the call: {reason}", policy.name()),
            }),
            Err(error) if self.fail_open => {
                tracing::warn!(policy = policy.name(), %error, "policy failed; built-in round-robin picks instead");
                Ok(self.builtin(nodes.len()))
            }
            Err(error) => Err(internal(&format!(
                "policy {} failed: {error}",
                policy.name()
            ))),
        }
    }

    fn builtin(&self, len: usize) -> Picked {
        Picked {
            index: self.fallback.pick(len),
            policy_name: BUILTIN_ROUND_ROBIN.to_string(),
            policy: None,
        }
    }

    /// Tells the policy that picked a call how it went.
    pub fn observe(&self, picked: &Picked, service: &str, node: u32, latency_ms: f32, ok: bool) {
        let Some(policy) = &picked.policy else { return };
        let outcome = Outcome {
            service: service.to_string(),
            node,
            latency_ms,
            ok,
            now_ms: self.now_ms(),
        };
        if let Err(error) = policy.observe(&outcome) {
            tracing::warn!(policy = policy.name(), %error, "policy observe failed");
        }
    }
}

fn internal(message: &str) -> CallError {
    CallError {
        kind: ErrorKind::Internal,
        message: message.to_string(),
    }
}

/// The policy's numbers-only view of a node for one service.
fn candidate(node: &Node, service: &str) -> Candidate {
    let (in_flight, max_concurrent, latency) = node
        .services
        .get(service)
        .map(|s| (s.in_flight(), s.max_concurrent, s.latency()))
        .unwrap_or_default();
    let mut c = Candidate {
        node: node.key,
        in_flight,
        max_concurrent,
        node_in_flight: node.in_flight_total(),
        cpu_pct: 0.0,
        mem_used_mib: 0,
        mem_total_mib: 0,
        gpu_count: 0,
        gpu_util_pct: 0.0,
        gpu_mem_free_mib: 0,
        gpu_mem_total_mib: 0,
        latency_ms: latency.value_ms,
        latency_samples: latency.samples,
        cost_per_hour: node.spec.cost_per_hour,
    };
    node.with_stats(|stats| {
        let Some(s) = stats else { return };
        c.cpu_pct = s.cpu_pct;
        c.mem_used_mib = s.mem_used_mib;
        c.mem_total_mib = s.mem_total_mib;
        c.gpu_count = u32::try_from(s.gpus.len()).unwrap_or(u32::MAX);
        if !s.gpus.is_empty() {
            c.gpu_util_pct = s.gpus.iter().map(|g| g.util_pct).sum::<f32>() / s.gpus.len() as f32;
        }
        c.gpu_mem_free_mib = s
            .gpus
            .iter()
            .map(|g| g.mem_total_mib.saturating_sub(g.mem_used_mib))
            .max()
            .unwrap_or(0);
        c.gpu_mem_total_mib = s.gpus.iter().map(|g| g.mem_total_mib).sum();
    });
    c
}

/// Answers the policies' `host.node-info` import from the registry.
struct Directory(Arc<Registry>);

impl NodeDirectory for Directory {
    fn node_info(&self, key: u32) -> Option<NodeInfo> {
        let node = self.0.by_key(key)?;
        let gpus = node.with_stats(|s| {
            s.map(|s| {
                s.gpus
                    .iter()
                    .map(|g| Gpu {
                        index: g.index,
                        name: g.name.clone(),
                        util_pct: g.util_pct,
                        mem_used_mib: g.mem_used_mib,
                        mem_total_mib: g.mem_total_mib,
                        temperature_c: g.temperature_c,
                        power_w: g.power_w,
                    })
                    .collect()
            })
            .unwrap_or_default()
        });
        Some(NodeInfo {
            id: node.spec.id.clone(),
            region: node.spec.region.clone(),
            labels: node.spec.labels.clone(),
            gpus,
        })
    }
}
