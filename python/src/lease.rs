//! Look-aside from Python: a `Lease` granted by the gateway, whose calls
//! go straight to the node's direct port with the lease's token.

use std::time::Duration;

use client::ClientError;
use pyo3::prelude::*;

use crate::errors::to_py;
use crate::result::CallResult;
use crate::stream::Stream;

/// A node's slot held for this client: `call` and `stream` reach the
/// node directly (one call at a time), `release` gives the slot back
/// early; as a context manager it is released on exit.
#[pyclass(module = "switchyard_fleet._native", name = "Lease", frozen)]
pub(crate) struct Lease {
    inner: client::Lease,
}

impl Lease {
    pub(crate) fn new(inner: client::Lease) -> Self {
        Self { inner }
    }

    /// A direct call of the lease with `payload`, its timeout set.
    fn direct(&self, payload: bytes::Bytes, timeout: Option<Duration>) -> client::DirectCall<'_> {
        let call = self.inner.call(payload);
        match timeout {
            Some(timeout) => call.timeout(timeout),
            None => call,
        }
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
        crate::client::wait(py, async { self.direct(payload, timeout).await }).map(CallResult::from)
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
        crate::client::wait(py, self.direct(payload, timeout).stream()).map(Stream::new)
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
        match py.detach(|| crate::client::runtime().block_on(self.inner.release())) {
            Ok(()) => Ok(()),
            // An ended lease is no longer the gateway's: nothing to give back.
            Err(ClientError::Call {
                kind: client::ErrorKind::BadRequest | client::ErrorKind::LeaseEnded,
                ..
            }) => Ok(()),
            Err(e) => Err(to_py(e)),
        }
    }

    fn __repr__(&self) -> String {
        let g = self.inner.grant();
        format!(
            "Lease(lease_id={:?}, node_id={:?}, direct={:?}, max_calls={})",
            g.lease_id, g.node_id, g.direct, g.max_calls
        )
    }
}
