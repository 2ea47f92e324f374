//! Hostile test policy `spin`: a valid `policy` world that loops forever in
//! `pick` when the request carries the hint `evil=1`, and otherwise routes to
//! candidate 0.
//!
//! Built by `make plugins-test-wasm` into `plugins/dist-test/spin.wasm` (never
//! `plugins/dist`); `policy-host/tests/plugins/sandbox_plugins.rs` checks that the
//! host's epoch deadline stops the loop and that the policy answers again.

/// The policy name the plugin reports through the `name` export.
pub const NAME: &str = "spin";

/// Whether the request hints ask for misbehaviour: a hint `evil=1`.
#[must_use]
pub fn is_evil(hints: &[(String, String)]) -> bool {
    hints.iter().any(|(k, v)| k == "evil" && v == "1")
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code, missing_docs, clippy::too_many_arguments)] // generated glue
mod component {
    use std::hint::black_box;

    wit_bindgen::generate!({ path: "../../../wit", world: "policy" });

    struct Component;

    impl Guest for Component {
        fn name() -> String {
            crate::NAME.to_owned()
        }

        fn pick(req: Request, _candidates: Candidates) -> Decision {
            if crate::is_evil(&req.hints) {
                // Spins forever; `black_box` keeps the loop body observable so
                // the optimiser cannot reason about it.
                let mut n = 0_u64;
                loop {
                    n = black_box(n.wrapping_add(1));
                    std::hint::spin_loop();
                }
            }
            Decision::Route(0)
        }

        fn observe(_outcome: Outcome) {}
    }

    export!(Component);
}

#[cfg(test)]
mod tests {
    use super::is_evil;

    #[test]
    fn only_evil_1_triggers() {
        let hint = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
        assert!(is_evil(&hint("evil", "1")));
        assert!(!is_evil(&hint("evil", "0")));
        assert!(!is_evil(&hint("other", "1")));
        assert!(!is_evil(&[]));
    }
}
