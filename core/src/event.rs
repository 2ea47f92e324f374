//! What the core is told ([`Event`]) and what it asks its shell to do
//! ([`Action`]).

use std::sync::Arc;
use std::time::Duration;

use protocol::{CallError, CallHead, NodeSpec, NodeStats, Reserved, SwapReport, SwapRequest};

use crate::balance::{PickRequest, Ranking};

use crate::fleet::NodeKey;

/// The shell's number for a call: unique while the call lives, and
/// increasing in arrival order (it breaks ties in the queue: FIFO).
pub type CallId = u64;

/// Something that happened, for [`crate::Core::handle`].
#[derive(Debug, Clone)]
pub enum Event {
    /// A node registered (a node with the same key is replaced: its swaps
    /// fail, and the end of its calls frees nothing on the new one).
    NodeUp {
        /// Its key.
        node: NodeKey,
        /// What it registered.
        spec: NodeSpec,
    },
    /// A registered node's services changed (a child gateway's fleet
    /// grew, shrank or changed capacity): services it keeps keep their
    /// calls in flight, latency and ejection; new ones start empty; those
    /// it dropped take no new call (their calls in flight finish). The
    /// slots stay as registered. Unknown nodes are ignored.
    Respec {
        /// Its key.
        node: NodeKey,
        /// What it hosts now (same id).
        spec: NodeSpec,
    },
    /// The parent gateway asks for up to `count` of the calls waiting for
    /// `service` (rebalancing): they leave the queue, oldest first (none
    /// has started), and are dispatched to node `to`, the link to the
    /// parent, whatever its drain (it takes no call otherwise).
    HandUp {
        /// The service.
        service: String,
        /// Most calls to hand up.
        count: u32,
        /// The parent's node.
        to: NodeKey,
    },
    /// A node left (connection closed, stats overdue).
    NodeDown {
        /// Its key.
        node: NodeKey,
    },
    /// A node's stats report.
    Stats {
        /// Its key.
        node: NodeKey,
        /// The report.
        stats: NodeStats,
    },
    /// A node's load report: its calls in flight per service
    /// (`(service, calls)`), counted as `counted` says. The other
    /// gateways' calls it gives hold until the next report: a call goes
    /// there only while this gateway's plus the others' stay under the
    /// service's `max_concurrent`. Unknown services are ignored.
    Load {
        /// Its key.
        node: NodeKey,
        /// `(service, calls in flight on the node)`.
        in_flight: Vec<(String, u32)>,
        /// Job calls in flight on the node (`None`: not told), counted as
        /// `in_flight`. The other gateways' count against the per-node job
        /// limit ([`Event::JobLimit`]) until the next report.
        jobs_in_flight: Option<u32>,
        /// Whose calls the figures count.
        counted: Counted,
    },
    /// An operator drained (true) or undrained a node.
    Drain {
        /// Its key.
        node: NodeKey,
        /// Drained or not.
        draining: bool,
    },
    /// A call's head was read: it wants a node.
    CallArrived {
        /// Its id.
        call: CallId,
        /// Its head (service, priority, realtime, hints).
        head: Arc<CallHead>,
        /// Its tenant (round-robin flow in the queue).
        tenant: Arc<str>,
        /// The chained block hashes of its prompt or affinity key
        /// ([`crate::prefix`]), passed to every pick for it; empty for none.
        prefix: Arc<[u64]>,
        /// Whether it runs a durable job: it then goes only to a node
        /// running fewer than [`Event::JobLimit`]'s jobs.
        job: bool,
        /// Nodes it must not go to (a call a child gateway handed up does
        /// not go back down to it); empty for most calls.
        exclude: Vec<NodeKey>,
    },
    /// The most job calls a node may run at once changed (0: no limit
    /// beyond its slots; the default). Calls running are left alone; job
    /// calls waiting may start where the new limit leaves room.
    JobLimit {
        /// The limit, jobs per node.
        max_per_node: u32,
    },
    /// The answer to an [`Action::Pick`].
    Picked {
        /// The call picked for.
        call: CallId,
        /// The ranking, or why there is none.
        ranking: Result<Ranking, PickError>,
    },
    /// A dispatched call could not reach its node (no stream): its slot is
    /// freed and it goes to another node, never that one again.
    DispatchFailed {
        /// The call.
        call: CallId,
    },
    /// A dispatched call ended, whatever the outcome: its slot is freed.
    CallFinished {
        /// The call.
        call: CallId,
        /// Node time, ms (dispatch to answer).
        node_ms: f32,
        /// How it ended: only `Ok` feeds the latency EWMA, only `Failed`
        /// counts towards outlier ejection.
        end: CallEnd,
    },
    /// A dispatched call failed on its node (`node lost`, `service failed`,
    /// a timeout there: it counts as [`CallEnd::Failed`]) and the shell
    /// would run it again on another node (it is idempotent and its
    /// deadline is not passed). The core frees its slot and answers
    /// [`Action::RetryAfter`] or [`Action::RetryRefused`].
    RetryAsked {
        /// The call.
        call: CallId,
        /// A random number in `0.0..1.0` (the backoff's jitter).
        jitter: f32,
    },
    /// A dispatched call's node reports that the call never ran (its model
    /// server refused the connection, nothing of the request was written):
    /// as [`Event::RetryAsked`] (the failure counts against the node), but
    /// only the attempts cap may refuse the retry, not the retry budget nor
    /// the retries breaker (it costs the servers nothing), whether the call
    /// is idempotent or not.
    NotRun {
        /// The call.
        call: CallId,
        /// A random number in `0.0..1.0` (the backoff's jitter).
        jitter: f32,
    },
    /// A dispatched call's node refused it for being full (the service ran
    /// its `max_concurrent` calls, other gateways' included): the call
    /// never ran. The core frees its slot, takes the node's service to be
    /// full until its next [`Event::Load`], and answers
    /// [`Action::RetryAfter`] with the same attempt number (a short
    /// jittered backoff, at most the first retry's); the call is then
    /// admitted again, the same node included. Neither the attempts cap,
    /// the retry budget, the retries breaker nor outlier detection counts
    /// it: the node did nothing wrong.
    NodeFull {
        /// The call.
        call: CallId,
        /// A random number in `0.0..1.0` (the backoff's jitter).
        jitter: f32,
    },
    /// A call's backoff ([`Action::RetryAfter`]) is over: it is admitted
    /// again, to a node it has not tried while one hosts its service.
    RetryDue {
        /// The call.
        call: CallId,
    },
    /// A call that was not dispatched left (timed out, caller gone).
    CallLeft {
        /// The call.
        call: CallId,
    },
    /// An agent reported a slot's state (the answer to an [`Action::Swap`],
    /// or unprompted with `swap_id` 0 when a slot's service died).
    SwapReported {
        /// The node.
        node: NodeKey,
        /// The report.
        report: SwapReport,
    },
    /// Time passed: overdue swaps fail, cooldowns end. Send it every
    /// [`crate::TICK`] while [`crate::Core::wants_tick`].
    Tick,
}

/// Whose calls a load report's figures count ([`Event::Load`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Every gateway's, this one's included: the calls beyond this
    /// gateway's own count as the others'. A report sent while one of this
    /// gateway's calls was ending overstates the others until the next.
    All,
    /// The other gateways' only, as the node counts them apart: taken as
    /// they are.
    Others,
}

/// How a dispatched call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallEnd {
    /// It succeeded.
    Ok,
    /// The node or its service failed it (`service failed`, `node lost`, a
    /// timeout on the node): counts towards the node's outlier ejection.
    Failed,
    /// It ended for a reason that is not the node's (the caller left, the
    /// request was bad or too large).
    Abandoned,
}

/// How a dispatched call got its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The service's policy picked it.
    Pick,
    /// The node loaded the service for this call (a swap).
    Swap,
    /// The policy failed and the core's built-in round-robin picked
    /// (fail-open).
    Fallback,
    /// Handed up to the parent gateway ([`Event::HandUp`]): a sibling
    /// there had free capacity while the call waited here.
    HandUp,
}

/// Why a pick gave no ranking.
#[derive(Debug, Clone, PartialEq)]
pub enum PickError {
    /// The call is refused (the policy rejected it, or named no loaded
    /// policy): it fails with this error.
    Refused(CallError),
    /// The policy failed (trapped, ran past its deadline, answered out of
    /// range). Failing open ([`crate::CoreConfig::fail_open`], the default)
    /// the built-in round-robin picks instead; failing closed the call fails
    /// with `internal`.
    Failed(String),
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Run the service's policy and answer with [`Event::Picked`].
    Pick(PickRequest),
    /// Send `call` to `node`: a slot there is taken for it until
    /// [`Event::CallFinished`] or [`Event::DispatchFailed`].
    Dispatch {
        /// The call.
        call: CallId,
        /// The node.
        node: NodeKey,
        /// Picked by the policy, or loaded for it.
        via: Via,
        /// How long it waited in the queue (None: it never queued).
        waited: Option<Duration>,
    },
    /// Tell a waiting call its place (1 = next).
    Position {
        /// The call.
        call: CallId,
        /// Its place.
        position: u32,
    },
    /// Tell a waiting call it is held for a node that loads its service.
    Reserved {
        /// The call.
        call: CallId,
        /// Which node, from what, how long loading usually takes.
        notice: Reserved,
    },
    /// The call fails with this error; the core has forgotten it.
    Reject {
        /// The call.
        call: CallId,
        /// Why.
        error: CallError,
    },
    /// Ask `node`'s agent to load a service into a slot. If it cannot be
    /// sent, answer with [`Event::SwapReported`] carrying an error.
    Swap {
        /// The node.
        node: NodeKey,
        /// The request for its control stream.
        request: SwapRequest,
        /// The service the slot held, if any.
        from: Option<String>,
    },
    /// A swap ended (for metrics and logs).
    SwapEnded {
        /// The node.
        node: NodeKey,
        /// The slot.
        slot: String,
        /// What it held before.
        from: Option<String>,
        /// What it was to load.
        to: String,
        /// `ok`, `failed`, `timeout` or `node_lost`.
        outcome: &'static str,
        /// How long the agent said it took, ms (0 when no report came).
        duration_ms: u32,
    },
    /// A node was ejected from a service's candidates (after `failures`
    /// consecutive failures, or for its success rate), for `ejection` (its
    /// `count`-th time).
    Ejected {
        /// The node.
        node: NodeKey,
        /// The service.
        service: String,
        /// Why.
        why: crate::EjectReason,
        /// Consecutive failures that ejected it.
        failures: u32,
        /// How long it stays out.
        ejection: Duration,
        /// How many times it was ejected from the service.
        count: u32,
    },
    /// The call may run again after `backoff` (then send
    /// [`Event::RetryDue`]); leaving meanwhile is [`Event::CallLeft`].
    RetryAfter {
        /// The call.
        call: CallId,
        /// The attempt it will be (2 for the first retry).
        attempt: u32,
        /// How long to wait first.
        backoff: Duration,
    },
    /// The call may not run again; the core has forgotten it (the shell
    /// answers with the call's last error).
    RetryRefused {
        /// The call.
        call: CallId,
        /// Why.
        why: crate::RetryRefusal,
    },
    /// A circuit breaker of `service` refused a call or a retry.
    BreakerTripped {
        /// The service.
        service: String,
        /// Which one.
        breaker: crate::Breaker,
    },
    /// The number of calls of `tenant` waiting for `service` changed (also
    /// sent once with 0 when its last call left).
    QueueLength {
        /// The service.
        service: String,
        /// The tenant.
        tenant: Arc<str>,
        /// Calls waiting.
        length: usize,
    },
}
