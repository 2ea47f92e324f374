//! `switchyard-sim`'s tests: one test binary (it links wasmtime), one
//! module per area. They run the real policies of `plugins/dist` (`make
//! plugins` builds them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod chat;
mod common;
mod engine;
mod repro;
mod scenarios;
