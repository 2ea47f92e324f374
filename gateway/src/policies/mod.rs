//! The policy table and choosing a node: which policies are loaded (kept in
//! step with the plugins folder by [`watcher`]), which service uses
//! which, building the policy's view of a call, running its `pick`, and
//! falling back to the built-in round-robin when a policy is missing or fails
//! (fail-open, configurable).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime};

use policy_host::types::Outcome;
use policy_host::{
    NativeRoundRobin, NodeDirectory, PickFailure, Policy, PolicyBalance, PolicyEngine, PolicyError,
    TrapReason,
};
use protocol::{
    CallError, CallHead, ErrorKind, PolicyTable, PolicyView, RejectedFile, ServicePolicy,
};
use rand::{Rng, SeedableRng, rngs::StdRng};

use switchyard_core::{PickError, PickRequest, Ranking};

use crate::fleet::Registry;
pub(crate) use decisions::{Decisions, Explanation};
use directory::Directory;
pub(crate) use watcher::WatchHandle;
pub(crate) use watcher::start as watch;

mod decisions;
mod directory;
mod explain;
mod watcher;

/// The name a pick reports when the built-in round-robin made it.
pub(crate) const BUILTIN_ROUND_ROBIN: &str = "builtin-round-robin";

/// The name a pick reports when a swap chose the node: the node loaded the
/// service for the call at the head of its queue.
pub(crate) const SWAP_PICK: &str = "swap";

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

#[derive(Default)]
struct Table {
    by_name: HashMap<String, Arc<Policy>>,
    /// Which file provides which policy name.
    by_file: HashMap<PathBuf, String>,
    /// Service → configured policy name (`gateway.toml`, then `policy set`).
    services: HashMap<String, String>,
    /// Files whose latest version was refused.
    rejected: BTreeMap<PathBuf, RejectedFile>,
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

    /// Compiles, instantiates and names the plugin `bytes` read from `path`
    /// (content hash `hash`), then installs it, replacing the version the file
    /// provided before. On failure the old version stays and the file is
    /// listed as rejected.
    pub fn load_file(&self, path: &Path, bytes: &[u8], hash: &str) {
        let origin = path.display().to_string();
        let loaded = self
            .engine
            .load_bytes(bytes, &origin, self.directory.clone())
            .and_then(|policy| {
                let table = self.read();
                match table.by_name.get(policy.name()) {
                    Some(_)
                        if table.by_file.get(path).map(String::as_str) != Some(policy.name()) =>
                    {
                        let owner = table
                            .by_file
                            .iter()
                            .find(|(_, n)| *n == policy.name())
                            .map(|(f, _)| f.display().to_string())
                            .unwrap_or_default();
                        Err(PolicyError::Instantiate {
                            policy: policy.name().to_string(),
                            reason: format!("policy name already provided by {owner}"),
                        })
                    }
                    _ => Ok(policy),
                }
            });
        match loaded {
            Ok(policy) => {
                let name = policy.name().to_string();
                let mut table = self.write();
                let replaced = table.by_file.insert(path.to_path_buf(), name.clone());
                if let Some(old) = replaced.filter(|old| *old != name) {
                    table.by_name.remove(&old);
                    tracing::warn!(file = %origin, old = %old, new = %name, "plugin file now provides another policy");
                }
                let previous = table.by_name.insert(name.clone(), Arc::new(policy));
                table.rejected.remove(path);
                drop(table);
                metrics::counter!("policy_loads_total", "policy" => name.clone()).increment(1);
                match previous {
                    Some(old) => {
                        tracing::info!(policy = %name, file = %origin, hash, old_hash = old.content_hash(), "policy replaced")
                    }
                    None => tracing::info!(policy = %name, file = %origin, hash, "policy loaded"),
                }
            }
            Err(error) => {
                tracing::error!(file = %origin, %error, "policy rejected; the previous version (if any) stays");
                metrics::counter!("policy_load_failures_total").increment(1);
                self.write().rejected.insert(
                    path.to_path_buf(),
                    RejectedFile {
                        file: origin,
                        reason: error.to_string(),
                        at_unix_ms: unix_ms(SystemTime::now()),
                    },
                );
            }
        }
    }

    /// Unloads the policy `path` provided. Services that used it fall back to
    /// the default policy (with a warning).
    pub fn remove_file(&self, path: &Path) {
        let mut table = self.write();
        table.rejected.remove(path);
        let Some(name) = table.by_file.remove(path) else {
            return;
        };
        table.by_name.remove(&name);
        let users: Vec<String> = table
            .services
            .iter()
            .filter(|(_, p)| **p == name)
            .map(|(s, _)| s.clone())
            .collect();
        drop(table);
        tracing::info!(policy = %name, file = %path.display(), "policy removed");
        if !users.is_empty() || name == self.default_policy {
            tracing::warn!(policy = %name, services = ?users, default = %self.default_policy, "removed policy was in use; those services fall back to the default policy");
        }
    }

    /// Makes `service` use the loaded policy `name` from the next call on.
    /// Returns the policy it used to be configured with.
    ///
    /// # Errors
    /// A message naming the loaded policies when `name` is not loaded.
    pub fn set_service_policy(&self, service: &str, name: &str) -> Result<Option<String>, String> {
        let mut table = self.write();
        if !table.by_name.contains_key(name) {
            let mut loaded: Vec<_> = table.by_name.keys().cloned().collect();
            loaded.sort();
            return Err(format!(
                "no policy named {name:?} is loaded (loaded: {})",
                loaded.join(", ")
            ));
        }
        Ok(table.services.insert(service.to_string(), name.to_string()))
    }

    /// Whether a policy named `name` is loaded.
    pub fn is_loaded(&self, name: &str) -> bool {
        self.read().by_name.contains_key(name)
    }

    /// Names of the loaded policies, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<_> = self.read().by_name.keys().cloned().collect();
        names.sort();
        names
    }

    /// The table for `switchyard policies`; `hosted` are the services nodes
    /// host now (listed even without a configured policy).
    pub fn table(&self, hosted: &[String]) -> PolicyTable {
        let table = self.read();
        let mut policies: Vec<PolicyView> = table
            .by_name
            .values()
            .map(|p| PolicyView {
                name: p.name().to_string(),
                file: table
                    .by_file
                    .iter()
                    .find(|(_, n)| n.as_str() == p.name())
                    .map(|(f, _)| f.display().to_string())
                    .unwrap_or_default(),
                content_hash: p.content_hash().to_string(),
                loaded_at_unix_ms: unix_ms(p.loaded_at()),
                picks_total: p.picks_total(),
                traps_total: p.traps_total(),
            })
            .collect();
        policies.sort_by(|a, b| a.name.cmp(&b.name));
        let mut names: Vec<&String> = table.services.keys().chain(hosted).collect();
        names.sort();
        names.dedup();
        let services = names
            .into_iter()
            .map(|service| ServicePolicy {
                service: service.clone(),
                configured: table.services.get(service).cloned(),
                active: Self::resolve(&table, &self.default_policy, service, None)
                    .map_or_else(|| BUILTIN_ROUND_ROBIN.to_string(), |p| p.name().to_string()),
            })
            .collect();
        PolicyTable {
            default_policy: self.default_policy.clone(),
            fail_open: self.fail_open,
            policies,
            services,
            rejected: table.rejected.values().cloned().collect(),
        }
    }

    /// Milliseconds since the gateway started: the clock policies see.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The policy for `service`: the configured one if loaded, else the
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
        table
            .services
            .get(service)
            .and_then(|name| table.by_name.get(name))
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
            return Err(CallError {
                kind: ErrorKind::BadRequest,
                message: format!("unknown policy {name:?} (loaded: {})", loaded.join(", ")),
            });
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
        };
        let random = || self.rng.lock().map(|mut r| r.random()).unwrap_or_default();
        let mut balance = PolicyBalance::new(&*policy, self.start, random);
        let started = Instant::now();
        let ranked = balance.rank(request, started);
        metrics::histogram!("policy_pick_duration_seconds", "policy" => policy.name().to_string())
            .record(started.elapsed().as_secs_f64());
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
            explanation: Some(explain::without_policy(
                SWAP_PICK,
                format!("the node loaded {service} into a slot for this call"),
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

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
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
mod tests {
    //! Picks through the real policy host: no policy loaded, a bad hint, a
    //! real plugin from `plugins/dist` (built by `make plugins`), and a
    //! plugin that traps (`plugins/dist-test`).

    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::Path;

    use protocol::CallHead;
    use switchyard_core::{Candidate, Core, CoreConfig};

    use super::*;

    fn policies() -> Policies {
        // A deadline a loaded test machine cannot miss by descheduling: these
        // tests check answers, not deadlines.
        let config = crate::GatewayConfig {
            pick_deadline_ms: 2000,
            ..crate::GatewayConfig::default()
        };
        let core = Arc::new(std::sync::Mutex::new(Core::new(CoreConfig::default())));
        Policies::new(&config, Arc::new(Registry::new(core))).expect("engine")
    }

    fn load(policies: &Policies, dir: &str, name: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../plugins")
            .join(dir)
            .join(format!("{name}.wasm"));
        let bytes = std::fs::read(&path).expect("run `make plugins` first");
        policies.load_file(&path, &bytes, "test");
        assert!(policies.is_loaded(name), "{name} loaded");
    }

    fn request(hints: &[(&str, &str)], in_flight: &[u32]) -> PickRequest {
        let mut head = CallHead::new("svc", 0, 1000);
        head.hints = hints
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        PickRequest {
            call: 1,
            head: Arc::new(head),
            candidates: in_flight
                .iter()
                .enumerate()
                .map(|(i, n)| Candidate {
                    node: 10 + u32::try_from(i).unwrap(),
                    in_flight: *n,
                    max_concurrent: 8,
                    ..Candidate::default()
                })
                .collect(),
            prefix: Arc::default(),
        }
    }

    #[test]
    fn with_no_policy_loaded_the_builtin_round_robin_ranks_every_candidate() {
        let p = policies();
        let (first, picked) = p.pick(&request(&[], &[0, 0, 0]));
        let (second, _) = p.pick(&request(&[], &[0, 0, 0]));
        let (first, second) = (first.unwrap(), second.unwrap());
        assert_eq!(picked.policy_name, BUILTIN_ROUND_ROBIN);
        assert_eq!(first.nodes.len(), 3, "a full ranking");
        assert_ne!(first.nodes[0], second.nodes[0], "it rotates");
    }

    #[test]
    fn an_unknown_policy_hint_refuses_the_call() {
        let p = policies();
        let (ranking, _) = p.pick(&request(&[("policy", "nope")], &[0]));
        match ranking {
            Err(PickError::Refused(e)) => {
                assert_eq!(e.kind, ErrorKind::BadRequest);
                assert!(e.message.contains("nope"), "{}", e.message);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_real_plugin_ranks_by_its_algorithm_and_is_named_in_the_pick() {
        let p = policies();
        load(&p, "dist", "least-request");
        let (ranking, picked) = p.pick(&request(&[("policy", "least-request")], &[5, 0, 2]));
        // Two random draws: never the busiest first; then the rest by load.
        let ranking = ranking.unwrap();
        let nodes = &ranking.nodes;
        assert_eq!(nodes.len(), 3, "least-request ranks every candidate");
        assert_ne!(nodes[0], 10, "the busiest never wins a draw");
        assert_eq!(nodes[2], 10, "the busiest is ranked last");
        assert_eq!(picked.policy_name, "least-request");
        // The explanation comes from the ranking: its reason, and the
        // chosen node first with its score (-in_flight / max_concurrent).
        assert_eq!(ranking.scores.len(), 3);
        let explained = picked.explanation.expect("explained");
        assert_eq!(explained.reason, ranking.reason);
        assert!(
            explained.reason.starts_with("least loaded of two drawn"),
            "{}",
            explained.reason
        );
        assert_eq!(explained.top[0].node, nodes[0]);
        let chosen = usize::try_from(nodes[0] - 10).unwrap();
        assert_eq!(explained.top[0].score, Some(ranking.scores[chosen]));
        assert_eq!(explained.offered, 3);
    }

    #[test]
    fn a_trapping_plugin_fails_the_pick_and_is_rebuilt_off_the_hot_path() {
        let p = policies();
        load(&p, "dist-test", "panic-trap");
        let evil = request(&[("policy", "panic-trap"), ("evil", "1")], &[0, 0]);
        assert!(matches!(p.pick(&evil).0, Err(PickError::Failed(_))));
        let benign = request(&[("policy", "panic-trap")], &[0, 0]);
        let start = Instant::now();
        loop {
            match p.pick(&benign).0 {
                Ok(_) => break,
                Err(PickError::Failed(why)) if why.contains("rebuilt") => {
                    assert!(start.elapsed() < std::time::Duration::from_secs(10));
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}
