//! Swappable services: a service's `[services.swap]` table (how to start,
//! stop and probe the server behind it) and the top-level `[[slots]]` tables
//! (which services share one slot, e.g. one GPU).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, ServiceConfig, check_name};

/// Default longest wait for a started service to become ready, s.
pub const DEFAULT_READY_TIMEOUT_S: u64 = 120;
/// Largest `ready_timeout_s` accepted (one day), s.
pub const MAX_READY_TIMEOUT_S: u64 = 24 * 60 * 60;
/// Default usual load time reported to the gateway, ms.
pub const DEFAULT_LOAD_MS: u32 = 10_000;

/// How a swappable service is started, stopped and found ready (TOML table
/// `[services.swap]` under its `[[services]]` entry).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawSwap")]
pub struct SwapConfig {
    /// The long-running server process: program and arguments, run directly
    /// (no shell) in its own process group, stdin held open for its life
    /// (TOML `start`).
    pub start: Vec<String>,
    /// A command run to stop it, given 30 s (TOML `stop`, optional); in any
    /// case the start process's group then gets SIGTERM, and SIGKILL 5 s
    /// later if it still runs.
    pub stop: Option<Vec<String>>,
    /// How to tell that the server is ready (TOML `ready_url` or
    /// `ready_command`, exactly one).
    pub ready: ReadyProbe,
    /// Longest wait for readiness after the start, s (TOML
    /// `ready_timeout_s`, default 120, at most one day).
    pub ready_timeout_s: u64,
    /// How long loading usually takes, ms, as reported to the gateway (TOML
    /// `load_ms`, default 10 000).
    pub load_ms: u32,
    /// Extra environment variables for `start`, `stop` and `ready_command`
    /// (TOML `env`, default none).
    pub env: BTreeMap<String, String>,
    /// Working directory for `start`, `stop` and `ready_command` (TOML `cwd`,
    /// default the agent's; relative to the config file's folder when loaded
    /// from a file).
    pub cwd: Option<PathBuf>,
}

/// How readiness is probed, every 100 ms until it succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyProbe {
    /// TOML `ready_url`: an `http://` URL answering a GET with a 2xx status
    /// once the server is ready.
    Url(String),
    /// TOML `ready_command`: a program (no shell) exiting 0 once the server
    /// is ready.
    Command(Vec<String>),
}

/// A swappable slot, e.g. one GPU: holds at most one of the services it can
/// host at a time (TOML `[[slots]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotConfig {
    /// Slot name, unique on the node, e.g. `gpu0` (1..=256 bytes).
    pub name: String,
    /// The services the slot can load: each has a `[services.swap]` table
    /// and is in no other slot (at least one).
    pub can_host: Vec<String>,
    /// The service loaded when the agent starts (default none: the slot
    /// starts empty until the gateway asks for a swap).
    #[serde(default)]
    pub loaded: Option<String>,
}

impl SwapConfig {
    /// A swap configuration starting `start` and probing with `ready`, with
    /// defaults for the rest (no stop command, 120 s to become ready,
    /// `load_ms` 10 000, no extra environment, the agent's directory).
    pub fn new<S: Into<String>>(start: impl IntoIterator<Item = S>, ready: ReadyProbe) -> Self {
        Self {
            start: start.into_iter().map(Into::into).collect(),
            stop: None,
            ready,
            ready_timeout_s: DEFAULT_READY_TIMEOUT_S,
            load_ms: DEFAULT_LOAD_MS,
            env: BTreeMap::new(),
            cwd: None,
        }
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// A message naming the broken rule: an empty `start`, `stop` or
    /// `ready_command`, a `ready_url` that is not `http://`, a
    /// `ready_timeout_s` out of 1..=86400, a bad `env` name.
    pub fn validate(&self) -> Result<(), String> {
        if self.start.first().is_none_or(String::is_empty) {
            return Err("swap.start must name a program".into());
        }
        if let Some(stop) = &self.stop
            && stop.first().is_none_or(String::is_empty)
        {
            return Err("swap.stop, when set, must name a program".into());
        }
        match &self.ready {
            ReadyProbe::Url(url) => {
                super::parse_url(url).map_err(|e| format!("swap.ready_url: {e}"))?;
            }
            ReadyProbe::Command(argv) => {
                if argv.first().is_none_or(String::is_empty) {
                    return Err("swap.ready_command must name a program".into());
                }
            }
        }
        if !(1..=MAX_READY_TIMEOUT_S).contains(&self.ready_timeout_s) {
            return Err(format!(
                "swap.ready_timeout_s must be 1..={MAX_READY_TIMEOUT_S}, got {}",
                self.ready_timeout_s
            ));
        }
        if self
            .env
            .keys()
            .any(|k| k.is_empty() || k.contains(['=', '\0']))
        {
            return Err("swap.env names must be non-empty, without '=' or NUL".into());
        }
        Ok(())
    }
}

impl SlotConfig {
    /// A slot that can host `can_host` and starts empty.
    pub fn new<S: Into<String>>(
        name: impl Into<String>,
        can_host: impl IntoIterator<Item = S>,
    ) -> Self {
        Self {
            name: name.into(),
            can_host: can_host.into_iter().map(Into::into).collect(),
            loaded: None,
        }
    }

    /// The same slot, loading `service` when the agent starts.
    #[must_use]
    pub fn with_loaded(mut self, service: impl Into<String>) -> Self {
        self.loaded = Some(service.into());
        self
    }
}

/// The TOML shape of `[services.swap]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSwap {
    start: Vec<String>,
    stop: Option<Vec<String>>,
    ready_url: Option<String>,
    ready_command: Option<Vec<String>>,
    ready_timeout_s: Option<u64>,
    load_ms: Option<u32>,
    env: Option<BTreeMap<String, String>>,
    cwd: Option<PathBuf>,
}

impl TryFrom<RawSwap> for SwapConfig {
    type Error = String;

    fn try_from(raw: RawSwap) -> Result<Self, String> {
        let ready = match (raw.ready_url, raw.ready_command) {
            (Some(url), None) => ReadyProbe::Url(url),
            (None, Some(argv)) => ReadyProbe::Command(argv),
            (Some(_), Some(_)) => {
                return Err(
                    "[services.swap] takes one of ready_url and ready_command, not both".into(),
                );
            }
            (None, None) => {
                return Err(
                    "[services.swap] needs ready_url = \"http://...\" or ready_command = [...]"
                        .into(),
                );
            }
        };
        Ok(Self {
            start: raw.start,
            stop: raw.stop,
            ready,
            ready_timeout_s: raw.ready_timeout_s.unwrap_or(DEFAULT_READY_TIMEOUT_S),
            load_ms: raw.load_ms.unwrap_or(DEFAULT_LOAD_MS),
            env: raw.env.unwrap_or_default(),
            cwd: raw.cwd,
        })
    }
}

/// Checks the slots against the services: unique valid names, each slot
/// hosting at least one service, every service it names existing, having a
/// `[services.swap]` table and being in no other slot, `loaded` among
/// `can_host`, and every service with a swap table in some slot.
pub(super) fn validate_slots(
    services: &[ServiceConfig],
    slots: &[SlotConfig],
) -> Result<(), ConfigError> {
    let invalid = |m: String| Err(ConfigError::Invalid(m));
    if slots.len() > protocol::limits::MAX_SERVICES {
        return invalid(format!(
            "at most {} slots allowed",
            protocol::limits::MAX_SERVICES
        ));
    }
    let mut names = BTreeSet::new();
    // Service name -> the slot that hosts it.
    let mut hosted_by: BTreeMap<&str, &str> = BTreeMap::new();
    for slot in slots {
        check_name("slot name", &slot.name)?;
        if !names.insert(slot.name.as_str()) {
            return invalid(format!("slot {} is listed twice", slot.name));
        }
        if slot.can_host.is_empty() {
            return invalid(format!("slot {}: can_host must name a service", slot.name));
        }
        for name in &slot.can_host {
            let Some(service) = services.iter().find(|s| &s.name == name) else {
                return invalid(format!(
                    "slot {} can host {name:?}, which is not a [[services]] entry",
                    slot.name
                ));
            };
            if service.swap.is_none() {
                return invalid(format!(
                    "slot {} can host {name}, which has no [services.swap] table (how to start it)",
                    slot.name
                ));
            }
            if let Some(other) = hosted_by.insert(name, &slot.name) {
                return invalid(if other == slot.name {
                    format!("slot {} lists {name} twice", slot.name)
                } else {
                    format!("service {name} is in two slots: {other} and {}", slot.name)
                });
            }
        }
        if let Some(loaded) = &slot.loaded
            && !slot.can_host.contains(loaded)
        {
            return invalid(format!(
                "slot {}: loaded = {loaded:?} is not in its can_host",
                slot.name
            ));
        }
    }
    if let Some(orphan) = services
        .iter()
        .find(|s| s.swap.is_some() && !hosted_by.contains_key(s.name.as_str()))
    {
        return invalid(format!(
            "service {} has a [services.swap] table but is in no [[slots]] can_host",
            orphan.name
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
