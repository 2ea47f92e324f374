//! The markdown tables printed at the end, from criterion's estimates.

use super::*;
use crate::lowering::LOWERING_SIZES;

/// Where criterion writes its estimates, found as criterion finds it:
/// `CRITERION_HOME`, else `$CARGO_TARGET_DIR/criterion`, else (under cargo)
/// `<target>/criterion`, else `./target/criterion`.
pub(super) fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    if std::env::var_os("CARGO").is_some() {
        // CARGO_TARGET_TMPDIR is `<target>/tmp`.
        return Path::new(env!("CARGO_TARGET_TMPDIR")).join("../criterion");
    }
    PathBuf::from("target/criterion")
}

/// The median of `<group>/<function>/<n>`, ns, if measured by this process
/// (its estimates are newer than `since`).
pub(super) fn median_ns(group: &str, function: &str, n: usize, since: SystemTime) -> Option<f64> {
    let path = criterion_dir()
        .join(group)
        .join(function)
        .join(n.to_string())
        .join("new/estimates.json");
    let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
    if modified < since {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

pub(super) fn fmt_ns(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 100_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else {
        format!("{:.0} µs", ns / 1_000.0)
    }
}

/// Prints the markdown tables of what this run measured.
pub(super) fn summary(since: SystemTime) {
    let mut rows = Vec::new();
    for name in POLICIES {
        for n in SIZES {
            let (nat, wasm) = (
                median_ns(name, "native", n, since),
                median_ns(name, "wasm", n, since),
            );
            if let (Some(nat), Some(wasm)) = (nat, wasm) {
                rows.push(format!(
                    "| {name} | {n} | {} | {} | {:.0}× |",
                    fmt_ns(nat),
                    fmt_ns(wasm),
                    wasm / nat
                ));
            }
        }
    }
    if !rows.is_empty() {
        println!("\nOne pick, median (criterion):\n");
        println!("| policy | n | native | wasm | wasm/native |");
        println!("|---|---:|---:|---:|---:|");
        for row in rows {
            println!("{row}");
        }
    }
    let mut rows = Vec::new();
    for name in POLICIES {
        let on = median_ns("epoch", &format!("{name}-on"), EPOCH_SIZE, since);
        let off = median_ns("epoch", &format!("{name}-off"), EPOCH_SIZE, since);
        if let (Some(on), Some(off)) = (on, off) {
            rows.push(format!(
                "| {name} | {} | {} | {:+.0} ns ({:+.1} %) |",
                fmt_ns(on),
                fmt_ns(off),
                on - off,
                100.0 * (on - off) / off
            ));
        }
    }
    if !rows.is_empty() {
        println!("\nEpoch interruption, wasm pick over {EPOCH_SIZE} candidates, median:\n");
        println!("| policy | deadlines on | off | cost |");
        println!("|---|---:|---:|---:|");
        for row in rows {
            println!("{row}");
        }
    }
}

/// Prints the lowering comparison of this run, if measured.
pub(super) fn lowering_summary(since: SystemTime) {
    let mut rows = Vec::new();
    for n in LOWERING_SIZES {
        let cells: Vec<Option<f64>> = ["records", "bytes", "columns"]
            .iter()
            .map(|shape| median_ns("lowering", shape, n, since))
            .collect();
        if let [Some(r), Some(b), Some(c)] = cells[..] {
            rows.push(format!(
                "| {n} | {} | {} | {} |",
                fmt_ns(r),
                fmt_ns(b),
                fmt_ns(c)
            ));
        }
    }
    if !rows.is_empty() {
        println!("\nPassing N candidates to a component (host side, one call), median:\n");
        println!(
            "| n | list<candidate> (former WIT) | list<u8> (packed per call) | 14 columns (WIT `candidates`) |"
        );
        println!("|---:|---:|---:|---:|");
        for row in rows {
            println!("{row}");
        }
    }
}
