//! The autoscaling arithmetic: one service's signals from this gateway's
//! counts (Little's law), and the sum of several gateways' reports into the
//! cluster's.
//!
//! Little's law: the call slots a service needs on average are its
//! offered load L = λ · W (λ calls arriving per second, W the mean time a
//! call holds a slot, s). A node brings `slots_per_node` slots (its
//! `max_concurrent`), of which the fleet should keep `target_utilisation`
//! busy, so the service wants L / (target × slots_per_node) nodes, rounded
//! up. Every gateway sees its own calls and every node: its λ, W, L,
//! waiting and running are its share (they add up across gateways), its
//! capacity and node counts are the fleet's (the same on every gateway:
//! they are not added).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::telemetry::scale::{WAIT_BUCKETS, WindowStats, wait_quantile};

/// A share of nodes below this counts as none when rounding up (so that
/// 2.000000001 nodes, a float sum's noise, is 2).
const ROUNDING: f64 = 1e-9;

/// One service's autoscaling signals, for one gateway or summed over a
/// cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ServiceScale {
    /// The service (its label value).
    pub service: String,
    /// Calls arriving, per second over the window (λ).
    pub arrivals_per_s: f64,
    /// Mean time a call held a node slot, s (W); `None` when no hold ended
    /// in the window.
    pub hold_s: Option<f64>,
    /// λ · W: the slots the calls want on average.
    pub offered_load: f64,
    /// Calls waiting in the queue now.
    pub waiting: u32,
    /// Calls holding a slot now.
    pub running: u32,
    /// The slots of the nodes that serve it now (loaded, not drained): the
    /// sum of their `max_concurrent`. The fleet's, the same on every
    /// gateway.
    pub capacity: u32,
    /// How many nodes serve it now.
    pub nodes: u32,
    /// The slots one node brings: the mean `max_concurrent` of the nodes
    /// hosting it (1 when none does).
    pub slots_per_node: f64,
    /// `running / capacity`; `None` without capacity.
    pub utilisation: Option<f64>,
    /// The share of slots to keep busy.
    pub target_utilisation: f64,
    /// `offered_load / (target_utilisation × slots_per_node)`: this
    /// gateway's share of the nodes wanted (shares add up across
    /// gateways).
    pub desired_nodes_share: f64,
    /// `desired_nodes_share` rounded up: the nodes wanted.
    pub desired_nodes: u32,
    /// The 90th percentile of the queue waits of calls that queued, s;
    /// `None` when none did in the window.
    pub queue_wait_p90_s: Option<f64>,
    /// Those waits counted per bucket of the `queue_wait_seconds` bounds
    /// (not cumulative; the last past the highest bound).
    pub queue_waits: Vec<u64>,
}

/// What this gateway knows of one service besides its window's counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Fleet {
    /// Calls waiting in this gateway's queue.
    pub waiting: u32,
    /// Slots of the nodes serving it.
    pub capacity: u32,
    /// Nodes serving it.
    pub nodes: u32,
    /// Mean `max_concurrent` of the nodes hosting it; `None` when none
    /// does.
    pub slots_per_node: Option<f64>,
    /// The share of slots to keep busy, in `(0, 1]`.
    pub target_utilisation: f64,
    /// Live gateways in the cluster (at least 1).
    pub members: usize,
}

/// Rounds a share of nodes up to whole nodes.
fn whole_nodes(share: f64) -> u32 {
    if share.is_finite() && share > ROUNDING {
        (share - ROUNDING).ceil().min(f64::from(u32::MAX)) as u32
    } else {
        0
    }
}

fn ratio(part: u32, whole: u32) -> Option<f64> {
    (whole > 0).then(|| f64::from(part) / f64::from(whole))
}

/// One service's signals on this gateway from its window's counts and the
/// fleet. A service with arrivals but no slot hold in the window (no node
/// serves it yet) wants at least one node: each gateway seeing arrivals
/// asks for `1 / members` of one.
pub(crate) fn service_scale(service: &str, stats: &WindowStats, fleet: Fleet) -> ServiceScale {
    let arrivals_per_s = stats.arrivals as f64 / stats.span_s.max(1.0);
    let hold_s = (stats.holds > 0).then(|| stats.held_s / stats.holds as f64);
    let offered_load = arrivals_per_s * hold_s.unwrap_or(0.0);
    let slots_per_node = fleet.slots_per_node.filter(|s| *s > 0.0).unwrap_or(1.0);
    let desired_nodes_share = if arrivals_per_s > 0.0 && hold_s.is_none() {
        1.0 / fleet.members.max(1) as f64
    } else {
        offered_load / (fleet.target_utilisation * slots_per_node)
    };
    ServiceScale {
        service: service.to_string(),
        arrivals_per_s,
        hold_s,
        offered_load,
        waiting: fleet.waiting,
        running: stats.running,
        capacity: fleet.capacity,
        nodes: fleet.nodes,
        slots_per_node,
        utilisation: ratio(stats.running, fleet.capacity),
        target_utilisation: fleet.target_utilisation,
        desired_nodes_share,
        desired_nodes: whole_nodes(desired_nodes_share),
        queue_wait_p90_s: wait_quantile(&stats.waits, 0.9),
        queue_waits: stats.waits.to_vec(),
    }
}

/// The cluster's signals from each member's: rates, loads, waiting,
/// running, shares and queue waits add up; capacity, nodes, slots per node
/// and the target are the fleet's (the highest reported); the mean slot
/// time is weighted by arrivals; utilisation, the node count and the p90
/// are worked out again from the sums. Sorted by service.
pub(crate) fn sum<'a>(members: impl IntoIterator<Item = &'a [ServiceScale]>) -> Vec<ServiceScale> {
    let mut by_name: BTreeMap<&str, Vec<&ServiceScale>> = BTreeMap::new();
    for services in members {
        for s in services {
            by_name.entry(&s.service).or_default().push(s);
        }
    }
    by_name
        .into_iter()
        .map(|(service, parts)| {
            let max = |f: fn(&ServiceScale) -> f64| parts.iter().map(|s| f(s)).fold(0.0, f64::max);
            let arrivals_per_s: f64 = parts.iter().map(|s| s.arrivals_per_s).sum();
            let offered_load: f64 = parts.iter().map(|s| s.offered_load).sum();
            let any_hold = parts.iter().any(|s| s.hold_s.is_some());
            let hold_s = any_hold.then(|| {
                if arrivals_per_s > 0.0 {
                    offered_load / arrivals_per_s
                } else {
                    let holds: Vec<f64> = parts.iter().filter_map(|s| s.hold_s).collect();
                    holds.iter().sum::<f64>() / holds.len() as f64
                }
            });
            let running = parts.iter().map(|s| s.running).sum();
            let capacity = parts.iter().map(|s| s.capacity).max().unwrap_or(0);
            let desired_nodes_share = parts.iter().map(|s| s.desired_nodes_share).sum();
            let mut waits = vec![0u64; WAIT_BUCKETS];
            for part in &parts {
                for (sum, n) in waits.iter_mut().zip(&part.queue_waits) {
                    *sum = sum.saturating_add(*n);
                }
            }
            ServiceScale {
                service: service.to_string(),
                arrivals_per_s,
                hold_s,
                offered_load,
                waiting: parts.iter().map(|s| s.waiting).sum(),
                running,
                capacity,
                nodes: parts.iter().map(|s| s.nodes).max().unwrap_or(0),
                slots_per_node: max(|s| s.slots_per_node),
                utilisation: ratio(running, capacity),
                target_utilisation: max(|s| s.target_utilisation),
                desired_nodes_share,
                desired_nodes: whole_nodes(desired_nodes_share),
                queue_wait_p90_s: wait_quantile(&waits, 0.9),
                queue_waits: waits,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn stats(arrivals: u64, span_s: f64, holds: u64, held_s: f64, running: u32) -> WindowStats {
        WindowStats {
            span_s,
            arrivals,
            holds,
            held_s,
            running,
            waits: [0; WAIT_BUCKETS],
        }
    }

    fn fleet(capacity: u32, nodes: u32, slots: f64) -> Fleet {
        Fleet {
            waiting: 0,
            capacity,
            nodes,
            slots_per_node: Some(slots),
            target_utilisation: 0.7,
            members: 1,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn littles_law_gives_the_offered_load_and_the_nodes_wanted() {
        // 20 calls/s over 60 s, each holding a slot 0.5 s: L = 10 slots;
        // nodes of 4 slots at 70 %: 10 / 2.8 = 3.57, so 4 nodes.
        let s = service_scale(
            "llama",
            &stats(1200, 60.0, 1000, 500.0, 6),
            fleet(8, 2, 4.0),
        );
        assert!(close(s.arrivals_per_s, 20.0));
        assert!(close(s.hold_s.unwrap(), 0.5));
        assert!(close(s.offered_load, 10.0));
        assert!(close(s.desired_nodes_share, 10.0 / 2.8));
        assert_eq!(s.desired_nodes, 4);
        assert!(close(s.utilisation.unwrap(), 6.0 / 8.0));
        // Exactly at the target: no extra node for a float's noise.
        let s = service_scale("llama", &stats(56, 10.0, 56, 5.6, 0), fleet(8, 2, 1.0));
        assert!(close(s.offered_load, 0.56));
        assert_eq!(s.desired_nodes, 1, "0.56 / 0.7 = 0.8 → 1");
        let s = service_scale("llama", &stats(14, 10.0, 14, 14.0, 0), fleet(8, 2, 1.0));
        assert!(close(s.desired_nodes_share, 2.0));
        assert_eq!(s.desired_nodes, 2);
    }

    #[test]
    fn idle_and_unserved_services() {
        // Nothing arrived: no load, no node wanted.
        let idle = service_scale("idle", &stats(0, 60.0, 0, 0.0, 0), fleet(4, 1, 4.0));
        assert_eq!((idle.offered_load, idle.desired_nodes), (0.0, 0));
        assert_eq!(idle.utilisation, Some(0.0));
        assert_eq!(idle.queue_wait_p90_s, None);
        // Calls arrive, no node serves it: no capacity, no utilisation, and
        // at least one node wanted, shared among the members.
        let mut none = fleet(0, 0, 0.0);
        none.slots_per_node = None;
        none.members = 4;
        let unserved = service_scale("new", &stats(30, 60.0, 0, 0.0, 0), none);
        assert_eq!(unserved.utilisation, None);
        assert_eq!(unserved.hold_s, None);
        assert!(close(unserved.desired_nodes_share, 0.25));
        assert_eq!(unserved.desired_nodes, 1);
        assert!(close(unserved.slots_per_node, 1.0));
    }

    #[test]
    fn cluster_sums_add_shares_and_keep_the_fleets_capacity() {
        // Two gateways, one fleet of 3 nodes × 4 slots: gateway a sees 10
        // calls/s of 0.4 s, gateway b 5 calls/s of 1.0 s.
        let mut a_stats = stats(600, 60.0, 600, 240.0, 4);
        a_stats.waits[0] = 9;
        let mut b_stats = stats(300, 60.0, 300, 300.0, 5);
        b_stats.waits[10] = 1;
        let mut fleet_a = fleet(12, 3, 4.0);
        fleet_a.waiting = 1;
        let a = service_scale("llama", &a_stats, fleet_a);
        let b = service_scale("llama", &b_stats, fleet(12, 3, 4.0));
        let only_b = service_scale("embed", &stats(60, 60.0, 60, 6.0, 0), fleet(4, 1, 4.0));
        let cluster = sum([&[a.clone()][..], &[b.clone(), only_b.clone()][..]]);
        assert_eq!(cluster.len(), 2);
        assert_eq!(
            cluster[0], only_b,
            "a service one member saw is its figures"
        );
        let llama = &cluster[1];
        assert!(close(llama.arrivals_per_s, 15.0));
        assert!(close(llama.offered_load, 4.0 + 5.0));
        assert!(
            close(llama.hold_s.unwrap(), 9.0 / 15.0),
            "weighted by arrivals"
        );
        assert_eq!((llama.running, llama.waiting), (9, 1));
        assert_eq!((llama.capacity, llama.nodes), (12, 3), "not added");
        assert!(close(llama.utilisation.unwrap(), 9.0 / 12.0));
        // 9 slots / (0.7 × 4) = 3.21: 4 nodes, though each member alone
        // would round its share (1.43, 1.79) up to 2.
        assert!(close(llama.desired_nodes_share, 9.0 / 2.8));
        assert_eq!(llama.desired_nodes, 4);
        assert_eq!((a.desired_nodes, b.desired_nodes), (2, 2));
        assert_eq!(llama.queue_waits[0], 9);
        assert_eq!(llama.queue_waits[10], 1);
        assert!(
            llama.queue_wait_p90_s.unwrap() <= 0.001,
            "9 of 10 waits under 1 ms"
        );
    }

    #[test]
    fn summing_no_member_or_one_member() {
        assert!(sum(std::iter::empty::<&[ServiceScale]>()).is_empty());
        let one = service_scale("x", &stats(10, 10.0, 10, 1.0, 1), fleet(4, 1, 4.0));
        assert_eq!(sum([&[one.clone()][..]]), vec![one]);
    }
}
