//! The policy host against real components: the compiled plugins of
//! `plugins/` and hostile components. One test binary, one module per area
//! (each integration test file would otherwise link its own wasmtime).

mod blocks;
mod hostile;
mod pick_first;
mod polyglot;
mod round_robin;
mod sandbox_plugins;
mod scoring;
