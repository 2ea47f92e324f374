use protocol::{PolicyTable, PolicyView, RejectedFile, ServicePolicy};

use super::policies;

#[test]
fn policy_times_are_dates() {
    let table = PolicyTable {
        default_policy: "round-robin".into(),
        fail_open: true,
        policies: vec![PolicyView {
            name: "least-request".into(),
            file: "plugins/dist/least-request.wasm".into(),
            content_hash: "2aa8c98a84eeb2e2492b1624d8ced597".into(),
            // 2026-12-06 06:04:53.712 UTC.
            loaded_at_unix_ms: 1_796_537_093_712,
            picks_total: 12,
            traps_total: 0,
        }],
        services: vec![ServicePolicy {
            service: "echo".into(),
            configured: None,
            active: "round-robin".into(),
        }],
        rejected: vec![RejectedFile {
            file: "plugins/dist/notes.wasm".into(),
            reason: "not a WebAssembly component".into(),
            at_unix_ms: 1_796_537_094_000,
        }],
    };
    let text = policies(&table);
    let mut lines = text.lines();
    let head = lines.next().unwrap_or_default();
    assert!(head.contains("LOADED (UTC)"), "{head}");
    let row: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row,
        [
            "least-request",
            "12",
            "0",
            "2aa8c98a84eeb2e2",
            "2026-12-06",
            "06:04:53.712",
            "plugins/dist/least-request.wasm"
        ]
    );
    assert!(
        text.contains(
            "rejected plugins/dist/notes.wasm at 2026-12-06 06:04:54.000 (UTC): not a WebAssembly component"
        ),
        "{text}"
    );
}
