//! QUIC plumbing shared by the Switchyard gateway, node agent and client SDK:
//! TLS material ([`tls`]), endpoint construction ([`endpoint`]) and framed
//! message IO over quinn streams ([`framed`]), and what every program shares:
//! its runtime ([`runtime`]), shutdown signal ([`signals`]), last error
//! line ([`report`]) and reconnect delays ([`backoff`]).
//!
//! The wire format itself lives in the sans-IO `protocol` crate; this crate
//! only moves its frames over sockets.

pub mod backoff;
pub mod endpoint;
pub mod framed;
pub mod identity;
pub mod report;
pub mod runtime;
pub mod signals;
pub mod tls;

pub use backoff::Backoff;
pub use endpoint::{
    ClientIdentity, EndpointConfig, client_endpoint, client_endpoint_with, server_config,
    server_endpoint,
};
pub use framed::{FramedRecv, FramedSend, IoError, ReadBudget, codec_for, open_bi, wire_version};
pub use tls::{TlsError, TlsFiles};
