//! Hostile test policy `memory-bomb`: a valid `policy` world that, when the
//! request carries the hint `evil=1`, allocates 1 MiB chunks (each one
//! written to, so the pages are really used) and keeps them until the
//! allocator fails; otherwise it routes to candidate 0.
//!
//! Built by `make plugins-test-wasm` into `plugins/dist-test/memory-bomb.wasm`;
//! `policy-host/tests/plugins/sandbox_plugins.rs` checks that the host's memory
//! limit stops it (an allocation failure aborts the guest) and that the
//! policy answers again.

/// The policy name the plugin reports through the `name` export.
pub const NAME: &str = "memory-bomb";

/// Size of each allocated chunk, bytes.
pub const CHUNK: usize = 1 << 20;

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
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    // Fill every byte, so the pages are really written.
                    let chunk = vec![0xA5_u8; crate::CHUNK];
                    hoard.push(black_box(chunk));
                    black_box(&mut hoard);
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
        assert!(!is_evil(&[]));
    }
}
