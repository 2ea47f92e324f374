//! The `lookaside` section's targets: calls on leases (a fresh lease per
//! call, or leases of several calls pooled and reused by the callers) and
//! streamed calls read to their end, proxied or look-aside.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::{CallOptions, CallStream, Client, ClientError, Lease};
use futures_util::StreamExt as _;
use hdrhistogram::Histogram;
use loadgen::CallFailure;

/// A look-aside target of the section.
#[derive(Debug)]
pub enum LookAside {
    /// Calls on leases.
    Leases(Box<LeasePool>),
    /// Streamed calls read to their end.
    Streams(StreamTarget),
}

impl LookAside {
    /// One call.
    ///
    /// # Errors
    /// The lease or the call failed: its error's kind.
    pub async fn call(&self) -> Result<(), CallFailure> {
        match self {
            Self::Leases(t) => t.call().await,
            Self::Streams(t) => t.call().await,
        }
    }

    /// Forgets what was recorded so far (before a measured run).
    pub fn reset(&self) {
        match self {
            Self::Leases(t) => t.reset(),
            Self::Streams(t) => t.reset(),
        }
    }
}

/// The kind a failed lease or call counts as: the typed error's name with
/// dashes (`lease-ended`, `unauthorized`), else what failed.
pub fn failure(e: &ClientError) -> CallFailure {
    let kind = match (e.kind(), e) {
        (Some(kind), _) => kind.as_str().replace(' ', "-"),
        (None, ClientError::Connect(_)) => "connect".into(),
        (None, ClientError::Timeout { .. }) => "timeout".into(),
        (None, _) => "other".into(),
    };
    CallFailure::new(kind)
}

/// A lease held by the pool: how many of its calls are left and when it
/// was granted.
#[derive(Debug)]
struct Held {
    lease: Lease,
    left: u32,
    granted: Instant,
}

/// Calls `service` on leases of `max_calls` calls each. A caller takes an
/// idle lease of the pool (or leases a new one), makes one direct call on
/// it and puts it back while calls are left, so at most one call runs on a
/// lease at a time (a lease holds one slot) and there are never more leases
/// than callers. A lease older than half its ttl is released rather than
/// used. The direct calls' own latency (after the lease) is recorded apart,
/// and that of each lease's first call alone.
#[derive(Debug)]
pub struct LeasePool {
    client: Client,
    service: String,
    payload: Bytes,
    options: CallOptions,
    max_calls: u32,
    ttl: Duration,
    idle: Mutex<Vec<Held>>,
    /// Whether each direct call follows a proxied call of the same
    /// service (untimed): the control for the direct call after a grant.
    after_proxied: bool,
    direct_us: Mutex<Histogram<u64>>,
    first_us: Mutex<Histogram<u64>>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

impl LeasePool {
    /// A pool calling `service` with `payload` on leases of `max_calls`
    /// calls (at least 1) lasting `ttl`.
    pub fn new(
        client: Client,
        service: &str,
        payload: Bytes,
        max_calls: u32,
        ttl: Duration,
    ) -> Self {
        Self {
            client,
            service: service.to_string(),
            payload,
            options: CallOptions::default(),
            max_calls: max_calls.max(1),
            ttl,
            idle: Mutex::new(Vec::new()),
            after_proxied: false,
            direct_us: Mutex::new(histogram()),
            first_us: Mutex::new(histogram()),
        }
    }

    /// As [`LeasePool::new`], each direct call right after a proxied call
    /// of the same service, which is not timed: the gateway, an agent and
    /// a backend have just worked, as after a grant, but no lease was
    /// taken.
    #[must_use]
    pub fn after_proxied(mut self) -> Self {
        self.after_proxied = true;
        self
    }

    /// An idle lease young enough, or a new one.
    async fn take(&self) -> Result<Held, ClientError> {
        loop {
            let popped = self.idle.lock().expect("pool lock").pop();
            match popped {
                Some(held) if held.granted.elapsed() < self.ttl / 2 => return Ok(held),
                Some(old) => release(old.lease),
                None => break,
            }
        }
        let lease = self
            .client
            .lease(&self.service)
            .options(self.options.clone())
            .max_calls(self.max_calls)
            .ttl(self.ttl)
            .await?;
        Ok(Held {
            lease,
            left: self.max_calls,
            granted: Instant::now(),
        })
    }

    /// One direct call, on a lease of the pool or a new one.
    ///
    /// # Errors
    /// The lease or the call failed.
    pub async fn call(&self) -> Result<(), CallFailure> {
        let mut held = self.take().await.map_err(|e| failure(&e))?;
        if self.after_proxied {
            let proxied = self.client.call(&self.service, self.payload.clone());
            if let Err(e) = proxied.options(self.options.clone()).await {
                self.idle.lock().expect("pool lock").push(held);
                return Err(failure(&e));
            }
        }
        let first = held.left == self.max_calls;
        let start = Instant::now();
        let result = held.lease.call(self.payload.clone()).await;
        held.left -= 1;
        match &result {
            Ok(_) => {
                let us = start.elapsed().as_micros().max(1) as u64;
                let _ = self.direct_us.lock().expect("histogram lock").record(us);
                if first {
                    let _ = self.first_us.lock().expect("histogram lock").record(us);
                }
                if held.left > 0 {
                    self.idle.lock().expect("pool lock").push(held);
                }
            }
            Err(_) if held.left > 0 => release(held.lease),
            Err(_) => {}
        }
        result.map(drop).map_err(|e| failure(&e))
    }

    /// Forgets the direct calls' latencies recorded so far.
    pub fn reset(&self) {
        self.direct_us.lock().expect("histogram lock").reset();
        self.first_us.lock().expect("histogram lock").reset();
    }

    /// The recorded direct calls' latency at `quantile` (0.5: the p50), µs;
    /// `None` before any.
    pub fn direct_quantile_us(&self, quantile: f64) -> Option<f64> {
        quantile_of(&self.direct_us, quantile)
    }

    /// The same of the first call on each lease alone.
    pub fn first_quantile_us(&self, quantile: f64) -> Option<f64> {
        quantile_of(&self.first_us, quantile)
    }

    /// Releases every idle lease (their slots free at once).
    pub async fn release_all(&self) {
        let held: Vec<Held> = std::mem::take(&mut *self.idle.lock().expect("pool lock"));
        for h in held {
            let _ = h.lease.release().await;
        }
    }
}

fn quantile_of(h: &Mutex<Histogram<u64>>, quantile: f64) -> Option<f64> {
    let h = h.lock().expect("histogram lock");
    (!h.is_empty()).then(|| h.value_at_quantile(quantile) as f64)
}

/// Releases `lease` in the background (its slot frees without waiting for
/// its ttl); a failure only means it had ended already.
fn release(lease: Lease) {
    tokio::spawn(async move {
        let _ = lease.release().await;
    });
}

/// How a streamed call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Through the gateway.
    Proxied,
    /// A lease of one call, then the call straight to the node.
    LookAside,
}

/// Calls `service` with `payload` as a stream and reads every chunk; counts
/// the chunks.
#[derive(Debug)]
pub struct StreamTarget {
    client: Client,
    service: String,
    payload: Bytes,
    route: Route,
    calls: AtomicU64,
    chunks: AtomicU64,
}

impl StreamTarget {
    /// A target streaming `service`'s answers to `payload` by `route`.
    pub fn new(client: Client, service: &str, payload: Bytes, route: Route) -> Self {
        Self {
            client,
            service: service.to_string(),
            payload,
            route,
            calls: AtomicU64::new(0),
            chunks: AtomicU64::new(0),
        }
    }

    async fn open(&self) -> Result<CallStream, ClientError> {
        match self.route {
            Route::Proxied => {
                self.client
                    .call(&self.service, self.payload.clone())
                    .stream()
                    .await
            }
            Route::LookAside => {
                let lease = self.client.lease(&self.service).await?;
                lease.call(self.payload.clone()).stream().await
            }
        }
    }

    /// One streamed call, read to its end.
    ///
    /// # Errors
    /// The lease, the call or a chunk failed.
    pub async fn call(&self) -> Result<(), CallFailure> {
        let mut stream = self.open().await.map_err(|e| failure(&e))?;
        let mut chunks = 0;
        while let Some(chunk) = stream.next().await {
            chunk.map_err(|e| failure(&e))?;
            chunks += 1;
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.chunks.fetch_add(chunks, Ordering::Relaxed);
        Ok(())
    }

    /// Forgets the counts so far.
    pub fn reset(&self) {
        self.calls.store(0, Ordering::Relaxed);
        self.chunks.store(0, Ordering::Relaxed);
    }

    /// Chunks per completed stream since the last reset (`None` before any).
    pub fn chunks_per_call(&self) -> Option<f64> {
        let calls = self.calls.load(Ordering::Relaxed);
        (calls > 0).then(|| self.chunks.load(Ordering::Relaxed) as f64 / calls as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::ErrorKind;

    #[test]
    fn failures_count_by_the_typed_kind_or_what_failed() {
        let typed = |kind| ClientError::Call {
            kind,
            message: String::new(),
            node_id: None,
            request_id: None,
        };
        assert_eq!(failure(&typed(ErrorKind::LeaseEnded)).kind, "lease-ended");
        assert_eq!(
            failure(&typed(ErrorKind::Unauthorized)).kind,
            "unauthorized"
        );
        assert_eq!(failure(&ClientError::Connect("x".into())).kind, "connect");
    }
}
