//! Hostile test policy `deep-recursion`: a valid `policy` world that, when the
//! request carries the hint `evil=1`, recurses without bound (not a tail
//! call, and through a function pointer hidden by `black_box`, so the
//! optimiser can neither turn it into a loop nor prove it endless);
//! otherwise it routes to candidate 0.
//!
//! Built by `make plugins-test-wasm` into
//! `plugins/dist-test/deep-recursion.wasm`; `policy-host/tests/plugins/sandbox_plugins.rs`
//! checks that the host's bounded WebAssembly stack stops it and that the
//! policy answers again.

/// The policy name the plugin reports through the `name` export.
pub const NAME: &str = "deep-recursion";

/// Whether the request hints ask for misbehaviour: a hint `evil=1`.
#[must_use]
pub fn is_evil(hints: &[(String, String)]) -> bool {
    hints.iter().any(|(k, v)| k == "evil" && v == "1")
}

/// Recurses until `depth` reaches `limit` (`u64::MAX` means never), then
/// unwinds; the result depends on every frame, so none can be elided.
///
/// Frames hold only scalars (no address is taken), so the recursion uses the
/// WebAssembly call stack, not the shadow stack in linear memory.
#[must_use]
pub fn recurse(depth: u64, limit: u64) -> u64 {
    if std::hint::black_box(depth) >= limit {
        return depth;
    }
    // An opaque function pointer: an indirect call cannot be turned into a loop.
    let next: fn(u64, u64) -> u64 = std::hint::black_box(recurse);
    next(depth + 1, limit).wrapping_mul(31).wrapping_add(depth)
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code, missing_docs, clippy::too_many_arguments)] // generated glue
mod component {
    wit_bindgen::generate!({ path: "../../../wit", world: "policy" });

    struct Component;

    impl Guest for Component {
        fn name() -> String {
            crate::NAME.to_owned()
        }

        fn pick(req: Request, _candidates: Candidates) -> Decision {
            if crate::is_evil(&req.hints) {
                let r = crate::recurse(0, u64::MAX);
                return Decision::Reject(format!("recursion ended: {r}"));
            }
            // A bounded recursion, to show the same code path is fine when shallow.
            std::hint::black_box(crate::recurse(0, 16));
            Decision::Route(0)
        }

        fn observe(_outcome: Outcome) {}
    }

    export!(Component);
}

#[cfg(test)]
mod tests {
    use super::{is_evil, recurse};

    #[test]
    fn only_evil_1_triggers() {
        let hint = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
        assert!(is_evil(&hint("evil", "1")));
        assert!(!is_evil(&hint("evil", "0")));
        assert!(!is_evil(&[]));
    }

    #[test]
    fn bounded_recursion_returns() {
        assert_eq!(recurse(0, 0), 0);
        assert_eq!(recurse(0, 1), 31);
        assert_eq!(recurse(0, 2), (2 * 31 + 1) * 31);
    }
}
