//! The loaded policies and choosing a node for a call: which policy a call
//! uses (its `policy` hint, its service's, the default), the pick through
//! the policy host's `PolicyBalance` (the policy's `score`, with its scores
//! and reason for "why this node"), and the built-in round-robin when no
//! policy is loaded or one fails (fail-open, configurable). The table of
//! loaded policies is [`table`], kept in step with the plugins folder by
//! [`watcher`].

use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use policy_host::types::Outcome;
use policy_host::{
    NativeRoundRobin, NodeDirectory, PickFailure, Policy, PolicyBalance, PolicyEngine, PolicyError,
    TrapReason,
};
use protocol::{CallError, CallHead, ErrorKind};
use rand::{Rng, SeedableRng, rngs::StdRng};

use switchyard_core::{PickError, PickRequest, Ranking};

use crate::fleet::Registry;
pub(crate) use decisions::{Decisions, Explanation, truncate};
use directory::Directory;
use table::Table;
pub(crate) use table::pushed_source;
pub(crate) use watcher::WatchHandle;
pub(crate) use watcher::start as watch;

mod decisions;
mod directory;
mod explain;
mod table;
mod watcher;

/// The name a pick reports when the built-in round-robin made it.
pub(crate) const BUILTIN_ROUND_ROBIN: &str = "builtin-round-robin";

/// The name a pick reports when a swap chose the node: the node loaded the
/// service for the call at the head of its queue.
pub(crate) const SWAP_PICK: &str = "swap";

/// The name a pick reports when the call waited here and the parent
/// gateway took it to run on a sibling with free capacity (rebalancing).
pub(crate) const HAND_UP_PICK: &str = "hand-up";

/// The loaded policies and the rules for choosing one per call.
pub struct Policies {
    engine: PolicyEngine,
    directory: Arc<dyn NodeDirectory>,
    table: RwLock<Table>,
    fallback: NativeRoundRobin,
    default_policy: String,
    /// Candidates kept per explanation (`[decisions] top`).
    explain_top: usize,
    fail_open: bool,
    start: Instant,
    rng: Mutex<StdRng>,
}

/// Which policy version chose a call's node (so the call's outcome is
/// observed by that same version, even after a hot-swap).
pub struct Picked {
    /// The policy's name (or [`BUILTIN_ROUND_ROBIN`], [`SWAP_PICK`]).
    pub policy_name: String,
    policy: Option<Arc<Policy>>,
    /// Why it chose: scores and reason, recorded when the call is
    /// dispatched ([`decisions`]).
    pub explanation: Option<Explanation>,
    /// When the policy ran and how long it took (`None` for the built-in
    /// picks), for the call's `pick` span.
    pub ran: Option<(Instant, std::time::Duration)>,
}

impl std::fmt::Debug for Picked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Picked")
            .field("policy_name", &self.policy_name)
            .finish_non_exhaustive()
    }
}

impl Policies {
    /// An empty table with the configured default policy and per-service
    /// policies; [`watcher`] loads the plugins.
    ///
    /// # Errors
    /// A [`PolicyError`] when the wasm engine cannot start.
    pub fn new(
        config: &crate::GatewayConfig,
        registry: Arc<Registry>,
    ) -> Result<Self, PolicyError> {
        let engine = PolicyEngine::new(policy_host::EngineConfig {
            pick_deadline: std::time::Duration::from_millis(config.pick_deadline_ms),
            cache_dir: config
                .plugin_cache
                .then(|| config.data_dir.join("wasm-cache")),
            // A trapped policy is rebuilt off the hot path; the core's
            // fallback serves its calls meanwhile.
            rebuild_in_background: true,
            ..policy_host::EngineConfig::default()
        })?;
        let table = Table {
            services: config
                .services
                .iter()
                .filter_map(|(name, s)| Some((name.clone(), s.policy.clone()?)))
                .collect(),
            ..Table::default()
        };
        Ok(Self {
            engine,
            directory: Arc::new(Directory(registry)),
            table: RwLock::new(table),
            fallback: NativeRoundRobin::default(),
            default_policy: config.default_policy.clone(),
            explain_top: config.decisions.top,
            fail_open: config.fail_open,
            start: Instant::now(),
            rng: Mutex::new(match config.seed {
                Some(seed) => StdRng::seed_from_u64(seed),
                None => StdRng::from_os_rng(),
            }),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Milliseconds since the gateway started: the clock policies see.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The policy for `service`: the call's hint, else the configured one
    /// if loaded, else the one its nodes ask for if loaded, else the
    /// default if loaded; `None` means the built-in round-robin.
    fn resolve(
        table: &Table,
        default: &str,
        service: &str,
        hint: Option<&str>,
    ) -> Option<Arc<Policy>> {
        if let Some(p) = hint.and_then(|h| table.by_name.get(h)) {
            return Some(p.clone());
        }
        let by_name = |name: &String| table.by_name.get(name);
        match table.services.get(service) {
            Some(configured) => by_name(configured),
            None => table.asked.get(service).and_then(by_name),
        }
        .or_else(|| table.by_name.get(default))
        .cloned()
    }

    /// # Errors
    /// `BadRequest` when the call's `policy` hint names no loaded policy.
    fn choose(&self, head: &CallHead) -> Result<Option<Arc<Policy>>, CallError> {
        let table = self.read();
        let hint = head.hint("policy");
        if let Some(name) = hint
            && !table.by_name.contains_key(name)
        {
            let mut loaded: Vec<_> = table.by_name.keys().cloned().collect();
            loaded.sort();
            return Err(CallError::new(
                ErrorKind::BadRequest,
                format!("unknown policy {name:?} (loaded: {})", loaded.join(", ")),
            ));
        }
        Ok(Self::resolve(
            &table,
            &self.default_policy,
            &head.service,
            hint,
        ))
    }

    /// Runs the service's policy (or the call's `policy` hint) over the
    /// core's candidates through [`PolicyBalance`] (its `score`, else its
    /// `rank` or `pick`): the ranking for the core, with the policy's scores
    /// and reason, and which policy version made it (it observes the call's
    /// outcome) with the explanation built from that ranking. Times the pick
    /// (`policy_pick_duration_seconds`) and counts a failed one by reason
    /// (`policy_traps_total`).
    ///
    /// # Errors
    /// [`PickError::Refused`] for an unknown `policy` hint (`bad request`)
    /// or when the policy rejects the call (`rejected`);
    /// [`PickError::Failed`] when the policy fails (the core then falls back
    /// to its round-robin, or fails the call when failing closed).
    pub fn pick(&self, request: &PickRequest) -> (Result<Ranking, PickError>, Picked) {
        let head = &request.head;
        let policy = match self.choose(head) {
            Ok(Some(policy)) => policy,
            Ok(None) => {
                // No policy loaded: the built-in round-robin ranks.
                let first = self.fallback.pick(request.candidates.len());
                let n = request.candidates.len();
                let nodes = (0..n)
                    .map(|i| request.candidates[(first + i) % n].node)
                    .collect();
                let mut picked = self.builtin_pick();
                picked.explanation = Some(explain::without_policy(
                    BUILTIN_ROUND_ROBIN,
                    "no policy loaded: round robin, next in turn".into(),
                ));
                return (Ok(Ranking::new(nodes)), picked);
            }
            Err(refused) => return (Err(PickError::Refused(refused)), self.builtin_pick()),
        };
        let mut picked = Picked {
            policy_name: policy.name().to_string(),
            policy: Some(policy.clone()),
            explanation: None,
            ran: None,
        };
        let random = || self.rng.lock().map(|mut r| r.random()).unwrap_or_default();
        let mut balance = PolicyBalance::new(&*policy, self.start, random);
        let started = Instant::now();
        let ranked = balance.rank(request, started);
        let took = started.elapsed();
        picked.ran = Some((started, took));
        metrics::histogram!("policy_pick_duration_seconds", "policy" => policy.name().to_string())
            .record(took.as_secs_f64());
        let ranking = match ranked {
            Ok(ranking) => {
                picked.explanation = Some(explain::explain(
                    policy.name(),
                    &ranking,
                    request,
                    self.explain_top,
                ));
                Ok(ranking)
            }
            Err(failure) => {
                if let PickFailure::Failed(error) = &failure
                    && !matches!(error, PolicyError::Rebuilding { .. })
                {
                    count_trap(&policy, error);
                }
                Err(failure.into())
            }
        };
        (ranking, picked)
    }

    /// The pick the built-in round-robin made (named
    /// [`BUILTIN_ROUND_ROBIN`], observed by no policy).
    pub fn builtin_pick(&self) -> Picked {
        Picked {
            policy_name: BUILTIN_ROUND_ROBIN.to_string(),
            policy: None,
            explanation: None,
            ran: None,
        }
    }

    /// The pick the core's built-in round-robin made because the service's
    /// policy failed (fail-open), explained as such.
    pub fn fallback_pick(&self, service: &str) -> Picked {
        let mut picked = self.builtin_pick();
        picked.explanation = Some(explain::without_policy(
            BUILTIN_ROUND_ROBIN,
            format!("the policy of {service} failed: round robin (fail-open)"),
        ));
        picked
    }

    /// The pick of a call reserved by a swap: named [`SWAP_PICK`]; its
    /// outcome is observed by the service's active policy.
    pub fn swap_pick(&self, service: &str) -> Picked {
        let table = self.read();
        Picked {
            policy_name: SWAP_PICK.to_string(),
            policy: Self::resolve(&table, &self.default_policy, service, None),
            ran: None,
            explanation: Some(explain::without_policy(
                SWAP_PICK,
                format!("the node loaded {service} into a slot for this call"),
            )),
        }
    }

    /// The pick of a call handed up to the parent gateway: no policy chose
    /// it, and none is told how it went.
    pub fn hand_up_pick(&self) -> Picked {
        Picked {
            policy_name: HAND_UP_PICK.to_string(),
            policy: None,
            ran: None,
            explanation: Some(explain::without_policy(
                HAND_UP_PICK,
                "it waited here while a sibling subtree had free capacity: the parent gateway runs it there".to_string(),
            )),
        }
    }

    /// Tells the policy version that picked a call how it went.
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
            count_trap(policy, &error);
            tracing::warn!(policy = policy.name(), %error, "policy observe failed");
        }
    }
}

/// Counts a failed policy call in `policy_traps_total{policy,reason}`.
fn count_trap(policy: &Policy, error: &PolicyError) {
    let reason = match error {
        PolicyError::Trap {
            reason: TrapReason::Deadline,
            ..
        } => "deadline",
        PolicyError::Trap {
            reason: TrapReason::Memory,
            ..
        } => "memory",
        PolicyError::Trap {
            reason: TrapReason::StackOverflow,
            ..
        } => "stack_overflow",
        PolicyError::Trap { .. } => "trap",
        PolicyError::BadDecision { .. } => "bad_decision",
        PolicyError::BadInput { .. } => "bad_input",
        PolicyError::BadScores { .. } => "bad_scores",
        _ => "other",
    };
    metrics::counter!("policy_traps_total", "policy" => policy.name().to_string(), "reason" => reason).increment(1);
}

/// Help texts of the policy series.
pub(crate) fn describe_metrics() {
    metrics::describe_counter!(
        "policy_traps_total",
        "Policy picks or observes that trapped."
    );
    metrics::describe_histogram!(
        "policy_pick_duration_seconds",
        metrics::Unit::Seconds,
        "Time of one policy pick."
    );
    metrics::describe_counter!("policy_loads_total", "Policy versions loaded.");
    metrics::describe_counter!("policy_load_failures_total", "Plugin files refused.");
}

#[cfg(test)]
mod tests;
