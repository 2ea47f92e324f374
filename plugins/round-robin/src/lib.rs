//! Switchyard policy plugin `round-robin`.
//!
//! Each service gets its own counter; a pick routes to
//! `candidates[counter % candidates.len()]` and advances the counter. The
//! algorithm lives in [`RoundRobin`], plain Rust unit-tested on the host; the
//! WebAssembly component glue (the `policy` world from `wit/policy.wit`) is
//! compiled only for `wasm32` targets.

mod rr;

pub use rr::RoundRobin;

/// The policy name the plugin reports through the `name` export.
pub const NAME: &str = "round-robin";

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code, missing_docs, clippy::too_many_arguments)] // generated glue
mod component {
    use std::sync::{LazyLock, Mutex, PoisonError};

    wit_bindgen::generate!({ path: "../../wit", world: "policy" });

    static STATE: LazyLock<Mutex<crate::RoundRobin>> =
        LazyLock::new(|| Mutex::new(crate::RoundRobin::new()));

    struct Component;

    impl Guest for Component {
        fn name() -> String {
            crate::NAME.to_owned()
        }

        fn pick(req: Request, candidates: Candidates) -> Decision {
            // Only n matters here: the length of every column (the host
            // guarantees they are equal).
            let mut state = STATE.lock().unwrap_or_else(PoisonError::into_inner);
            match state.pick(&req.service, candidates.node.len()) {
                Some(i) => Decision::Route(i),
                None => Decision::Reject("no candidates".to_owned()),
            }
        }

        fn observe(_outcome: Outcome) {}
    }

    export!(Component);
}
