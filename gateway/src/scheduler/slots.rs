//! What a call holds while it waits and while it runs: its [`Ticket`] (the
//! place in the queue; dropping it leaves), the [`Grant`] it receives (a
//! [`SlotGuard`] and the pick), and a [`Retry`] the core granted. Dropping
//! a guard frees the slot.

use std::sync::Arc;
use std::time::Duration;

use protocol::{CallError, CallHead, Reserved};
use switchyard_core::{CallEnd, CallId, Event, RetryRefusal};
use tokio::sync::{oneshot, watch};

use super::Scheduler;
use crate::fleet::Node;
use crate::policies::Picked;
use crate::telemetry::scale::Hold;

/// A taken call slot and the pick that chose it, handed to a waiting call.
#[derive(Debug)]
pub(crate) struct Grant {
    /// The slot; dropping it frees the slot.
    pub guard: SlotGuard,
    /// The pick (policy name, version) that chose the node.
    pub picked: Picked,
}

/// What a waiting call sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WaitState {
    /// Waiting at this position (1 = next; 0 before the first update).
    Queued(u32),
    /// Held for a node that is loading the service.
    Reserved(Reserved),
}

/// The waiting call's end: the grant when it comes, and its position.
#[derive(Debug)]
pub(crate) struct WaitHandle {
    /// Receives the slot when the call's turn comes, or why it cannot have
    /// one (unknown service, queue full, the policy refused it).
    pub grant: oneshot::Receiver<Result<Grant, CallError>>,
    /// Position updates and the reservation notice.
    pub state: watch::Receiver<WaitState>,
}

/// A call's place until it gets its grant; dropping it before takes the
/// call out of the queue (or its reservation).
pub(crate) struct Ticket {
    pub(super) scheduler: Arc<Scheduler>,
    pub(super) call: CallId,
    pub(super) done: bool,
    /// The grant and position updates.
    pub handle: WaitHandle,
}

/// A taken call slot on a node; [`SlotGuard::finish`] or dropping it frees
/// the slot.
pub(crate) struct SlotGuard {
    pub(super) scheduler: Arc<Scheduler>,
    pub(super) node: Arc<Node>,
    pub(super) call: CallId,
    pub(super) service: String,
    pub(super) ended: bool,
    /// Counts the slot as running until the guard is dropped.
    pub(super) _hold: Hold,
}

/// A waiting call's channels, until its grant or refusal is sent.
pub(super) struct Waiting {
    pub(super) grant: oneshot::Sender<Result<Grant, CallError>>,
    pub(super) state: watch::Sender<WaitState>,
    pub(super) tenant: Arc<str>,
    pub(super) service: String,
    /// The latest pick for it: which policy version ranked its nodes.
    pub(super) picked: Option<Picked>,
    /// The core's answer to the retry asked for it.
    pub(super) retry: Option<Result<(u32, Duration), RetryRefusal>>,
}

/// Why a dispatched call may run again, for [`SlotGuard::retry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Again {
    /// It failed on its node (`[retry] retry_on`, an idempotent service).
    Failed,
    /// Its node reports it never ran (`CallError::not_run`).
    NotRun,
    /// Its node refused it for running its `max_concurrent` calls (other
    /// gateways' included): it never ran.
    NodeFull,
}

/// A retry the core granted: the call's new ticket, its attempt number and
/// the backoff to wait before [`Scheduler::retry_due`].
pub(crate) struct Retry {
    /// Receives the retry's grant once its backoff is over.
    pub ticket: Ticket,
    /// The attempt it will be (2 for the first retry).
    pub attempt: u32,
    /// How long to wait first.
    pub backoff: Duration,
}

impl Ticket {
    /// The call got its grant (or refusal): dropping the ticket no longer
    /// takes it out.
    pub(crate) fn granted(&mut self) {
        self.done = true;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.scheduler.waiting().remove(&self.call);
        self.scheduler.handle(Event::CallLeft { call: self.call });
    }
}

impl std::fmt::Debug for SlotGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotGuard")
            .field("node", &self.node.spec.id)
            .field("call", &self.call)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl SlotGuard {
    /// The node the slot is on.
    pub(crate) fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// The service the slot belongs to.
    pub(crate) fn service(&self) -> &str {
        &self.service
    }

    /// Frees the slot of a call that ended after `node_ms` of node time;
    /// `Ok` calls feed the node's latency EWMA, `Failed` ones count towards
    /// its outlier ejection.
    pub(crate) fn finish(mut self, node_ms: f32, end: CallEnd) {
        self.end(node_ms, end);
    }

    /// The stream to the node could not be opened (nothing reached it):
    /// frees the slot and sends the call to another node; the returned
    /// ticket receives the new grant.
    pub(crate) fn dispatch_failed(mut self, head: &CallHead, tenant: &Arc<str>) -> Ticket {
        self.ended = true;
        let ticket = self
            .scheduler
            .register(self.call, &head.service, tenant.clone());
        self.scheduler
            .handle(Event::DispatchFailed { call: self.call });
        ticket
    }

    /// The call failed on the node and may run again elsewhere (the caller
    /// checked that it is idempotent and its error retryable, or that the
    /// call never ran (`not_run`), and that its deadline is not passed):
    /// frees the slot, counting the failure against the node, and asks the
    /// core for a retry (`jitter` in `0.0..1.0` draws the backoff; a call
    /// that never ran is refused only past its attempts). A call the node
    /// refused for being full ([`Again::NodeFull`]) counts against nothing
    /// and is never refused: it waits for a node with room.
    ///
    /// # Errors
    /// Why the core refused the retry (attempts, budget, breaker); the core
    /// has forgotten the call.
    pub(crate) fn retry(
        mut self,
        head: &CallHead,
        tenant: &Arc<str>,
        jitter: f32,
        why: Again,
    ) -> Result<Retry, RetryRefusal> {
        self.ended = true;
        let mut ticket = self
            .scheduler
            .register(self.call, &head.service, tenant.clone());
        let call = self.call;
        self.scheduler.handle(match why {
            Again::Failed => Event::RetryAsked { call, jitter },
            Again::NotRun => Event::NotRun { call, jitter },
            Again::NodeFull => Event::NodeFull { call, jitter },
        });
        let verdict = self
            .scheduler
            .waiting()
            .get_mut(&self.call)
            .and_then(|w| w.retry.take());
        match verdict {
            Some(Ok((attempt, backoff))) => Ok(Retry {
                ticket,
                attempt,
                backoff,
            }),
            refused => {
                // The core forgot the call: the ticket has nothing to leave.
                self.scheduler.waiting().remove(&self.call);
                ticket.granted();
                Err(refused
                    .and_then(Result::err)
                    .unwrap_or(RetryRefusal::Attempts))
            }
        }
    }

    fn end(&mut self, node_ms: f32, end: CallEnd) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        self.scheduler.handle(Event::CallFinished {
            call: self.call,
            node_ms,
            end,
        });
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.end(0.0, CallEnd::Abandoned);
    }
}
