//! A tree of gateways, simulated: the echo wave over many gateways
//! ([`wave`]) and the rebalancing of queued work between child gateways
//! ([`rebalance`]), each running the real algorithm of `switchyard-tree`
//! in virtual time. `switchyard-sim --tree` prints [`report`].

pub mod rebalance;
pub mod wave;

use std::fmt::Write as _;
use std::time::Duration;

use switchyard_tree::rebalance::Rules;

use crate::repro::Scale;

/// The tree figures as markdown: the wave on 1 111 gateways (1 000
/// leaves) under two link profiles, whole and with stopped gateways; the
/// rebalancing of a skewed pair of children, with and without.
pub fn report(scale: Scale) -> String {
    let mut out = String::new();
    let tree = wave::Tree::regular(10, 3);
    let _ = writeln!(
        out,
        "## Echo wave: {} gateways (fanout 10, 3 levels below the root)\n",
        tree.len()
    );
    let _ = writeln!(
        out,
        "Deadline 2 000 ms at the root, 100 ms less per level; link latencies log-normal (σ 0.3) around the median; stopped gateways never answer.\n"
    );
    let _ = writeln!(
        out,
        "| links (one way, median) | stopped | took ms | gateways answered | branches missing | messages |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    let below = tree.below_root();
    for (label, link_ms) in [("site LAN 0.25 ms", 0.25), ("regions 20 ms", 20.0)] {
        for stopped_every in [0usize, 100] {
            let stopped: Vec<String> = if stopped_every == 0 {
                Vec::new()
            } else {
                below.iter().step_by(stopped_every).cloned().collect()
            };
            let result = wave::run(
                &tree,
                &wave::WaveSetup {
                    link_ms,
                    link_sigma: 0.3,
                    deadline_ms: 2000,
                    hop_ms: 100,
                    stopped: stopped.clone(),
                    seed: 11,
                },
            );
            let _ = writeln!(
                out,
                "| {label} | {} | {:.2} | {} | {} | {} |",
                stopped.len(),
                result.took_ms,
                result.answered,
                result.missing,
                result.messages
            );
        }
    }
    let duration_s = match scale {
        Scale::Short => 10.0,
        Scale::Full => 120.0,
    };
    let _ = writeln!(
        out,
        "\n## Rebalancing queued calls between two children\n\nEach child: 8 slots, exponential service (mean 10 ms); Poisson arrivals at 0.7 of both children's capacity, split between children a and b as given (80 %: a at 1.12 of its capacity, its queue grows without bound when alone; 60 %: a at 0.84); the parent plans every 20 ms (threshold 10 ms, at most 64 moves), a move takes 1 ms; {duration_s} s simulated, the first tenth not counted.\n"
    );
    let _ = writeln!(
        out,
        "| share to a | parent | calls | mean wait ms | p99 wait ms | calls moved | longest queue |"
    );
    let _ = writeln!(out, "|---:|---|---:|---:|---:|---:|---:|");
    let rebalancing = Some(Rules {
        threshold: Duration::from_millis(10),
        max_moves: 64,
    });
    for (skew, label, rules) in [
        (0.8, "no rebalancing", None),
        (0.8, "rebalancing", rebalancing),
        (0.6, "no rebalancing", None),
        (0.6, "rebalancing", rebalancing),
    ] {
        let o = rebalance::run(&rebalance::Setup {
            servers: 8,
            service_ms: 10.0,
            load: 0.7,
            skew,
            rules,
            period_ms: 20.0,
            link_ms: 1.0,
            duration_s,
            seed: 7,
        });
        let _ = writeln!(
            out,
            "| {:.0} % | {label} | {} | {:.2} | {:.2} | {} | {} |",
            skew * 100.0,
            o.calls,
            o.mean_ms,
            o.p99_ms,
            o.moved,
            o.max_queue
        );
    }
    out
}
