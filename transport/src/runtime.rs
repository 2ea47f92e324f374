//! The async runtime both programs run on, sized by their configuration.

/// Builds the tokio runtime for `worker_threads`: `None` or `Some(0)` is
/// tokio's multi-thread default (one worker per core), `Some(1)` a current-thread
/// runtime (every task on the calling thread: no hand-offs between threads,
/// the cheapest per call on a small or shared machine), `Some(n)` a
/// multi-thread runtime of `n` workers. Timers and IO are enabled.
///
/// # Errors
/// The runtime's own (threads or the IO driver could not be made).
pub fn build(worker_threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    match worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) if n > 1 => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    }
}

#[cfg(test)]
mod tests {
    use super::build;

    #[test]
    fn each_size_runs_tasks() -> std::io::Result<()> {
        for size in [None, Some(0), Some(1), Some(2)] {
            let runtime = build(size)?;
            let answer = runtime.block_on(async { tokio::spawn(async { 42 }).await });
            assert_eq!(answer.ok(), Some(42), "{size:?}");
            let flavor = runtime.handle().runtime_flavor();
            let single = size == Some(1);
            assert_eq!(
                flavor == tokio::runtime::RuntimeFlavor::CurrentThread,
                single
            );
        }
        Ok(())
    }
}
