//! Rebalancing on the real tree: calls entered at site-a wait in its queue
//! while site-b is idle; the root moves waiting calls across (site-a hands
//! them up, the root runs them on site-b), every call is served once, and
//! the calls wait less than with rebalancing off.

use std::time::{Duration, Instant};

use super::Tree;
use crate::chaos::GatewayProcess;

/// Calls entered at site-a at once, each sleeping this long on its node.
const CALLS: usize = 10;
const WORK_MS: &str = "600";

/// Sum of `calls_total` samples at `gateway` whose labels hold every one
/// of `labels`.
async fn calls_total(gateway: &GatewayProcess, labels: &[&str]) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", gateway.admin))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .filter(|l| l.starts_with("calls_total{") && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Enters [`CALLS`] `work` calls at site-a at once; returns each one's
/// (node, via, time taken).
async fn burst(tree: &Tree) -> Vec<(String, Vec<String>, Duration)> {
    let client = tree.site_a.client(1).await;
    let calls: Vec<_> = (0..CALLS)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let result = client
                    .call("work", WORK_MS)
                    .timeout(Duration::from_secs(20))
                    .await
                    .expect("work is served");
                (result.meta.node_id, result.meta.via, started.elapsed())
            })
        })
        .collect();
    let mut out = Vec::new();
    for call in calls {
        out.push(call.await.unwrap());
    }
    out
}

fn mean(results: &[(String, Vec<String>, Duration)]) -> Duration {
    results.iter().map(|r| r.2).sum::<Duration>() / results.len() as u32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_calls_move_to_an_idle_sibling_and_none_runs_twice() {
    let on = "[rebalance]\nperiod_ms = 100\nthreshold_ms = 100\n";
    let tree = Tree::start(on, "").await;
    let results = burst(&tree).await;
    let moved: Vec<_> = results.iter().filter(|r| r.0 == "node-b").collect();
    assert!(
        !moved.is_empty(),
        "some waiting calls ran on site-b: {results:?}\n{}",
        tree.logs()
    );
    for r in &moved {
        assert_eq!(r.1, ["root", "site-b"], "handed up, then down to site-b");
    }
    // Every call ran exactly once, on one of the three leaves.
    let work_ok = ["service=\"work\"", "outcome=\"ok\""];
    let leaves = calls_total(&tree.site_a, &[work_ok[0], work_ok[1], "node=\"node-a\""]).await
        + calls_total(&tree.site_a1, &[work_ok[0], work_ok[1], "node=\"node-a1\""]).await
        + calls_total(&tree.site_b, &[work_ok[0], work_ok[1], "node=\"node-b\""]).await;
    assert_eq!(leaves, CALLS as f64, "each call ran once");
    let with = mean(&results);
    drop(tree);

    let off = "[rebalance]\nenabled = false\n";
    let tree = Tree::start(off, "").await;
    let results = burst(&tree).await;
    assert!(results.iter().all(|r| r.0 != "node-b"), "{results:?}");
    let without = mean(&results);
    eprintln!(
        "rebalancing on the real tree, {CALLS} calls of {WORK_MS} ms at site-a: mean time {with:?} with, {without:?} without ({} moved to site-b)",
        moved.len()
    );
}

/// A peer that registers as a child gateway and sends a call up it was
/// never asked for: refused (a child hands up only what its parent asked:
/// it cannot push its callers' calls through the parent's limits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_cannot_hand_up_a_call_it_was_not_asked_for() {
    use protocol::{Codec, DispatchHead, Message, NodeSpec, Register};

    let mut fleet = crate::common::Fleet::start(|_| {}).await;
    fleet.spawn_agent(
        "node-a",
        crate::common::TOKEN,
        &crate::common::service("echo", "echo", ""),
    );
    fleet.wait_nodes(1).await;
    let wire = crate::common::direct::Wire::gateway(&fleet).await;
    let (mut send, mut recv) = transport::open_bi(&wire.connection, Codec::default())
        .await
        .expect("control stream");
    let spec = NodeSpec {
        id: "site-x".into(),
        region: String::new(),
        labels: Vec::new(),
        cost_per_hour: 0.0,
        services: Vec::new(),
        slots: Vec::new(),
        stats_interval_ms: 1000,
        heartbeat_ms: None,
        agent_version: String::new(),
        gateway: true,
    };
    let register = Register {
        token: crate::common::TOKEN.into(),
        node: spec,
        follows_members: false,
        direct: None,
        holds_on_control: false,
    };
    send.send(&Message::Register(register))
        .await
        .expect("register");
    match recv.recv().await.expect("reply") {
        Some(Message::Registered(r)) => assert!(r.takes_respec && !r.ancestry.is_empty()),
        other => panic!("not registered: {other:?}"),
    }
    let (mut up, mut answer) = transport::open_bi(&wire.connection, Codec::default())
        .await
        .expect("a stream up");
    let head = DispatchHead {
        call_id: 1,
        service: "echo".into(),
        payload_len: 2,
        timeout_ms: 5000,
        endpoint: None,
        log: false,
        traceparent: None,
        request_id: None,
        prefix_hashes: Vec::new(),
        job: false,
        tenant: Some("anyone".into()),
        priority: 0,
        hints: Vec::new(),
    };
    up.send_with_payload(&Message::Dispatch(head), &bytes::Bytes::from_static(b"hi"))
        .await
        .ok();
    match answer.recv().await.expect("an answer") {
        Some(Message::Error(e)) => {
            assert_eq!(e.kind, protocol::ErrorKind::BadRequest, "{e:?}");
            assert!(e.message.contains("asked"), "{}", e.message);
        }
        other => panic!("a call nobody asked for was not refused: {other:?}"),
    }
}
