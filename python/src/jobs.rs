//! Durable jobs from Python: the spec and filter built from keyword
//! arguments, and `LogFollow`, a job's log followed as an iterator of
//! entries (dicts with `seq`, `attempt`, `ts_ms`, `stream`, `line`).

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use client::{ClientError, JobFilter, JobSpec, JobState, LogEntry};
use futures_util::{Stream, StreamExt};
use pyo3::exceptions::{PyStopAsyncIteration, PyValueError};
use pyo3::prelude::*;

use crate::errors::to_py;

/// A job's keyword arguments (`Client.submit_job`).
pub(crate) struct SpecArgs {
    pub(crate) service: Option<String>,
    pub(crate) payload: bytes::Bytes,
    pub(crate) template: Option<String>,
    pub(crate) params: Option<BTreeMap<String, String>>,
    pub(crate) hints: Option<BTreeMap<String, String>>,
    pub(crate) priority: i32,
    pub(crate) realtime: bool,
    pub(crate) watchdog_s: Option<u32>,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) idempotent: bool,
    pub(crate) labels: Option<BTreeMap<String, String>>,
}

impl SpecArgs {
    /// The job spec (the gateway checks it: a service or a template, the
    /// payload's size, the names).
    pub(crate) fn spec(self) -> JobSpec {
        JobSpec {
            service: self.service,
            template: self.template,
            params: self.params.unwrap_or_default(),
            payload: self.payload.to_vec(),
            hints: self.hints.unwrap_or_default(),
            priority: self.priority,
            realtime: self.realtime,
            watchdog_s: self.watchdog_s,
            max_attempts: self.max_attempts,
            idempotent: self.idempotent,
            labels: self.labels.unwrap_or_default(),
        }
    }
}

/// A job list's filter; `state` by name (`waiting`, `running`,
/// `succeeded`, `failed`, `timed_out`, `cancelled`, …).
///
/// # Errors
/// `ValueError` for an unknown state.
pub(crate) fn filter(
    state: Option<&str>,
    service: Option<String>,
    tenant: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
) -> PyResult<JobFilter> {
    let state = state
        .map(|name| {
            JobState::parse(name)
                .ok_or_else(|| PyValueError::new_err(format!("no job state {name:?}")))
        })
        .transpose()?;
    Ok(JobFilter {
        state,
        service,
        tenant,
        limit,
        cursor,
    })
}

type Batches = Pin<Box<dyn Stream<Item = Result<Vec<LogEntry>, ClientError>> + Send>>;

/// The entries a followed log has read and not yet given, and the rest.
struct Follow {
    ready: VecDeque<LogEntry>,
    batches: Option<Batches>,
}

impl Follow {
    fn new(batches: Batches) -> Self {
        Self {
            ready: VecDeque::new(),
            batches: Some(batches),
        }
    }

    /// The next entry, reading the next batch when none is ready; `None`
    /// at the end (the log's error ends it too).
    async fn next(&mut self) -> Result<Option<LogEntry>, ClientError> {
        loop {
            if let Some(entry) = self.ready.pop_front() {
                return Ok(Some(entry));
            }
            let Some(batches) = self.batches.as_mut() else {
                return Ok(None);
            };
            match batches.next().await {
                Some(Ok(batch)) => self.ready.extend(batch),
                Some(Err(e)) => {
                    self.batches = None;
                    return Err(e);
                }
                None => self.batches = None,
            }
        }
    }
}

/// A job's log as it is written: iterate for its entries (dicts); the
/// iteration ends once the job has ended and every line was given.
#[pyclass(module = "switchyard_fleet._native", name = "LogFollow", frozen)]
pub(crate) struct LogFollow {
    follow: Mutex<Follow>,
}

impl LogFollow {
    pub(crate) fn new(batches: Batches) -> Self {
        Self {
            follow: Mutex::new(Follow::new(batches)),
        }
    }
}

#[pymethods]
impl LogFollow {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// The next entry, waiting for the job to write one.
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let next = py.detach(|| {
            let mut follow = self.follow.lock().unwrap_or_else(PoisonError::into_inner);
            crate::client::runtime().block_on(follow.next())
        });
        match next {
            Ok(Some(entry)) => crate::client::plain(py, &entry).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(to_py(e)),
        }
    }

    /// Stops following.
    fn close(&self, py: Python<'_>) {
        let batches = py.detach(|| {
            let mut follow = self.follow.lock().unwrap_or_else(PoisonError::into_inner);
            follow.ready.clear();
            follow.batches.take()
        });
        drop(batches);
    }
}

/// A job's log as it is written, for asyncio: `async for entry in log`.
#[pyclass(module = "switchyard_fleet._native", name = "AsyncLogFollow", frozen)]
pub(crate) struct AsyncLogFollow {
    follow: Arc<tokio::sync::Mutex<Follow>>,
}

impl AsyncLogFollow {
    pub(crate) fn new(batches: Batches) -> Self {
        Self {
            follow: Arc::new(tokio::sync::Mutex::new(Follow::new(batches))),
        }
    }
}

#[pymethods]
impl AsyncLogFollow {
    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// An awaitable of the next entry (`StopAsyncIteration` at the end).
    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let follow = Arc::clone(&self.follow);
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            match follow.lock().await.next().await {
                Ok(Some(entry)) => Python::attach(|py| crate::client::plain(py, &entry)),
                Ok(None) => Err(PyStopAsyncIteration::new_err(())),
                Err(e) => Err(to_py(e)),
            }
        })
    }

    /// Stops following; an awaitable.
    fn aclose<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let follow = Arc::clone(&self.follow);
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let mut follow = follow.lock().await;
            follow.ready.clear();
            drop(follow.batches.take());
            Ok(())
        })
    }
}
