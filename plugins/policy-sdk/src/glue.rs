//! The WebAssembly component glue shared by every policy crate.

/// Exports a [`Policy`](crate::Policy) as the `block-aware-policy` world of
/// `wit/policy.wit` (the `policy` world plus `ranker` and `scorer`, and the
/// `blocks` import of contract 1.2.0): invoke
/// once in a policy crate's `lib.rs`, e.g.
/// `policy_sdk::export_policy!(crate::LeastRequest);`.
///
/// Expands, on `wasm32` targets only, to a private module `component` that
/// runs `wit_bindgen::generate!` on `../../wit` (relative to the policy
/// crate, i.e. a crate at `plugins/<name>/`), keeps one instance of the policy
/// in a `Mutex` (created with `Default`), converts the generated records into
/// this crate's plain types (the WIT's candidate columns become rows of
/// [`Candidate`](crate::Candidate), numbers only, copied, by the code
/// `switchyard_policy_types::candidate_columns!` generates; in `score` each
/// row also gets its model-server load from the context's load columns
/// and, when the call has prefix hashes, its `prefix_matched` from one call
/// of the host's `blocks.prefix-matched` import;
/// the request's strings are moved, not copied) and forwards `name`,
/// `pick`, `rank`, `score` and `observe`. Each passes the host's
/// `node-info` import as the `facts` function; an `Err` becomes the
/// export's `reject`.
///
/// The policy crate needs `wit-bindgen` as a `wasm32` dependency. The module
/// is the only place where `unsafe` code (the generated bindings) is allowed.
#[macro_export]
macro_rules! export_policy {
    ($policy:path) => {
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code, missing_docs, clippy::too_many_arguments)] // generated glue
        mod component {
            use std::sync::{LazyLock, Mutex, PoisonError};

            use $crate as sdk;

            ::wit_bindgen::generate!({ path: "../../wit", world: "block-aware-policy" });

            use switchyard::policy::{blocks, host, types as wit};

            static STATE: LazyLock<Mutex<$policy>> = LazyLock::new(Default::default);

            $crate::__types::candidate_columns! { impl wit::Candidates }

            struct Component;

            impl Guest for Component {
                fn name() -> String {
                    <$policy as sdk::Policy>::NAME.to_owned()
                }

                fn pick(req: Request, candidates: Candidates) -> Decision {
                    let req = request(req);
                    let candidates = candidates.rows();
                    let facts = |node| host::node_info(node).map(node_facts);
                    let mut state = STATE.lock().unwrap_or_else(PoisonError::into_inner);
                    match <$policy as sdk::Policy>::pick(&mut state, &req, &candidates, &facts) {
                        Ok(i) => Decision::Route(i),
                        Err(reason) => Decision::Reject(reason),
                    }
                }

                fn observe(outcome: Outcome) {
                    let outcome = sdk::Outcome {
                        service: outcome.service,
                        node: outcome.node,
                        latency_ms: outcome.latency_ms,
                        ok: outcome.ok,
                        now_ms: outcome.now_ms,
                    };
                    let mut state = STATE.lock().unwrap_or_else(PoisonError::into_inner);
                    <$policy as sdk::Policy>::observe(&mut state, &outcome);
                }
            }

            impl exports::switchyard::policy::ranker::Guest for Component {
                fn rank(
                    req: Request,
                    candidates: Candidates,
                ) -> exports::switchyard::policy::ranker::Ranking {
                    use exports::switchyard::policy::ranker::Ranking;
                    let req = request(req);
                    let candidates = candidates.rows();
                    let facts = |node| host::node_info(node).map(node_facts);
                    let mut state = STATE.lock().unwrap_or_else(PoisonError::into_inner);
                    match <$policy as sdk::Policy>::rank(&mut state, &req, &candidates, &facts) {
                        Ok(order) => Ranking::Order(order),
                        Err(reason) => Ranking::Reject(reason),
                    }
                }
            }

            impl exports::switchyard::policy::scorer::Guest for Component {
                fn score(
                    req: Request,
                    candidates: Candidates,
                    ctx: exports::switchyard::policy::scorer::Context,
                ) -> exports::switchyard::policy::scorer::Verdict {
                    use exports::switchyard::policy::scorer::{Scored, Verdict};
                    let req = request(req);
                    let mut candidates = candidates.rows();
                    for (i, c) in candidates.iter_mut().enumerate() {
                        c.model_load = model_load(&ctx, i);
                    }
                    if !ctx.prefix_hashes.is_empty() {
                        let nodes: Vec<u32> = candidates.iter().map(|c| c.node).collect();
                        let matched =
                            blocks::prefix_matched(&req.service, &ctx.prefix_hashes, &nodes);
                        for (c, m) in candidates.iter_mut().zip(matched) {
                            c.prefix_matched = m;
                        }
                    }
                    let ctx = sdk::Context {
                        prefix_hashes: ctx.prefix_hashes,
                    };
                    let facts = |node| host::node_info(node).map(node_facts);
                    let mut state = STATE.lock().unwrap_or_else(PoisonError::into_inner);
                    match <$policy as sdk::Policy>::score(
                        &mut state,
                        &req,
                        &candidates,
                        &ctx,
                        &facts,
                    ) {
                        Ok(s) => Verdict::Scored(Scored {
                            order: s.order,
                            scores: s.scores,
                            reason: s.reason,
                        }),
                        Err(reason) => Verdict::Reject(reason),
                    }
                }
            }

            /// Candidate `i`'s model-server load from the context's load
            /// columns: `None` when unknown, or when they are empty; a
            /// column shorter than the others (a host breaking its promise)
            /// reads as 0.
            fn model_load(
                c: &exports::switchyard::policy::scorer::Context,
                i: usize,
            ) -> Option<sdk::ModelLoad> {
                match c.load_known.get(i) {
                    Some(true) => Some(sdk::ModelLoad {
                        waiting: c.waiting.get(i).copied().unwrap_or(0),
                        running: c.running.get(i).copied().unwrap_or(0),
                        kv_cache_pct: c.kv_cache_pct.get(i).copied().unwrap_or(0.0),
                    }),
                    _ => None,
                }
            }

            fn request(r: Request) -> sdk::Request {
                sdk::Request {
                    service: r.service,
                    payload_bytes: r.payload_bytes,
                    hints: r.hints,
                    now_ms: r.now_ms,
                    random: r.random,
                }
            }

            fn node_facts(f: wit::NodeInfo) -> sdk::NodeFacts {
                sdk::NodeFacts {
                    id: f.id,
                    region: f.region,
                    labels: f.labels,
                    gpus: f.gpus.into_iter().map(gpu).collect(),
                }
            }

            fn gpu(g: wit::Gpu) -> sdk::Gpu {
                sdk::Gpu {
                    index: g.index,
                    name: g.name,
                    util_pct: g.util_pct,
                    mem_used_mib: g.mem_used_mib,
                    mem_total_mib: g.mem_total_mib,
                    temperature_c: g.temperature_c,
                    power_w: g.power_w,
                }
            }

            export!(Component);
        }
    };
}
