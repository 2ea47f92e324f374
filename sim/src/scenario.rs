//! Scenarios: what a run simulates, read from a TOML file
//! (`sim/scenarios/*.toml`; every table refuses unknown fields).
//!
//! ```toml
//! name = "supermarket"            # default: the file's stem
//! description = "..."
//! seed = 1                        # every random number of the run follows from it
//! duration_s = 20000.0            # calls arrive during [0, duration_s)
//! warmup_s = 2000.0               # calls arriving before are not counted
//! drain_s = 600.0                 # after duration_s, how long calls may still finish
//! stats_interval_ms = 0           # node stats to the core (0: none)
//! policies = ["random.wasm", "least-request.wasm"]   # in the plugins folder
//!
//! [core]                          # the core's queue and swap rules
//! queue_capacity = 1000
//! swap = true
//! node_cooldown_s = 60.0
//! queue_ratio = 4
//! cost_factor = 1.0
//!
//! [[services]]
//! name = "svc"
//! service_time = { kind = "exponential", mean_ms = 1000.0 }
//! load_ms = 0                     # time to load it into a slot
//!
//! [[nodes]]
//! id = "node"                     # with count > 1: node-0, node-1, ...
//! count = 100
//! workers = 1                     # calls served at once (omit: unlimited)
//! max_concurrent = 100000         # the core's admission cap per service
//! speed = 1.0                     # service-time factor (2.0: twice as slow)
//! cost_per_hour = 1.0
//! services = ["svc"]              # always loaded (no slot)
//!
//! [[arrivals]]
//! service = "svc"
//! process = { kind = "poisson", rate_per_s = 99.0 }
//! timeout_ms = 1000               # optional per-call deadline
//! ```
//!
//! See the field docs below for the rest: slots, slowdown and failure
//! windows, on-off and trace arrivals, preloads (the oracle's slot loads),
//! and multi-turn chat over nodes with KV caches ([`chat`]: arrivals
//! `process = { kind = "chat", conversations = 64, turns = 8, rate_per_s =
//! 19.4, system_words = 512, user_words = 64, reply_words = 64 }`, nodes
//! `model = { kv_cache_tokens = 24576, prefill_us_per_token = 250.0,
//! tokens_per_s = 200.0 }`; time to first token and the KV-cache hit ratio
//! in the report).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub mod chat;
mod validate;

pub use chat::{ChatProcess, ModelSettings};

/// A scenario file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file (or a trace file it names) could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML did not parse into a scenario.
    #[error("{path}: {source}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// A value is out of range or names something unknown.
    #[error("scenario {scenario}: {message}")]
    Invalid {
        /// The scenario's name.
        scenario: String,
        /// What is wrong.
        message: String,
    },
    /// A trace file holds something that is not a non-negative number.
    #[error("{path}:{line}: {message}")]
    Trace {
        /// The trace file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// A whole scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Its name in reports (default: the file's stem).
    #[serde(default)]
    pub name: String,
    /// What it models, in words.
    #[serde(default)]
    pub description: String,
    /// Seed of every random number of the run (arrivals, service times,
    /// the policies' `random`, failures).
    #[serde(default = "one")]
    pub seed: u64,
    /// Calls arrive during `[0, duration_s)` of virtual time.
    pub duration_s: f64,
    /// Calls arriving before this are served but not counted.
    #[serde(default)]
    pub warmup_s: f64,
    /// After `duration_s`, how long calls in the system may still finish;
    /// the ones left then count as unfinished (default 600).
    #[serde(default = "default_drain")]
    pub drain_s: f64,
    /// How often each node reports stats (CPU and GPU use = busy workers)
    /// to the core, ms; 0 (the default) sends none.
    #[serde(default)]
    pub stats_interval_ms: u32,
    /// The policies to compare: file names in the plugins folder
    /// (`round-robin.wasm`); one run per policy.
    pub policies: Vec<String>,
    /// The core's settings.
    #[serde(default)]
    pub core: CoreSettings,
    /// The services and their service times.
    pub services: Vec<ServiceSettings>,
    /// The nodes, in groups of identical ones.
    pub nodes: Vec<NodeGroup>,
    /// Where calls come from.
    pub arrivals: Vec<ArrivalStream>,
    /// Slot loads the simulator itself makes at given times, reported to the
    /// core as unprompted swap reports (an oracle that knows the demand;
    /// usually with `core.swap = false`).
    #[serde(default)]
    pub preloads: Vec<Preload>,
    /// Where relative trace files are found (the scenario file's folder).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// The core's queue and swap settings (`[core]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoreSettings {
    /// Most calls waiting per service (default 1000).
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: u32,
    /// Whether the core plans swaps (default true).
    #[serde(default = "yes")]
    pub swap: bool,
    /// Least time between two swaps on a node, s (default 60).
    #[serde(default = "default_node_cooldown")]
    pub node_cooldown_s: f64,
    /// A service with calls waiting is swapped away only for a queue this
    /// many times longer (default 4).
    #[serde(default = "default_queue_ratio")]
    pub queue_ratio: u32,
    /// A swap starts only when the expected wait exceeds load time × this
    /// (default 1).
    #[serde(default = "default_cost_factor")]
    pub cost_factor: f32,
    /// Longest wait for a swap report, s (default 300).
    #[serde(default = "default_swap_timeout")]
    pub swap_timeout_s: f64,
    /// After a failed load, the slot leaves that service alone this long, s
    /// (default 30).
    #[serde(default = "default_failure_cooldown")]
    pub failure_cooldown_s: f64,
    /// A failing policy falls back to the core's round-robin (default true).
    #[serde(default = "yes")]
    pub fail_open: bool,
    /// Outlier ejection: failures in a row that eject a node from a
    /// service's candidates (the gateway's `[outlier]`; default 0 = off
    /// here, so a reproduction measures the policy alone).
    #[serde(default)]
    pub outlier_failures: u32,
    /// The most candidates a policy is offered per pick, a uniform random
    /// sample past it (the gateway's `max_candidates`; default 0: every
    /// free node). Its sample is seeded by the scenario's seed.
    #[serde(default)]
    pub max_candidates: usize,
}

/// One service (`[[services]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSettings {
    /// Its name.
    pub name: String,
    /// Time a call takes on a node of speed 1, without slowdowns (default
    /// 0 ms; chat calls on a node with a `model` take its prefill and
    /// decode instead).
    #[serde(default = "no_work")]
    pub service_time: Dist,
    /// Time to load it into a slot, ms (also what nodes register).
    #[serde(default)]
    pub load_ms: u32,
}

/// A distribution of durations, ms.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Dist {
    /// Exponential with this mean.
    Exponential {
        /// Mean, ms.
        mean_ms: f64,
    },
    /// Log-normal with this median and either `sigma` (of the log) or the
    /// 99th percentile `p99_ms` (then sigma = ln(p99/median) / 2.3263).
    LogNormal {
        /// Median, ms.
        median_ms: f64,
        /// Standard deviation of ln(duration).
        #[serde(default)]
        sigma: Option<f64>,
        /// 99th percentile, ms.
        #[serde(default)]
        p99_ms: Option<f64>,
    },
    /// Always this long.
    Fixed {
        /// Duration, ms.
        ms: f64,
    },
    /// Drawn uniformly (with replacement) from a file of durations in ms,
    /// one a line (`#` comments and blank lines skipped), relative to the
    /// scenario's folder.
    Trace {
        /// The file.
        file: PathBuf,
    },
}

/// A group of identical nodes (`[[nodes]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeGroup {
    /// Node id; with `count` > 1 the nodes are `ID-0`, `ID-1`, ...
    pub id: String,
    /// How many (default 1).
    #[serde(default = "one_u32")]
    pub count: u32,
    /// Calls a node serves at once; more wait in its FIFO queue. Omitted:
    /// unlimited.
    #[serde(default)]
    pub workers: Option<u32>,
    /// The core's admission cap per service (`max_concurrent` the node
    /// registers): calls dispatched and not finished, node queue included.
    pub max_concurrent: u32,
    /// Service-time factor: 2.0 is twice as slow (default 1).
    #[serde(default = "one_f64")]
    pub speed: f64,
    /// Price per hour (cost per call = this × node time).
    #[serde(default)]
    pub cost_per_hour: f64,
    /// Region, for policies' `node-info`.
    #[serde(default)]
    pub region: String,
    /// Labels, for policies' `node-info`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// GPUs each node reports in its stats (their use = busy workers).
    #[serde(default)]
    pub gpus: u32,
    /// Memory of each GPU, MiB.
    #[serde(default)]
    pub gpu_mem_mib: u64,
    /// Services always loaded (in no slot).
    #[serde(default)]
    pub services: Vec<String>,
    /// Swappable slots, each holding at most one of its services.
    #[serde(default)]
    pub slots: Vec<SlotSettings>,
    /// Slowdowns and failures over time windows.
    #[serde(default)]
    pub windows: Vec<Window>,
    /// The model server of each node: its KV cache and speeds, for chat
    /// calls ([`chat`]). Omitted: none (chat calls take `service_time`).
    #[serde(default)]
    pub model: Option<ModelSettings>,
}

/// A swappable slot of a node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotSettings {
    /// Slot name, e.g. `gpu0`.
    pub name: String,
    /// Services it can load.
    pub can_host: Vec<String>,
    /// The one loaded at start.
    #[serde(default)]
    pub loaded: Option<String>,
}

/// A time window of a node: calls that start within it are slowed down or
/// fail, swaps that start within it may fail.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Start, s.
    pub from_s: f64,
    /// End, s (exclusive).
    pub until_s: f64,
    /// Service times are multiplied by this.
    #[serde(default)]
    pub factor: Option<f64>,
    /// Service times are this long, ms (instead of drawn).
    #[serde(default)]
    pub fixed_ms: Option<f64>,
    /// Probability that a call (or a swap) fails.
    #[serde(default)]
    pub fail: f64,
    /// A failing call answers its error after this long, ms (default 0).
    #[serde(default)]
    pub fail_after_ms: f64,
}

/// One stream of calls (`[[arrivals]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArrivalStream {
    /// The service called.
    pub service: String,
    /// When calls arrive.
    pub process: Process,
    /// The call's deadline from its arrival, ms: a call still waiting then
    /// leaves, a running one is cancelled on its node. Omitted: none.
    #[serde(default)]
    pub timeout_ms: Option<u32>,
    /// Hints the calls carry (e.g. `max_cost`).
    #[serde(default)]
    pub hints: BTreeMap<String, String>,
    /// Queue priority (default 0).
    #[serde(default)]
    pub priority: i32,
}

/// An arrival process.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Process {
    /// Poisson arrivals at this rate.
    Poisson {
        /// Calls per second.
        rate_per_s: f64,
    },
    /// Poisson arrivals whose rate alternates: `rate_per_s` for `on_s`, then
    /// `off_rate_per_s` for `off_s`, repeating, the first "on" period
    /// starting at `offset_s` (before it: "off"). Two streams with offsets
    /// `0` and `on_s` alternate between two services.
    OnOff {
        /// Rate while on, calls/s.
        rate_per_s: f64,
        /// Rate while off, calls/s (default 0).
        #[serde(default)]
        off_rate_per_s: f64,
        /// Length of an "on" period, s.
        on_s: f64,
        /// Length of an "off" period, s.
        off_s: f64,
        /// Start of the first "on" period, s (default 0).
        #[serde(default)]
        offset_s: f64,
    },
    /// A burst: `calls` calls at once at `at_s`, again every `every_s` if
    /// set (while calls arrive). Also a way to start a run with its queues
    /// filled.
    Burst {
        /// When, s.
        at_s: f64,
        /// How many calls.
        calls: u32,
        /// Repeat period, s.
        #[serde(default)]
        every_s: Option<f64>,
    },
    /// Recorded arrival times, s from the start, one a line (sorted;
    /// `#` comments and blank lines skipped), relative to the scenario's
    /// folder.
    Trace {
        /// The file.
        file: PathBuf,
    },
    /// Turns of multi-turn conversations, each prompt the whole history
    /// ([`chat`]).
    Chat(ChatProcess),
}

/// A slot load the simulator makes itself (the oracle): at `at_s` (and
/// every `every_s` after, while calls arrive) the slot stops taking calls,
/// finishes the ones it has, loads `service` for its load time, and is
/// reported loaded. No-op when the slot holds `service` already.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Preload {
    /// When, s.
    pub at_s: f64,
    /// Repeat period, s.
    #[serde(default)]
    pub every_s: Option<f64>,
    /// Node id.
    pub node: String,
    /// Slot name.
    pub slot: String,
    /// Service to load.
    pub service: String,
}

fn no_work() -> Dist {
    Dist::Fixed { ms: 0.0 }
}
fn one() -> u64 {
    1
}
fn one_u32() -> u32 {
    1
}
fn one_f64() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
fn default_drain() -> f64 {
    600.0
}
fn default_queue_capacity() -> u32 {
    1000
}
fn default_node_cooldown() -> f64 {
    60.0
}
fn default_queue_ratio() -> u32 {
    4
}
fn default_cost_factor() -> f32 {
    1.0
}
fn default_swap_timeout() -> f64 {
    300.0
}
fn default_failure_cooldown() -> f64 {
    30.0
}

impl Default for CoreSettings {
    fn default() -> Self {
        Self {
            queue_capacity: default_queue_capacity(),
            swap: true,
            node_cooldown_s: default_node_cooldown(),
            queue_ratio: default_queue_ratio(),
            cost_factor: default_cost_factor(),
            swap_timeout_s: default_swap_timeout(),
            failure_cooldown_s: default_failure_cooldown(),
            fail_open: true,
            outlier_failures: 0,
            max_candidates: 0,
        }
    }
}

impl CoreSettings {
    /// The core's configuration (positions off: nobody listens).
    pub fn config(&self) -> switchyard_core::CoreConfig {
        use std::time::Duration;
        let mut config = switchyard_core::CoreConfig {
            queue_capacity: self.queue_capacity,
            positions: false,
            fail_open: self.fail_open,
            ..Default::default()
        };
        config.swap.enabled = self.swap;
        config.swap.node_cooldown = Duration::from_secs_f64(self.node_cooldown_s.max(0.0));
        config.swap.queue_ratio = self.queue_ratio;
        config.swap.cost_factor = self.cost_factor;
        config.swap.timeout = Duration::from_secs_f64(self.swap_timeout_s.max(0.0));
        config.swap.failure_cooldown = Duration::from_secs_f64(self.failure_cooldown_s.max(0.0));
        config.outlier.consecutive_failures = self.outlier_failures;
        config.max_candidates = self.max_candidates;
        config
    }
}

impl NodeGroup {
    /// The ids of the group's nodes.
    pub fn ids(&self) -> Vec<String> {
        if self.count == 1 {
            vec![self.id.clone()]
        } else {
            (0..self.count)
                .map(|i| format!("{}-{i}", self.id))
                .collect()
        }
    }

    /// Every service a node of the group hosts: always loaded, then in
    /// slots, each once.
    pub fn hosted(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let slotted = self.slots.iter().flat_map(|s| s.can_host.iter());
        for name in self.services.iter().chain(slotted) {
            if !out.contains(name) {
                out.push(name.clone());
            }
        }
        out
    }
}

impl Scenario {
    /// Reads and checks the scenario at `path`.
    ///
    /// # Errors
    /// The file cannot be read, is not a scenario, or names something
    /// unknown or out of range.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut scenario: Scenario =
            toml::from_str(&text).map_err(|source| ScenarioError::Toml {
                path: path.to_path_buf(),
                source,
            })?;
        if scenario.name.is_empty() {
            scenario.name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
        }
        scenario.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        scenario.validate()?;
        Ok(scenario)
    }

    /// Parses a scenario from TOML text (trace files relative to
    /// `base_dir`).
    ///
    /// # Errors
    /// As [`Self::load`].
    pub fn parse(text: &str, name: &str, base_dir: &Path) -> Result<Self, ScenarioError> {
        let mut scenario: Scenario =
            toml::from_str(text).map_err(|source| ScenarioError::Toml {
                path: PathBuf::from(name),
                source,
            })?;
        if scenario.name.is_empty() {
            scenario.name = name.to_string();
        }
        scenario.base_dir = base_dir.to_path_buf();
        scenario.validate()?;
        Ok(scenario)
    }

    fn invalid(&self, message: String) -> ScenarioError {
        ScenarioError::Invalid {
            scenario: self.name.clone(),
            message,
        }
    }

    /// Where a trace file the scenario names is: relative paths from the
    /// scenario's folder.
    pub fn path_of(&self, file: &Path) -> PathBuf {
        if file.is_absolute() {
            file.to_path_buf()
        } else {
            self.base_dir.join(file)
        }
    }
}

/// Reads a file of numbers, one a line (`#` comments and blank lines
/// skipped), each finite and >= 0.
///
/// # Errors
/// The file cannot be read or holds something else.
pub fn read_numbers(path: &Path) -> Result<Vec<f64>, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let value: f64 = line.parse().map_err(|_| ScenarioError::Trace {
            path: path.to_path_buf(),
            line: i + 1,
            message: format!("{line:?} is not a number"),
        })?;
        if !value.is_finite() || value < 0.0 {
            return Err(ScenarioError::Trace {
                path: path.to_path_buf(),
                line: i + 1,
                message: format!("{value} is not a finite number >= 0"),
            });
        }
        out.push(value);
    }
    if out.is_empty() {
        return Err(ScenarioError::Trace {
            path: path.to_path_buf(),
            line: 0,
            message: "no numbers".into(),
        });
    }
    Ok(out)
}
