//! Errors of policy loading and policy calls.

use std::fmt;

/// Why a policy call trapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrapReason {
    /// The call ran past its deadline ([`crate::EngineConfig::pick_deadline`]).
    Deadline,
    /// The guest asked for more linear memory than
    /// [`crate::EngineConfig::memory_limit_bytes`] allows, and failed on it.
    Memory,
    /// The guest exhausted the WebAssembly call stack (unbounded recursion).
    StackOverflow,
    /// Any other trap or call failure (`unreachable`, a Rust panic in the
    /// guest, an out-of-bounds access, ...), with wasmtime's description.
    Other(String),
}

impl fmt::Display for TrapReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Deadline => f.write_str("deadline exceeded"),
            Self::Memory => f.write_str("memory limit exceeded"),
            Self::StackOverflow => f.write_str("stack overflow"),
            Self::Other(reason) => f.write_str(reason),
        }
    }
}

/// Everything that can go wrong loading or calling a policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The wasmtime engine could not be configured (e.g. a bad cache directory).
    #[error("policy engine setup failed: {reason}")]
    Engine {
        /// What failed.
        reason: String,
    },
    /// The file is not a valid WebAssembly component, or it failed to compile.
    #[error("failed to compile policy {path}: {reason}")]
    Compile {
        /// The file path, or the origin given to [`crate::PolicyEngine::load_bytes`].
        path: String,
        /// The compiler's message.
        reason: String,
    },
    /// The component imports something the host does not provide (anything
    /// but WASI preview 2 and `switchyard:policy/host`), or its exports do
    /// not match the `policy` world. The reason names the offending item.
    #[error("failed to link policy: {reason}")]
    Link {
        /// Which policy and which import or export, as wasmtime reports it.
        reason: String,
    },
    /// The component could not be instantiated, its `name` export failed, or
    /// it returned an unusable name.
    #[error("failed to instantiate policy {policy}: {reason}")]
    Instantiate {
        /// The policy name, or its origin when the name is not known yet.
        policy: String,
        /// What failed.
        reason: String,
    },
    /// The guest trapped during a call. Its instance has been rebuilt (with
    /// fresh state), or is being rebuilt in the background; the policy stays
    /// usable.
    #[error("policy {policy} trapped: {reason}")]
    Trap {
        /// The policy name.
        policy: String,
        /// Why it trapped.
        reason: TrapReason,
    },
    /// The policy's instance is being rebuilt after a trap, in the
    /// background ([`crate::EngineConfig::rebuild_in_background`]); the
    /// guest was not called. Retry later, or pick another way meanwhile.
    #[error("policy {policy} is being rebuilt after a trap")]
    Rebuilding {
        /// The policy name.
        policy: String,
    },
    /// The guest chose a candidate index out of range.
    #[error("policy {policy} picked candidate {index} of {len}")]
    BadDecision {
        /// The policy name.
        policy: String,
        /// The index the guest returned.
        index: u32,
        /// How many candidates there were.
        len: usize,
    },
    /// A scoring guest returned a `scores` list whose length is neither 0
    /// nor the number of candidates.
    #[error("policy {policy} returned {scores} scores for {len} candidates")]
    BadScores {
        /// The policy name.
        policy: String,
        /// How many scores the guest returned.
        scores: usize,
        /// How many candidates there were.
        len: usize,
    },
    /// The pick input breaks the WIT contract (columns of unequal lengths, no
    /// candidate, or a scoring context with a load column of neither 0 nor n
    /// entries or more than 256 prefix hashes); the guest was not called.
    #[error("bad input for policy {policy}: {reason}")]
    BadInput {
        /// The policy name.
        policy: String,
        /// What is wrong with the input.
        reason: String,
    },
    /// Reading a policy file or directory failed (the message names the path).
    #[error("policy i/o error: {0}")]
    Io(#[from] std::io::Error),
}
