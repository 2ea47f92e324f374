//! Look-aside from Python: a `Lease` granted by the gateway, whose calls
//! go straight to the node's direct port with the lease's token.

use std::sync::Arc;
use std::time::Duration;

use client::ClientError;
use pyo3::prelude::*;

use crate::errors::to_py;
use crate::result::CallResult;
use crate::stream::{AsyncStream, Stream};

/// A node's slot held for this client: `call` and `stream` reach the
/// node directly (one call at a time), `release` gives the slot back
/// early; as a context manager it is released on exit. From asyncio:
/// `acall`, `astream`, `arelease` and `async with`.
#[pyclass(module = "switchyard_fleet._native", name = "Lease", frozen)]
pub(crate) struct Lease {
    inner: Arc<client::Lease>,
}

impl Lease {
    pub(crate) fn new(inner: client::Lease) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    /// An awaitable of `run`'s answer on the lease, with the `payload`
    /// and `timeout` (seconds) a direct call takes.
    fn later<'py, T, F, Fut>(
        &self,
        py: Python<'py>,
        payload: Option<&Bound<'py, PyAny>>,
        timeout: Option<f64>,
        run: F,
    ) -> PyResult<Bound<'py, PyAny>>
    where
        F: FnOnce(Arc<client::Lease>, bytes::Bytes, Option<Duration>) -> Fut,
        Fut: Future<Output = Result<T, ClientError>> + Send + 'static,
        T: for<'a> IntoPyObject<'a> + Send + 'static,
    {
        let payload = crate::client::payload_of(payload)?;
        let timeout = crate::client::seconds(timeout)?;
        let work = run(Arc::clone(&self.inner), payload, timeout);
        pyo3_async_runtimes::tokio::future_into_py(py, async move { work.await.map_err(to_py) })
    }
}

/// A direct call of `lease` with `payload`, its timeout set.
fn direct(
    lease: &client::Lease,
    payload: bytes::Bytes,
    timeout: Option<Duration>,
) -> client::DirectCall<'_> {
    let call = lease.call(payload);
    match timeout {
        Some(timeout) => call.timeout(timeout),
        None => call,
    }
}

/// The request for a lease of `service` with the keyword arguments
/// `lease(...)` takes (`idle` and `ttl` in seconds).
///
/// # Errors
/// `ValueError` for a negative or non-finite `idle` or `ttl`.
pub(crate) fn ask(
    client: client::Client,
    service: String,
    options: crate::client::Options,
    max_calls: u32,
    idle: Option<f64>,
    ttl: Option<f64>,
) -> PyResult<impl Future<Output = Result<client::Lease, ClientError>> + Send + 'static> {
    let (idle, ttl) = (crate::client::seconds(idle)?, crate::client::seconds(ttl)?);
    Ok(async move {
        let mut lease = client
            .lease(&service)
            .options(options.0)
            .max_calls(max_calls);
        if let Some(idle) = idle {
            lease = lease.idle(idle);
        }
        if let Some(ttl) = ttl {
            lease = lease.ttl(ttl);
        }
        lease.await
    })
}

/// Gives `lease` back unless it ended already (used, expired): an ended
/// lease is no longer the gateway's.
async fn give_back(lease: &client::Lease) -> Result<(), ClientError> {
    match lease.release().await {
        Err(ClientError::Call {
            kind: client::ErrorKind::BadRequest | client::ErrorKind::LeaseEnded,
            ..
        }) => Ok(()),
        other => other,
    }
}

#[pymethods]
impl Lease {
    /// The lease's id.
    #[getter]
    fn lease_id(&self) -> &str {
        &self.inner.grant().lease_id
    }

    /// The node that holds the slot.
    #[getter]
    fn node_id(&self) -> &str {
        self.inner.node_id()
    }

    /// The node's direct address, `host:port`.
    #[getter]
    fn direct_address(&self) -> &str {
        self.inner.direct()
    }

    /// The policy that picked the node.
    #[getter]
    fn policy(&self) -> &str {
        &self.inner.grant().policy
    }

    /// Calls the lease serves in all.
    #[getter]
    fn max_calls(&self) -> u32 {
        self.inner.grant().max_calls
    }

    /// When the lease expires, ms since the Unix epoch (the gateway's clock).
    #[getter]
    fn expires_unix_ms(&self) -> u64 {
        self.inner.grant().expires_unix_ms
    }

    /// How long the grant waited in the queue, ms.
    #[getter]
    fn queue_ms(&self) -> f32 {
        self.inner.grant().queue_ms
    }

    /// Calls the node directly with `payload`; its `CallResult`.
    #[pyo3(signature = (payload=None, *, timeout=None))]
    fn call(
        &self,
        py: Python<'_>,
        payload: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<CallResult> {
        let payload = crate::client::payload_of(payload)?;
        let timeout = crate::client::seconds(timeout)?;
        crate::client::wait(py, async { direct(&self.inner, payload, timeout).await })
            .map(CallResult::from)
    }

    /// Calls the node directly, its result streamed (a `Stream`).
    #[pyo3(signature = (payload=None, *, timeout=None))]
    fn stream(
        &self,
        py: Python<'_>,
        payload: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<Stream> {
        let payload = crate::client::payload_of(payload)?;
        let timeout = crate::client::seconds(timeout)?;
        crate::client::wait(py, direct(&self.inner, payload, timeout).stream()).map(Stream::new)
    }

    /// Gives the slot back now, through the gateway that granted it.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        crate::client::wait(py, self.inner.release())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Releases the lease unless it ended already (used, expired).
    fn __exit__(
        &self,
        py: Python<'_>,
        _kind: Option<&Bound<'_, PyAny>>,
        _value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        crate::client::wait(py, give_back(&self.inner))
    }

    /// As `call`, an awaitable of the `CallResult`.
    #[pyo3(signature = (payload=None, *, timeout=None))]
    fn acall<'py>(
        &self,
        py: Python<'py>,
        payload: Option<&Bound<'py, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.later(py, payload, timeout, |lease, payload, timeout| async move {
            direct(&lease, payload, timeout).await.map(CallResult::from)
        })
    }

    /// As `stream`, an awaitable of an `AsyncStream`.
    #[pyo3(signature = (payload=None, *, timeout=None))]
    fn astream<'py>(
        &self,
        py: Python<'py>,
        payload: Option<&Bound<'py, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.later(py, payload, timeout, |lease, payload, timeout| async move {
            direct(&lease, payload, timeout)
                .stream()
                .await
                .map(AsyncStream::new)
        })
    }

    /// As `release`, an awaitable.
    fn arelease<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let lease = Arc::clone(&self.inner);
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            lease.release().await.map_err(to_py)
        })
    }

    fn __aenter__<'py>(slf: Py<Self>, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        pyo3_async_runtimes::tokio::future_into_py(py, async move { Ok(slf) })
    }

    /// Releases the lease unless it ended already; an awaitable.
    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _kind: Option<&Bound<'py, PyAny>>,
        _value: Option<&Bound<'py, PyAny>>,
        _traceback: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let lease = Arc::clone(&self.inner);
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            give_back(&lease).await.map_err(to_py)
        })
    }

    fn __repr__(&self) -> String {
        let g = self.inner.grant();
        format!(
            "Lease(lease_id={:?}, node_id={:?}, direct={:?}, max_calls={})",
            g.lease_id, g.node_id, g.direct, g.max_calls
        )
    }
}
