//! Swappable slots: each holds at most one of its services at a time, run
//! as a long-lived server process (e.g. a model server on one GPU). The
//! gateway asks for a swap on the control stream ([`protocol::SwapRequest`]);
//! the agent stops what the slot holds, starts the new service, waits until
//! it is ready and answers with a [`SwapReport`]. A loaded service's process
//! that exits on its own is reported too (`swap_id` 0).
//!
//! Which service a slot holds, as calls see it, lives in
//! [`Services`](crate::Services): a service takes calls only while loaded and
//! ready. This module runs the processes and orders the steps: one swap at a
//! time per slot, the slot emptied before its old process is stopped, marked
//! loaded only once the new one is ready.

mod process;
mod ready;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use protocol::{SwapReport, SwapRequest};
use tokio::sync::broadcast;
use tokio::task::JoinSet;

use crate::config::{AgentConfig, SwapConfig};
use crate::services::{ServiceError, Services};
use process::Process;

/// A report for the control streams: the session whose gateway asked for it
/// (0 when none did), and the report.
type Event = (u64, SwapReport);

/// Reports a session may fall behind by before it misses some (swap
/// reports are rare: one per slot at a time).
const REPORTS_QUEUE: usize = 256;

/// The node's swappable slots, cheap to clone (shared state).
#[derive(Clone)]
pub(crate) struct Slots {
    inner: Arc<Inner>,
}

struct Inner {
    services: Services,
    /// Each swappable service's swap settings.
    swaps: BTreeMap<String, SwapConfig>,
    slots: BTreeMap<String, Arc<Slot>>,
    client: reqwest::Client,
    events: broadcast::Sender<Event>,
    /// Swaps asked for by the gateway, under way.
    tasks: Mutex<JoinSet<()>>,
}

struct Slot {
    name: String,
    can_host: Vec<String>,
    /// What to load when the agent starts.
    initial: Option<String>,
    /// The swap lock (one swap at a time) and the process it holds.
    running: tokio::sync::Mutex<Option<Running>>,
}

struct Running {
    service: String,
    process: Process,
}

/// The reports the slots produce, for one control stream: every session
/// gets every report (each gateway must know what a slot holds).
pub(crate) struct Reports {
    events: broadcast::Receiver<Event>,
}

impl Reports {
    /// Drops every queued report.
    #[cfg(test)]
    pub(crate) fn clear(&mut self) {
        while self.events.try_recv().is_ok() {}
    }

    /// The next report for session `session`. A report asked for by
    /// another session's gateway comes with `swap_id` 0: this gateway
    /// connection did not ask for it.
    pub(crate) async fn next(&mut self, session: u64) -> SwapReport {
        loop {
            match self.events.recv().await {
                Ok((asked_by, mut report)) => {
                    if asked_by != session {
                        report.swap_id = 0;
                    }
                    return report;
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "swap reports missed by a slow session");
                }
                // Every sender is gone: no report will come.
                Err(broadcast::error::RecvError::Closed) => {
                    return std::future::pending().await;
                }
            }
        }
    }
}

impl Slots {
    /// The slots of `config` over `services` (built with the same slots),
    /// every slot empty.
    ///
    /// # Errors
    /// Kind `Internal` when the HTTP client for readiness probes cannot be
    /// built.
    pub(crate) fn new(
        config: &AgentConfig,
        services: Services,
    ) -> Result<(Self, Reports), ServiceError> {
        let swaps = config
            .services
            .iter()
            .filter_map(|s| Some((s.name.clone(), s.swap.clone()?)))
            .collect();
        let slots = config
            .slots
            .iter()
            .map(|s| {
                let slot = Slot {
                    name: s.name.clone(),
                    can_host: s.can_host.clone(),
                    initial: s.loaded.clone(),
                    running: tokio::sync::Mutex::new(None),
                };
                (s.name.clone(), Arc::new(slot))
            })
            .collect();
        let (events, rx) = broadcast::channel(REPORTS_QUEUE);
        let inner = Inner {
            services,
            swaps,
            slots,
            client: crate::services::http_client()?,
            events,
            tasks: Mutex::new(JoinSet::new()),
        };
        let slots = Self {
            inner: Arc::new(inner),
        };
        Ok((slots, Reports { events: rx }))
    }

    /// Every report from now on, for one more session.
    pub(crate) fn reports(&self) -> Reports {
        Reports {
            events: self.inner.events.subscribe(),
        }
    }

    /// Loads every slot's configured `loaded` service, all slots at once,
    /// waiting for readiness; a failure is logged and leaves the slot empty.
    pub(crate) async fn load_initial(&self) {
        let mut loads = JoinSet::new();
        for slot in self.inner.slots.values() {
            if let Some(service) = &slot.initial {
                let (inner, slot, service) =
                    (self.inner.clone(), slot.name.clone(), service.clone());
                tracing::info!(slot, service, "loading the slot's initial service");
                loads.spawn(async move {
                    let report = inner.swap(&slot, &service).await;
                    match report.error {
                        None => tracing::info!(
                            slot,
                            service,
                            ms = report.duration_ms,
                            "initial service loaded"
                        ),
                        Some(e) => tracing::error!(
                            slot,
                            service,
                            "cannot load the initial service, the slot starts empty: {e}"
                        ),
                    }
                });
            }
        }
        // Dropping this future (shutdown) aborts the loads, killing what they
        // started.
        while loads.join_next().await.is_some() {}
    }

    /// Runs the gateway's swap `request` in the background; its report goes
    /// to [`Reports`], for session `session`.
    pub(crate) fn request(&self, request: SwapRequest, session: u64) {
        let inner = Arc::clone(&self.inner);
        let mut tasks = self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            let SwapRequest {
                swap_id,
                slot,
                service,
            } = request;
            tracing::info!(swap_id, slot, service, "swap asked for");
            let mut report = inner.swap(&slot, &service).await;
            report.swap_id = swap_id;
            match &report.error {
                None => {
                    tracing::info!(swap_id, slot, service, ms = report.duration_ms, "swap done")
                }
                Some(e) => tracing::warn!(swap_id, slot, service, "swap failed: {e}"),
            }
            let _ = inner.events.send((session, report));
        });
    }

    /// Loads `service` into `slot` and waits for the outcome (`swap_id` 0).
    #[cfg(test)]
    pub(crate) async fn swap(&self, slot: &str, service: &str) -> SwapReport {
        self.inner.swap(slot, service).await
    }

    /// Stops everything: aborts the swaps under way (killing what they
    /// started), then stops each slot's process (stop command, SIGTERM,
    /// SIGKILL after 5 s), all slots at once.
    pub(crate) async fn shutdown(&self) {
        let mut tasks = std::mem::take(
            &mut *self
                .inner
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        tasks.shutdown().await;
        let mut stops = JoinSet::new();
        for slot in self.inner.slots.values() {
            let (inner, slot) = (Arc::clone(&self.inner), Arc::clone(slot));
            stops.spawn(async move {
                let mut running = slot.running.lock().await;
                if let Some(Running { service, process }) = running.take() {
                    inner.services.unload_if(&slot.name, &service);
                    tracing::info!(slot = slot.name, service, "stopping");
                    if let Some(swap) = inner.swaps.get(&service)
                        && let Err(e) = process.stop(swap).await
                    {
                        tracing::warn!(slot = slot.name, service, "stop failed: {e}");
                    }
                }
            });
        }
        while stops.join_next().await.is_some() {}
    }
}

impl Inner {
    /// One swap: checks, stop, start, readiness. Never panics; every
    /// failure is in the report.
    async fn swap(self: &Arc<Self>, slot_name: &str, service: &str) -> SwapReport {
        let report = |loaded: Option<String>, error: Option<String>, took: Duration| SwapReport {
            swap_id: 0,
            slot: slot_name.to_string(),
            loaded,
            error,
            duration_ms: u32::try_from(took.as_millis()).unwrap_or(u32::MAX),
        };
        let refuse =
            |error: String| report(self.services.loaded(slot_name), Some(error), Duration::ZERO);
        let Some(slot) = self.slots.get(slot_name) else {
            return refuse(format!("this node has no slot named {slot_name:?}"));
        };
        if !slot.can_host.iter().any(|s| s == service) {
            return refuse(format!("slot {slot_name} cannot host {service:?}"));
        }
        let Some(swap) = self.swaps.get(service) else {
            return refuse(format!("service {service} has no swap settings"));
        };
        let mut running = slot.running.lock().await;
        let started = Instant::now();
        let alive = running
            .as_ref()
            .is_some_and(|r| r.service == service && r.process.exited().is_none());
        if alive && self.services.loaded(slot_name).as_deref() == Some(service) {
            return report(Some(service.into()), None, started.elapsed());
        }
        // From here on no new call of the old service starts.
        if let Err(e) = self.services.unload(slot_name) {
            return report(self.services.loaded(slot_name), Some(e), started.elapsed());
        }
        if let Some(old) = running.take() {
            tracing::info!(slot = slot_name, service = old.service, "stopping");
            let stopped = match self.swaps.get(&old.service) {
                Some(old_swap) => old.process.stop(old_swap).await,
                None => old.process.stop(swap).await,
            };
            if let Err(e) = stopped {
                return report(None, Some(format!("stop failed: {e}")), started.elapsed());
            }
        }
        tracing::info!(slot = slot_name, service, "starting");
        let on_exit = self.on_exit(slot_name, service);
        let process = match Process::spawn(swap, slot_name, service, on_exit) {
            Ok(process) => process,
            Err(e) => return report(None, Some(format!("start failed: {e}")), started.elapsed()),
        };
        let timeout = Duration::from_secs(swap.ready_timeout_s);
        if let Err(e) = ready::wait(&process, swap, &self.client, timeout).await {
            if let Err(stop) = process.stop(swap).await {
                tracing::warn!(
                    slot = slot_name,
                    service,
                    "stop after a failed start: {stop}"
                );
            }
            return report(None, Some(e), started.elapsed());
        }
        self.services.set_loaded(slot_name, service);
        // An exit between the probe and now would have found the slot
        // without this service, and not been reported: look again.
        if let Some(reason) = process.exited() {
            self.services.unload_if(slot_name, service);
            let error = format!("start failed: process {reason} right after becoming ready");
            return report(None, Some(error), started.elapsed());
        }
        *running = Some(Running {
            service: service.into(),
            process,
        });
        report(Some(service.into()), None, started.elapsed())
    }

    /// What happens when `service`'s process in `slot` exits on its own:
    /// if the slot held it (loaded and ready), the slot is emptied and the
    /// gateway told (`swap_id` 0).
    fn on_exit(self: &Arc<Self>, slot: &str, service: &str) -> process::OnExit {
        let (services, events) = (self.services.clone(), self.events.clone());
        let (slot, service) = (slot.to_string(), service.to_string());
        Box::new(move |reason: String| {
            if !services.unload_if(&slot, &service) {
                return;
            }
            tracing::warn!(slot, service, "the loaded service's process {reason}");
            let report = SwapReport {
                swap_id: 0,
                slot,
                loaded: None,
                error: Some(format!("process {reason}")),
                duration_ms: 0,
            };
            let _ = events.send((0, report));
        })
    }
}

#[cfg(test)]
pub(crate) mod tests;
