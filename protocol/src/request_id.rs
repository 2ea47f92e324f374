//! Request ids: the text that names one call in every log line, answer and
//! record about it (HTTP `x-request-id`, [`crate::CallHead::request_id`],
//! [`crate::DispatchHead::request_id`], [`crate::ResultHead::request_id`],
//! [`crate::CallError::request_id`]).
//!
//! A caller's id is taken when it is 1 to [`MAX_LEN`] bytes of visible
//! ASCII (no space, no control character); anything else is replaced by a
//! new one, made up by [`generate`] from a random number.

/// Longest request id, bytes.
pub const MAX_LEN: usize = 128;

/// Whether `id` can be used as a request id as it is: 1 to [`MAX_LEN`]
/// bytes, each visible ASCII (`!` to `~`).
pub fn is_valid(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

/// A new request id from 128 random bits: 32 lowercase hex digits (the
/// caller supplies the randomness; this crate has no source of its own).
pub fn generate(random: u128) -> String {
    format!("{random:032x}")
}

/// The caller's id when it [`is_valid`], else a new one from `random`.
pub fn or_generate(caller: Option<&str>, random: impl FnOnce() -> u128) -> String {
    match caller {
        Some(id) if is_valid(id) => id.to_string(),
        _ => generate(random()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids_are_kept_and_others_replaced() {
        assert!(is_valid("req-1"));
        assert!(is_valid(&"a".repeat(MAX_LEN)));
        for bad in ["", "with space", "tab\there", "é", &"a".repeat(MAX_LEN + 1)] {
            assert!(!is_valid(bad), "{bad:?}");
            assert_eq!(or_generate(Some(bad), || 7), format!("{:032x}", 7));
        }
        assert_eq!(or_generate(Some("req-1"), || unreachable!()), "req-1");
        let made = or_generate(None, || u128::MAX);
        assert_eq!(made.len(), 32);
        assert!(is_valid(&made));
    }
}
