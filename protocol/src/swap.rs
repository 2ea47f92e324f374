//! Swapping a slot's service: the gateway's request and the agent's report,
//! both on the agent's control stream.

use minicbor::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// Gateway → agent: load `service` into `slot` (stopping whatever it holds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct SwapRequest {
    /// The gateway's id for this swap; the report carries it back.
    #[n(0)]
    pub swap_id: u64,
    /// The slot to load into.
    #[n(1)]
    pub slot: String,
    /// The service to load (one the slot can host).
    #[n(2)]
    pub service: String,
}

/// Agent → gateway: a slot's state changed, after a [`SwapRequest`]
/// (`swap_id` set) or on its own (`swap_id` 0, e.g. the loaded service's
/// process died).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct SwapReport {
    /// The request this answers, or 0.
    #[n(0)]
    pub swap_id: u64,
    /// The slot.
    #[n(1)]
    pub slot: String,
    /// The service loaded and ready now, if any.
    #[n(2)]
    pub loaded: Option<String>,
    /// Why the swap failed (stop, start or readiness), if it did.
    #[n(3)]
    pub error: Option<String>,
    /// How long the swap took, stop to ready, ms.
    #[n(4)]
    pub duration_ms: u32,
}
