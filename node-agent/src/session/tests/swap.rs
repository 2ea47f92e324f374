//! Swaps over the control stream: the slots in the registration, a `Swap`
//! from the gateway answered by `Swapped` while stats keep flowing.

use protocol::{SlotSpec, SwapReport, SwapRequest};

use super::*;
use crate::config::SlotConfig;
use crate::slots::tests::{free_port, toy};

/// Reads control frames until a `Swapped`; returns it and how many stats
/// came before it.
async fn next_report(reg: &mut Registration) -> (SwapReport, usize) {
    let mut stats = 0;
    loop {
        match tokio::time::timeout(WAIT, reg.recv.recv()).await {
            Ok(Ok(Some(Message::Stats(_)))) => stats += 1,
            Ok(Ok(Some(Message::Swapped(report)))) => return (report, stats),
            other => panic!("expected stats or a swap report, got {other:?}"),
        }
    }
}

fn answers(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[tokio::test]
async fn the_gateway_swaps_a_slot_over_the_control_stream() {
    let gateway = Gateway::start();
    let (a, b) = (free_port(), free_port());
    let mut config = gateway.config(vec![
        ServiceConfig::new("echo", ServiceKind::Echo),
        toy("llama", a, 100, &[]),
        toy("mistral", b, 600, &[]),
    ]);
    config.slots = vec![SlotConfig::new("gpu0", ["llama", "mistral"]).with_loaded("llama")];
    let (stop, agent) = spawn_agent(config);

    // The initial service is loaded before the registration, which says so.
    let mut reg = gateway.accept().await;
    reg.register.node.validate().expect("a valid spec");
    assert_eq!(
        reg.register.node.slots,
        [SlotSpec {
            name: "gpu0".into(),
            can_host: vec!["llama".into(), "mistral".into()],
            loaded: Some("llama".into()),
        }]
    );
    let load_ms: Vec<_> = reg
        .register
        .node
        .services
        .iter()
        .map(|s| (s.name.as_str(), s.load_ms))
        .collect();
    assert_eq!(load_ms, [("echo", 0), ("llama", 100), ("mistral", 600)]);
    reg.accept().await;
    let (_, body) = reg.call("llama", b"hi", 5000).await.expect("llama");
    assert_eq!(body, Bytes::from_static(b"llama: hi"));

    let swap = SwapRequest {
        swap_id: 5,
        slot: "gpu0".into(),
        service: "mistral".into(),
    };
    reg.send
        .send(&Message::Swap(swap))
        .await
        .expect("send swap");
    let (report, stats) = next_report(&mut reg).await;
    assert_eq!(report.swap_id, 5);
    assert_eq!(report.loaded.as_deref(), Some("mistral"), "{report:?}");
    assert_eq!(report.error, None);
    assert!(report.duration_ms >= 600, "{report:?}");
    assert!(stats >= 2, "stats kept flowing during the load: {stats}");
    assert!(!answers(a), "llama's server is stopped");
    let (_, body) = reg.call("mistral", b"yo", 5000).await.expect("mistral");
    assert_eq!(body, Bytes::from_static(b"mistral: yo"));
    let err = reg.call("llama", b"hi", 5000).await.expect_err("unloaded");
    assert_eq!(err.kind, ErrorKind::NoNodeAvailable);

    // A bad request is answered with an error, the slot untouched.
    let swap = SwapRequest {
        swap_id: 6,
        slot: "gpu0".into(),
        service: "echo".into(),
    };
    reg.send
        .send(&Message::Swap(swap))
        .await
        .expect("send swap");
    let (report, _) = next_report(&mut reg).await;
    assert_eq!(report.swap_id, 6);
    assert_eq!(report.loaded.as_deref(), Some("mistral"));
    assert_eq!(
        report.error.as_deref(),
        Some("slot gpu0 cannot host \"echo\"")
    );

    // A new connection registers the slot's current state.
    reg.connection.close(
        protocol::codes::close::SHUTDOWN.into(),
        b"gateway restarting",
    );
    let mut again = gateway.accept().await;
    assert_eq!(
        again.register.node.slots[0].loaded.as_deref(),
        Some("mistral")
    );
    again.accept().await;
    again.next_stats().await;

    stop.send(()).expect("agent alive");
    let result = tokio::time::timeout(WAIT, agent)
        .await
        .expect("stops")
        .expect("join");
    assert!(result.is_ok(), "{result:?}");
    assert!(!answers(b), "the agent stops the slot's server at shutdown");
}
