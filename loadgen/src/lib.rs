//! Switchyard's load generator: drives a [`Target`] (a QUIC call through the
//! SDK, [`QuicTarget`], or an HTTP request, [`HttpTarget`]) by a [`Plan`]
//! and reports throughput, errors by kind and latency percentiles.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::{sync::Arc, time::Duration};
//! use loadgen::{Arrival, Plan, Process, QuicTarget};
//! let client = client::Client::connect(client::ClientConfig::new("127.0.0.1:4433", "ca.pem")).await?;
//! let target = QuicTarget::new(client, "echo".into(), bytes::Bytes::from_static(b"hi"), Default::default());
//! let plan = Plan {
//!     arrival: Arrival::Open { rate_per_s: 5000.0, process: Process::Poisson, max_in_flight: 1024 },
//!     warm_up: Duration::from_secs(2),
//!     duration: Duration::from_secs(10),
//!     seed: 1,
//! };
//! let report = loadgen::run(Arc::new(target), &plan, None).await;
//! println!("{:.0} calls/s, p99 {:.0} µs", report.calls_per_s, report.latency_us.p99);
//! # Ok(()) }
//! ```
//!
//! - **Closed loop** ([`Arrival::Closed`]): `concurrency` callers, each
//!   sending its next call when its previous one ended. Latency is each
//!   call's own time.
//! - **Open loop** ([`Arrival::Open`]): calls are due at times fixed in
//!   advance ([`Schedule`]: constant spacing or Poisson), whatever the
//!   answers do. At most `max_in_flight` are outstanding; when that many
//!   are, the next call is sent late, and its latency still counts from
//!   when it was due (the coordinated-omission correction of wrk2). Calls
//!   due in the window but never sent (still blocked when it closed) count
//!   as errors of kind `client-saturated`.
//!
//! Calls during the warm-up are made but not recorded. Sending stops at the
//! window's end; calls still out are waited for (each bounded by its
//! target's timeout) and recorded. Each caller keeps its own histogram
//! (open loop: one per shard of calls), merged at the end.

mod http;
mod quic;
mod report;
mod runner;
mod schedule;

use std::future::Future;
use std::time::Duration;

pub use http::{HttpTarget, HttpTargetConfig};
pub use quic::QuicTarget;
pub use report::{Latency, Recorder, Report};
pub use runner::{Progress, run};
pub use schedule::Schedule;

/// How calls arrive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arrival {
    /// N callers, each sending its next call when the previous one ended.
    Closed {
        /// Callers (at least 1 is used).
        concurrency: usize,
    },
    /// Calls sent at `rate_per_s` (constant spacing or Poisson), whatever
    /// the answers do; latency counts from the intended send time (no
    /// coordinated omission). At most `max_in_flight` outstanding: a call
    /// due while that many are out is sent late but measured from when it
    /// was due; one still unsent when the window ends counts as error kind
    /// `client-saturated`.
    Open {
        /// Calls per second (must be > 0 for any call to be sent).
        rate_per_s: f64,
        /// Spacing of the calls.
        process: Process,
        /// Most calls outstanding at once (at least 1 is used).
        max_in_flight: usize,
    },
}

impl Arrival {
    /// A short description: `closed 16`, `open poisson 5000/s`.
    pub fn describe(&self) -> String {
        match self {
            Self::Closed { concurrency } => format!("closed {concurrency}"),
            Self::Open {
                rate_per_s,
                process,
                ..
            } => format!("open {} {rate_per_s}/s", process.name()),
        }
    }
}

/// The spacing of an open loop's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// Evenly spaced, `1 / rate` apart.
    Constant,
    /// Exponential gaps of mean `1 / rate` (a Poisson process), drawn from
    /// the plan's seed.
    Poisson,
}

impl Process {
    /// `constant` or `poisson`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Constant => "constant",
            Self::Poisson => "poisson",
        }
    }
}

/// A run: how calls arrive, for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// How calls arrive.
    pub arrival: Arrival,
    /// Calls made first and not recorded (warms connections, caches, JITs).
    pub warm_up: Duration,
    /// The measured window after the warm-up.
    pub duration: Duration,
    /// Seed of the Poisson arrival times (same seed, same times).
    pub seed: u64,
}

/// One kind of call to make. Implemented for QUIC ([`QuicTarget`]) and HTTP
/// ([`HttpTarget`]); tests implement it over anything.
pub trait Target: Send + Sync + 'static {
    /// Makes one call and waits for its whole answer.
    ///
    /// # Errors
    /// A [`CallFailure`] naming the kind of failure.
    fn call(&self) -> impl Future<Output = Result<(), CallFailure>> + Send;
}

/// Why a call failed, as a kind reports count by: `timeout`,
/// `overloaded`, `unknown-service` (an [`protocol::ErrorKind`]'s name,
/// spaces as dashes), `http-502`, `connect`, `io`, `client-saturated`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallFailure {
    /// The kind.
    pub kind: String,
}

impl CallFailure {
    /// A failure of kind `kind`.
    pub fn new(kind: impl Into<String>) -> Self {
        Self { kind: kind.into() }
    }
}

/// The kind counted for calls due in an open loop's window but never sent.
pub const CLIENT_SATURATED: &str = "client-saturated";

/// A target that cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The CA file is unreadable or holds no usable certificate.
    #[error("ca file: {0}")]
    Ca(#[from] transport::TlsError),
    /// The URL cannot be parsed.
    #[error("url {0}")]
    Url(String),
    /// A header name or value is not valid HTTP.
    #[error("invalid header {0:?}")]
    Header(String),
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
}
