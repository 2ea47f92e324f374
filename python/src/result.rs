//! A call's answer as Python sees it.

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// A finished call: its result bytes (`data`), the node that served it
/// and the policy that picked it, and where the time went (ms).
#[pyclass(module = "switchyard_fleet._native", name = "CallResult", frozen)]
pub(crate) struct CallResult {
    data: Bytes,
    meta: client::ResultMeta,
}

impl From<client::CallResult> for CallResult {
    fn from(result: client::CallResult) -> Self {
        Self {
            data: result.data,
            meta: result.meta,
        }
    }
}

#[pymethods]
impl CallResult {
    /// The result's bytes.
    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.data)
    }

    /// The result decoded as UTF-8 (invalid bytes replaced).
    #[getter]
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// The node that served the call.
    #[getter]
    fn node_id(&self) -> &str {
        &self.meta.node_id
    }

    /// The policy that picked the node.
    #[getter]
    fn policy(&self) -> &str {
        &self.meta.policy
    }

    /// Time spent waiting for a node, ms.
    #[getter]
    fn queue_ms(&self) -> f32 {
        self.meta.timings.queue_ms
    }

    /// Time the node spent on the call, ms.
    #[getter]
    fn node_ms(&self) -> f32 {
        self.meta.timings.node_ms
    }

    /// The gateway's time on the call, end to end, ms.
    #[getter]
    fn total_ms(&self) -> f32 {
        self.meta.timings.total_ms
    }

    /// Nodes tried (more than 1 when the gateway retried elsewhere).
    #[getter]
    fn attempts(&self) -> u32 {
        self.meta.timings.attempts
    }

    /// Whether the gateway's result cache answered (no node ran the call).
    #[getter]
    fn cached(&self) -> bool {
        self.meta.cache.is_some()
    }

    /// The call's request id (the caller's or the gateway's), if any.
    #[getter]
    fn request_id(&self) -> Option<&str> {
        self.meta.request_id.as_deref()
    }

    /// Why the policy chose the node, when the call asked (`explain=True`).
    #[getter]
    fn explain(&self) -> Option<&str> {
        self.meta.explain.as_deref()
    }

    /// The result's media type, when the service named one.
    #[getter]
    fn content_type(&self) -> Option<&str> {
        self.meta.content_type.as_deref()
    }

    /// The HTTP status an `http` or `openai` service answered with.
    #[getter]
    fn status(&self) -> Option<u16> {
        self.meta.status
    }

    fn __len__(&self) -> usize {
        self.data.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "CallResult(node_id={:?}, policy={:?}, bytes={}, total_ms={:.3})",
            self.meta.node_id,
            self.meta.policy,
            self.data.len(),
            self.meta.timings.total_ms
        )
    }
}
