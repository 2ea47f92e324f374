//! The wasmtime engine shared by all policies, its epoch ticker, and loading.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Cache, CacheConfig, Config, Engine};

use crate::bindings::Policy as PolicyWorld;
use crate::driver::Driver;
use crate::host::HostState;
use crate::{NodeDirectory, Policy, PolicyError};

/// How often the epoch ticker advances the engine's epoch: the granularity
/// of call deadlines.
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// Settings of a [`PolicyEngine`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// How long one `pick` or `observe` call may run before it traps with
    /// [`TrapReason::Deadline`](crate::TrapReason::Deadline). Rounded up to
    /// whole milliseconds, plus up to 1 ms of ticker granularity. Default 5 ms.
    pub pick_deadline: Duration,
    /// How long instantiating a plugin (its start-up code) and its `name`
    /// call may run, at load and at each rebuild after a trap. Longer than a
    /// pick's, since a paused thread must not fail a load. Default 1 s.
    pub load_deadline: Duration,
    /// Most bytes of linear memory one policy instance may hold (all its
    /// memories together); growth past it fails, and the trap that usually
    /// follows is [`TrapReason::Memory`](crate::TrapReason::Memory).
    /// Default 16 MiB.
    pub memory_limit_bytes: usize,
    /// Where wasmtime caches compiled code across runs (made absolute), or
    /// `None` (the default) to compile every load.
    pub cache_dir: Option<PathBuf>,
    /// Whether guest code is compiled with epoch checks and bounded by
    /// [`Self::pick_deadline`] and [`Self::load_deadline`]. Default `true`.
    ///
    /// `false` turns deadlines off (no epoch checks, no ticker thread): a
    /// guest that loops forever then hangs its caller. It exists only to
    /// measure what deadlines cost (`policy-host/benches/pick.rs`); never
    /// use it for untrusted policies.
    pub interruptible: bool,
    /// Whether a policy that trapped is rebuilt on a thread of its own
    /// (true) or within the call that trapped (false, the default). In the
    /// background, calls meanwhile fail at once with
    /// [`PolicyError::Rebuilding`](crate::PolicyError::Rebuilding) instead
    /// of waiting up to [`Self::load_deadline`]: the gateway's fallback
    /// serves them.
    pub rebuild_in_background: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            pick_deadline: Duration::from_millis(5),
            load_deadline: Duration::from_secs(1),
            memory_limit_bytes: 16 << 20,
            cache_dir: None,
            interruptible: true,
            rebuild_in_background: false,
        }
    }
}

/// Largest WebAssembly stack a guest call may use, bytes.
const MAX_WASM_STACK: usize = 512 << 10;

/// Compiles and loads policies. Cheap to share by reference; every
/// [`Policy`] it loads keeps what it needs, so the engine may be dropped
/// before its policies.
pub struct PolicyEngine {
    engine: Engine,
    linker: Linker<HostState>,
    cfg: EngineConfig,
    ticker: Arc<Ticker>,
    driver: Arc<Driver>,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// Creates the engine (component model on, epoch interruption on, a
    /// 512 KiB WebAssembly stack), its linker (WASI preview 2 plus
    /// `switchyard:policy/host`) and its 1 ms epoch ticker thread. The ticker
    /// stops when the engine and every policy it loaded are dropped. With
    /// [`EngineConfig::interruptible`] `false`, neither epoch interruption
    /// nor ticker.
    ///
    /// WASI is linked in its async flavour, and calls are driven on the
    /// caller's thread without blocking (see [`Policy`]): sync WASI would
    /// `block_on` Tokio inside guest stdout writes, which panics on a Tokio
    /// worker thread.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Engine`] if wasmtime rejects the configuration or the
    /// cache directory; [`PolicyError::Io`] if the ticker thread or the
    /// timer context cannot start.
    pub fn new(cfg: EngineConfig) -> Result<Self, PolicyError> {
        let engine_err = |e: wasmtime::Error| PolicyError::Engine {
            reason: format!("{e:#}"),
        };
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            // No component-model async (policies are plain sync exports; WASI
            // preview 2 needs only wasmtime's async host functions): without
            // it, `call_async` runs the guest straight on a fiber instead of
            // through the concurrent task machinery, several µs less per call.
            .concurrency_support(false)
            .epoch_interruption(cfg.interruptible)
            .max_wasm_stack(MAX_WASM_STACK);
        if let Some(dir) = &cfg.cache_dir {
            let mut cache = CacheConfig::new();
            cache.with_directory(std::path::absolute(dir)?);
            config.cache(Some(Cache::new(cache).map_err(engine_err)?));
        }
        let engine = Engine::new(&config).map_err(engine_err)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(engine_err)?;
        PolicyWorld::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |state| state,
        )
        .map_err(engine_err)?;
        // The `blocks` import (1.2.0), for every component: one compiled
        // against an older contract imports none and links the same.
        crate::block_bindings::switchyard::policy::blocks::add_to_linker::<
            HostState,
            wasmtime::component::HasSelf<HostState>,
        >(&mut linker, |state| state)
        .map_err(engine_err)?;
        let ticker = Arc::new(if cfg.interruptible {
            Ticker::start(engine.clone())?
        } else {
            Ticker::none()
        });
        let driver = Arc::new(Driver::new(Arc::clone(&ticker))?);
        Ok(Self {
            engine,
            linker,
            cfg,
            ticker,
            driver,
        })
    }

    /// The configuration the engine was built with.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Loads the component at `path`; its `host.node-info` import answers from
    /// `nodes`. Compiles, links, instantiates, and reads the `name` export.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Io`] if the file cannot be read, then as
    /// [`Self::load_bytes`].
    pub fn load(&self, path: &Path, nodes: Arc<dyn NodeDirectory>) -> Result<Policy, PolicyError> {
        let bytes = std::fs::read(path).map_err(|e| {
            std::io::Error::new(e.kind(), format!("reading {}: {e}", path.display()))
        })?;
        let origin = path.display().to_string();
        self.load_inner(&bytes, &origin, Some(path), nodes)
    }

    /// Loads a component from `bytes` (binary, or text when it is WAT);
    /// `origin` names it in errors and logs until its name is known.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Compile`] if the bytes are not a valid component;
    /// [`PolicyError::Link`] if it imports anything but WASI preview 2 and
    /// `switchyard:policy/host` (the message names the import) or does not
    /// export the `policy` world; [`PolicyError::Instantiate`] if
    /// instantiation or the `name` call fails (including traps), or the name
    /// is empty, longer than 128 bytes, or holds whitespace or control
    /// characters.
    pub fn load_bytes(
        &self,
        bytes: &[u8],
        origin: &str,
        nodes: Arc<dyn NodeDirectory>,
    ) -> Result<Policy, PolicyError> {
        self.load_inner(bytes, origin, None, nodes)
    }

    fn load_inner(
        &self,
        bytes: &[u8],
        origin: &str,
        path: Option<&Path>,
        nodes: Arc<dyn NodeDirectory>,
    ) -> Result<Policy, PolicyError> {
        if let Some(reason) = not_a_component(bytes) {
            return Err(PolicyError::Compile {
                path: origin.to_owned(),
                reason,
            });
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| PolicyError::Compile {
            path: origin.to_owned(),
            reason: format!("{e:#}"),
        })?;
        let link_err = |e: wasmtime::Error| PolicyError::Link {
            reason: format!("{origin}: {e:#}"),
        };
        let instance_pre = self.linker.instantiate_pre(&component).map_err(link_err)?;
        // The optional `ranker` export: a component without it is asked to
        // `pick` (compiled plugins keep working as the contract grows).
        let ranker = crate::ranked_bindings::RankedPolicyIndices::new(&instance_pre).ok();
        // The optional `scorer` export (1.1.0): without it, `score` asks
        // `rank` or `pick`. A 1.0.0 plugin has none.
        let scorer =
            crate::scoring_bindings::exports::switchyard::policy::scorer::GuestIndices::new(
                &instance_pre,
            )
            .ok();
        let pre = crate::bindings::PolicyPre::new(instance_pre).map_err(link_err)?;
        Policy::instantiate(crate::policy::Setup {
            pre,
            ranker,
            scorer,
            bytes,
            origin,
            path,
            nodes,
            deadline_ticks: deadline_ticks(self.cfg.pick_deadline),
            load_ticks: deadline_ticks(self.cfg.load_deadline),
            memory_limit: self.cfg.memory_limit_bytes,
            ticker: Arc::clone(&self.ticker),
            driver: Arc::clone(&self.driver),
            background: self.cfg.rebuild_in_background,
        })
    }
}

/// Why `bytes` cannot be a policy, told before compiling them: a core
/// WebAssembly module (not wrapped as a component), or neither WebAssembly
/// binary nor WAT text. `None` leaves the verdict to the compiler.
fn not_a_component(bytes: &[u8]) -> Option<String> {
    if wasmparser::Parser::is_component(bytes) {
        return None;
    }
    if wasmparser::Parser::is_core_wasm(bytes) {
        return Some(
            "not a WebAssembly component but a core WebAssembly module: build the policy \
             for wasm32-wasip2, or wrap the module with `wasm-tools component new`"
                .into(),
        );
    }
    if bytes.starts_with(b"\0asm") {
        // A WebAssembly header of another version: the compiler says which.
        return None;
    }
    let text = std::str::from_utf8(bytes).map(str::trim_start);
    if text.is_ok_and(|t| t.starts_with('(') || t.starts_with(";;")) {
        return None;
    }
    Some(
        "not a WebAssembly component: the file starts with neither the WebAssembly header \
         (\\0asm) nor WAT text"
            .into(),
    )
}

/// Epoch ticks for a deadline: whole ticks rounded up, plus one because the
/// current tick is already partly over. At least 2.
fn deadline_ticks(deadline: Duration) -> u64 {
    let tick = TICK.as_nanos();
    let ticks = deadline.as_nanos().div_ceil(tick).max(1) + 1;
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

/// Loads every `*.wasm` file directly in `dir`, sorted by path. Each entry
/// pairs the file with its load result, so one bad plugin does not hide the
/// others.
///
/// When `dir` itself cannot be read, the result is one entry: `dir` with
/// [`PolicyError::Io`].
pub fn load_dir(
    engine: &PolicyEngine,
    dir: &Path,
    nodes: Arc<dyn NodeDirectory>,
) -> Vec<(PathBuf, Result<Policy, PolicyError>)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            let err = std::io::Error::new(e.kind(), format!("reading {}: {e}", dir.display()));
            return vec![(dir.to_path_buf(), Err(err.into()))];
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "wasm") && p.is_file())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let policy = engine.load(&path, Arc::clone(&nodes));
            (path, policy)
        })
        .collect()
}

/// How long the ticker keeps ticking after the last guest call began before
/// it parks (50 ms): under load it never parks, so a call does not pay for
/// a wake-up.
const LINGER_TICKS: u32 = 50;

/// The thread advancing the engine epoch every [`TICK`] while guests run.
///
/// Epochs only matter while guest code runs (a deadline counts ticks from
/// when its call was armed), so the thread parks on a condition variable
/// once no guest call has begun for [`LINGER_TICKS`] ticks: an idle
/// gateway spends no CPU on it (a ticker that always ran cost about 3% of a
/// core). Every guest call holds a [`Running`] guard
/// (taken by the [`Driver`] around each poll loop); a guard wakes the
/// thread only when it is parked. Waking it on every call instead (the
/// first version) cost a futex wake-up and a thread switch per pick: 10% of
/// a loaded gateway's CPU in its profile. Stops (and is joined) when
/// the last owner drops it.
pub(crate) struct Ticker {
    shared: Option<Arc<TickerShared>>,
    thread: Option<JoinHandle<()>>,
}

struct TickerShared {
    /// Guest calls under way.
    active: AtomicUsize,
    /// Guest calls begun so far.
    begun: AtomicU64,
    /// Whether the thread is parked (or about to), so a new call must wake
    /// it.
    parked: AtomicBool,
    /// Epoch increments so far.
    ticks: AtomicU64,
    /// Set once, when the ticker is dropped.
    stop: Mutex<bool>,
    wake: Condvar,
}

/// Keeps the epoch ticking while it lives: one per guest call.
pub(crate) struct Running<'a>(Option<&'a TickerShared>);

impl Ticker {
    /// No ticker at all, for an engine without epoch interruption.
    pub(crate) fn none() -> Self {
        Self {
            shared: None,
            thread: None,
        }
    }

    fn start(engine: Engine) -> Result<Self, PolicyError> {
        let shared = Arc::new(TickerShared {
            active: AtomicUsize::new(0),
            begun: AtomicU64::new(0),
            parked: AtomicBool::new(true),
            ticks: AtomicU64::new(0),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        let ticking = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("policy-epoch".to_owned())
            .spawn(move || ticking.run(&engine))?;
        Ok(Self {
            shared: Some(shared),
            thread: Some(thread),
        })
    }

    /// Epoch increments so far (0 without a ticker).
    #[cfg(test)]
    pub(crate) fn ticks(&self) -> u64 {
        self.shared
            .as_ref()
            .map_or(0, |s| s.ticks.load(Ordering::Relaxed))
    }

    /// Marks a guest call under way until the guard drops.
    pub(crate) fn running(&self) -> Running<'_> {
        let Some(shared) = self.shared.as_deref() else {
            return Running(None);
        };
        shared.begun.fetch_add(1, Ordering::Relaxed);
        shared.active.fetch_add(1, Ordering::SeqCst);
        // Both sides use SeqCst: either this sees `parked` (and wakes the
        // thread, under the lock so the wake-up cannot be missed) or the
        // thread, which sets `parked` before it checks `active`, sees this
        // call and does not wait.
        if shared.parked.load(Ordering::SeqCst) {
            let _stop = shared.stop.lock().unwrap_or_else(PoisonError::into_inner);
            shared.wake.notify_one();
        }
        Running(Some(shared))
    }
}

impl TickerShared {
    fn run(&self, engine: &Engine) {
        let mut seen = self.begun.load(Ordering::Relaxed);
        // Parked from the start: nothing runs yet.
        let mut quiet = LINGER_TICKS;
        loop {
            if quiet >= LINGER_TICKS {
                let mut stop = self.stop.lock().unwrap_or_else(PoisonError::into_inner);
                self.parked.store(true, Ordering::SeqCst);
                while !*stop && self.active.load(Ordering::SeqCst) == 0 {
                    stop = self.wake.wait(stop).unwrap_or_else(PoisonError::into_inner);
                }
                self.parked.store(false, Ordering::SeqCst);
                if *stop {
                    return;
                }
                quiet = 0;
            } else if *self.stop.lock().unwrap_or_else(PoisonError::into_inner) {
                return;
            }
            std::thread::sleep(TICK);
            engine.increment_epoch();
            self.ticks.fetch_add(1, Ordering::Relaxed);
            let begun = self.begun.load(Ordering::Relaxed);
            if begun == seen && self.active.load(Ordering::SeqCst) == 0 {
                quiet += 1;
            } else {
                quiet = 0;
                seen = begun;
            }
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Some(shared) = self.0 {
            shared.active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            *shared.stop.lock().unwrap_or_else(PoisonError::into_inner) = true;
            shared.wake.notify_one();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Duration, Engine, Ticker, deadline_ticks, not_a_component};

    #[test]
    fn what_is_not_a_component_is_told_before_compiling() {
        let core = not_a_component(b"\0asm\x01\0\0\0").expect("a core module");
        assert!(
            core.starts_with("not a WebAssembly component but a core"),
            "{core}"
        );
        let text = not_a_component(b"#!/bin/sh\necho hi\n").expect("not wasm");
        assert!(text.starts_with("not a WebAssembly component: "), "{text}");
        assert!(not_a_component(b"").is_some());
        // A component's header, WAT text and other WebAssembly versions go
        // to the compiler.
        assert_eq!(not_a_component(b"\0asm\x0d\0\x01\0"), None);
        assert_eq!(not_a_component(b"  (component)"), None);
        assert_eq!(not_a_component(b";; a policy\n(component)"), None);
        assert_eq!(not_a_component(b"\0asm\x02\0\0\0"), None);
    }

    #[test]
    fn the_ticker_ticks_only_while_a_guest_call_runs() -> Result<(), crate::PolicyError> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| crate::PolicyError::Engine {
            reason: e.to_string(),
        })?;
        let ticker = Ticker::start(engine)?;
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(ticker.ticks(), 0, "idle: no tick");
        {
            let _running = ticker.running();
            let start = std::time::Instant::now();
            while ticker.ticks() < 3 {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "a call makes it tick"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // It lingers LINGER_TICKS after the last call, then parks.
        let start = std::time::Instant::now();
        loop {
            let before = ticker.ticks();
            std::thread::sleep(Duration::from_millis(30));
            if ticker.ticks() == before {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "idle again: it stops ticking"
            );
        }
        Ok(())
    }

    #[test]
    fn ticks_round_up_and_add_one() {
        assert_eq!(deadline_ticks(Duration::ZERO), 2);
        assert_eq!(deadline_ticks(Duration::from_millis(5)), 6);
        assert_eq!(deadline_ticks(Duration::from_micros(5_500)), 7);
    }
}
