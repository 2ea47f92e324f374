//! Lowering: what passing the candidates costs the host alone, per WIT shape.

use super::*;

/// Candidate counts of the lowering comparison.
pub(super) const LOWERING_SIZES: [usize; 3] = [1, 100, 1000];

/// A component exporting three functions that take the candidates in three
/// shapes and return how many elements (or bytes) they got. `realloc` always
/// answers the same address: the data is written, never read.
const LOWERING_WAT: &str = r#"
(component
  (core module $m
    (memory (export "memory") 4)
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) i32.const 64)
    (func (export "len") (param i32 i32) (result i32) local.get 1)
    (func (export "columns") (param i32) (result i32) i32.const 0))
  (core instance $i (instantiate $m))
  (type $c (record
    (field "node" u32) (field "in-flight" u32) (field "max-concurrent" u32)
    (field "node-in-flight" u32) (field "cpu-pct" f32) (field "mem-used-mib" u64)
    (field "mem-total-mib" u64) (field "gpu-count" u32) (field "gpu-util-pct" f32)
    (field "gpu-mem-free-mib" u64) (field "gpu-mem-total-mib" u64)
    (field "latency-ms" f32) (field "latency-samples" u32) (field "cost-per-hour" f32)))
  (export $candidate "candidate" (type $c))
  (type $cols (record
    (field "node" (list u32)) (field "in-flight" (list u32))
    (field "max-concurrent" (list u32)) (field "node-in-flight" (list u32))
    (field "cpu-pct" (list f32)) (field "mem-used-mib" (list u64))
    (field "mem-total-mib" (list u64)) (field "gpu-count" (list u32))
    (field "gpu-util-pct" (list f32)) (field "gpu-mem-free-mib" (list u64))
    (field "gpu-mem-total-mib" (list u64)) (field "latency-ms" (list f32))
    (field "latency-samples" (list u32)) (field "cost-per-hour" (list f32))))
  (export $columns "columns-of" (type $cols))
  (func (export "records") (param "c" (list $candidate)) (result u32)
    (canon lift (core func $i "len") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (func (export "bytes") (param "c" (list u8)) (result u32)
    (canon lift (core func $i "len") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (func (export "columns") (param "c" $columns) (result u32)
    (canon lift (core func $i "columns") (memory (core memory $i "memory")) (realloc (core func $i "realloc")))))
"#;

/// One candidate as a 14-field record (the `records` shape).
#[derive(Clone, Copy, wasmtime::component::ComponentType, wasmtime::component::Lower)]
#[component(record)]
struct Record {
    node: u32,
    #[component(name = "in-flight")]
    in_flight: u32,
    #[component(name = "max-concurrent")]
    max_concurrent: u32,
    #[component(name = "node-in-flight")]
    node_in_flight: u32,
    #[component(name = "cpu-pct")]
    cpu_pct: f32,
    #[component(name = "mem-used-mib")]
    mem_used_mib: u64,
    #[component(name = "mem-total-mib")]
    mem_total_mib: u64,
    #[component(name = "gpu-count")]
    gpu_count: u32,
    #[component(name = "gpu-util-pct")]
    gpu_util_pct: f32,
    #[component(name = "gpu-mem-free-mib")]
    gpu_mem_free_mib: u64,
    #[component(name = "gpu-mem-total-mib")]
    gpu_mem_total_mib: u64,
    #[component(name = "latency-ms")]
    latency_ms: f32,
    #[component(name = "latency-samples")]
    latency_samples: u32,
    #[component(name = "cost-per-hour")]
    cost_per_hour: f32,
}

impl From<&wit::Candidate> for Record {
    fn from(c: &wit::Candidate) -> Self {
        macro_rules! record {
            ($($field:ident),*) => { Self { $($field: c.$field),* } };
        }
        switchyard_policy_types::candidate_columns!(record)
    }
}

/// Packs `candidates` into `out` (little-endian, field after field), as a
/// host would per call for a `list<u8>` shape.
fn pack(candidates: &[wit::Candidate], out: &mut Vec<u8>) {
    macro_rules! pack {
        ($c:ident: $($field:ident),*) => {$(
            out.extend_from_slice(&$c.$field.to_le_bytes());
        )*};
    }
    macro_rules! pack_row {
        ($($field:ident),*) => {
            for c in candidates {
                pack!(c: $($field),*);
            }
        };
    }
    out.clear();
    switchyard_policy_types::candidate_columns!(pack_row);
}

pub(super) fn bench_lowering(c: &mut Criterion, fleet: &Fleet) {
    use wasmtime::component::{Component, Linker, TypedFunc};
    use wasmtime::{Config, Engine, Store};

    let mut config = Config::new();
    config.wasm_component_model(true).concurrency_support(false);
    let engine = Engine::new(&config).expect("engine");
    let component = Component::new(&engine, LOWERING_WAT)
        .unwrap_or_else(|e| panic!("lowering component: {e:#}"));
    let mut store = Store::new(&engine, ());
    let instance = Linker::new(&engine)
        .instantiate(&mut store, &component)
        .expect("instantiate");
    let records: TypedFunc<(&[Record],), (u32,)> = instance
        .get_typed_func(&mut store, "records")
        .expect("records");
    let bytes: TypedFunc<(&[u8],), (u32,)> =
        instance.get_typed_func(&mut store, "bytes").expect("bytes");
    let columns: TypedFunc<(&wit::Candidates,), (u32,)> = instance
        .get_typed_func(&mut store, "columns")
        .expect("columns");

    let all: Vec<Record> = fleet.rows.iter().map(Record::from).collect();
    let mut group = c.benchmark_group("lowering");
    for n in LOWERING_SIZES {
        let candidates = &fleet.rows[..n];
        let as_records = &all[..n];
        group.bench_function(BenchmarkId::new("records", n), |b| {
            b.iter(|| {
                records
                    .call(&mut store, (black_box(as_records),))
                    .expect("call")
            });
        });
        let mut buf = Vec::new();
        group.bench_function(BenchmarkId::new("bytes", n), |b| {
            b.iter(|| {
                pack(black_box(candidates), &mut buf);
                bytes.call(&mut store, (&buf,)).expect("call")
            });
        });
        group.bench_function(BenchmarkId::new("transpose", n), |b| {
            b.iter(|| wit::Candidates::from(black_box(candidates)));
        });
        group.bench_function(BenchmarkId::new("columns", n), |b| {
            b.iter(|| {
                let cols = wit::Candidates::from(black_box(candidates));
                columns.call(&mut store, (&cols,)).expect("call")
            });
        });
    }
    group.finish();
}
