//! The services a node hosts and how calls run on them: external commands
//! ([`command`](ServiceKind::Command)), local HTTP servers
//! ([`http`](ServiceKind::Http)) and built-ins (`echo`, `sleep`, `sum-up`).
//!
//! [`Services`] counts the calls in flight per service and refuses calls past
//! a service's `max_concurrent`.

mod builtin;
mod command;
mod http;
mod kind;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use protocol::{ErrorKind, ServiceSpec};

use crate::config::ServiceConfig;

pub(crate) use kind::RawService;
pub use kind::{
    CommandConfig, DEFAULT_CONTENT_TYPE, DEFAULT_MAX_OUTPUT_BYTES, HttpConfig, ServiceKind,
};

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
}

impl ServiceError {
    /// An error of `kind` with `message`, cut to [`MAX_ERROR_MESSAGE`] bytes.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let mut message = message.into();
        truncate(&mut message, MAX_ERROR_MESSAGE);
        Self { kind, message }
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
}

#[derive(Debug)]
struct Entry {
    name: String,
    max_concurrent: u32,
    in_flight: AtomicU32,
    runner: Runner,
}

#[derive(Debug)]
enum Runner {
    Command(command::CommandService),
    Http(http::HttpService),
    Echo,
    Sleep,
    SumUp,
}

impl Services {
    /// Builds the services of `configs` (one pooled HTTP client is shared by
    /// every `http` service). Later duplicates of a name are ignored;
    /// [`crate::AgentConfig::validate`] refuses them.
    ///
    /// # Errors
    /// A [`ServiceError`] of kind `Internal` when the HTTP client cannot be
    /// built, or `ServiceFailed` for an `http` service with a bad URL.
    pub fn new(configs: &[ServiceConfig]) -> Result<Self, ServiceError> {
        let mut client = None;
        let mut entries = BTreeMap::new();
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
                ServiceKind::Echo => Runner::Echo,
                ServiceKind::Sleep => Runner::Sleep,
                ServiceKind::SumUp => Runner::SumUp,
            };
            entries.entry(config.name.clone()).or_insert_with(|| {
                Arc::new(Entry {
                    name: config.name.clone(),
                    max_concurrent: config.max_concurrent,
                    in_flight: AtomicU32::new(0),
                    runner,
                })
            });
        }
        Ok(Self {
            entries: Arc::new(entries),
        })
    }

    /// The services as registration announces them.
    pub fn specs(&self) -> Vec<ServiceSpec> {
        self.entries
            .values()
            .map(|e| ServiceSpec {
                name: e.name.clone(),
                max_concurrent: e.max_concurrent,
            })
            .collect()
    }

    /// Calls in flight per service, for stats.
    pub fn in_flight(&self) -> Vec<(String, u32)> {
        self.entries
            .values()
            .map(|e| (e.name.clone(), e.in_flight.load(Ordering::Acquire)))
            .collect()
    }

    /// Takes a slot of service `name`; the slot counts as in flight until it
    /// is dropped.
    ///
    /// # Errors
    /// `UnknownService` when the node hosts no such service,
    /// `NoNodeAvailable` when its `max_concurrent` calls are running.
    pub fn acquire(&self, name: &str) -> Result<Slot, ServiceError> {
        let entry = self.entries.get(name).ok_or_else(|| {
            ServiceError::new(
                ErrorKind::UnknownService,
                format!("this node hosts no service named {name:?}"),
            )
        })?;
        entry
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < entry.max_concurrent).then_some(n + 1)
            })
            .map_err(|_| {
                ServiceError::new(
                    ErrorKind::NoNodeAvailable,
                    format!(
                        "service {name} is running its limit of {} calls",
                        entry.max_concurrent
                    ),
                )
            })?;
        Ok(Slot {
            entry: Arc::clone(entry),
        })
    }

    /// Runs one call of service `name` on `payload`, giving up after
    /// `timeout`.
    ///
    /// # Errors
    /// As [`Services::acquire`], then as [`Slot::run`].
    pub async fn call(
        &self,
        name: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, ServiceError> {
        self.acquire(name)?.run(payload, timeout).await
    }
}

/// One taken slot of a service: a call in flight until dropped.
#[derive(Debug)]
pub struct Slot {
    entry: Arc<Entry>,
}

impl Slot {
    /// The service's name.
    pub fn service(&self) -> &str {
        &self.entry.name
    }

    /// Runs the call on `payload`. Past `timeout` the work is stopped (a
    /// command is killed and reaped) and the call fails with `Timeout`.
    /// Dropping the future stops the work too.
    ///
    /// # Errors
    /// `ServiceFailed` when the service fails (non-zero exit, HTTP error,
    /// bad input), `Timeout`, or `Internal`.
    pub async fn run(&self, payload: Bytes, timeout: Duration) -> Result<Bytes, ServiceError> {
        match &self.entry.runner {
            // The command runner enforces the timeout itself, to kill and reap.
            Runner::Command(c) => c.run(payload, timeout).await,
            Runner::Http(h) => limited(timeout, h.run(payload, timeout)).await,
            Runner::Echo => Ok(payload),
            Runner::Sleep => limited(timeout, builtin::sleep(payload)).await,
            Runner::SumUp => limited(timeout, builtin::sum_up(payload, timeout)).await,
        }
    }
}

async fn limited(
    timeout: Duration,
    work: impl Future<Output = Result<Bytes, ServiceError>>,
) -> Result<Bytes, ServiceError> {
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| Err(ServiceError::timeout(timeout)))
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.entry.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests;
