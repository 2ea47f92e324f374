//! The flags `call` and `lease` share: how a request waits for a node and
//! which one the policy picks.

use std::time::Duration;

use client::CallOptions;

/// Admission flags, flattened into a command's arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct AdmissionArgs {
    /// How long it may take, ms: the wait for a node (queue included) and,
    /// for a call, its run.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// Policy to pick the node with (overrides the service's).
    #[arg(long)]
    policy: Option<String>,
    /// Policy hint KEY=VALUE (repeatable), e.g. max_cost=0.5.
    #[arg(long = "hint", value_parser = crate::parse_hint)]
    hints: Vec<(String, String)>,
    /// Queue priority: higher is served first when requests wait.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i32,
    /// Never wait in the queue: fail with `occupied` if every node is busy.
    #[arg(long)]
    realtime: bool,
}

impl AdmissionArgs {
    /// The options these flags set; the others at their defaults.
    pub(crate) fn options(self) -> CallOptions {
        CallOptions {
            timeout: Duration::from_millis(self.timeout_ms),
            policy: self.policy,
            hints: self.hints,
            priority: self.priority,
            realtime: self.realtime,
            ..CallOptions::default()
        }
    }
}
