//! A call's spans (`[tracing]`): `call` (the whole call, a server span,
//! the child of the caller's `traceparent` when it sent one), and its
//! children `admission` (tenant and head checks), `queue wait` (from ready
//! to the grant), `pick` (the policy's run, with the policy and its
//! reason), `dispatch` (a client span from opening the node's stream to
//! its answer head; its context goes to the agent in the dispatch) and
//! `relay` (the result, from its head to its end). A retried call has one
//! `queue wait`, `pick` and `dispatch` per attempt.
//!
//! Spans are made with explicit times from the call's own `Instant`s, so
//! only the root and the two open spans live across awaits. With tracing
//! off, every method returns at once.

use std::time::{Instant, SystemTime};

use otel::{KeyValue, Kind, Parent, Span, Tracer};
use protocol::CallHead;

use super::Failure;
use crate::policies::Picked;

/// The spans of one call, or nothing when tracing is off.
#[derive(Debug, Default)]
pub(super) struct CallTrace {
    on: Option<On>,
}

#[derive(Debug)]
struct On {
    tracer: Tracer,
    root: Span,
    parent: Parent,
    /// One instant read on both clocks: `Instant`s become wall times.
    base: (Instant, SystemTime),
}

impl CallTrace {
    /// Starts call `call_id`'s root span at `arrived` and records its
    /// admission (from `arrived` to now), under the caller's
    /// `traceparent`.
    pub(super) fn start(
        tracer: &Tracer,
        head: &CallHead,
        call_id: u64,
        tenant: &str,
        arrived: Instant,
    ) -> Self {
        if !tracer.is_on() {
            return Self::default();
        }
        let base = (Instant::now(), SystemTime::now());
        let caller = Parent::from_traceparent(head.traceparent.as_deref());
        let start = wall(base, arrived);
        let root = tracer.span("call", Kind::Server, &caller, start, || {
            let mut attributes = vec![
                KeyValue::new("switchyard.service", head.service.clone()),
                KeyValue::new("switchyard.call_id", call_id.to_string()),
                KeyValue::new("switchyard.tenant", tenant.to_string()),
            ];
            if let Some(id) = &head.request_id {
                attributes.push(KeyValue::new("switchyard.request_id", id.clone()));
            }
            attributes
        });
        let parent = root.parent();
        tracer.record("admission", &parent, start, base.1, Vec::new);
        Self {
            on: Some(On {
                tracer: tracer.clone(),
                root,
                parent,
                base,
            }),
        }
    }

    /// Records the wait from `from` to its grant now (`queue wait`), and
    /// the pick that granted it (`pick`: when the policy ran, its name and
    /// reason).
    pub(super) fn granted(&self, from: Instant, picked: &Picked) {
        let Some(on) = &self.on else { return };
        let now = Instant::now();
        on.tracer.record(
            "queue wait",
            &on.parent,
            wall(on.base, from),
            wall(on.base, now),
            Vec::new,
        );
        let (start, end) = match picked.ran {
            Some((started, took)) => (started, started + took),
            None => (now, now),
        };
        on.tracer.record(
            "pick",
            &on.parent,
            wall(on.base, start),
            wall(on.base, end),
            || {
                let mut attributes = vec![KeyValue::new(
                    "switchyard.policy",
                    picked.policy_name.clone(),
                )];
                if let Some(explanation) = &picked.explanation {
                    attributes.push(KeyValue::new(
                        "switchyard.pick.reason",
                        explanation.reason.clone(),
                    ));
                }
                attributes
            },
        );
    }

    /// Starts the `dispatch` span of an attempt on `node`, opened at `at`;
    /// its `traceparent` goes to the agent.
    pub(super) fn dispatch(&self, node: &str, at: Instant) -> Span {
        let Some(on) = &self.on else {
            return Span::none();
        };
        on.tracer.span(
            "dispatch",
            Kind::Client,
            &on.parent,
            wall(on.base, at),
            || vec![KeyValue::new("switchyard.node", node.to_string())],
        )
    }

    /// Starts the `relay` span of the result, now.
    pub(super) fn relay(&self) -> Span {
        let Some(on) = &self.on else {
            return Span::none();
        };
        on.tracer.span(
            "relay",
            Kind::Internal,
            &on.parent,
            SystemTime::now(),
            Vec::new,
        )
    }

    /// Ends the call's span, failed unless `result` is `Ok`.
    pub(super) fn end(self, result: &Result<(), Failure>) {
        let Some(mut on) = self.on else { return };
        match result {
            Ok(()) => {}
            Err(Failure::Reply(e)) => on.root.fail(format!("{}: {}", e.kind, e.message)),
            Err(Failure::Cut(_, why)) => on.root.fail(why.clone()),
            Err(Failure::Gone) => on.root.fail("the caller left"),
        }
        on.root.end();
    }
}

/// `at` on the wall clock, by the `base` pair.
fn wall(base: (Instant, SystemTime), at: Instant) -> SystemTime {
    match at.checked_duration_since(base.0) {
        Some(after) => base.1 + after,
        None => base.1 - base.0.duration_since(at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn instants_map_to_the_wall_clock_both_ways() {
        let base = (
            Instant::now(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(100),
        );
        assert_eq!(
            wall(base, base.0 + Duration::from_millis(5)),
            base.1 + Duration::from_millis(5)
        );
        if let Some(before) = base.0.checked_sub(Duration::from_millis(7)) {
            assert_eq!(wall(base, before), base.1 - Duration::from_millis(7));
        }
    }

    #[test]
    fn tracing_off_makes_no_spans() {
        let trace = CallTrace::start(
            &Tracer::off(),
            &CallHead::new("echo", 0, 1000),
            1,
            "t",
            Instant::now(),
        );
        assert!(trace.on.is_none());
        assert!(trace.dispatch("n", Instant::now()).traceparent().is_none());
        assert!(trace.relay().traceparent().is_none());
    }
}
