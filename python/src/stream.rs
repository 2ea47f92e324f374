//! A call's result as it streams: `Stream` (an iterator of `bytes`
//! chunks) and `AsyncStream` (an async iterator). Closing one (or letting
//! it go) before its end cancels the call: the gateway stops the node's
//! work.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use client::{CallStream, ClientError};
use futures_util::StreamExt;
use pyo3::exceptions::PyStopAsyncIteration;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::to_py;

/// What the call said of its result before the first chunk.
#[derive(Clone)]
struct Head {
    node_id: String,
    policy: String,
    request_id: Option<String>,
    content_type: Option<String>,
}

impl Head {
    fn of(stream: &CallStream) -> Self {
        Self {
            node_id: stream.meta.node_id.clone(),
            policy: stream.meta.policy.clone(),
            request_id: stream.meta.request_id.clone(),
            content_type: stream.meta.content_type.clone(),
        }
    }
}

/// The next chunk of `chunks`, ending the stream (dropping it) after its
/// last chunk or an error.
async fn next(chunks: &mut Option<CallStream>) -> Option<Result<Bytes, ClientError>> {
    let next = chunks.as_mut()?.next().await;
    if !matches!(next, Some(Ok(_))) {
        *chunks = None;
    }
    next
}

/// A streamed result: iterate it for its `bytes` chunks; the serving
/// node and policy are known before the first.
#[pyclass(module = "switchyard_fleet._native", name = "Stream", frozen)]
pub(crate) struct Stream {
    head: Head,
    chunks: Mutex<Option<CallStream>>,
}

impl Stream {
    pub(crate) fn new(stream: CallStream) -> Self {
        Self {
            head: Head::of(&stream),
            chunks: Mutex::new(Some(stream)),
        }
    }
}

#[pymethods]
impl Stream {
    /// The node that serves the call.
    #[getter]
    fn node_id(&self) -> &str {
        &self.head.node_id
    }

    /// The policy that picked the node.
    #[getter]
    fn policy(&self) -> &str {
        &self.head.policy
    }

    /// The call's request id, if any.
    #[getter]
    fn request_id(&self) -> Option<&str> {
        self.head.request_id.as_deref()
    }

    /// The result's media type, when the service named one.
    #[getter]
    fn content_type(&self) -> Option<&str> {
        self.head.content_type.as_deref()
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// The next chunk; `StopIteration` at the end; the service's error if
    /// it failed midway.
    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        // The lock is taken with the interpreter released: a thread that
        // waits for it holds nothing the reading thread needs.
        let chunk = py.detach(|| {
            let mut chunks = self.chunks.lock().unwrap_or_else(PoisonError::into_inner);
            crate::client::runtime().block_on(next(&mut chunks))
        });
        match chunk {
            Some(Ok(bytes)) => Ok(Some(PyBytes::new(py, &bytes))),
            Some(Err(e)) => Err(to_py(e)),
            None => Ok(None),
        }
    }

    /// Cancels the call if it has not ended (later reads end at once).
    fn close(&self, py: Python<'_>) {
        let stream = py.detach(|| {
            self.chunks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
        });
        drop(stream);
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _kind: Option<&Bound<'_, PyAny>>,
        _value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) {
        self.close(py);
    }
}

/// A streamed result for asyncio: `async for chunk in stream`.
#[pyclass(module = "switchyard_fleet._native", name = "AsyncStream", frozen)]
pub(crate) struct AsyncStream {
    head: Head,
    chunks: Arc<tokio::sync::Mutex<Option<CallStream>>>,
}

impl AsyncStream {
    pub(crate) fn new(stream: CallStream) -> Self {
        Self {
            head: Head::of(&stream),
            chunks: Arc::new(tokio::sync::Mutex::new(Some(stream))),
        }
    }
}

#[pymethods]
impl AsyncStream {
    /// The node that serves the call.
    #[getter]
    fn node_id(&self) -> &str {
        &self.head.node_id
    }

    /// The policy that picked the node.
    #[getter]
    fn policy(&self) -> &str {
        &self.head.policy
    }

    /// The call's request id, if any.
    #[getter]
    fn request_id(&self) -> Option<&str> {
        self.head.request_id.as_deref()
    }

    /// The result's media type, when the service named one.
    #[getter]
    fn content_type(&self) -> Option<&str> {
        self.head.content_type.as_deref()
    }

    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// An awaitable of the next chunk (`StopAsyncIteration` at the end).
    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let chunks = Arc::clone(&self.chunks);
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let chunk = next(&mut *chunks.lock().await).await;
            match chunk {
                Some(Ok(bytes)) => Python::attach(|py| Ok(PyBytes::new(py, &bytes).unbind())),
                Some(Err(e)) => Err(to_py(e)),
                None => Err(PyStopAsyncIteration::new_err(())),
            }
        })
    }

    /// Cancels the call if it has not ended; an awaitable.
    fn aclose<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let chunks = Arc::clone(&self.chunks);
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            drop(chunks.lock().await.take());
            Ok(())
        })
    }
}
