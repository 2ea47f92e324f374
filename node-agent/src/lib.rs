//! The Switchyard node agent: dials the gateway over QUIC (every gateway of
//! a cluster: the member list the first one sends names them), registers
//! the services this node hosts, reports stats every interval and its calls
//! in flight when they change, and runs the calls the gateways dispatch,
//! against one `max_concurrent` per service whichever gateway sent them.
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchyard_agent::AgentError> {
//! use switchyard_agent::{AgentConfig, ServiceConfig, ServiceKind};
//!
//! let config = AgentConfig::new(
//!     "127.0.0.1:4433",
//!     ".switchyard/ca.pem",
//!     "secret-token",
//!     "gpu-node-1",
//!     vec![
//!         ServiceConfig::new("echo", ServiceKind::Echo),
//!         ServiceConfig::new("sha256", ServiceKind::command(["sha256sum"])),
//!     ],
//! );
//! switchyard_agent::run(config, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```
//!
//! Modules: [`config`] (TOML), [`services`] (what runs calls), [`stats`]
//! (CPU, memory, GPUs), [`health`] (active health checks), [`model_load`]
//! (model servers' load from their Prometheus endpoints), [`backoff`] (reconnect delays); the connection
//! handling (a session per gateway) is in [`run`], which also runs the
//! swappable slots ([`SlotConfig`], [`SwapConfig`]): one server process per
//! slot, swapped when a gateway asks. [`cli`] is the `node-agent` program itself.

#![warn(unreachable_pub)]

mod answer;
pub mod backoff;
pub mod cli;
pub mod config;
mod dispatch;
pub mod health;
mod leases;
pub mod model_load;
mod prefix_blocks;
pub mod services;
mod session;
mod slots;
pub mod stats;

pub use config::{
    AgentConfig, CommandConfig, ConfigError, DirectConfig, EXAMPLE_CONFIG, HealthCheck, HttpConfig,
    MetricsScrape, ModelServer, ReadyProbe, ReconnectConfig, ServiceConfig, ServiceKind,
    SlotConfig, SwapConfig,
};
pub use services::{ServiceError, Services};
pub use session::{run, run_hosting};
pub use stats::StatsCollector;

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The CA file is unusable, or no UDP socket could be bound.
    #[error("tls setup failed: {0}")]
    Tls(#[from] transport::TlsError),
    /// The gateway refused the registration (e.g. a wrong token); not
    /// retried.
    #[error("gateway refused registration: {0}")]
    Refused(String),
    /// The services could not be set up.
    #[error("cannot set up services: {0}")]
    Services(ServiceError),
    /// The OTLP exporter could not start (`[tracing]`).
    #[error("tracing: {0}")]
    Tracing(#[from] otel::OtelError),
}
