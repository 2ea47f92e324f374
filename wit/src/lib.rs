//! What a Switchyard load-balancing policy sees of each candidate node, as
//! one plain Rust row, beside the WIT contract it mirrors (`policy.wit` in
//! this same folder).
//!
//! The WIT passes the candidates in column layout (`types.candidates`: one
//! list per field, because lowering a list of numbers into a guest is one
//! memcpy), and a scoring policy gets each candidate's model-server load
//! in its `scorer.context`. Rust code on either side works with rows:
//!
//! - [`Candidate`]: the 14 columns of one candidate plus its
//!   [`ModelLoad`] and the prefix blocks its node reports holding. The scheduling core builds these
//!   (`switchyard_core::Candidate` is this type), the policy host turns
//!   them into columns and a context, and the plugins' SDK turns the
//!   columns back into these rows (`policy_sdk::Candidate` is this type too).
//! - [`candidate_columns!`]: the one list of the 14 column names, in WIT
//!   order. Both sides generate their conversions between the rows and the
//!   bindings' `Candidates` record from it (`candidate_columns!(impl T)`).
//!
//! No dependencies, so that it builds for the gateway's workspace and for
//! `wasm32-wasip2` in the plugins' workspace alike.

/// The gateway's handle for a node (WIT `node-key`): stable for a node id
/// while the gateway runs, never reused for another node id.
pub type NodeKey = u32;

/// One node that hosts the called service and has a free slot for the
/// call: the i-th element of every column of the WIT `candidates` record,
/// plus the node's model-server load for the service.
///
/// Figures come from the node's latest stats report (every second by
/// default) and from the gateway's own counters; units are those of
/// `policy.wit`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Candidate {
    /// Which node this is.
    pub node: NodeKey,
    /// Calls of this service in flight on the node, as the gateway counts
    /// them.
    pub in_flight: u32,
    /// The most calls of this service the node takes at once (the gateway
    /// offers a node only while this is above `in_flight`).
    pub max_concurrent: u32,
    /// Calls of every service in flight on the node.
    pub node_in_flight: u32,
    /// CPU utilisation of the whole node, 0..=100 % (0 before its first
    /// stats report).
    pub cpu_pct: f32,
    /// Memory used on the node, MiB.
    pub mem_used_mib: u64,
    /// Memory installed on the node, MiB.
    pub mem_total_mib: u64,
    /// Number of GPUs the node reports (0 where NVML is absent).
    pub gpu_count: u32,
    /// Mean GPU utilisation over the node's GPUs, 0..=100 % (0 with no GPU).
    pub gpu_util_pct: f32,
    /// The largest free memory on any single GPU of the node, MiB: what a
    /// model that must fit on one GPU can use.
    pub gpu_mem_free_mib: u64,
    /// GPU memory installed, summed over the node's GPUs, MiB.
    pub gpu_mem_total_mib: u64,
    /// The gateway's estimate of this service's call latency on the node:
    /// an EWMA (weight 0.3 on the newest sample) of observed node times,
    /// ms; 0 when `latency_samples` is 0.
    pub latency_ms: f32,
    /// How many calls fed `latency_ms` (saturating); 0 = no estimate yet.
    pub latency_samples: u32,
    /// What the node costs to run, in the operator's currency per hour.
    pub cost_per_hour: f32,
    /// The model server's own load for the service on the node, from the
    /// agent's scrape of its Prometheus endpoint (`metrics_url`); `None`
    /// when the node reports none (no `metrics_url`, or the latest scrape
    /// failed). Not one of the WIT columns: the host passes it in the
    /// `scorer` context, so a policy sees it in `score` only (in `pick` and
    /// `rank`, contract 1.0.0, it is always `None`).
    pub model_load: Option<ModelLoad>,
    /// How many leading blocks of the call's prefix hashes the node itself
    /// reports holding for the service (its agent's report of the calls it
    /// served, from every gateway): k when the first k hashes are all held.
    /// Not one of the WIT columns: a policy built with the plugins' SDK
    /// sees it in `score` (the SDK asks the host's `blocks.prefix-matched`
    /// import, contract 1.2.0, when the call has prefix hashes); 0
    /// elsewhere, and in the core's rows.
    pub prefix_matched: u32,
}

impl Candidate {
    /// This service's load on the node: `in_flight / max_concurrent`, in
    /// 0..1 (infinite when `max_concurrent` is 0, which the gateway never
    /// sends).
    #[must_use]
    pub fn load(&self) -> f64 {
        if self.max_concurrent == 0 {
            return f64::INFINITY;
        }
        f64::from(self.in_flight) / f64::from(self.max_concurrent)
    }

    /// Memory free on the node, MiB (`mem_total_mib - mem_used_mib`, never
    /// below 0).
    #[must_use]
    pub fn mem_free_mib(&self) -> u64 {
        self.mem_total_mib.saturating_sub(self.mem_used_mib)
    }
}

/// A model server's load for one service on one node, as its agent last
/// scraped it (vLLM's or SGLang's gauges; WIT `scorer.context`'s
/// `waiting`, `running` and `kv-cache-pct` columns).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ModelLoad {
    /// Requests waiting in the server's queue (vLLM
    /// `vllm:num_requests_waiting`).
    pub waiting: u32,
    /// Requests running in the server (vLLM `vllm:num_requests_running`).
    pub running: u32,
    /// KV-cache use, 0..=100 % (vLLM's 0..1 `gpu_cache_usage_perc` × 100).
    pub kv_cache_pct: f32,
}

/// The 14 columns of the WIT `candidates` record, in WIT order, as the
/// snake-case field names of [`Candidate`] (and of the bindings' generated
/// `Candidates`): the one list every conversion between rows and columns
/// is generated from.
///
/// Two forms:
///
/// - `candidate_columns!(m)` expands to `m!(node, in_flight, ...,
///   cost_per_hour)`, for a `macro_rules!` of the caller's.
/// - `candidate_columns!(impl T)`, for `T` a bindings' `Candidates` record
///   (a struct with one public `Vec` field per column), implements on `T`:
///   `with_capacity(n)`, `push(row)`, `len()`, `is_empty()`, `row(i)`,
///   `rows()`, `check()`, and `FromIterator<Candidate>`,
///   `Extend<Candidate>` and `From<&[Candidate]>`. A row's fields that are
///   no column (`model_load`) are left out by `push` and at their default
///   in `row`/`rows`. Invoke it in the crate that generated `T` (inherent
///   methods).
///
/// ```
/// use switchyard_policy_types::candidate_columns;
/// macro_rules! count {
///     ($($column:ident),*) => { [$(stringify!($column)),*].len() };
/// }
/// assert_eq!(candidate_columns!(count), 14);
/// ```
#[macro_export]
macro_rules! candidate_columns {
    (impl $columns:ty) => {
        $crate::candidate_columns! { @list impl $columns }
    };
    ($m:ident) => {
        $crate::candidate_columns! { @list each $m }
    };
    // The list itself: keep it in the order of `record candidates` in
    // policy.wit (a test of this crate checks it).
    (@list $($then:tt)*) => {
        $crate::candidate_columns! { @with [
            node,
            in_flight,
            max_concurrent,
            node_in_flight,
            cpu_pct,
            mem_used_mib,
            mem_total_mib,
            gpu_count,
            gpu_util_pct,
            gpu_mem_free_mib,
            gpu_mem_total_mib,
            latency_ms,
            latency_samples,
            cost_per_hour
        ] $($then)* }
    };
    (@with [$($f:ident),*] each $m:ident) => {
        $m!($($f),*)
    };
    (@with [$($f:ident),*] impl $columns:ty) => {
        #[allow(dead_code)]
        impl $columns {
            /// No candidates, with room for `n` in every column.
            #[must_use]
            pub fn with_capacity(n: usize) -> Self {
                Self { $($f: ::std::vec::Vec::with_capacity(n)),* }
            }

            /// Appends `row` as the last candidate: one element to every
            /// column (its fields that are no column, such as `model_load`,
            /// are left out).
            pub fn push(&mut self, row: $crate::Candidate) {
                $(self.$f.push(row.$f);)*
            }

            /// How many candidates there are: the length of the `node`
            /// column (the others have the same length when
            /// [`Self::check`] passes).
            #[must_use]
            pub fn len(&self) -> usize {
                self.node.len()
            }

            /// Whether there is no candidate (the `node` column is empty).
            #[must_use]
            pub fn is_empty(&self) -> bool {
                self.node.is_empty()
            }

            /// Candidate `i` as a row (its fields that are no column, such
            /// as `model_load`, at their default), or `None` when `i` is out
            /// of range of any column.
            #[must_use]
            pub fn row(&self, i: usize) -> ::std::option::Option<$crate::Candidate> {
                ::std::option::Option::Some($crate::Candidate {
                    $($f: *self.$f.get(i)?,)*
                    ..::std::default::Default::default()
                })
            }

            /// Every candidate as a row (as [`Self::row`]): as many as the
            /// shortest column holds, so columns of unequal lengths never
            /// index out of range.
            #[must_use]
            pub fn rows(&self) -> ::std::vec::Vec<$crate::Candidate> {
                let n = [$(self.$f.len()),*].into_iter().min().unwrap_or(0);
                // One pass over every column at once, each cut to n: no
                // per-element `Option`, and bounds the compiler can see.
                $(let $f = &self.$f[..n];)*
                (0..n)
                    .map(|i| $crate::Candidate {
                        $($f: $f[i],)*
                        ..::std::default::Default::default()
                    })
                    .collect()
            }

            /// The number of candidates n, checking what the WIT contract
            /// promises a guest: every column has the same length, and
            /// n >= 1.
            ///
            /// # Errors
            ///
            /// A description of the first column whose length differs from
            /// `node`'s (named as in the WIT, e.g. `latency-samples`), or
            /// of an empty input.
            pub fn check(&self) -> ::std::result::Result<usize, ::std::string::String> {
                let n = self.node.len();
                $(
                    if self.$f.len() != n {
                        return ::std::result::Result::Err(::std::format!(
                            "column `{}` has {} entries but `node` has {n}",
                            ::std::stringify!($f).replace('_', "-"),
                            self.$f.len(),
                        ));
                    }
                )*
                if n == 0 {
                    return ::std::result::Result::Err("no candidates".to_owned());
                }
                ::std::result::Result::Ok(n)
            }
        }

        impl ::std::iter::FromIterator<$crate::Candidate> for $columns {
            fn from_iter<I: ::std::iter::IntoIterator<Item = $crate::Candidate>>(rows: I) -> Self {
                let rows = rows.into_iter();
                let mut out = Self::with_capacity(rows.size_hint().0);
                for row in rows {
                    out.push(row);
                }
                out
            }
        }

        impl ::std::iter::Extend<$crate::Candidate> for $columns {
            fn extend<I: ::std::iter::IntoIterator<Item = $crate::Candidate>>(&mut self, rows: I) {
                for row in rows {
                    self.push(row);
                }
            }
        }

        impl ::std::convert::From<&[$crate::Candidate]> for $columns {
            /// The columns of `rows`, in order: one pass over the rows
            /// writing every column at once (a row is read once; column
            /// after column would read each row 14 times).
            fn from(rows: &[$crate::Candidate]) -> Self {
                let n = rows.len();
                let mut out = Self {
                    $($f: ::std::vec![::std::default::Default::default(); n]),*
                };
                {
                    $(let $f = &mut out.$f[..n];)*
                    for (i, row) in rows.iter().enumerate() {
                        $($f[i] = row.$f;)*
                    }
                }
                out
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::{Candidate, ModelLoad};

    /// The column names as the WIT spells them (kebab-case), in list order.
    fn listed() -> Vec<String> {
        macro_rules! names {
            ($($f:ident),*) => { vec![$(stringify!($f).replace('_', "-")),*] };
        }
        candidate_columns!(names)
    }

    #[test]
    fn the_list_is_the_wit_record_in_order() {
        let wit = include_str!("../policy.wit");
        let start = wit
            .find("record candidates {")
            .expect("policy.wit declares `record candidates`");
        let body = &wit[start..];
        let body = &body[..body.find('}').expect("the record ends")];
        let fields: Vec<String> = body
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("//"))
            .filter_map(|l| l.split_once(": list<").map(|(name, _)| name.to_owned()))
            .collect();
        assert_eq!(fields.len(), 14, "{fields:?}");
        assert_eq!(listed(), fields);
    }

    #[test]
    fn the_list_names_every_column_of_the_row() {
        // A struct literal without `..`: it compiles only while the list
        // and the fields named after it (those that are no WIT column) name
        // every field of `Candidate`, each once. A new field of the row
        // must be added to one or the other.
        macro_rules! literal {
            ($($f:ident),*) => {
                Candidate { $($f: Default::default(),)* model_load: None, prefix_matched: 0 }
            };
        }
        assert_eq!(candidate_columns!(literal), Candidate::default());
    }

    #[test]
    fn load_and_free_memory() {
        let c = Candidate {
            in_flight: 2,
            max_concurrent: 8,
            mem_used_mib: 3,
            mem_total_mib: 2,
            model_load: Some(ModelLoad::default()),
            ..Candidate::default()
        };
        assert!((c.load() - 0.25).abs() < f64::EPSILON);
        assert_eq!(c.mem_free_mib(), 0, "never below 0");
        assert!(Candidate::default().load().is_infinite());
    }
}
