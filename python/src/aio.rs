//! `AsyncClient`: the client for asyncio. Each method returns an
//! awaitable that runs on the package's tokio runtime, so the event loop
//! never blocks on the network.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use client::ClientError;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::client::{Gateways, Options, config, payload_of, plain};
use crate::errors::to_py;
use crate::jobs;
use crate::lease::Lease;
use crate::result::CallResult;
use crate::stream::AsyncStream;

/// An awaitable of `request`'s answer as plain Python values.
fn plain_later<'py, T>(
    py: Python<'py>,
    request: impl Future<Output = Result<T, ClientError>> + Send + 'static,
) -> PyResult<Bound<'py, PyAny>>
where
    T: serde::Serialize + Send + 'static,
{
    pyo3_async_runtimes::tokio::future_into_py(py, async move {
        let value = request.await.map_err(to_py)?;
        Python::attach(|py| plain(py, &value))
    })
}

/// An asyncio client: each method returns an awaitable. Make one with
/// `await AsyncClient.connect(...)`.
#[pyclass(module = "switchyard_fleet._native", name = "AsyncClient", frozen)]
pub(crate) struct AsyncClient {
    inner: client::Client,
    admin_token: Option<String>,
}

#[pymethods]
impl AsyncClient {
    /// Connects as `Client(...)` does; an awaitable of the client.
    #[staticmethod]
    #[pyo3(signature = (gateways, ca, *, api_key=None, server_name=None, cluster=false, admin_token=None))]
    fn connect<'py>(
        py: Python<'py>,
        gateways: Gateways,
        ca: PathBuf,
        api_key: Option<String>,
        server_name: Option<String>,
        cluster: bool,
        admin_token: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let config = config(gateways, ca, api_key, server_name, cluster)?;
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let inner = client::Client::connect(config).await.map_err(to_py)?;
            Ok(Self { inner, admin_token })
        })
    }

    /// Calls `service` with `payload`; an awaitable of its `CallResult`.
    #[pyo3(signature = (service, payload=None, *, timeout=None, priority=None, hints=None, policy=None, explain=false, look_aside=false))]
    #[allow(clippy::too_many_arguments, reason = "Python keyword arguments")]
    fn call<'py>(
        &self,
        py: Python<'py>,
        service: String,
        payload: Option<&Bound<'py, PyAny>>,
        timeout: Option<f64>,
        priority: Option<i32>,
        hints: Option<HashMap<String, String>>,
        policy: Option<String>,
        explain: bool,
        look_aside: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let payload = payload_of(payload)?;
        let options =
            Options::new(timeout, priority, hints, policy, explain)?.look_aside(look_aside);
        let inner = self.inner.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            options
                .call(&inner, &service, payload)
                .await
                .map(CallResult::from)
                .map_err(to_py)
        })
    }

    /// Calls `service` with `payload`, its result streamed; an awaitable
    /// of an `AsyncStream` (`async for chunk in stream`; closing it before
    /// its end cancels the call).
    #[pyo3(signature = (service, payload=None, *, timeout=None, priority=None, hints=None, policy=None, explain=false, look_aside=false))]
    #[allow(clippy::too_many_arguments, reason = "Python keyword arguments")]
    fn stream<'py>(
        &self,
        py: Python<'py>,
        service: String,
        payload: Option<&Bound<'py, PyAny>>,
        timeout: Option<f64>,
        priority: Option<i32>,
        hints: Option<HashMap<String, String>>,
        policy: Option<String>,
        explain: bool,
        look_aside: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let payload = payload_of(payload)?;
        let options =
            Options::new(timeout, priority, hints, policy, explain)?.look_aside(look_aside);
        let inner = self.inner.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            options
                .stream(&inner, &service, payload)
                .await
                .map(AsyncStream::new)
                .map_err(to_py)
        })
    }

    /// Leases a node's slot, as `Client.lease`; an awaitable of the
    /// `Lease` (its `acall`, `astream`, `arelease`, `async with`).
    #[pyo3(signature = (service, *, max_calls=1, idle=None, ttl=None, timeout=None, priority=None, hints=None, policy=None))]
    #[allow(clippy::too_many_arguments, reason = "Python keyword arguments")]
    fn lease<'py>(
        &self,
        py: Python<'py>,
        service: String,
        max_calls: u32,
        idle: Option<f64>,
        ttl: Option<f64>,
        timeout: Option<f64>,
        priority: Option<i32>,
        hints: Option<HashMap<String, String>>,
        policy: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let options = Options::new(timeout, priority, hints, policy, false)?;
        let lease = crate::lease::ask(self.inner.clone(), service, options, max_calls, idle, ttl)?;
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            lease.await.map(Lease::new).map_err(to_py)
        })
    }

    /// The registered nodes, as dicts; an awaitable.
    fn nodes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        plain_later(py, async move { inner.nodes().await })
    }

    /// The loaded policies and which service uses which; an awaitable.
    fn policies<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        plain_later(py, async move { inner.policies().await })
    }

    /// Submits a durable job, as `Client.submit_job`; an awaitable of the
    /// job (a dict).
    #[pyo3(signature = (service=None, payload=None, *, template=None, params=None, hints=None, priority=0, realtime=false, watchdog_s=None, max_attempts=None, idempotent=false, labels=None))]
    #[allow(clippy::too_many_arguments, reason = "Python keyword arguments")]
    fn submit_job<'py>(
        &self,
        py: Python<'py>,
        service: Option<String>,
        payload: Option<&Bound<'py, PyAny>>,
        template: Option<String>,
        params: Option<BTreeMap<String, String>>,
        hints: Option<BTreeMap<String, String>>,
        priority: i32,
        realtime: bool,
        watchdog_s: Option<u32>,
        max_attempts: Option<u32>,
        idempotent: bool,
        labels: Option<BTreeMap<String, String>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let spec = jobs::SpecArgs {
            service,
            payload: payload_of(payload)?,
            template,
            params,
            hints,
            priority,
            realtime,
            watchdog_s,
            max_attempts,
            idempotent,
            labels,
        }
        .spec();
        let inner = self.inner.clone();
        plain_later(py, async move { inner.submit_job(spec).await })
    }

    /// The job `id`; an awaitable of a dict.
    fn job<'py>(&self, py: Python<'py>, id: String) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        plain_later(py, async move { inner.job(&id).await })
    }

    /// One page of jobs, as `Client.jobs`; an awaitable of a dict.
    #[pyo3(signature = (*, state=None, service=None, tenant=None, limit=None, cursor=None))]
    fn jobs<'py>(
        &self,
        py: Python<'py>,
        state: Option<&str>,
        service: Option<String>,
        tenant: Option<String>,
        limit: Option<u32>,
        cursor: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let filter = jobs::filter(state, service, tenant, limit, cursor)?;
        let inner = self.inner.clone();
        plain_later(py, async move { inner.jobs(filter).await })
    }

    /// Cancels job `id`; an awaitable of the job.
    fn cancel_job<'py>(&self, py: Python<'py>, id: String) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        plain_later(py, async move { inner.cancel_job(&id).await })
    }

    /// Runs an ended job `id` again; an awaitable of the job.
    fn restart_job<'py>(&self, py: Python<'py>, id: String) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        plain_later(py, async move { inner.restart_job(&id).await })
    }

    /// Deletes an ended job `id`; an awaitable.
    fn delete_job<'py>(&self, py: Python<'py>, id: String) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        plain_later(py, async move { inner.delete_job(&id).await })
    }

    /// A finished job's result; an awaitable of bytes.
    fn job_result<'py>(&self, py: Python<'py>, id: String) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let (data, _content_type) = inner.job_result(&id).await.map_err(to_py)?;
            Python::attach(|py| Ok(pyo3::types::PyBytes::new(py, &data).unbind()))
        })
    }

    /// Follows the job's log from after `after`; an awaitable of an
    /// `AsyncLogFollow` (`async for entry in log`, ending with the job).
    #[pyo3(signature = (id, after=0))]
    fn follow_log<'py>(
        &self,
        py: Python<'py>,
        id: String,
        after: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let batches = inner.follow_log(&id, after).await.map_err(to_py)?;
            Ok(jobs::AsyncLogFollow::new(Box::pin(batches)))
        })
    }

    /// The job's stored log lines after `after`; an awaitable of dicts.
    #[pyo3(signature = (id, after=0))]
    fn job_log<'py>(&self, py: Python<'py>, id: String, after: u64) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        plain_later(py, async move { inner.job_log(&id, after).await })
    }

    /// Makes `policy` pick the nodes of `service` (needs `admin_token`);
    /// an awaitable of the gateway's acknowledgement.
    fn set_policy<'py>(
        &self,
        py: Python<'py>,
        service: String,
        policy: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let token = self
            .admin_token
            .clone()
            .ok_or_else(|| PyValueError::new_err("set_policy needs admin_token=..."))?;
        let inner = self.inner.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            inner
                .set_policy(&token, &service, &policy)
                .await
                .map_err(to_py)
        })
    }

    /// Closes the connections; an awaitable.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            inner.close().await;
            Ok(())
        })
    }
}
