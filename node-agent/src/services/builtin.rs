//! Built-in services for demos and tests: `sleep` and `sum-up` (`echo` needs
//! no code).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::ServiceError;

/// Largest N `sum-up` accepts.
pub(crate) const SUM_UP_MAX: u64 = 1_000_000_000_000;

/// Numbers summed between two checks of the cancel flag and deadline
/// (a few milliseconds of work).
const SUM_CHUNK: u64 = 1 << 22;

/// Parses a payload of decimal text (surrounding whitespace allowed).
fn decimal(payload: &[u8]) -> Option<u64> {
    std::str::from_utf8(payload).ok()?.trim().parse().ok()
}

/// `sleep`: payload is milliseconds as decimal text.
pub(crate) async fn sleep(payload: Bytes) -> Result<Bytes, ServiceError> {
    let ms = decimal(&payload)
        .ok_or_else(|| ServiceError::failed("sleep expects milliseconds as decimal text"))?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(Bytes::from(format!("slept {ms} ms")))
}

/// Sets the flag when dropped: a dropped call stops its blocking work.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// `sum-up`: payload is N as decimal text; sums 1..=N on a blocking thread,
/// stopping at `timeout` or when the call is dropped.
pub(crate) async fn sum_up(payload: Bytes, timeout: Duration) -> Result<Bytes, ServiceError> {
    let n = decimal(&payload)
        .filter(|n| *n <= SUM_UP_MAX)
        .ok_or_else(|| {
            ServiceError::failed(format!(
                "sum-up expects an integer 0..={SUM_UP_MAX} as decimal text"
            ))
        })?;
    let cancel = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(Arc::clone(&cancel));
    let deadline = Instant::now().checked_add(timeout);
    let sum = tokio::task::spawn_blocking(move || sum_to(n, &cancel, deadline))
        .await
        .map_err(|e| ServiceError::internal(format!("sum-up worker failed: {e}")))?;
    match sum {
        Some(sum) => Ok(Bytes::from(sum.to_string())),
        None => Err(ServiceError::timeout(timeout)),
    }
}

/// Sums 1..=n one number at a time; `None` when `cancel` is set or the
/// deadline passes first.
pub(crate) fn sum_to(n: u64, cancel: &AtomicBool, deadline: Option<Instant>) -> Option<u128> {
    let mut total: u128 = 0;
    let mut start = 1;
    while start <= n {
        if cancel.load(Ordering::Acquire) || deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        let end = n.min(start.saturating_add(SUM_CHUNK - 1));
        // A chunk's sum fits in u64: at most 2^22 numbers of at most 10^12.
        let mut chunk: u64 = 0;
        for i in start..=end {
            // black_box keeps the optimizer from replacing the loop with
            // n(n+1)/2: the point is real CPU work.
            chunk = std::hint::black_box(chunk.wrapping_add(i));
        }
        total += u128::from(chunk);
        start = end.saturating_add(1);
        if end == u64::MAX {
            break;
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_small_numbers() {
        let flag = AtomicBool::new(false);
        assert_eq!(sum_to(0, &flag, None), Some(0));
        assert_eq!(sum_to(100, &flag, None), Some(5050));
        let n = 3 * SUM_CHUNK + 17;
        let expected = u128::from(n) * u128::from(n + 1) / 2;
        assert_eq!(sum_to(n, &flag, None), Some(expected));
    }

    #[test]
    fn cancel_and_deadline_stop_the_work() {
        let flag = AtomicBool::new(true);
        assert_eq!(sum_to(SUM_UP_MAX, &flag, None), None);
        let flag = AtomicBool::new(false);
        let started = Instant::now();
        let deadline = started + Duration::from_millis(50);
        assert_eq!(sum_to(SUM_UP_MAX, &flag, Some(deadline)), None);
        assert!(started.elapsed() < Duration::from_millis(1000));
    }

    #[tokio::test]
    async fn parses_payloads() {
        let slept = sleep(Bytes::from_static(b" 5\n")).await.expect("sleep");
        assert_eq!(slept, Bytes::from_static(b"slept 5 ms"));
        let err = sleep(Bytes::from_static(b"soon")).await.expect_err("bad");
        assert_eq!(err.kind, protocol::ErrorKind::ServiceFailed);
        assert!(err.message.contains("sleep expects milliseconds"));
        let too_big = Bytes::from((SUM_UP_MAX + 1).to_string());
        let err = sum_up(too_big, Duration::from_secs(1))
            .await
            .expect_err("big");
        assert_eq!(err.kind, protocol::ErrorKind::ServiceFailed);
    }
}
