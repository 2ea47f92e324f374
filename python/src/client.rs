//! `Client` (blocking) and `AsyncClient` (asyncio) over the Rust SDK's
//! [`client::Client`]: one QUIC connection pool to the gateways, calls
//! with the same options (timeout, priority, hints, policy).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use client::{ClientConfig, ClientError};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::errors::to_py;
use crate::jobs;
use crate::lease::Lease;
use crate::result::CallResult;
use crate::stream::Stream;

/// The one tokio runtime every client of the process shares.
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    pyo3_async_runtimes::tokio::get_runtime()
}

/// Runs `request` to its end on the runtime with the interpreter
/// released; its error as the package's exception.
pub(crate) fn wait<T: Send>(
    py: Python<'_>,
    request: impl Future<Output = Result<T, ClientError>> + Send,
) -> PyResult<T> {
    py.detach(|| runtime().block_on(request)).map_err(to_py)
}

/// Where the gateways are and how to trust them.
pub(crate) fn config(
    gateways: Gateways,
    ca: PathBuf,
    api_key: Option<String>,
    server_name: Option<String>,
    cluster: bool,
) -> PyResult<ClientConfig> {
    let gateways = match gateways {
        Gateways::One(g) => vec![g],
        Gateways::Many(gs) => gs,
    };
    if gateways.is_empty() {
        return Err(PyValueError::new_err(
            "at least one gateway address (host:port)",
        ));
    }
    let mut config = if cluster {
        ClientConfig::for_cluster(gateways, ca)
    } else {
        ClientConfig::new("", ca).with_gateways(gateways)
    };
    config.api_key = api_key;
    if let Some(name) = server_name {
        config.server_name = name;
    }
    Ok(config)
}

/// One address or a list of them.
#[derive(FromPyObject)]
pub(crate) enum Gateways {
    One(String),
    Many(Vec<String>),
}

/// A call's options, as the keyword arguments give them: the SDK's
/// [`client::CallOptions`], which a call and a lease both take whole.
pub(crate) struct Options(pub(crate) client::CallOptions);

impl Options {
    pub(crate) fn new(
        timeout: Option<f64>,
        priority: Option<i32>,
        hints: Option<HashMap<String, String>>,
        policy: Option<String>,
        explain: bool,
    ) -> PyResult<Self> {
        let mut options = client::CallOptions::default();
        if let Some(timeout) = seconds(timeout)? {
            options.timeout = timeout;
        }
        if let Some(priority) = priority {
            options.priority = priority;
        }
        options.policy = policy;
        options.hints = hints.unwrap_or_default().into_iter().collect();
        if explain {
            options.hints.push(("explain".into(), "1".into()));
        }
        Ok(Self(options))
    }

    /// The same options, look-aside (lease the node and call it directly,
    /// through the gateway when its direct port cannot be reached) or not.
    pub(crate) fn look_aside(mut self, look_aside: bool) -> Self {
        if look_aside {
            self.0.mode = client::Mode::LookAside;
        }
        self
    }

    /// Runs `service` with `payload` on `client` under these options.
    pub(crate) async fn call(
        self,
        client: &client::Client,
        service: &str,
        payload: Bytes,
    ) -> Result<client::CallResult, ClientError> {
        client.call(service, payload).options(self.0).await
    }

    /// Starts `service` with `payload` on `client` under these options,
    /// its result streamed.
    pub(crate) async fn stream(
        self,
        client: &client::Client,
        service: &str,
        payload: Bytes,
    ) -> Result<client::CallStream, ClientError> {
        client.call(service, payload).options(self.0).stream().await
    }
}

/// An optional payload (none: empty).
pub(crate) fn payload_of(value: Option<&Bound<'_, PyAny>>) -> PyResult<Bytes> {
    value
        .map(payload)
        .transpose()
        .map(Option::unwrap_or_default)
}

/// A timeout in seconds, checked.
///
/// # Errors
/// `ValueError` unless it is a positive finite number.
pub(crate) fn seconds(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(PyValueError::new_err(format!(
            "timeout must be a positive number of seconds, got {s}"
        ))),
    }
}

/// A payload from `bytes`, `bytearray`, `memoryview` or `str` (UTF-8).
fn payload(value: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    if let Ok(bytes) = value.cast::<PyBytes>() {
        return Ok(Bytes::copy_from_slice(bytes.as_bytes()));
    }
    if let Ok(text) = value.cast::<PyString>() {
        return Ok(Bytes::from(text.to_cow()?.into_owned()));
    }
    value
        .extract::<Vec<u8>>()
        .map(Bytes::from)
        .map_err(|_| PyTypeError::new_err("a payload is bytes, bytearray, memoryview or str"))
}

/// A value of the SDK (nodes, policies) as plain Python objects (dicts,
/// lists, numbers, strings), through its JSON form.
pub(crate) fn plain<T: serde::Serialize>(py: Python<'_>, value: &T) -> PyResult<Py<PyAny>> {
    let text = serde_json::to_string(value)
        .map_err(|e| PyValueError::new_err(format!("cannot convert: {e}")))?;
    Ok(py.import("json")?.call_method1("loads", (text,))?.unbind())
}

/// A blocking client: each method waits for its answer with the
/// interpreter released (other Python threads run meanwhile). Safe to
/// share between threads; the connections are pooled.
#[pyclass(module = "switchyard_fleet._native", name = "Client", frozen, subclass)]
pub(crate) struct Client {
    inner: client::Client,
    admin_token: Option<String>,
}

#[pymethods]
impl Client {
    /// Connects to the first reachable gateway of `gateways` (`host:port`,
    /// one or a list), trusting the CA file `ca` (PEM).
    #[new]
    #[pyo3(signature = (gateways, ca, *, api_key=None, server_name=None, cluster=false, admin_token=None))]
    fn new(
        py: Python<'_>,
        gateways: Gateways,
        ca: PathBuf,
        api_key: Option<String>,
        server_name: Option<String>,
        cluster: bool,
        admin_token: Option<String>,
    ) -> PyResult<Self> {
        let config = config(gateways, ca, api_key, server_name, cluster)?;
        let mut inner = wait(py, client::Client::connect(config))?;
        // Job requests present it too (an admin sees every tenant's jobs).
        if let Some(token) = &admin_token {
            inner = inner.with_admin_token(token.clone());
        }
        Ok(Self { inner, admin_token })
    }

    /// Calls `service` with `payload` and returns its `CallResult`.
    #[pyo3(signature = (service, payload=None, *, timeout=None, priority=None, hints=None, policy=None, explain=false, look_aside=false))]
    #[allow(clippy::too_many_arguments, reason = "Python keyword arguments")]
    fn call(
        &self,
        py: Python<'_>,
        service: String,
        payload: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
        priority: Option<i32>,
        hints: Option<HashMap<String, String>>,
        policy: Option<String>,
        explain: bool,
        look_aside: bool,
    ) -> PyResult<CallResult> {
        let payload = payload_of(payload)?;
        let options =
            Options::new(timeout, priority, hints, policy, explain)?.look_aside(look_aside);
        wait(py, options.call(&self.inner, &service, payload)).map(CallResult::from)
    }

    /// Calls `service` with `payload`, its result streamed: a `Stream`
    /// of `bytes` chunks as the service writes them (an iterator; closing
    /// or dropping it before its end cancels the call).
    #[pyo3(signature = (service, payload=None, *, timeout=None, priority=None, hints=None, policy=None, explain=false, look_aside=false))]
    #[allow(clippy::too_many_arguments, reason = "Python keyword arguments")]
    fn stream(
        &self,
        py: Python<'_>,
        service: String,
        payload: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
        priority: Option<i32>,
        hints: Option<HashMap<String, String>>,
        policy: Option<String>,
        explain: bool,
        look_aside: bool,
    ) -> PyResult<Stream> {
        let payload = payload_of(payload)?;
        let options =
            Options::new(timeout, priority, hints, policy, explain)?.look_aside(look_aside);
        wait(py, options.stream(&self.inner, &service, payload)).map(Stream::new)
    }

    /// Leases a node of `service` (look-aside): waits in the queue like a
    /// call, then the node holds a slot for `max_calls` direct calls (or
    /// until `idle` seconds pass without one, or `ttl` seconds in all);
    /// `timeout` bounds the wait for a node. Returns a `Lease`.
    #[pyo3(signature = (service, *, max_calls=1, idle=None, ttl=None, timeout=None, priority=None, hints=None, policy=None))]
    #[allow(clippy::too_many_arguments, reason = "Python keyword arguments")]
    fn lease(
        &self,
        py: Python<'_>,
        service: String,
        max_calls: u32,
        idle: Option<f64>,
        ttl: Option<f64>,
        timeout: Option<f64>,
        priority: Option<i32>,
        hints: Option<HashMap<String, String>>,
        policy: Option<String>,
    ) -> PyResult<Lease> {
        let options = Options::new(timeout, priority, hints, policy, false)?;
        let lease = crate::lease::ask(self.inner.clone(), service, options, max_calls, idle, ttl)?;
        wait(py, lease).map(Lease::new)
    }

    /// The registered nodes, as dicts (the admin API's `/api/nodes` shape).
    fn nodes(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let nodes = wait(py, self.inner.nodes())?;
        plain(py, &nodes)
    }

    /// The loaded policies and which service uses which, as a dict.
    fn policies(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let table = wait(py, self.inner.policies())?;
        plain(py, &table)
    }

    /// Makes `policy` pick the nodes of `service` (needs the client's
    /// `admin_token`); returns the gateway's acknowledgement.
    fn set_policy(&self, py: Python<'_>, service: String, policy: String) -> PyResult<String> {
        let token = self
            .admin_token
            .clone()
            .ok_or_else(|| PyValueError::new_err("set_policy needs Client(admin_token=...)"))?;
        wait(py, self.inner.set_policy(&token, &service, &policy))
    }

    /// Submits a durable job of `service` (or of `template` with
    /// `params`); returns the job as a dict (`id`, `state`, …). It is
    /// stored before this returns, and runs when a slot frees.
    #[pyo3(signature = (service=None, payload=None, *, template=None, params=None, hints=None, priority=0, realtime=false, watchdog_s=None, max_attempts=None, idempotent=false, labels=None))]
    #[allow(clippy::too_many_arguments, reason = "Python keyword arguments")]
    fn submit_job(
        &self,
        py: Python<'_>,
        service: Option<String>,
        payload: Option<&Bound<'_, PyAny>>,
        template: Option<String>,
        params: Option<BTreeMap<String, String>>,
        hints: Option<BTreeMap<String, String>>,
        priority: i32,
        realtime: bool,
        watchdog_s: Option<u32>,
        max_attempts: Option<u32>,
        idempotent: bool,
        labels: Option<BTreeMap<String, String>>,
    ) -> PyResult<Py<PyAny>> {
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
        let view = wait(py, self.inner.submit_job(spec))?;
        plain(py, &view)
    }

    /// The job `id` as a dict (its state, attempts, transitions, …).
    fn job(&self, py: Python<'_>, id: String) -> PyResult<Py<PyAny>> {
        let view = wait(py, self.inner.job(&id))?;
        plain(py, &view)
    }

    /// One page of jobs, newest first: a dict of `jobs` and `next_cursor`
    /// (pass it as `cursor` for the next page).
    #[pyo3(signature = (*, state=None, service=None, tenant=None, limit=None, cursor=None))]
    fn jobs(
        &self,
        py: Python<'_>,
        state: Option<&str>,
        service: Option<String>,
        tenant: Option<String>,
        limit: Option<u32>,
        cursor: Option<String>,
    ) -> PyResult<Py<PyAny>> {
        let filter = jobs::filter(state, service, tenant, limit, cursor)?;
        let page = wait(py, self.inner.jobs(filter))?;
        plain(py, &page)
    }

    /// Cancels job `id` (a running one is stopped); the job as a dict.
    fn cancel_job(&self, py: Python<'_>, id: String) -> PyResult<Py<PyAny>> {
        let view = wait(py, self.inner.cancel_job(&id))?;
        plain(py, &view)
    }

    /// Runs an ended job `id` again; the job as a dict.
    fn restart_job(&self, py: Python<'_>, id: String) -> PyResult<Py<PyAny>> {
        let view = wait(py, self.inner.restart_job(&id))?;
        plain(py, &view)
    }

    /// Deletes an ended job `id`, its log and its result.
    fn delete_job(&self, py: Python<'_>, id: String) -> PyResult<()> {
        wait(py, self.inner.delete_job(&id))
    }

    /// A finished job's result bytes (`BadRequest` before it has one).
    fn job_result<'py>(&self, py: Python<'py>, id: String) -> PyResult<Bound<'py, PyBytes>> {
        let (data, _content_type) = wait(py, self.inner.job_result(&id))?;
        Ok(PyBytes::new(py, &data))
    }

    /// The job's log lines stored after `after` (a `seq`), as dicts.
    #[pyo3(signature = (id, after=0))]
    fn job_log(&self, py: Python<'_>, id: String, after: u64) -> PyResult<Py<PyAny>> {
        let entries = wait(py, self.inner.job_log(&id, after))?;
        plain(py, &entries)
    }

    /// Follows the job's log from after `after`: an iterator of entries
    /// (dicts) as they are written, ending once the job has ended.
    #[pyo3(signature = (id, after=0))]
    fn follow_log(&self, py: Python<'_>, id: String, after: u64) -> PyResult<jobs::LogFollow> {
        let batches = wait(py, self.inner.follow_log(&id, after))?;
        Ok(jobs::LogFollow::new(Box::pin(batches)))
    }

    /// Closes the connections (calls in flight fail).
    fn close(&self, py: Python<'_>) {
        let inner = &self.inner;
        py.detach(|| runtime().block_on(inner.close()));
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
