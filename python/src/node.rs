//! `NodeCore`: the node agent (`switchyard-agent`) run inside the Python
//! process, serving Python functions as hosted services. The Python half
//! (`switchyard_fleet/node.py`) wraps each function in an `invoke(payload,
//! call)` callable that reports through the [`Call`] it is given; this
//! module registers them, runs the agent on the shared tokio runtime and
//! turns each call into an invocation:
//!
//! - a function run on a thread (`on_loop=False`): `invoke` runs on one of
//!   the runtime's blocking threads (at most the service's `max_concurrent`
//!   at once: the agent's slots bound them), so a slow function never
//!   holds up the node's connection;
//! - a coroutine (`on_loop=True`): `invoke` only schedules it on the asyncio
//!   loop and returns.
//!
//! When the agent gives up on a call before the function reported (its
//! deadline, the caller gone), `abandon(call)` is called once so the
//! Python side can stop the work; the call's place among the service's
//! `max_concurrent` stays taken until the function really ends.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use node_agent::services::hosted::{self, Handler, HandlerFuture, HostedCall, HostedSink, Work};
use node_agent::{AgentConfig, ServiceConfig, ServiceError, ServiceKind};
use protocol::ErrorKind;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tokio::sync::{oneshot, watch};

use crate::client::runtime;

/// What a function came to, as the Python half reports it.
enum Outcome {
    /// Its whole result.
    Whole(Bytes),
    /// A streamed result's end (its chunks went through the sink).
    End,
    /// It raised: the message (`Type: text`) and its traceback.
    Failed { message: String, traceback: String },
}

/// One call's shared state: the Python [`Call`] and the Rust handler
/// both hold it.
struct State {
    /// Taken by the first report; `None` once reported (or abandoned).
    outcome: Mutex<Option<oneshot::Sender<Outcome>>>,
    /// The call's place among `max_concurrent`, dropped once the function
    /// has really ended (its first report).
    work: Mutex<Option<Work>>,
    /// A streamed call's sink.
    sink: Option<HostedSink>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl State {
    fn report(&self, outcome: Outcome) -> bool {
        drop(locked(&self.work).take());
        match locked(&self.outcome).take() {
            Some(tx) => tx.send(outcome).is_ok(),
            None => false,
        }
    }
}

/// One call of a Python function, handed to its `invoke` wrapper: report
/// the result with `finish`, `fail`, or `send` + `end` for a stream.
#[pyclass(module = "switchyard_fleet._native", frozen)]
pub(crate) struct Call {
    state: Arc<State>,
    /// The call's deadline, seconds from its start.
    #[pyo3(get)]
    timeout: f64,
    /// Whether the caller asked for the call's log (a job's call).
    #[pyo3(get)]
    log: bool,
    /// Whether the answer streams (`send` works).
    #[pyo3(get)]
    streamed: bool,
    /// Free for the Python half: what `abandon` needs to stop the work (the
    /// thread's ident, the coroutine's future).
    tag: Mutex<Option<Py<PyAny>>>,
}

#[pymethods]
impl Call {
    /// The Python half's handle on the work (see the struct).
    #[getter]
    fn get_tag(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        locked(&self.tag).as_ref().map(|t| t.clone_ref(py))
    }

    #[setter]
    fn set_tag(&self, tag: Option<Py<PyAny>>) {
        *locked(&self.tag) = tag;
    }

    /// The whole result; `False` when the call was already abandoned.
    fn finish(&self, data: &Bound<'_, PyBytes>) -> bool {
        let bytes = Bytes::copy_from_slice(data.as_bytes());
        self.state.report(Outcome::Whole(bytes))
    }

    /// The function raised: `message` (`Type: text`) and `traceback`.
    fn fail(&self, message: String, traceback: String) -> bool {
        self.state.report(Outcome::Failed { message, traceback })
    }

    /// A streamed result's end.
    fn end(&self) -> bool {
        self.state.report(Outcome::End)
    }

    /// Sends one chunk of a streamed result from a thread, waiting (with
    /// the interpreter released) while the caller is a few chunks behind;
    /// `False` when the caller is gone (stop producing).
    ///
    /// # Errors
    /// `RuntimeError` when the answer does not stream.
    fn send(&self, py: Python<'_>, data: &Bound<'_, PyBytes>) -> PyResult<bool> {
        let sink = self.sink()?;
        let bytes = Bytes::copy_from_slice(data.as_bytes());
        Ok(py.detach(|| sink.blocking_data(bytes).is_ok()))
    }

    /// Writes `text` to the call's log (a job's log) when the caller asked
    /// for it, waiting with the interpreter released while the caller is
    /// behind; `False` when it did not ask or is gone.
    fn write_log(&self, py: Python<'_>, text: &str) -> bool {
        match (&self.state.sink, self.log) {
            (Some(sink), true) => py.detach(|| sink.blocking_log(text.as_bytes()).is_ok()),
            _ => false,
        }
    }

    /// As `send`, from a coroutine: an awaitable of `bool`.
    ///
    /// # Errors
    /// As `send`.
    fn send_async<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyBytes>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let sink = self.sink()?;
        let bytes = Bytes::copy_from_slice(data.as_bytes());
        pyo3_async_runtimes::tokio::future_into_py(
            py,
            async move { Ok(sink.data(bytes).await.is_ok()) },
        )
    }
}

impl Call {
    fn sink(&self) -> PyResult<HostedSink> {
        self.state
            .sink
            .clone()
            .ok_or_else(|| PyRuntimeError::new_err("this call's answer does not stream"))
    }
}

/// One registered function.
struct Function {
    invoke: Py<PyAny>,
    abandon: Py<PyAny>,
    /// `invoke` schedules a coroutine and returns (else it runs the
    /// function on a blocking thread).
    on_loop: bool,
    /// The function's answer streams (a generator).
    stream: bool,
}

/// The [`Handler`] of one Python function.
struct PyHandler(Arc<Function>);

impl Handler for PyHandler {
    fn call(&self, call: HostedCall) -> HandlerFuture {
        let function = Arc::clone(&self.0);
        if function.stream || call.log {
            return Box::pin(async move {
                Ok(call.stream(move |sink, call| async move {
                    let log = call.log;
                    match start(&function, call, Some(sink.clone())).await {
                        Outcome::Whole(bytes) => sink.data(bytes).await.map_err(|e| {
                            ServiceError::new(ErrorKind::ServiceFailed, e.to_string())
                        }),
                        Outcome::End => Ok(()),
                        Outcome::Failed { message, traceback } => {
                            if log {
                                let _ = sink.log(traceback.as_bytes()).await;
                            }
                            Err(failure(message, &traceback))
                        }
                    }
                }))
            });
        }
        Box::pin(async move {
            match start(&function, call, None).await {
                Outcome::Whole(bytes) => Ok(hosted::whole(bytes)),
                Outcome::End => Ok(hosted::whole(Bytes::new())),
                Outcome::Failed { message, traceback } => Err(failure(message, &traceback)),
            }
        })
    }
}

/// A function's exception as the call's error: its message, then its
/// traceback (the error is cut to the wire's bound, its start kept).
fn failure(message: String, traceback: &str) -> ServiceError {
    if traceback.is_empty() {
        return ServiceError::new(ErrorKind::ServiceFailed, message);
    }
    ServiceError::new(ErrorKind::ServiceFailed, format!("{message}\n{traceback}"))
}

/// Calls `abandon(call)` when the call is given up before the function
/// reported.
struct AbandonOnDrop {
    function: Arc<Function>,
    call: Py<Call>,
    state: Arc<State>,
}

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        // Nobody listens any more; whether the function had reported.
        let unreported = locked(&self.state.outcome).take().is_some();
        if unreported {
            Python::attach(|py| {
                if let Err(e) = self.function.abandon.call1(py, (self.call.clone_ref(py),)) {
                    e.write_unraisable(py, None);
                }
            });
        }
    }
}

/// Runs one call of `function` to the function's report.
async fn start(function: &Arc<Function>, call: HostedCall, sink: Option<HostedSink>) -> Outcome {
    let (tx, rx) = oneshot::channel();
    let HostedCall {
        payload,
        timeout,
        log,
        work,
        ..
    } = call;
    let state = Arc::new(State {
        outcome: Mutex::new(Some(tx)),
        work: Mutex::new(Some(work)),
        sink,
    });
    // One hold of the interpreter: the call object and the guard's handle.
    let made = Python::attach(|py| {
        let call = Py::new(
            py,
            Call {
                state: Arc::clone(&state),
                timeout: timeout.as_secs_f64(),
                log,
                streamed: state.sink.is_some(),
                tag: Mutex::new(None),
            },
        )?;
        let kept = call.clone_ref(py);
        Ok::<_, PyErr>((call, kept))
    });
    let (py_call, kept) = match made {
        Ok(made) => made,
        Err(e) => return internal(&e),
    };
    let guard = AbandonOnDrop {
        function: Arc::clone(function),
        call: kept,
        state: Arc::clone(&state),
    };
    let invoke = {
        let function = Arc::clone(function);
        move || {
            Python::attach(|py| {
                let payload = PyBytes::new(py, &payload);
                function.invoke.call1(py, (payload, py_call)).map(drop)
            })
        }
    };
    let invoked = if function.on_loop {
        invoke()
    } else {
        match tokio::task::spawn_blocking(invoke).await {
            Ok(result) => result,
            Err(e) => Err(PyRuntimeError::new_err(format!(
                "the function's thread ended abnormally: {e}"
            ))),
        }
    };
    if let Err(e) = invoked {
        // The wrapper itself failed (it reports the function's own errors).
        state.report(internal(&e));
    }
    let outcome = rx.await;
    drop(guard);
    outcome.unwrap_or_else(|_| Outcome::Failed {
        message: "the function's call ended without an answer".into(),
        traceback: String::new(),
    })
}

fn internal(e: &PyErr) -> Outcome {
    Outcome::Failed {
        message: format!("the node's Python wrapper failed: {e}"),
        traceback: String::new(),
    }
}

/// The node agent, serving the functions added to it.
#[pyclass(module = "switchyard_fleet._native")]
pub(crate) struct NodeCore {
    /// The configuration and the functions' handlers, until `serve` takes them.
    config: Mutex<Option<(AgentConfig, hosted::Handlers)>>,
    stop: watch::Sender<bool>,
}

#[pymethods]
impl NodeCore {
    /// A node registering with `gateway` (`host:port`) as `node_id`,
    /// trusting `ca`; see `Node` in the package for every argument.
    ///
    /// # Errors
    /// `ValueError` for a token neither given nor in `token_file`.
    #[new]
    #[pyo3(signature = (
        gateway, *, ca, node_id, token = None, token_file = None, gateways = None,
        server_name = None, region = None, labels = None, cost_per_hour = 0.0,
        stats_interval_ms = None, shutdown_grace_s = None, max_payload_bytes = None,
        client_cert = None, client_key = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        gateway: String,
        ca: std::path::PathBuf,
        node_id: String,
        token: Option<String>,
        token_file: Option<std::path::PathBuf>,
        gateways: Option<Vec<String>>,
        server_name: Option<String>,
        region: Option<String>,
        labels: Option<std::collections::BTreeMap<String, String>>,
        cost_per_hour: f32,
        stats_interval_ms: Option<u32>,
        shutdown_grace_s: Option<u32>,
        max_payload_bytes: Option<u64>,
        client_cert: Option<std::path::PathBuf>,
        client_key: Option<std::path::PathBuf>,
    ) -> PyResult<Self> {
        if token.is_none() && token_file.is_none() {
            return Err(PyValueError::new_err(
                "a node needs the gateway's agent token: token=... or token_file=...",
            ));
        }
        let mut config = AgentConfig::new(gateway, ca, token.unwrap_or_default(), node_id, vec![]);
        config.token_file = token_file;
        config.gateways = gateways.unwrap_or_default();
        if let Some(name) = server_name {
            config.server_name = name;
        }
        config.region = region.unwrap_or_default();
        config.labels = labels.unwrap_or_default();
        config.cost_per_hour = cost_per_hour;
        if let Some(ms) = stats_interval_ms {
            config.stats_interval_ms = ms;
        }
        if let Some(s) = shutdown_grace_s {
            config.shutdown_grace_s = s;
        }
        if let Some(bytes) = max_payload_bytes {
            config.max_payload_bytes = bytes;
        }
        config.client_cert = client_cert;
        config.client_key = client_key;
        Ok(Self {
            config: Mutex::new(Some((config, hosted::Handlers::new()))),
            stop: watch::Sender::new(false),
        })
    }

    /// Adds the function `name` as a service: `invoke(payload, call)` runs
    /// it (on a thread, or scheduling a coroutine when `on_loop`),
    /// `abandon(call)` is called when a call is given up before it reported;
    /// `policy` and `idempotent` are the service's asks of the gateway.
    ///
    /// # Errors
    /// `ValueError` for a duplicate name, `max_concurrent` of 0, or once
    /// the node serves.
    #[pyo3(signature = (
        name, invoke, abandon, *, max_concurrent = 1, on_loop = false, stream = false,
        policy = None, idempotent = false,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn add(
        &self,
        name: String,
        invoke: Py<PyAny>,
        abandon: Py<PyAny>,
        max_concurrent: u32,
        on_loop: bool,
        stream: bool,
        policy: Option<String>,
        idempotent: bool,
    ) -> PyResult<()> {
        let mut config = locked(&self.config);
        let Some((config, handlers)) = config.as_mut() else {
            return Err(PyValueError::new_err("the node serves already"));
        };
        if max_concurrent == 0 {
            return Err(PyValueError::new_err("max_concurrent must be at least 1"));
        }
        if config.services.iter().any(|s| s.name == name) {
            return Err(PyValueError::new_err(format!(
                "a function named {name:?} is registered already"
            )));
        }
        let function = Function {
            invoke,
            abandon,
            on_loop,
            stream,
        };
        handlers.insert(
            name.clone(),
            hosted::Hosted::new(PyHandler(Arc::new(function))),
        );
        let mut service = ServiceConfig::new(name, ServiceKind::Hosted);
        service.max_concurrent = max_concurrent;
        service.policy = policy;
        service.idempotent = idempotent;
        config.services.push(service);
        Ok(())
    }

    /// Runs the node until `stop()` (then it drains: no new calls, the
    /// calls in flight finish within `shutdown_grace_s`), with the
    /// interpreter released; Python's signal handlers run every 100 ms, and
    /// an exception they raise (Ctrl-C's `KeyboardInterrupt`) drains the
    /// node, then propagates.
    ///
    /// # Errors
    /// `ValueError` for an invalid configuration (no function, a bad
    /// name), `ConnectError` when the gateway refused the registration
    /// (a wrong token) or the CA is unusable.
    fn serve(&self, py: Python<'_>) -> PyResult<()> {
        let mut run = runtime().spawn(self.agent()?);
        loop {
            // The timer is made inside the runtime (it needs its clock).
            let waited = py.detach(|| {
                runtime().block_on(async {
                    tokio::time::timeout(Duration::from_millis(100), &mut run).await
                })
            });
            if let Ok(joined) = waited {
                return ended(joined);
            }
            if let Err(interrupt) = py.check_signals() {
                self.stop.send_replace(true);
                let joined = py.detach(|| runtime().block_on(&mut run));
                ended(joined)?;
                return Err(interrupt);
            }
        }
    }

    /// As `serve`, as an awaitable for the running asyncio loop.
    ///
    /// # Errors
    /// As `serve`.
    fn serve_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let agent = self.agent()?;
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            ended(runtime().spawn(agent).await)
        })
    }

    /// Drains the node and ends `serve` (safe from any thread and from a
    /// signal handler; again changes nothing).
    fn stop(&self) {
        self.stop.send_replace(true);
    }
}

impl NodeCore {
    /// The agent's run, ready to spawn; takes the configuration.
    fn agent(
        &self,
    ) -> PyResult<impl Future<Output = Result<(), node_agent::AgentError>> + Send + 'static> {
        let (config, handlers) = locked(&self.config)
            .take()
            .ok_or_else(|| PyValueError::new_err("the node serves already"))?;
        config
            .validate()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let mut stop = self.stop.subscribe();
        Ok(node_agent::run_hosting(config, handlers, async move {
            let _ = stop.wait_for(|stop| *stop).await;
        }))
    }
}

fn ended(
    joined: Result<Result<(), node_agent::AgentError>, tokio::task::JoinError>,
) -> PyResult<()> {
    match joined {
        Ok(Ok(())) => Ok(()),
        Ok(Err(node_agent::AgentError::Config(e))) => Err(PyValueError::new_err(e.to_string())),
        Ok(Err(e)) => Err(crate::errors::ConnectError::new_err(e.to_string())),
        Err(e) => Err(PyRuntimeError::new_err(format!(
            "the node's task ended abnormally: {e}"
        ))),
    }
}
