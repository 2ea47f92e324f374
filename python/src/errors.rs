//! The package's exceptions: `SwitchyardError` and one subclass per wire
//! error kind (`Overloaded`, `Occupied`, `Timeout`, `NodeLost`, …), plus
//! the client-side failures (`ConnectError`, `ConfigError`,
//! `GatewayLost`, `NodeUnreachable`, `ProtocolError`). Every instance
//! carries `kind` (the wire kind's name, e.g. `"overloaded"`, or `None`),
//! `retry_safe` (whether calling again cannot run the call twice),
//! `node_id` and `request_id` (when the gateway named them).

use client::{ClientError, ErrorKind};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    switchyard_fleet,
    SwitchyardError,
    PyException,
    "A Switchyard call or request failed; `kind`, `retry_safe`, `node_id` and `request_id` say how."
);
create_exception!(
    switchyard_fleet,
    UnknownService,
    SwitchyardError,
    "No node registers the service."
);
create_exception!(
    switchyard_fleet,
    NoNodeAvailable,
    SwitchyardError,
    "No node of the service could take the call (none healthy, or none left to try)."
);
create_exception!(
    switchyard_fleet,
    Timeout,
    SwitchyardError,
    "The call's deadline passed (in the queue, on the node, or on the client's side)."
);
create_exception!(
    switchyard_fleet,
    NodeLost,
    SwitchyardError,
    "The node vanished during the call."
);
create_exception!(
    switchyard_fleet,
    PayloadTooLarge,
    SwitchyardError,
    "The payload or the result exceeds a configured limit."
);
create_exception!(
    switchyard_fleet,
    ServiceFailed,
    SwitchyardError,
    "The service ran and failed (its message says why)."
);
create_exception!(
    switchyard_fleet,
    Unauthorized,
    SwitchyardError,
    "The API key (or token) is missing or unknown."
);
create_exception!(
    switchyard_fleet,
    BadRequest,
    SwitchyardError,
    "The request breaks a rule of the protocol or of the gateway."
);
create_exception!(
    switchyard_fleet,
    Rejected,
    SwitchyardError,
    "The service's policy refused the call."
);
create_exception!(
    switchyard_fleet,
    Occupied,
    SwitchyardError,
    "Every node is busy and the call asked not to wait (realtime)."
);
create_exception!(
    switchyard_fleet,
    Overloaded,
    SwitchyardError,
    "The service's queue is full."
);
create_exception!(
    switchyard_fleet,
    ShuttingDown,
    SwitchyardError,
    "The gateway is draining."
);
create_exception!(
    switchyard_fleet,
    InternalError,
    SwitchyardError,
    "The gateway failed."
);
create_exception!(
    switchyard_fleet,
    Forbidden,
    SwitchyardError,
    "The tenant may not call this service."
);
create_exception!(
    switchyard_fleet,
    RateLimited,
    SwitchyardError,
    "The tenant is over its rate."
);
create_exception!(
    switchyard_fleet,
    LeaseEnded,
    SwitchyardError,
    "The lease ended (used, expired, released)."
);
create_exception!(
    switchyard_fleet,
    ConnectError,
    SwitchyardError,
    "No gateway could be reached: nothing ran."
);
create_exception!(
    switchyard_fleet,
    ConfigError,
    SwitchyardError,
    "The client's configuration is unusable (address, CA file)."
);
create_exception!(
    switchyard_fleet,
    GatewayLost,
    SwitchyardError,
    "The gateway's connection was lost after it had the call: it may have run."
);
create_exception!(
    switchyard_fleet,
    NodeUnreachable,
    SwitchyardError,
    "A node's direct port could not be reached: nothing was sent."
);
create_exception!(
    switchyard_fleet,
    ProtocolError,
    SwitchyardError,
    "A peer broke the protocol, or the connection failed."
);

/// Adds the exceptions to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("SwitchyardError", py.get_type::<SwitchyardError>())?;
    m.add("UnknownService", py.get_type::<UnknownService>())?;
    m.add("NoNodeAvailable", py.get_type::<NoNodeAvailable>())?;
    m.add("Timeout", py.get_type::<Timeout>())?;
    m.add("NodeLost", py.get_type::<NodeLost>())?;
    m.add("PayloadTooLarge", py.get_type::<PayloadTooLarge>())?;
    m.add("ServiceFailed", py.get_type::<ServiceFailed>())?;
    m.add("Unauthorized", py.get_type::<Unauthorized>())?;
    m.add("BadRequest", py.get_type::<BadRequest>())?;
    m.add("Rejected", py.get_type::<Rejected>())?;
    m.add("Occupied", py.get_type::<Occupied>())?;
    m.add("Overloaded", py.get_type::<Overloaded>())?;
    m.add("ShuttingDown", py.get_type::<ShuttingDown>())?;
    m.add("InternalError", py.get_type::<InternalError>())?;
    m.add("Forbidden", py.get_type::<Forbidden>())?;
    m.add("RateLimited", py.get_type::<RateLimited>())?;
    m.add("LeaseEnded", py.get_type::<LeaseEnded>())?;
    m.add("ConnectError", py.get_type::<ConnectError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("GatewayLost", py.get_type::<GatewayLost>())?;
    m.add("NodeUnreachable", py.get_type::<NodeUnreachable>())?;
    m.add("ProtocolError", py.get_type::<ProtocolError>())?;
    Ok(())
}

/// The exception for a wire error kind.
fn for_kind(kind: ErrorKind, message: String) -> PyErr {
    match kind {
        ErrorKind::UnknownService => UnknownService::new_err(message),
        ErrorKind::NoNodeAvailable => NoNodeAvailable::new_err(message),
        ErrorKind::Timeout => Timeout::new_err(message),
        ErrorKind::NodeLost => NodeLost::new_err(message),
        ErrorKind::PayloadTooLarge => PayloadTooLarge::new_err(message),
        ErrorKind::ServiceFailed => ServiceFailed::new_err(message),
        ErrorKind::Unauthorized => Unauthorized::new_err(message),
        ErrorKind::BadRequest => BadRequest::new_err(message),
        ErrorKind::Rejected => Rejected::new_err(message),
        ErrorKind::Occupied => Occupied::new_err(message),
        ErrorKind::Overloaded => Overloaded::new_err(message),
        ErrorKind::ShuttingDown => ShuttingDown::new_err(message),
        ErrorKind::Internal => InternalError::new_err(message),
        ErrorKind::Forbidden => Forbidden::new_err(message),
        ErrorKind::RateLimited => RateLimited::new_err(message),
        ErrorKind::LeaseEnded => LeaseEnded::new_err(message),
    }
}

/// The Python exception for an SDK error, with its attributes set.
pub(crate) fn to_py(error: ClientError) -> PyErr {
    let message = error.to_string();
    let kind = error.kind();
    let retry_safe = error.retry_safe();
    let node_id = error.node_id().map(str::to_owned);
    let request_id = error.request_id().map(str::to_owned);
    let err = match (&error, kind) {
        (_, Some(kind)) => for_kind(kind, message),
        (ClientError::Connect(_), None) => ConnectError::new_err(message),
        (ClientError::Config(_), None) => ConfigError::new_err(message),
        (ClientError::GatewayLost { .. }, None) => GatewayLost::new_err(message),
        (ClientError::NodeUnreachable { .. }, None) => NodeUnreachable::new_err(message),
        (_, None) => ProtocolError::new_err(message),
    };
    Python::attach(|py| {
        let value = err.value(py);
        // Setting attributes on a fresh exception instance cannot fail
        // short of memory; the exception goes out either way.
        let _ = value.setattr("kind", kind.map(ErrorKind::as_str));
        let _ = value.setattr("retry_safe", retry_safe);
        let _ = value.setattr("node_id", node_id);
        let _ = value.setattr("request_id", request_id);
    });
    err
}
