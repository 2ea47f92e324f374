//! The services a node hosts and how calls run on them: external commands
//! ([`command`](ServiceKind::Command)), local HTTP servers
//! ([`http`](ServiceKind::Http)), OpenAI-compatible model servers
//! ([`openai`](ServiceKind::OpenAi)), built-ins (`echo`, `sleep`,
//! `sum-up`) and code the embedding program supplies
//! ([`hosted`](ServiceKind::Hosted), e.g. Python functions). Commands and HTTP servers answer with a [`Reply`] whose body
//! streams as it is produced.
//!
//! [`Services`] counts the calls in flight per service and refuses calls past
//! a service's `max_concurrent`, whichever gateway sent them (the node is the
//! authority on its capacity); every change of the counts is announced on a
//! watch channel ([`Services::load_changes`]) for the load reports. A swappable service (one in a slot) takes
//! calls only while its slot holds it; the agent's slot manager loads and
//! unloads it (see [`crate::SlotConfig`]).

mod builtin;
mod command;
mod gate;
pub mod hosted;
mod http;
mod logs;
mod reply;
mod tally;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use protocol::{ErrorKind, ServiceSpec};
use tokio::sync::watch;

use crate::config::{ServiceConfig, SlotConfig};
use gate::Gate;

/// What runs a service is configuration, re-exported here beside the
/// services that run it.
pub use crate::config::{
    CommandConfig, DEFAULT_CONTENT_TYPE, DEFAULT_MAX_OUTPUT_BYTES, HttpConfig, OpenAiConfig,
    ServiceKind,
};
pub(crate) use command::{GroupGuard, describe, kill_group, read_tail, signal_group};
pub(crate) use http::client as http_client;
pub use reply::{Body, Chunks, Item, Reply};
pub use tally::Tally;

/// Longest error message a service failure carries, bytes.
pub const MAX_ERROR_MESSAGE: usize = 4096;

/// Why a call failed on this node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ServiceError {
    /// What kind of failure, as the gateway reports it.
    pub kind: ErrorKind,
    /// Details in words (e.g. the command's exit status and stderr), at most
    /// about [`MAX_ERROR_MESSAGE`] bytes.
    pub message: String,
    /// The service never received the call (its server refused the
    /// connection, nothing of the request was written): it ran nothing, and
    /// the gateway may send it to another node.
    pub not_run: bool,
    /// The HTTP status an `http`/`openai` service answered with, when it
    /// was an error status.
    pub status: Option<u16>,
    /// The service's own error body when it is JSON (an OpenAI-compatible
    /// server's error), at most [`protocol::limits::MAX_ERROR_BODY_LEN`]
    /// bytes, for the caller to get unchanged.
    pub body: Option<String>,
}

impl ServiceError {
    /// An error of `kind` with `message`, cut to [`MAX_ERROR_MESSAGE`] bytes.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let mut message = message.into();
        truncate(&mut message, MAX_ERROR_MESSAGE);
        Self {
            kind,
            message,
            not_run: false,
            status: None,
            body: None,
        }
    }

    /// The error as the wire carries it.
    pub fn into_call_error(self) -> protocol::CallError {
        protocol::CallError {
            not_run: self.not_run,
            status: self.status,
            body: self.body.map(String::into_boxed_str),
            ..protocol::CallError::new(self.kind, self.message)
        }
    }

    /// The same error, marked as never run (the service received nothing).
    #[must_use]
    pub fn never_ran(mut self) -> Self {
        self.not_run = true;
        self
    }

    pub(crate) fn failed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ServiceFailed, message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    pub(crate) fn timeout(timeout: Duration) -> Self {
        Self::new(
            ErrorKind::Timeout,
            format!("service ran past its timeout of {} ms", timeout.as_millis()),
        )
    }
}

/// Cuts `text` to at most `max` bytes at a character boundary, marking the cut.
pub(crate) fn truncate(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str("...");
}

/// The services of one node, cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct Services {
    entries: Arc<BTreeMap<String, Arc<Entry>>>,
    /// The swappable slots, by name.
    gates: Arc<BTreeMap<String, Arc<Gate>>>,
    /// Marked changed whenever a call starts or ends.
    load: Arc<watch::Sender<()>>,
    /// Job calls in flight, every gateway's ([`Slot::count_as_job`]).
    jobs: Arc<AtomicU32>,
}

#[derive(Debug)]
struct Entry {
    /// The service's place among the node's (its counter in a [`Tally`]).
    index: usize,
    name: String,
    max_concurrent: u32,
    /// Usual load time, ms (0 for a service in no slot).
    load_ms: u32,
    /// The policy the node asks for, and whether calls may run twice.
    policy: Option<String>,
    idempotent: bool,
    in_flight: AtomicU32,
    /// The slot the service belongs to, if it is swappable.
    gate: Option<Arc<Gate>>,
    runner: Runner,
}

#[derive(Debug)]
enum Runner {
    Command(command::CommandService),
    Http(http::HttpService),
    Echo,
    Sleep,
    SumUp,
    Hosted(hosted::Hosted, Arc<hosted::Running>),
}

impl Entry {
    /// Calls in flight, and a hosted service's abandoned calls whose work
    /// still runs.
    fn busy(&self) -> u32 {
        self.in_flight.load(Ordering::SeqCst).max(self.running())
    }

    /// A hosted service's work still running, its abandoned calls' included
    /// (0 for the other kinds).
    fn running(&self) -> u32 {
        match &self.runner {
            Runner::Hosted(_, running) => running.count(),
            _ => 0,
        }
    }
}

impl Services {
    /// Builds the services of `configs` with no slots: every service is
    /// always loaded, a `swap` table included. As [`Services::with_slots`].
    ///
    /// # Errors
    /// As [`Services::with_slots`].
    pub fn new(configs: &[ServiceConfig]) -> Result<Self, ServiceError> {
        Self::with_slots(configs, &[])
    }

    /// Builds the services of `configs` (one pooled HTTP client is shared by
    /// every `http` service) and the swappable `slots`, every slot empty: a
    /// service in a slot takes calls only once the agent loaded it.
    /// Later duplicates of a name are ignored, as are slot entries naming
    /// unknown services; [`crate::AgentConfig::validate`] refuses both.
    ///
    /// # Errors
    /// A [`ServiceError`] of kind `Internal` when the HTTP client cannot be
    /// built, or `ServiceFailed` for an `http` service with a bad URL.
    pub fn with_slots(
        configs: &[ServiceConfig],
        slots: &[SlotConfig],
    ) -> Result<Self, ServiceError> {
        Self::hosting(configs, slots, &hosted::Handlers::new())
    }

    /// As [`Services::with_slots`], each `hosted` service answered by the
    /// handler of its name in `handlers`.
    ///
    /// # Errors
    /// As [`Services::with_slots`]; `Internal` for a `hosted` service
    /// `handlers` has no handler for.
    pub fn hosting(
        configs: &[ServiceConfig],
        slots: &[SlotConfig],
        handlers: &hosted::Handlers,
    ) -> Result<Self, ServiceError> {
        let gates: BTreeMap<String, Arc<Gate>> = slots
            .iter()
            .map(|slot| {
                let gate = Gate {
                    slot: slot.name.clone(),
                    can_host: slot.can_host.clone(),
                    loaded: Mutex::new(None),
                };
                (slot.name.clone(), Arc::new(gate))
            })
            .collect();
        let gate_of = |service: &str| {
            gates
                .values()
                .find(|g| g.can_host.iter().any(|n| n == service))
                .cloned()
        };
        let mut client = None;
        let mut entries = BTreeMap::new();
        let load = Arc::new(watch::Sender::new(()));
        for config in configs {
            let runner = match &config.kind {
                ServiceKind::Command(c) => Runner::Command(command::CommandService::new(c)),
                ServiceKind::Http(h) => {
                    let client = match &client {
                        Some(client) => client,
                        None => client.insert(http::client()?),
                    };
                    Runner::Http(http::HttpService::new(client.clone(), h)?)
                }
                ServiceKind::OpenAi(o) => {
                    let client = match &client {
                        Some(client) => client,
                        None => client.insert(http::client()?),
                    };
                    Runner::Http(http::HttpService::openai(client.clone(), o)?)
                }
                ServiceKind::Echo => Runner::Echo,
                ServiceKind::Sleep => Runner::Sleep,
                ServiceKind::SumUp => Runner::SumUp,
                ServiceKind::Hosted => {
                    let handler = handlers.get(&config.name).ok_or_else(|| {
                        ServiceError::internal(format!(
                            "service {} is hosted but the program gave no handler for it",
                            config.name
                        ))
                    })?;
                    Runner::Hosted(handler.clone(), hosted::Running::new(load.clone()))
                }
            };
            let index = entries.len();
            entries.entry(config.name.clone()).or_insert_with(|| {
                let gate = gate_of(&config.name);
                // A swap table counts only for a service in a slot.
                let load_ms = match (&gate, &config.swap) {
                    (Some(_), Some(swap)) => swap.load_ms,
                    _ => 0,
                };
                Arc::new(Entry {
                    index,
                    name: config.name.clone(),
                    max_concurrent: config.max_concurrent,
                    load_ms,
                    policy: config.policy.clone(),
                    idempotent: config.idempotent,
                    in_flight: AtomicU32::new(0),
                    gate,
                    runner,
                })
            });
        }
        Ok(Self {
            entries: Arc::new(entries),
            gates: Arc::new(gates),
            load,
            jobs: Arc::new(AtomicU32::new(0)),
        })
    }

    /// The services as registration announces them, with each swappable
    /// service's usual load time (`load_ms`, 0 for the others).
    pub fn specs(&self) -> Vec<ServiceSpec> {
        self.entries
            .values()
            .map(|e| ServiceSpec {
                name: e.name.clone(),
                max_concurrent: e.max_concurrent,
                load_ms: e.load_ms,
                model: matches!(&e.runner, Runner::Http(http) if http.is_openai()),
                policy: e.policy.clone(),
                idempotent: e.idempotent,
            })
            .collect()
    }

    /// Follows the calls in flight: the receiver is marked changed whenever
    /// a call of any service starts or ends (read the counts with
    /// [`Services::in_flight`]).
    pub fn load_changes(&self) -> watch::Receiver<()> {
        self.load.subscribe()
    }

    /// Calls in flight per service (every gateway's), for stats and load
    /// reports.
    pub fn in_flight(&self) -> Vec<(String, u32)> {
        self.entries
            .values()
            .map(|e| (e.name.clone(), e.busy()))
            .collect()
    }

    /// Job calls in flight, every gateway's and every service's (the slots
    /// marked with [`Slot::count_as_job`]), for load reports.
    pub fn jobs_in_flight(&self) -> u32 {
        self.jobs.load(Ordering::Acquire)
    }

    /// Takes a slot of service `name`; the slot counts as in flight until it
    /// is dropped.
    ///
    /// # Errors
    /// `UnknownService` when the node hosts no such service,
    /// `NoNodeAvailable` when its `max_concurrent` calls are running or,
    /// for a swappable service, when its slot does not hold it; such a
    /// refusal is `not_run` (the gateway picks again).
    pub fn acquire(&self, name: &str) -> Result<Slot, ServiceError> {
        self.take(name, None)
    }

    /// As [`Services::acquire`], the slot also counted in `owner` (the
    /// tally of the gateway session whose call or lease hold takes it).
    ///
    /// # Errors
    /// As [`Services::acquire`].
    pub fn acquire_for(&self, name: &str, owner: &Arc<Tally>) -> Result<Slot, ServiceError> {
        self.take(name, Some(owner))
    }

    /// A tally for one gateway session's slots ([`Services::acquire_for`]).
    pub fn tally(&self) -> Arc<Tally> {
        Arc::new(Tally::new(self.entries.len()))
    }

    /// Calls in flight per service that other gateway sessions than
    /// `tally`'s (and no session: none here) hold, for that session's load
    /// reports.
    pub fn others(&self, tally: &Tally) -> Vec<(String, u32)> {
        self.entries
            .values()
            .map(|e| {
                let all = e.busy();
                (e.name.clone(), all.saturating_sub(tally.in_flight(e.index)))
            })
            .collect()
    }

    /// Job calls in flight that other sessions than `tally`'s hold.
    pub fn jobs_others(&self, tally: &Tally) -> u32 {
        let all = self.jobs.load(Ordering::SeqCst);
        all.saturating_sub(tally.jobs())
    }

    fn take(&self, name: &str, owner: Option<&Arc<Tally>>) -> Result<Slot, ServiceError> {
        let entry = self.entries.get(name).ok_or_else(|| {
            ServiceError::new(
                ErrorKind::UnknownService,
                format!("this node hosts no service named {name:?}"),
            )
        })?;
        // Held while the slot is taken, so that a swap (which empties the
        // slot under this lock, after checking for calls in flight) and a
        // new call never cross.
        let _loaded = match &entry.gate {
            Some(gate) => {
                let loaded = gate.loaded();
                if loaded.as_deref() != Some(name) {
                    let holds = match loaded.as_deref() {
                        Some(other) => format!("holds {other}"),
                        None => "is empty".to_string(),
                    };
                    return Err(ServiceError::new(
                        ErrorKind::NoNodeAvailable,
                        format!(
                            "service {name} is not loaded on this node (slot {} {holds})",
                            gate.slot
                        ),
                    )
                    .never_ran());
                }
                Some(loaded)
            }
            None => None,
        };
        // Counted in the owner's tally first (see the `tally` module).
        if let Some(owner) = owner {
            owner.add(entry.index);
        }
        entry
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                // A hosted service's abandoned work still holds its place.
                (n.max(entry.running()) < entry.max_concurrent).then_some(n + 1)
            })
            .map_err(|_| {
                if let Some(owner) = owner {
                    owner.remove(entry.index);
                }
                ServiceError::new(
                    ErrorKind::NoNodeAvailable,
                    format!(
                        "service {name} is running its limit of {} calls",
                        entry.max_concurrent
                    ),
                )
                .never_ran()
            })?;
        self.load.send_replace(());
        Ok(Slot {
            entry: Arc::clone(entry),
            load: Arc::clone(&self.load),
            jobs: Arc::clone(&self.jobs),
            job: false,
            owner: owner.cloned(),
        })
    }

    /// Runs one call of service `name` on `payload` to its end, giving up
    /// after `timeout`, and returns the whole result.
    ///
    /// # Errors
    /// As [`Services::acquire`], then as [`Slot::run`].
    pub async fn call(
        &self,
        name: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, ServiceError> {
        let slot = self.acquire(name)?;
        let reply = slot.run(payload, timeout, None).await?;
        reply.body.collect().await
    }
}

/// One taken slot of a service: a call in flight until dropped.
#[derive(Debug)]
pub struct Slot {
    entry: Arc<Entry>,
    load: Arc<watch::Sender<()>>,
    /// The node's job calls in flight.
    jobs: Arc<AtomicU32>,
    /// Whether this call counts among them.
    job: bool,
    /// The tally of the gateway session that took the slot, if any.
    owner: Option<Arc<Tally>>,
}

impl Slot {
    /// Counts the call as a job call ([`Services::jobs_in_flight`]) until
    /// the slot is dropped; a second mark changes nothing.
    pub fn count_as_job(&mut self) {
        if !self.job {
            self.job = true;
            if let Some(owner) = &self.owner {
                owner.add_job();
            }
            self.jobs.fetch_add(1, Ordering::SeqCst);
            self.load.send_replace(());
        }
    }

    /// The service's name.
    pub fn service(&self) -> &str {
        &self.entry.name
    }

    /// Starts the call on `payload` and returns its answer as soon as its
    /// head is known: a command's stdout and an HTTP response body stream
    /// as they are produced, a built-in's result is whole. Past `timeout`
    /// the work is stopped (a command is killed and reaped) and the call
    /// (or its stream) fails with `Timeout`; dropping the future or the
    /// stream stops the work too. `endpoint` is the OpenAI endpoint for an
    /// `openai` service, ignored by the other kinds. Keep the slot until
    /// the stream ends: it counts the call as in flight.
    ///
    /// # Errors
    /// `ServiceFailed` when the service fails (non-zero exit, HTTP error,
    /// bad input), `BadRequest` (an `openai` server's 400/422, a bad
    /// endpoint), `Timeout`, or `Internal`.
    pub async fn run(
        &self,
        payload: Bytes,
        timeout: Duration,
        endpoint: Option<&str>,
    ) -> Result<Reply, ServiceError> {
        self.run_logged(payload, timeout, endpoint, false).await
    }

    /// As [`Slot::run`]; with `log`, a command's stderr also streams as
    /// [`Item::Log`] chunks among its stdout's (whole lines as they are
    /// written; its tail still ends a failure's message). The other kinds
    /// have no log: their body is the result.
    ///
    /// # Errors
    /// As [`Slot::run`].
    pub async fn run_logged(
        &self,
        payload: Bytes,
        timeout: Duration,
        endpoint: Option<&str>,
        log: bool,
    ) -> Result<Reply, ServiceError> {
        self.run_traced(payload, timeout, endpoint, log, None).await
    }

    /// As [`Slot::run_logged`]; an `http` or `openai` service's request
    /// carries `traceparent` (a W3C trace context: the model server's spans
    /// join the call's trace). The other kinds ignore it.
    ///
    /// # Errors
    /// As [`Slot::run`].
    pub async fn run_traced(
        &self,
        payload: Bytes,
        timeout: Duration,
        endpoint: Option<&str>,
        log: bool,
        traceparent: Option<&str>,
    ) -> Result<Reply, ServiceError> {
        let whole = |bytes: Result<Bytes, ServiceError>| bytes.map(Reply::whole);
        match &self.entry.runner {
            // The command's task enforces the timeout itself, to kill and reap.
            Runner::Command(c) => c.start(payload, timeout, log),
            // The request's own timeout covers its body too.
            Runner::Http(h) => {
                limited(timeout, h.start(payload, timeout, endpoint, traceparent)).await
            }
            Runner::Echo => Ok(Reply::whole(payload)),
            Runner::Sleep => whole(limited(timeout, builtin::sleep(payload)).await),
            Runner::SumUp => whole(limited(timeout, builtin::sum_up(payload, timeout)).await),
            Runner::Hosted(h, running) => hosted::run(h, running, payload, timeout, log).await,
        }
    }
}

async fn limited<T>(
    timeout: Duration,
    work: impl Future<Output = Result<T, ServiceError>>,
) -> Result<T, ServiceError> {
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| Err(ServiceError::timeout(timeout)))
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Off the node's totals before the owner's tally (see `tally`).
        self.entry.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.job {
            self.jobs.fetch_sub(1, Ordering::SeqCst);
        }
        if let Some(owner) = &self.owner {
            owner.remove(self.entry.index);
            if self.job {
                owner.remove_job();
            }
        }
        self.load.send_replace(());
    }
}

#[cfg(test)]
mod tests;
