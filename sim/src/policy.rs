//! The real wasm policies, as the gateway runs them: loaded by the policy
//! host and asked through its [`PolicyBalance`], the same adapter the
//! gateway uses (contract 1.1.0's `scorer`, else `rank` or `pick`, over the
//! core's candidates as columns, with the call's prefix hashes and the
//! candidates' model-server load as context), told how each call ended.
//! Time and randomness come from the simulation (virtual milliseconds, a
//! seeded RNG), so a run is deterministic.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use policy_host::types::NodeInfo;
use policy_host::{EngineConfig, NodeDirectory, Policy, PolicyBalance, PolicyEngine, PolicyError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use switchyard_core::NodeKey;

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

/// Each pick's `random`: the run's seeded RNG.
pub type SimRandom = Box<dyn FnMut() -> u64 + Send>;

/// A loaded policy with the simulation's clock (virtual milliseconds since
/// the run's base) and RNG, as the gateway runs it: the policy host's
/// [`PolicyBalance`], a [`switchyard_core::Balance`] for
/// [`switchyard_core::drive`]. Its `failures()` counts the picks and
/// observes where the policy failed (the core then falls back).
pub type WasmBalance = PolicyBalance<Policy, SimRandom>;

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

/// Loads the policy at `path` as a [`WasmBalance`]: `base` is virtual time
/// 0, `seed` seeds the `random` of each pick.
///
/// # Errors
/// The policy host's, when the file cannot be loaded.
pub fn load(
    engine: &PolicyEngine,
    path: &Path,
    nodes: Directory,
    base: Instant,
    seed: u64,
) -> Result<WasmBalance, PolicyError> {
    let policy = engine.load(path, Arc::new(nodes))?;
    let mut rng = StdRng::seed_from_u64(seed);
    Ok(PolicyBalance::new(
        policy,
        base,
        Box::new(move || rng.random()),
    ))
}
