//! The job store (placeholder until the store lands).

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// The database answered with an error.
    #[error("job store: {0}")]
    Db(String),
}
