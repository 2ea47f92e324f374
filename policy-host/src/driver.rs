//! Runs guest calls to completion on the caller's thread, without blocking.
//!
//! Guest calls are wasmtime async calls (on a fiber) with WASI's async host
//! implementation. A policy has no capability to wait on (no files, sockets
//! or stdin; its stdout and stderr never block), so a well-behaved call
//! completes within one poll. A guest that waits on something (a sleep, a
//! `poll` on a clock) leaves the future pending: it is dropped, which cancels
//! the call, and the caller reports a trap.
//!
//! Why not sync WASI: its blocking host functions (even a stdout flush or a
//! stream drop) `block_on` a Tokio runtime, which panics on a Tokio worker
//! thread, and a guest sleep would block the caller past any deadline.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use crate::PolicyError;
use crate::engine::Ticker;

/// Why a call did not complete.
#[derive(Debug)]
pub(crate) struct Blocked;

/// The runtime context guest calls are polled in.
pub(crate) struct Driver {
    /// A current-thread runtime (no thread of its own) whose handle is entered
    /// while polling when the caller is outside any Tokio runtime, so that
    /// WASI timers can be created. Never driven.
    timers: Option<tokio::runtime::Runtime>,
    /// The epoch ticker, kept ticking while a guest call is polled (guest
    /// deadlines count its ticks).
    ticker: Arc<Ticker>,
}

impl Driver {
    /// # Errors
    ///
    /// [`PolicyError::Io`] if the timer context cannot be built.
    pub(crate) fn new(ticker: Arc<Ticker>) -> Result<Self, PolicyError> {
        let timers = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        Ok(Self {
            timers: Some(timers),
            ticker,
        })
    }

    /// Polls `fut` until it completes, as long as each `Pending` was
    /// immediately followed by a wake-up (a cooperative yield); a `Pending`
    /// without a wake-up means the guest waits on something, so `fut` is
    /// dropped and `Blocked` returned.
    pub(crate) fn run<F: Future>(&self, fut: F) -> Result<F::Output, Blocked> {
        let _context = match (tokio::runtime::Handle::try_current(), &self.timers) {
            (Err(_), Some(timers)) => Some(timers.enter()),
            _ => None,
        };
        let _ticking = self.ticker.running();
        let flag = Arc::new(WakeFlag(AtomicBool::new(false)));
        let waker = Waker::from(Arc::clone(&flag));
        let mut cx = Context::from_waker(&waker);
        let mut fut = pin!(fut);
        loop {
            flag.0.store(false, Ordering::Relaxed);
            match fut.as_mut().poll(&mut cx) {
                Poll::Ready(out) => return Ok(out),
                Poll::Pending if flag.0.load(Ordering::Relaxed) => {}
                Poll::Pending => return Err(Blocked),
            }
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Dropping a runtime inside another one panics; this never blocks.
        if let Some(timers) = self.timers.take() {
            timers.shutdown_background();
        }
    }
}

/// A waker that only records that it was woken.
struct WakeFlag(AtomicBool);

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::Driver;

    #[test]
    fn completes_ready_and_yielding_futures() -> Result<(), crate::PolicyError> {
        let driver = Driver::new(std::sync::Arc::new(crate::engine::Ticker::none()))?;
        assert_eq!(driver.run(async { 7 }).ok(), Some(7));
        let yielding = async {
            tokio::task::yield_now().await;
            8
        };
        assert_eq!(driver.run(yielding).ok(), Some(8));
        // Created while polling, so it needs the driver's timer context.
        let sleeping = async { tokio::time::sleep(std::time::Duration::from_secs(3600)).await };
        assert!(driver.run(sleeping).is_err());
        assert!(driver.run(std::future::pending::<()>()).is_err());
        Ok(())
    }
}
