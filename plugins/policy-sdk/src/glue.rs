//! The WebAssembly component glue shared by every policy crate.

/// Exports a [`Policy`](crate::Policy) as the `policy` world of
/// `wit/policy.wit`: invoke once in a policy crate's `lib.rs`, e.g.
/// `policy_sdk::export_policy!(crate::LeastRequest);`.
///
/// Expands, on `wasm32` targets only, to a private module `component` that
/// runs `wit_bindgen::generate!` on `../../wit` (relative to the policy
/// crate, i.e. a crate at `plugins/<name>/`), keeps one instance of the policy
/// in a `Mutex` (created with `Default`), converts the generated records into
/// this crate's plain types (numbers are copied; the request's strings are
/// moved, not copied) and forwards `name`, `pick` and `observe`. `pick`
/// passes the host's `node-info` import as the `facts` function; an `Err`
/// becomes `decision::reject`.
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

            ::wit_bindgen::generate!({ path: "../../wit", world: "policy" });

            use switchyard::policy::{host, types as wit};

            static STATE: LazyLock<Mutex<$policy>> = LazyLock::new(Default::default);

            struct Component;

            impl Guest for Component {
                fn name() -> String {
                    <$policy as sdk::Policy>::NAME.to_owned()
                }

                fn pick(req: Request, candidates: Vec<Candidate>) -> Decision {
                    let req = request(req);
                    let candidates: Vec<sdk::Candidate> = candidates.iter().map(candidate).collect();
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

            fn request(r: Request) -> sdk::Request {
                sdk::Request {
                    service: r.service,
                    payload_bytes: r.payload_bytes,
                    hints: r.hints,
                    now_ms: r.now_ms,
                    random: r.random,
                }
            }

            fn candidate(c: &Candidate) -> sdk::Candidate {
                sdk::Candidate {
                    node: c.node,
                    in_flight: c.in_flight,
                    max_concurrent: c.max_concurrent,
                    node_in_flight: c.node_in_flight,
                    cpu_pct: c.cpu_pct,
                    mem_used_mib: c.mem_used_mib,
                    mem_total_mib: c.mem_total_mib,
                    gpu_count: c.gpu_count,
                    gpu_util_pct: c.gpu_util_pct,
                    gpu_mem_free_mib: c.gpu_mem_free_mib,
                    gpu_mem_total_mib: c.gpu_mem_total_mib,
                    latency_ms: c.latency_ms,
                    latency_samples: c.latency_samples,
                    cost_per_hour: c.cost_per_hour,
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
