//! The chaos suite (`make chaos`; `make test` runs it with the rest of this
//! binary): faults injected into a running fleet, one scenario per file,
//! with real processes wherever one is killed or stopped (the
//! `switchyard-e2e-gateway` and `switchyard-e2e-agent` programs), a
//! fault-injecting UDP relay between an agent and the gateway
//! ([`relay`]), and figures printed by each scenario (calls served,
//! failures by kind, latency p50/p99, time to detect and recover).
//!
//! Every scenario runs alone (they take turns on [`SERIAL`], so their
//! figures do not measure each other) and within a hard time limit; every
//! call it makes is bounded too (a call still running past its deadline
//! plus [`GRACE`] counts as hung, and fails the scenario).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod jobs;
mod kill_agent;
mod kill_cluster_gateway;
mod kill_gateway;
mod kill_leased_agent;
mod network;
mod overload;
mod policy_swap;
pub mod relay;
mod stop_agent;
mod two_gateways;

pub use harness::*;
