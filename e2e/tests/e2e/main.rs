//! The end-to-end suite: one test binary (each integration test file would
//! otherwise link its own copy of wasmtime, hundreds of MiB each), with one
//! module per area. Real QUIC on loopback, an in-process gateway, agents in
//! process (real agent processes where a test kills one or watches it exit),
//! real compiled plugins; `common` is the fleet harness they share.

mod admin_http;
mod cache;
mod common;
mod fleet;
mod hot_swap;
mod ingress;
mod malformed;
mod openai;
mod policies;
mod pool;
mod queue;
mod retries;
mod services;
mod streaming;
mod swap;
