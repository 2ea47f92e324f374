//! Hostile test policy `panic-trap`: a valid `policy` world that panics in
//! `pick` when the request carries the hint `evil=1` (with `panic = "abort"`
//! the panic ends in an `unreachable` trap). It counts the picks it served in
//! instance state, and answers `reject("picks=N")` to the hint `report=1`, so
//! a test can see the count start over after the host rebuilt the instance.
//! Any other pick routes to candidate 0.
//!
//! Built by `make plugins-test-wasm` into `plugins/dist-test/panic-trap.wasm`;
//! `policy-host/tests/plugins/sandbox_plugins.rs` drives it.

/// The policy name the plugin reports through the `name` export.
pub const NAME: &str = "panic-trap";

/// The value of hint `key`, if the request carries it.
#[must_use]
pub fn hint<'a>(hints: &'a [(String, String)], key: &str) -> Option<&'a str> {
    hints
        .iter()
        .find_map(|(k, v)| (k == key).then_some(v.as_str()))
}

/// The answer to a `report=1` pick: how many picks came before it.
#[must_use]
pub fn report(picks_before: u64) -> String {
    format!("picks={picks_before}")
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code, missing_docs, clippy::too_many_arguments)] // generated glue
mod component {
    use std::sync::atomic::{AtomicU64, Ordering};

    wit_bindgen::generate!({ path: "../../../wit", world: "policy" });

    /// Picks served by this instance (reset only by a new instance).
    static PICKS: AtomicU64 = AtomicU64::new(0);

    struct Component;

    impl Guest for Component {
        fn name() -> String {
            crate::NAME.to_owned()
        }

        fn pick(req: Request, _candidates: Candidates) -> Decision {
            let before = PICKS.fetch_add(1, Ordering::Relaxed);
            if crate::hint(&req.hints, "evil") == Some("1") {
                panic!("panic-trap: asked to panic after {before} picks");
            }
            if crate::hint(&req.hints, "report") == Some("1") {
                return Decision::Reject(crate::report(before));
            }
            Decision::Route(0)
        }

        fn observe(_outcome: Outcome) {}
    }

    export!(Component);
}

#[cfg(test)]
mod tests {
    use super::{hint, report};

    #[test]
    fn hints_and_report() {
        let hints = vec![
            ("evil".to_owned(), "1".to_owned()),
            ("report".to_owned(), "0".to_owned()),
        ];
        assert_eq!(hint(&hints, "evil"), Some("1"));
        assert_eq!(hint(&hints, "report"), Some("0"));
        assert_eq!(hint(&hints, "missing"), None);
        assert_eq!(report(3), "picks=3");
    }
}
