//! Graceful shutdown: once the gateway is told to stop it answers new calls
//! `shutting down` (retry-safe: they never reach a node) and counts down
//! the calls in flight, which finish within `shutdown_grace_s`; then the
//! connections close with [`protocol::codes::close::SHUTDOWN`], which the SDK takes as
//! "fail over now" (as HTTP/2's GOAWAY and Envoy's drain: stop taking new
//! work, finish what is under way, then close).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use protocol::{CallError, ErrorKind};
use tokio::sync::Notify;

/// Whether the gateway is shutting down, and its calls in flight.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    stopping: AtomicBool,
    in_flight: AtomicUsize,
    /// Woken when the last call in flight ends.
    idle: Notify,
}

/// One call in flight; the count drops with it.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Drain>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Drain {
    /// Counts a new call in flight, or refuses it with `shutting down` once
    /// the gateway stops.
    ///
    /// # Errors
    /// A retry-safe [`ErrorKind::ShuttingDown`] error when shutting down.
    pub(crate) fn enter(self: &Arc<Self>) -> Result<InFlight, CallError> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight(Arc::clone(self));
        if self.stopping.load(Ordering::Acquire) {
            return Err(shutting_down());
        }
        Ok(guard)
    }

    /// Whether the gateway stopped taking calls and agents.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Calls in flight now.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Stops taking calls, then waits until those in flight end or `grace`
    /// passes; returns how many were still in flight then.
    pub(crate) async fn stop(&self, grace: Duration) -> usize {
        self.stopping.store(true, Ordering::Release);
        let wait = async {
            loop {
                let idle = self.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                if self.in_flight() == 0 {
                    return;
                }
                idle.await;
            }
        };
        let _ = tokio::time::timeout(grace, wait).await;
        self.in_flight()
    }
}

/// The answer to a call that arrives while the gateway shuts down.
pub(crate) fn shutting_down() -> CallError {
    CallError::new(
        ErrorKind::ShuttingDown,
        "the gateway is shutting down; call another gateway (nothing ran)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_refuses_new_calls_and_waits_for_those_in_flight() {
        let drain = Arc::new(Drain::default());
        let call = drain.enter().expect("taken before the stop");
        let stopping = {
            let drain = Arc::clone(&drain);
            tokio::spawn(async move { drain.stop(Duration::from_secs(30)).await })
        };
        while !drain.is_stopping() {
            tokio::task::yield_now().await;
        }
        let refused = drain.enter().expect_err("refused after the stop");
        assert_eq!(refused.kind, ErrorKind::ShuttingDown);
        assert!(refused.kind.retry_safe());
        assert!(!stopping.is_finished());
        drop(call);
        assert_eq!(stopping.await.expect("stop ends"), 0);
    }

    #[tokio::test]
    async fn stop_gives_up_after_the_grace() {
        let drain = Arc::new(Drain::default());
        let _call = drain.enter().expect("taken");
        assert_eq!(drain.stop(Duration::from_millis(20)).await, 1);
    }
}

#[cfg(test)]
mod config_tests {
    use crate::GatewayConfig;

    #[test]
    fn the_grace_is_configurable_and_30_s_by_default() {
        assert_eq!(GatewayConfig::default().shutdown_grace_s, 30);
        let config = GatewayConfig::from_toml_str("shutdown_grace_s = 5").expect("parses");
        assert_eq!(config.shutdown_grace_s, 5);
    }
}
