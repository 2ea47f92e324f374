//! The option setters [`crate::Call`] and [`crate::LeaseBuilder`] share:
//! each changes one field of the builder's `options` ([`crate::CallOptions`])
//! the same way, so both builders take hints, a policy, a priority, the
//! realtime flag, a trace context and a listener for queue events alike.

/// Writes the shared setters into an `impl<'a> Builder<'a>` whose type has
/// the fields `options: CallOptions` and `on_event: Box<dyn FnMut(CallEvent)
/// + Send + 'a>`.
macro_rules! admission_setters {
    () => {
        /// Adds a hint for the policy ([`CallOptions::hints`]).
        pub fn hint(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
            self.options.hints.push((key.into(), value.into()));
            self
        }

        /// Names the policy that picks the node, overriding the service's
        /// ([`CallOptions::policy`]).
        pub fn policy(mut self, name: impl Into<String>) -> Self {
            self.options.policy = Some(name.into());
            self
        }

        /// Sets the queue priority, higher first ([`CallOptions::priority`];
        /// default 0).
        pub fn priority(mut self, priority: i32) -> Self {
            self.options.priority = priority;
            self
        }

        /// Never waits in the queue: with every node busy it fails at once
        /// with `occupied` ([`CallOptions::realtime`]).
        pub fn realtime(mut self, realtime: bool) -> Self {
            self.options.realtime = realtime;
            self
        }

        /// Carries the caller's W3C trace context (`traceparent`), so that
        /// the spans join the caller's trace ([`CallOptions::traceparent`]).
        pub fn traceparent(mut self, traceparent: impl Into<String>) -> Self {
            self.options.traceparent = Some(traceparent.into());
            self
        }

        /// Tells `on_event` where the request stands while it waits for a
        /// node: its queue position each time it changes, and a reservation
        /// when a node loads the service for it. Called on the task that
        /// awaits it.
        pub fn on_event(mut self, on_event: impl FnMut(CallEvent) + Send + 'a) -> Self {
            self.on_event = Box::new(on_event);
            self
        }
    };
}

pub(crate) use admission_setters;
