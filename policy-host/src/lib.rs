//! Hosts Switchyard load-balancing policies: WebAssembly components built
//! against the `policy` world of `wit/policy.wit` (optionally exporting
//! `ranker`, and since contract 1.1.0 `scorer`), run sandboxed in wasmtime.
//! Components compiled against 1.0.0 load unchanged.
//!
//! A [`PolicyEngine`] compiles components and drives the epoch ticker that
//! bounds every call; each loaded [`Policy`] owns one instance in its own
//! store. Guests get WASI preview 2 linked so that Rust `std` components
//! link, but no capability is granted: no files, environment, arguments,
//! network or stdin. Their stdout and stderr go to `tracing` (target
//! `policy`), rate-limited. Calls never block on I/O, so they are safe on any
//! thread, Tokio runtime workers included: a guest that would wait on WASI
//! (a sleep, a `poll`) traps instead.
//!
//! A guest that traps (deadline, memory limit, stack overflow, panic, ...)
//! makes the call return [`PolicyError::Trap`]; its instance is rebuilt from
//! the compiled component, so the policy keeps answering (with fresh state).
//! [`NativeRoundRobin`] is the built-in fallback for when a policy fails.

mod balance;
mod candidates;
mod driver;
mod engine;
mod error;
mod host;
mod limits;
mod logging;
mod native;
mod policy;
mod scoring;

pub use balance::{PickFailure, PolicyBalance};
pub use engine::{EngineConfig, PolicyEngine, load_dir};
pub use error::{PolicyError, TrapReason};
pub use native::NativeRoundRobin;
pub use policy::Policy;
pub use scoring::{MAX_PREFIX_HASHES, MAX_REASON_BYTES};

/// Bindings generated from `wit/policy.wit` (world `policy`).
mod bindings {
    #![allow(missing_docs, clippy::all)]
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "policy",
        additional_derives: [PartialEq],
        exports: { default: async },
    });
}

/// Bindings of the world `ranked-policy` (`policy` plus the optional
/// `ranker` export), sharing the `policy` world's types and host import.
mod ranked_bindings {
    #![allow(missing_docs, clippy::all)]
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ranked-policy",
        additional_derives: [PartialEq],
        exports: { default: async },
        with: {
            "switchyard:policy/types": crate::bindings::switchyard::policy::types,
            "switchyard:policy/host": crate::bindings::switchyard::policy::host,
        },
    });
}

/// Bindings of the world `scoring-policy` (`ranked-policy` plus the optional
/// `scorer` export, new in 1.1.0), sharing the `policy` world's types and
/// host import. Only its `scorer` export is used: `ranker` is called through
/// [`ranked_bindings`].
mod scoring_bindings {
    #![allow(missing_docs, clippy::all)]
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "scoring-policy",
        additional_derives: [PartialEq],
        exports: { default: async },
        with: {
            "switchyard:policy/types": crate::bindings::switchyard::policy::types,
            "switchyard:policy/host": crate::bindings::switchyard::policy::host,
        },
    });
}

/// Bindings of the world `block-aware-policy` (`scoring-policy` plus the
/// `blocks` host import, new in 1.2.0), sharing the `policy` world's types
/// and host import. Only its `blocks` import is used: the linker provides it
/// to every component (one compiled against an older version imports none).
mod block_bindings {
    #![allow(missing_docs, clippy::all)]
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "block-aware-policy",
        additional_derives: [PartialEq],
        exports: { default: async },
        with: {
            "switchyard:policy/types": crate::bindings::switchyard::policy::types,
            "switchyard:policy/host": crate::bindings::switchyard::policy::host,
        },
    });
}

/// The records and variants that cross the policy boundary, as generated from
/// `switchyard:policy/types@1.2.0` (field docs are those of the WIT file).
pub mod types {
    pub use crate::bindings::switchyard::policy::types::{
        Candidates, Decision, Gpu, NodeInfo, Outcome, Request,
    };
    /// A ranking policy's answer (`switchyard:policy/ranker`): candidate
    /// indices best first, or a refusal.
    pub use crate::ranked_bindings::exports::switchyard::policy::ranker::Ranking;
    /// What a scoring policy sees beyond the candidates (`scorer.context`,
    /// new in 1.1.0): the call's prefix hashes and the model servers' load
    /// in columns. Build it with [`Context::new`] (or [`Context::empty`]).
    pub use crate::scoring_bindings::exports::switchyard::policy::scorer::Context;
    /// A scored ranking (`scorer.scored`): order best first, one score per
    /// candidate (or none), and a short reason.
    pub use crate::scoring_bindings::exports::switchyard::policy::scorer::Scored;
    /// A scoring policy's answer (`scorer.verdict`): a [`Scored`] ranking,
    /// or a refusal.
    pub use crate::scoring_bindings::exports::switchyard::policy::scorer::Verdict;

    /// One candidate as a plain row: the i-th element of every column of
    /// [`Candidates`] (same field names, units and meaning), plus its
    /// model-server load, which reaches a guest through [`Context`]. The
    /// core's `switchyard_core::Candidate` is this same type.
    ///
    /// The WIT passes candidates in column layout because lowering columns
    /// into the guest is a memcpy per column; build [`Candidates`] directly
    /// where it is hot, or collect rows with `FromIterator`/[`Candidates::push`].
    pub use switchyard_policy_types::Candidate;
    /// A model server's load for one service on one node: a candidate's
    /// entry in the load columns of [`Context`].
    pub use switchyard_policy_types::ModelLoad;
    /// The gateway's handle for a node: stable for a node id while the
    /// gateway runs, never reused for another node id.
    pub use switchyard_policy_types::NodeKey;
}

/// Where a policy's `host.node-info` import gets its answers: the gateway's
/// view of the nodes, keyed by [`types::NodeKey`].
///
/// Called synchronously from inside a policy call, on the caller's thread:
/// implementations should be quick and must not call back into the policy.
pub trait NodeDirectory: Send + Sync + 'static {
    /// The facts about node `key`, or `None` for a key the gateway does not
    /// know (a node that left).
    fn node_info(&self, key: types::NodeKey) -> Option<types::NodeInfo>;

    /// How many leading blocks of `prefix_hashes` node `key` reports holding
    /// for `service` (k when the first k are all held): the answer to a
    /// policy's `blocks.prefix-matched` import (contract 1.2.0), asked per
    /// candidate. The default knows no node's blocks: 0.
    fn prefix_matched(&self, key: types::NodeKey, service: &str, prefix_hashes: &[u64]) -> u32 {
        let _ = (key, service, prefix_hashes);
        0
    }
}

/// A [`NodeDirectory`] that knows no node: every lookup answers `None`.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoNodes;

impl NodeDirectory for NoNodes {
    fn node_info(&self, _key: types::NodeKey) -> Option<types::NodeInfo> {
        None
    }
}
