//! Plain-text tables for `switchyard nodes`, `queue`, `policies` and
//! `cache stats`.

use std::fmt::Write;

use protocol::{CacheStatsView, NodeView, PolicyTable, QueueView, SlotView};

/// One line per node: id, region, services (in flight/max), CPU, memory,
/// GPUs, calls served and the age of the latest stats.
pub fn nodes(nodes: &[NodeView]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<10} {:>6} {:>15} {:<28} {:>7} {:>4} {:>9}  SERVICES (in flight/max, ewma ms)",
        "NODE", "REGION", "CPU%", "MEM MiB", "GPUS", "CALLS", "JOBS", "STATS AGE"
    );
    for node in nodes {
        let (cpu, mem, gpus) = match &node.stats {
            Some(s) => (
                format!("{:.1}", s.cpu_pct),
                format!("{}/{}", s.mem_used_mib, s.mem_total_mib),
                if s.gpus.is_empty() {
                    "-".to_string()
                } else {
                    s.gpus
                        .iter()
                        .map(|g| {
                            format!(
                                "{}:{:.0}%,{}/{}MiB",
                                g.index, g.util_pct, g.mem_used_mib, g.mem_total_mib
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                },
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let services = node
            .services
            .iter()
            .map(|s| {
                let ejected = match &s.ejected_why {
                    Some(why) if s.ejected_for_ms > 0 => {
                        format!("[ejected: {why}, {} s]", s.ejected_for_ms.div_ceil(1000))
                    }
                    _ => String::new(),
                };
                format!(
                    "{}{}{}{ejected}({}/{}, {:.1})",
                    s.name,
                    if s.loaded { "" } else { "[not loaded]" },
                    if s.unhealthy { "[unhealthy]" } else { "" },
                    s.in_flight,
                    s.max_concurrent,
                    s.latency_ms
                )
            })
            .collect::<Vec<_>>()
            .join(" ");
        let region = if node.spec.region.is_empty() {
            "-"
        } else {
            &node.spec.region
        };
        let _ = writeln!(
            out,
            "{:<16} {:<10} {:>6} {:>15} {:<28} {:>7} {:>4} {:>7}ms  {}",
            node.spec.id,
            region,
            cpu,
            mem,
            gpus,
            node.calls_total,
            node.jobs_in_flight,
            node.last_stats_ms,
            services
        );
        for slot in &node.slots {
            let _ = writeln!(out, "{:<16} {}", "", slot_line(slot));
        }
    }
    if nodes.is_empty() {
        out.push_str("(no node registered)\n");
    }
    out
}

/// One slot: what it holds, can host, swap state and cooldown.
fn slot_line(slot: &SlotView) -> String {
    let mut line = format!(
        "slot {}: loaded={} can-host=[{}]",
        slot.name,
        slot.loaded.as_deref().unwrap_or("-"),
        slot.can_host.join(",")
    );
    if let Some(to) = &slot.swapping_to {
        let _ = write!(line, " swapping-to={to}");
    }
    if slot.cooldown_left_ms > 0 {
        let _ = write!(
            line,
            " cooldown={:.1}s",
            slot.cooldown_left_ms as f64 / 1000.0
        );
    }
    for (service, left_ms) in &slot.failed {
        let _ = write!(line, " failed:{service}({:.0}s)", *left_ms as f64 / 1000.0);
    }
    let _ = write!(line, " swaps={}", slot.swaps_total);
    line
}

/// One line per service: calls waiting, capacity, oldest wait, reserved
/// calls and the counters since the gateway started: DEQUEUED (calls that
/// waited in the queue, then left it for a node; a call that found a free
/// slot at once never waited and is not counted), ABANDONED (timed out or
/// client gone while waiting), OVERLOADED (refused, the queue full).
pub fn queues(queues: &[QueueView]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:>8} {:>9} {:>12} {:>9} {:>11} {:>10} {:>11}",
        "SERVICE",
        "WAITING",
        "CAPACITY",
        "OLDEST WAIT",
        "RESERVED",
        "DEQUEUED",
        "ABANDONED",
        "OVERLOADED"
    );
    for q in queues {
        let _ = writeln!(
            out,
            "{:<24} {:>8} {:>9} {:>10}ms {:>9} {:>11} {:>10} {:>11}",
            q.service,
            q.length,
            q.capacity,
            q.oldest_wait_ms,
            q.reserved,
            q.dispatched_total,
            q.abandoned_total,
            q.overloaded_total
        );
    }
    if queues.is_empty() {
        out.push_str("(no service)\n");
    }
    out
}

/// The policy table: loaded policies (when each was loaded as a UTC date,
/// as `job list` shows times), services and refused files.
pub fn policies(table: &PolicyTable) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:>9} {:>7}  {:<16} {:<23} FILE",
        "POLICY", "PICKS", "TRAPS", "HASH", "LOADED (UTC)"
    );
    for p in &table.policies {
        let _ = writeln!(
            out,
            "{:<16} {:>9} {:>7}  {:<16} {:<23} {}",
            p.name,
            p.picks_total,
            p.traps_total,
            p.content_hash.get(..16).unwrap_or(&p.content_hash),
            crate::job::utc(p.loaded_at_unix_ms),
            p.file
        );
    }
    if table.policies.is_empty() {
        out.push_str("(no policy loaded: picks use the built-in round-robin)\n");
    }
    let _ = writeln!(
        out,
        "\ndefault policy: {} (fail-{})",
        table.default_policy,
        if table.fail_open { "open" } else { "closed" }
    );
    let _ = writeln!(out, "{:<24} {:<16} ACTIVE", "SERVICE", "CONFIGURED");
    for s in &table.services {
        let _ = writeln!(
            out,
            "{:<24} {:<16} {}",
            s.service,
            s.configured.as_deref().unwrap_or("-"),
            s.active
        );
    }
    for r in &table.rejected {
        let _ = writeln!(
            out,
            "\nrejected {} at {} (UTC): {}",
            r.file,
            crate::job::utc(r.at_unix_ms),
            r.reason
        );
    }
    out
}

/// One line per cached service: TTL, entries, bytes, hits, coalesced calls,
/// misses, evictions, expirations and hit ratio; then the total against the
/// bound.
pub fn cache(stats: &CacheStatsView) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:>7} {:>8} {:>12} {:>9} {:>9} {:>9} {:>9} {:>8} {:>6}",
        "SERVICE",
        "TTL",
        "ENTRIES",
        "BYTES",
        "HITS",
        "COALESCED",
        "MISSES",
        "EVICTIONS",
        "EXPIRED",
        "HIT%"
    );
    for s in &stats.services {
        let _ = writeln!(
            out,
            "{:<24} {:>6}s {:>8} {:>12} {:>9} {:>9} {:>9} {:>9} {:>8} {:>5.1}%",
            s.service,
            s.ttl_s,
            s.entries,
            s.bytes,
            s.hits,
            s.coalesced,
            s.misses,
            s.evictions,
            s.expirations,
            s.hit_ratio() * 100.0
        );
    }
    if stats.services.is_empty() {
        out.push_str("(no service is cached: set [services.NAME] cache_ttl_s)\n");
    }
    let _ = writeln!(
        out,
        "\ntotal: {} entries, {} of {} bytes ({:.1}%)",
        stats.entries,
        stats.total_bytes,
        stats.max_bytes,
        if stats.max_bytes == 0 {
            0.0
        } else {
            stats.total_bytes as f64 * 100.0 / stats.max_bytes as f64
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_table_names_what_it_counts() {
        let view = QueueView {
            service: "llama".into(),
            length: 2,
            capacity: 100,
            oldest_wait_ms: 350,
            reserved: 1,
            dispatched_total: 7,
            abandoned_total: 3,
            overloaded_total: 5,
            retries_total: 0,
            retries_refused_total: 0,
            breaker_trips_total: 0,
        };
        let table = queues(&[view]);
        let mut lines = table.lines();
        let head: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(
            head,
            [
                "SERVICE",
                "WAITING",
                "CAPACITY",
                "OLDEST",
                "WAIT",
                "RESERVED",
                "DEQUEUED",
                "ABANDONED",
                "OVERLOADED"
            ]
        );
        let row: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(row, ["llama", "2", "100", "350ms", "1", "7", "3", "5"]);
        assert_eq!(queues(&[]).lines().nth(1), Some("(no service)"));
    }
}

#[cfg(test)]
mod policies_tests;
