//! Switchyard policy plugin `resource-aware`.
//!
//! Two steps per pick:
//!
//! 1. **Filter** by the call's resource requirements (the grammar of
//!    [`policy_sdk::Requirement`]: hint `require=gpu_mem_mib>=16000,region=eu`,
//!    or direct hints such as `gpu_mem_mib` = `>=16000`, `region` = `eu`,
//!    `label:tier` = `premium`). Numeric requirements are checked first;
//!    region and label requirements then read the host's `node-info`, called
//!    only when such a requirement is present, only for candidates still in
//!    the running, and at most once per candidate per pick.
//! 2. **Rank** the remaining candidates by a weighted mean of four scores in
//!    0..=1 (after EasyRemote's resource-aware balancer) and route to the
//!    highest, ties to the lower index:
//!    - gpu: mean of the free GPU memory fraction (`gpu_mem_free_mib` over one
//!      GPU's memory, `gpu_mem_total_mib / gpu_count`) and `(100 -
//!      gpu_util_pct) / 100`; 0.5 for a node without GPUs;
//!    - cpu: `(100 - cpu_pct) / 100`;
//!    - mem: `mem_free / mem_total` (0.5 when the total is unknown);
//!    - load: `1 - in_flight / max_concurrent`.
//!
//!    Weights come from hints `w_gpu`, `w_cpu`, `w_mem`, `w_load` (numbers
//!    `>= 0`, default 1 each, not all 0).
//!
//! Rejections (the reason returned to the caller):
//! - no candidate meets a requirement: `no node meets gpu_mem_mib>=16000
//!   (best: 8192)`; with earlier requirements narrowing the field, `no node
//!   meets region=eu among nodes meeting gpu_mem_mib>=16000 (found: us-east)`
//!   (see [`unmet`] for every form);
//! - a malformed requirement: `bad requirement "gpu_mem>=1": unknown metric
//!   "gpu_mem" (known: ...)`;
//! - a malformed weight: `bad hint w_gpu="x": expected a number >= 0`; all
//!   weights 0: `hints w_gpu, w_cpu, w_mem and w_load are all 0: at least one
//!   weight must be above 0`.
//!
//! A ranking names the candidates meeting every requirement, by score
//! (highest first, ties by index). A scored answer is that ranking with
//! each candidate's weighted score (the lowest finite `f32`,
//! `policy_sdk::EXCLUDED`, for one missing a requirement) and
//! a reason such as `most free resources: 0.575 (gpu 0.55, cpu 0.75, mem
//! 0.25, load 0.75), best of 3 meeting gpu_mem_mib>=16000`.
//!
//! Stateless; `observe` does nothing. The algorithm is [`ResourceAware`],
//! plain Rust unit-tested on the host; the WebAssembly component glue is
//! [`policy_sdk::export_policy!`], compiled for `wasm32` only.

mod aware;
mod score;
pub mod unmet;

pub use aware::ResourceAware;
pub use score::{Weights, cpu_score, gpu_score, load_score, mem_score};

/// The policy name the plugin reports through the `name` export.
pub const NAME: &str = "resource-aware";

policy_sdk::export_policy!(crate::ResourceAware);
