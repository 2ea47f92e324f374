//! Exponential reconnect backoff with jitter, its randomness injected (the
//! agent's `[reconnect]`); the type lives in `transport`, shared with the
//! gateway's link to its parent.

pub use transport::Backoff;
