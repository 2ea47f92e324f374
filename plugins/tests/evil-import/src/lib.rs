//! Hostile test policy `evil-import`: the `policy` world plus an import of
//! `evil:net/socket` (defined in this crate's `wit/evil.wit`), an interface
//! no host offers. `pick` calls it when the request carries the hint
//! `evil=1` (so that the import is kept in the component); otherwise it
//! routes to candidate 0.
//!
//! Built by `make plugins-test-wasm` into `plugins/dist-test/evil-import.wasm`;
//! `policy-host/tests/plugins/sandbox_plugins.rs` checks that loading it fails with a
//! link error naming `evil:net/socket`.

/// The policy name the plugin reports through the `name` export.
pub const NAME: &str = "evil-import";

/// Whether the request hints ask for misbehaviour: a hint `evil=1`.
#[must_use]
pub fn is_evil(hints: &[(String, String)]) -> bool {
    hints.iter().any(|(k, v)| k == "evil" && v == "1")
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code, missing_docs, clippy::too_many_arguments)] // generated glue
mod component {
    // The shared policy package first, so that `wit/evil.wit` can include its
    // world by name; `generate_all` generates both packages' interfaces.
    wit_bindgen::generate!({
        path: ["../../../wit", "wit"],
        world: "evil:net/evil-policy",
        generate_all,
    });

    use evil::net::socket;

    struct Component;

    impl Guest for Component {
        fn name() -> String {
            crate::NAME.to_owned()
        }

        fn pick(req: Request, _candidates: Candidates) -> Decision {
            if crate::is_evil(&req.hints) && socket::connect("127.0.0.1:22") {
                return Decision::Reject("connected through evil:net/socket".to_owned());
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
        assert!(is_evil(&[("evil".to_owned(), "1".to_owned())]));
        assert!(!is_evil(&[]));
    }
}
