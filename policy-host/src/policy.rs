//! A loaded policy: one guest instance in its own store, rebuilt after traps.

mod score;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use wasmtime::{Store, Trap};

use crate::bindings::{Policy as PolicyWorld, PolicyPre};
use crate::driver::{Blocked, Driver};
use crate::engine::Ticker;
use crate::host::HostState;
use crate::logging::LogSink;
use crate::ranked_bindings::{RankedPolicy, RankedPolicyIndices};
use crate::scoring::dedup_order;
use crate::scoring_bindings::exports::switchyard::policy::scorer;
use crate::types::Ranking;
use crate::types::{Candidates, Decision, Outcome, Request};
use crate::{NodeDirectory, PolicyError, TrapReason};

/// Longest accepted policy name, bytes.
const MAX_NAME_LEN: usize = 128;

/// A loaded policy, ready for concurrent callers (`Send + Sync`).
///
/// Calls are serialized on one instance (a `Mutex` around its store): the
/// guest sees one call at a time, in order. Calls run on the caller's thread,
/// never block on I/O and are bounded by the engine's deadline, so they may
/// be made from any thread, Tokio workers included. A guest that waits on
/// WASI (a sleep, a `poll`) traps instead of blocking.
pub struct Policy {
    name: String,
    origin: String,
    path: Option<PathBuf>,
    content_hash: String,
    loaded_at: SystemTime,
    runtime: Arc<Runtime>,
    slot: Arc<Mutex<Option<Live>>>,
    /// A background rebuild is under way.
    rebuilding: Arc<AtomicBool>,
    /// Rebuild after a trap in the background (see
    /// [`crate::EngineConfig::rebuild_in_background`]).
    background: bool,
    picks: AtomicU64,
    traps: AtomicU64,
}

/// What rebuilding an instance needs.
struct Runtime {
    pre: PolicyPre<HostState>,
    /// Where the `ranker` export is, when the component has one.
    ranker: Option<RankedPolicyIndices>,
    /// Where the `scorer` export is, when the component has one (1.1.0).
    scorer: Option<scorer::GuestIndices>,
    nodes: Arc<dyn NodeDirectory>,
    log: Arc<LogSink>,
    deadline_ticks: u64,
    load_ticks: u64,
    memory_limit: usize,
    driver: Arc<Driver>,
    /// Keeps the epoch ticker running while the policy lives.
    _ticker: Arc<Ticker>,
}

/// A live instance and its store.
struct Live {
    store: Store<HostState>,
    guests: Guests,
}

/// The exports of one instance, as each binding sees them.
struct Guests {
    /// The `policy` world: `name`, `pick`, `observe`.
    policy: PolicyWorld,
    /// The same instance seen as a `ranked-policy`, when it ranks.
    ranker: Option<RankedPolicy>,
    /// Its `scorer` export, when it scores.
    scorer: Option<scorer::Guest>,
}

/// Everything [`Policy::instantiate`] needs from the engine.
pub(crate) struct Setup<'a> {
    pub(crate) pre: PolicyPre<HostState>,
    pub(crate) ranker: Option<RankedPolicyIndices>,
    pub(crate) scorer: Option<scorer::GuestIndices>,
    pub(crate) bytes: &'a [u8],
    pub(crate) origin: &'a str,
    pub(crate) path: Option<&'a Path>,
    pub(crate) nodes: Arc<dyn NodeDirectory>,
    pub(crate) deadline_ticks: u64,
    pub(crate) load_ticks: u64,
    pub(crate) memory_limit: usize,
    pub(crate) ticker: Arc<Ticker>,
    pub(crate) driver: Arc<Driver>,
    pub(crate) background: bool,
}

impl Runtime {
    /// A fresh store and instance.
    fn instantiate(&self) -> wasmtime::Result<Live> {
        let state = HostState::new(Arc::clone(&self.nodes), &self.log, self.memory_limit);
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(self.load_ticks);
        let instance = self
            .driver
            .run(self.pre.instance_pre().instantiate_async(&mut store))
            .unwrap_or_else(|Blocked| Err(blocked_error()))?;
        let policy = PolicyWorld::new(&mut store, &instance)?;
        let ranker = match &self.ranker {
            Some(indices) => Some(indices.load(&mut store, &instance)?),
            None => None,
        };
        let scorer = match &self.scorer {
            Some(indices) => Some(indices.load(&mut store, &instance)?),
            None => None,
        };
        Ok(Live {
            store,
            guests: Guests {
                policy,
                ranker,
                scorer,
            },
        })
    }

    /// Arms the deadline and clears the memory flag before a guest call.
    fn arm(&self, live: &mut Live) {
        live.store.set_epoch_deadline(self.deadline_ticks);
        live.store.data_mut().limiter.clear_refused();
    }
}

impl Policy {
    pub(crate) fn instantiate(setup: Setup<'_>) -> Result<Self, PolicyError> {
        let origin = setup.origin.to_owned();
        let runtime = Runtime {
            pre: setup.pre,
            ranker: setup.ranker,
            scorer: setup.scorer,
            nodes: setup.nodes,
            log: LogSink::new(&origin),
            deadline_ticks: setup.deadline_ticks,
            load_ticks: setup.load_ticks,
            memory_limit: setup.memory_limit,
            driver: setup.driver,
            _ticker: setup.ticker,
        };
        let inst_err = |reason: String| PolicyError::Instantiate {
            policy: origin.clone(),
            reason,
        };
        let mut live = runtime.instantiate().map_err(|e| inst_err(describe(&e)))?;
        live.store.set_epoch_deadline(runtime.load_ticks);
        live.store.data_mut().limiter.clear_refused();
        let name = runtime
            .driver
            .run(live.guests.policy.call_name(&mut live.store))
            .unwrap_or_else(|Blocked| Err(blocked_error()))
            .map_err(|e| inst_err(format!("`name` failed: {}", describe(&e))))?;
        check_name(&name).map_err(inst_err)?;
        runtime.log.set_name(&name);
        Ok(Self {
            name,
            path: setup.path.map(Path::to_path_buf),
            content_hash: blake3::hash(setup.bytes).to_hex().to_string(),
            loaded_at: SystemTime::now(),
            origin,
            runtime: Arc::new(runtime),
            slot: Arc::new(Mutex::new(Some(live))),
            rebuilding: Arc::new(AtomicBool::new(false)),
            background: setup.background,
            picks: AtomicU64::new(0),
            traps: AtomicU64::new(0),
        })
    }

    /// The policy's name, as its `name` export answered at load.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file it was loaded from; `None` for [`crate::PolicyEngine::load_bytes`].
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// BLAKE3 of the component bytes, lowercase hex (64 characters): the
    /// same bytes have the same hash on every gateway.
    pub fn content_hash(&self) -> &str {
        &self.content_hash
    }

    /// When the policy was loaded (wall clock).
    pub fn loaded_at(&self) -> SystemTime {
        self.loaded_at
    }

    /// Asks the guest to place one call among `candidates`.
    ///
    /// # Errors
    ///
    /// [`PolicyError::BadInput`] (the guest is not called) unless every
    /// column of `candidates` has the same length n >= 1;
    /// [`PolicyError::Trap`] if the guest traps or runs past the deadline (the
    /// instance is then rebuilt with fresh state); [`PolicyError::BadDecision`]
    /// if it routes to an index `>= n`; [`PolicyError::Instantiate`] if an
    /// earlier rebuild failed and fails again.
    pub fn pick(&self, req: &Request, candidates: &Candidates) -> Result<Decision, PolicyError> {
        self.picks.fetch_add(1, Ordering::Relaxed);
        self.pick_uncounted(req, candidates)
    }

    /// [`Self::pick`] without counting it.
    fn pick_uncounted(
        &self,
        req: &Request,
        candidates: &Candidates,
    ) -> Result<Decision, PolicyError> {
        let len = candidates.check().map_err(|reason| PolicyError::BadInput {
            policy: self.name.clone(),
            reason,
        })?;
        let decision =
            self.call(async |guests, store| guests.policy.call_pick(store, req, candidates).await)?;
        match decision {
            Decision::Route(index) if !usize::try_from(index).is_ok_and(|i| i < len) => {
                Err(PolicyError::BadDecision {
                    policy: self.name.clone(),
                    index,
                    len,
                })
            }
            decision => Ok(decision),
        }
    }

    /// Whether the plugin exports `ranker` (then [`Self::rank`] asks it for
    /// a ranking; otherwise it asks `pick`).
    pub fn ranks(&self) -> bool {
        self.runtime.ranker.is_some()
    }

    /// Asks the guest to rank the candidates for one call: its `rank`
    /// export when it has one, else `pick` (a ranking of one).
    ///
    /// # Errors
    ///
    /// As [`Self::pick`]; [`PolicyError::BadDecision`] names the first index
    /// out of range. Repeated indices are dropped.
    pub fn rank(&self, req: &Request, candidates: &Candidates) -> Result<Ranking, PolicyError> {
        self.picks.fetch_add(1, Ordering::Relaxed);
        self.rank_uncounted(req, candidates)
    }

    /// [`Self::rank`] without counting it.
    fn rank_uncounted(
        &self,
        req: &Request,
        candidates: &Candidates,
    ) -> Result<Ranking, PolicyError> {
        if !self.ranks() {
            return self.pick_uncounted(req, candidates).map(ranking_of);
        }
        let len = candidates.check().map_err(|reason| PolicyError::BadInput {
            policy: self.name.clone(),
            reason,
        })?;
        let ranking = self.call(async |guests, store| guests.rank(store, req, candidates).await)?;
        match ranking {
            Ranking::Order(order) => dedup_order(order, len)
                .map(Ranking::Order)
                .map_err(|index| PolicyError::BadDecision {
                    policy: self.name.clone(),
                    index,
                    len,
                }),
            reject => Ok(reject),
        }
    }

    /// Tells the guest how a call ended.
    ///
    /// # Errors
    ///
    /// As [`Self::pick`], except `BadDecision`.
    pub fn observe(&self, outcome: &Outcome) -> Result<(), PolicyError> {
        self.call(async |guests, store| guests.policy.call_observe(store, outcome).await)
    }

    /// How many decisions were asked for ([`Self::pick`], [`Self::rank`] or
    /// [`Self::score`], each counted once), whatever the result.
    pub fn picks_total(&self) -> u64 {
        self.picks.load(Ordering::Relaxed)
    }

    /// How many guest calls (`pick`, `rank`, `score` or `observe`) trapped.
    pub fn traps_total(&self) -> u64 {
        self.traps.load(Ordering::Relaxed)
    }

    /// Guest stdout/stderr lines dropped by the log rate limit (20 lines/s).
    pub fn log_lines_dropped(&self) -> u64 {
        self.runtime.log.dropped_total()
    }

    /// Runs one guest call with the deadline armed; on failure classifies the
    /// trap, counts it and rebuilds the instance.
    fn call<R>(
        &self,
        f: impl AsyncFnOnce(&Guests, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, PolicyError> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            if self.background {
                drop(slot);
                self.rebuild_in_background();
                return Err(PolicyError::Rebuilding {
                    policy: self.name.clone(),
                });
            }
            *slot = Some(
                self.runtime
                    .instantiate()
                    .map_err(|e| PolicyError::Instantiate {
                        policy: self.name.clone(),
                        reason: format!("rebuild failed: {}", describe(&e)),
                    })?,
            );
        }
        let Some(live) = slot.as_mut() else {
            return Err(PolicyError::Rebuilding {
                policy: self.name.clone(),
            });
        };
        self.runtime.arm(live);
        let err = match self.runtime.driver.run(f(&live.guests, &mut live.store)) {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(err)) => err,
            Err(Blocked) => blocked_error(),
        };
        let reason = classify(&err, live.store.data().limiter.memory_refused());
        self.traps.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            target: "policy",
            policy = %self.name,
            origin = %self.origin,
            %reason,
            detail = %describe(&err),
            "policy trapped; rebuilding its instance"
        );
        if self.background {
            *slot = None;
            drop(slot);
            self.rebuild_in_background();
        } else {
            *slot = match self.runtime.instantiate() {
                Ok(live) => Some(live),
                Err(e) => {
                    tracing::error!(
                        target: "policy",
                        policy = %self.name,
                        error = %describe(&e),
                        "policy rebuild failed; retrying on the next call"
                    );
                    None
                }
            };
        }
        Err(PolicyError::Trap {
            policy: self.name.clone(),
            reason,
        })
    }
}

impl Policy {
    /// Builds a fresh instance on a thread of its own (at most one at a
    /// time); calls meanwhile answer [`PolicyError::Rebuilding`].
    fn rebuild_in_background(&self) {
        if self.rebuilding.swap(true, Ordering::SeqCst) {
            return;
        }
        let runtime = Arc::clone(&self.runtime);
        let slot = Arc::clone(&self.slot);
        let flag = Arc::clone(&self.rebuilding);
        let name = self.name.clone();
        let spawned = std::thread::Builder::new()
            .name("policy-rebuild".into())
            .spawn(move || {
                match runtime.instantiate() {
                    Ok(live) => {
                        *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(live);
                        tracing::info!(target: "policy", policy = %name, "policy instance rebuilt");
                    }
                    Err(e) => tracing::error!(
                        target: "policy",
                        policy = %name,
                        error = %describe(&e),
                        "policy rebuild failed; retrying on the next call"
                    ),
                }
                flag.store(false, Ordering::SeqCst);
            });
        if let Err(error) = spawned {
            self.rebuilding.store(false, Ordering::SeqCst);
            tracing::error!(target: "policy", policy = %self.name, %error, "cannot start a rebuild thread");
        }
    }
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.name)
            .field("origin", &self.origin)
            .field("content_hash", &self.content_hash)
            .field("picks_total", &self.picks_total())
            .field("traps_total", &self.traps_total())
            .finish_non_exhaustive()
    }
}

impl Guests {
    /// The `ranker` export when there is one, else `pick` (a ranking of one).
    async fn rank(
        &self,
        store: &mut Store<HostState>,
        req: &Request,
        candidates: &Candidates,
    ) -> wasmtime::Result<Ranking> {
        match &self.ranker {
            Some(ranker) => {
                ranker
                    .switchyard_policy_ranker()
                    .call_rank(store, req, candidates)
                    .await
            }
            None => self
                .policy
                .call_pick(store, req, candidates)
                .await
                .map(ranking_of),
        }
    }
}

/// A pick as a ranking of one.
fn ranking_of(decision: Decision) -> Ranking {
    match decision {
        Decision::Route(i) => Ranking::Order(vec![i]),
        Decision::Reject(reason) => Ranking::Reject(reason),
    }
}

/// The error of a guest call that waited on WASI (cancelled by the driver).
fn blocked_error() -> wasmtime::Error {
    wasmtime::format_err!(
        "policy blocked on a WASI call (sleep, poll or stdin); policies must not wait"
    )
}

/// Maps a failed guest call to a [`TrapReason`].
fn classify(err: &wasmtime::Error, memory_refused: bool) -> TrapReason {
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => TrapReason::Deadline,
        Some(Trap::StackOverflow) => TrapReason::StackOverflow,
        _ if memory_refused => TrapReason::Memory,
        // The trap itself, without the multi-line wasm backtrace (that one
        // goes to the log).
        Some(trap) => TrapReason::Other(trap.to_string()),
        None => TrapReason::Other(err.root_cause().to_string()),
    }
}

/// The error and its causes on one line.
fn describe(err: &wasmtime::Error) -> String {
    let mut out = err.to_string();
    for cause in err.chain().skip(1) {
        out.push_str(": ");
        out.push_str(&cause.to_string());
    }
    out
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("`name` returned an empty name".to_owned());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "`name` returned a name longer than {MAX_NAME_LEN} bytes"
        ));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`name` returned {name:?}, which holds whitespace or control characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn names_are_checked() {
        assert!(check_name("round-robin").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name(&"x".repeat(129)).is_err());
    }
}
