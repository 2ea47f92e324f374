//! The real wasm policies, as the gateway runs them: loaded by the policy
//! host, asked to score (contract 1.1.0's `scorer`, else `rank` or `pick`)
//! with the core's candidates as columns and the call's prefix hashes and
//! the candidates' model-server load as context, told how each call ended. Time and randomness come from the simulation (virtual
//! milliseconds, a seeded RNG), so a run is deterministic.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use policy_host::types::{Candidates, Context, NodeInfo, Outcome, Request, Verdict};
use policy_host::{EngineConfig, NodeDirectory, Policy, PolicyEngine, PolicyError};
use protocol::{CallError, ErrorKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use switchyard_core::{Balance, NodeKey, PickError, PickRequest, Ranking};

/// The policies' `host.node-info`: what the simulated nodes declare (id,
/// region, labels) and their GPUs as of their latest stats.
#[derive(Debug, Default, Clone)]
pub struct Directory {
    nodes: Arc<RwLock<HashMap<NodeKey, NodeInfo>>>,
}

impl Directory {
    /// Sets what node `key` answers.
    pub fn set(&self, key: NodeKey, info: NodeInfo) {
        self.nodes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, info);
    }

    /// Changes what node `key` answers, if known.
    pub fn update(&self, key: NodeKey, f: impl FnOnce(&mut NodeInfo)) {
        if let Some(info) = self
            .nodes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&key)
        {
            f(info);
        }
    }
}

impl NodeDirectory for Directory {
    fn node_info(&self, key: u32) -> Option<NodeInfo> {
        self.nodes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned()
    }
}

/// A loaded policy with the simulation's clock and RNG: a
/// [`switchyard_core::Balance`] for [`switchyard_core::drive`].
pub struct WasmBalance {
    policy: Policy,
    base: Instant,
    rng: StdRng,
    /// Picks where the policy failed (the core then falls back).
    pub failures: u64,
}

impl std::fmt::Debug for WasmBalance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmBalance")
            .field("policy", &self.policy.name())
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

/// The engine settings of the simulator: generous deadlines, since a pick's
/// wall-clock time must never change a deterministic run (a loaded machine
/// or a debug build may be slow; the shipped policies never loop).
pub fn engine_config() -> EngineConfig {
    EngineConfig {
        pick_deadline: Duration::from_secs(10),
        load_deadline: Duration::from_secs(60),
        // A trapped policy is rebuilt within the call, never beside it: a
        // background rebuild would let wall-clock timing pick the fallback.
        rebuild_in_background: false,
        ..EngineConfig::default()
    }
}

impl WasmBalance {
    /// Loads the policy at `path`; `base` is virtual time 0, `seed` seeds the
    /// `random` of each pick.
    ///
    /// # Errors
    /// The policy host's, when the file cannot be loaded.
    pub fn load(
        engine: &PolicyEngine,
        path: &Path,
        nodes: Directory,
        base: Instant,
        seed: u64,
    ) -> Result<Self, PolicyError> {
        let policy = engine.load(path, Arc::new(nodes))?;
        Ok(Self {
            policy,
            base,
            rng: StdRng::seed_from_u64(seed),
            failures: 0,
        })
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        self.policy.name()
    }

    fn now_ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX)
    }

    /// Tells the policy how a call ended (as the gateway does for every
    /// dispatched call).
    pub fn observe(&mut self, service: &str, node: NodeKey, node_ms: f32, ok: bool, now: Instant) {
        let outcome = Outcome {
            service: service.to_string(),
            node,
            latency_ms: node_ms,
            ok,
            now_ms: self.now_ms(now),
        };
        if self.policy.observe(&outcome).is_err() {
            self.failures += 1;
        }
    }
}

impl Balance for WasmBalance {
    fn pick(&mut self, request: &PickRequest, now: Instant) -> Result<Ranking, PickError> {
        let columns = Candidates::from(request.candidates.as_slice());
        let req = Request {
            service: request.head.service.clone(),
            payload_bytes: request.head.payload_len,
            hints: request.head.hints.clone(),
            now_ms: self.now_ms(now),
            random: self.rng.random(),
        };
        let context = Context::new(
            &request.prefix,
            request
                .candidates
                .iter()
                .map(|c| c.model_load.map(|l| (l.waiting, l.running, l.kv_cache_pct))),
        );
        match self.policy.score(&req, &columns, &context) {
            // The host checked the indices: they name candidates.
            Ok(Verdict::Scored(scored)) => Ok(Ranking {
                nodes: scored
                    .order
                    .iter()
                    .filter_map(|&i| request.candidates.get(i as usize).map(|c| c.node))
                    .collect(),
            }),
            Ok(Verdict::Reject(reason)) => Err(PickError::Refused(CallError {
                kind: ErrorKind::Rejected,
                message: format!("policy {} rejected the call: {reason}", self.policy.name()),
            })),
            Err(error) => {
                self.failures += 1;
                Err(PickError::Failed(error.to_string()))
            }
        }
    }
}
