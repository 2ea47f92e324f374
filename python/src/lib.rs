//! `switchyard_fleet._native`: the compiled half of the Python package
//! `switchyard-fleet` (`import switchyard_fleet`). It wraps the Rust SDK
//! (`switchyard-client`): [`client::Client`] blocks the calling thread
//! (with the interpreter released, so other Python threads run),
//! [`aio::AsyncClient`] returns asyncio awaitables; both share one
//! tokio runtime (`pyo3-async-runtimes`' global one). Errors become the
//! exceptions of [`errors`], one per wire error kind.
//!
//! The Python half (`python/switchyard_fleet/`) re-exports these names
//! and carries the type stubs.

mod aio;
mod client;
mod errors;
mod jobs;
mod lease;
mod node;
mod result;
mod stream;

use pyo3::prelude::*;

/// The extension module: the client classes, the result type and the
/// exceptions.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<client::Client>()?;
    m.add_class::<aio::AsyncClient>()?;
    m.add_class::<result::CallResult>()?;
    m.add_class::<stream::Stream>()?;
    m.add_class::<stream::AsyncStream>()?;
    m.add_class::<jobs::LogFollow>()?;
    m.add_class::<jobs::AsyncLogFollow>()?;
    m.add_class::<lease::Lease>()?;
    m.add_class::<node::NodeCore>()?;
    m.add_class::<node::Call>()?;
    errors::register(m)?;
    Ok(())
}
