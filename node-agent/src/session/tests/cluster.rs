//! The agent on several gateways: it follows a member list to every member,
//! leaves a member gone, and reports the node's load (every gateway's
//! calls) to each gateway that follows members.

use protocol::{Member, MemberList, NodeLoad};

use super::*;

fn member(name: &str, gateway: &Gateway) -> Member {
    Member {
        name: name.into(),
        quic: gateway.addr.to_string(),
        http: String::new(),
    }
}

impl Registration {
    async fn members(&mut self, revision: u64, members: Vec<Member>) {
        self.send
            .send(&Message::Members(MemberList { revision, members }))
            .await
            .expect("send members");
    }

    /// Reads control frames until `wanted` picks one (stats and the rest
    /// are skipped).
    async fn until<T>(&mut self, mut wanted: impl FnMut(&Message) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.recv.recv())
                .await
                .expect("the frame comes in time");
            match frame {
                Ok(Some(message)) => {
                    if let Some(found) = wanted(&message) {
                        return found;
                    }
                }
                other => panic!("control stream ended: {other:?}"),
            }
        }
    }

    async fn next_load(&mut self) -> NodeLoad {
        self.until(|m| match m {
            Message::Load(load) => Some(load.clone()),
            _ => None,
        })
        .await
    }
}

#[tokio::test]
async fn the_agent_registers_with_every_member_and_leaves_those_gone() {
    let a = Gateway::start();
    let b = a.beside();
    let mut sleep = ServiceConfig::new("sleep", ServiceKind::Sleep);
    sleep.max_concurrent = 1;
    let config = a.config(vec![ServiceConfig::new("echo", ServiceKind::Echo), sleep]);
    let (stop, agent) = spawn_agent(config);

    let mut on_a = a.accept().await;
    assert!(on_a.register.follows_members, "the agent follows members");
    on_a.accept().await;
    on_a.members(3, vec![member("gw-a", &a), member("gw-b", &b)])
        .await;
    // It dials the member it did not know, and keeps its session with `a`.
    let mut on_b = b.accept().await;
    assert_eq!(on_b.register.node.id, "n1");
    on_b.accept().await;
    on_b.members(3, vec![member("gw-a", &a), member("gw-b", &b)])
        .await;

    // A call through `b` shows in the load both gateways get.
    let slow = {
        let connection = on_b.connection.clone();
        tokio::spawn(async move { call(&connection, "sleep", b"600", 5000).await })
    };
    let busy = ("sleep".to_string(), 1);
    let to_a = on_a
        .until(|m| match m {
            Message::Load(load) if load.in_flight.contains(&busy) => Some(load.clone()),
            _ => None,
        })
        .await;
    // Each gateway is told the other gateways' calls apart: to `a`, `b`'s
    // call is another's; to `b`, it is its own.
    assert!(to_a.others.expect("others told").contains(&busy));
    let to_b = on_b
        .until(|m| match m {
            Message::Load(load) if load.in_flight.contains(&busy) => Some(load.clone()),
            _ => None,
        })
        .await;
    let others = to_b.others.expect("others told");
    assert!(others.contains(&("sleep".to_string(), 0)), "{others:?}");
    // The node is the authority on its capacity: `a`'s call is refused
    // while `b`'s runs, and says it never ran.
    let err = on_a.call("sleep", b"1", 5000).await.expect_err("full");
    assert_eq!(err.kind, ErrorKind::NoNodeAvailable);
    assert!(err.not_run);
    let (_, body) = slow.await.expect("join").expect("b's call");
    assert_eq!(body, Bytes::from_static(b"slept 600 ms"));
    let idle = ("sleep".to_string(), 0);
    on_a.until(|m| match m {
        Message::Load(load) if load.in_flight.contains(&idle) => Some(()),
        _ => None,
    })
    .await;
    assert!(on_b.next_load().await.in_flight.len() == 2);

    // An older list changes nothing; a newer one without `b` ends its session
    // with a drain.
    on_a.members(2, vec![member("gw-a", &a)]).await;
    on_a.members(4, vec![member("gw-a", &a)]).await;
    on_b.until(|m| matches!(m, Message::Drain).then_some(()))
        .await;
    let closed = tokio::time::timeout(WAIT, on_b.connection.closed())
        .await
        .expect("b's session closes once drained");
    assert!(matches!(
        closed,
        quinn::ConnectionError::ApplicationClosed(_)
    ));
    // `a` still serves.
    let (_, body) = on_a.call("echo", b"still", 5000).await.expect("echo via a");
    assert_eq!(body, Bytes::from_static(b"still"));

    // At shutdown `a` gets the drain too.
    let _ = stop.send(());
    on_a.until(|m| matches!(m, Message::Drain).then_some(()))
        .await;
    tokio::time::timeout(WAIT, agent)
        .await
        .expect("the agent stops")
        .expect("join")
        .expect("clean stop");
}

#[tokio::test]
async fn the_agent_falls_back_to_its_bootstrap_address_when_every_member_is_gone() {
    let a = Gateway::start();
    let config = a.config(vec![ServiceConfig::new("echo", ServiceKind::Echo)]);
    let (stop, agent) = spawn_agent(config);
    let mut on_a = a.accept().await;
    on_a.accept().await;
    // The list names members the agent cannot register with (their
    // certificate chains to another CA: every handshake fails).
    let stranger = Gateway::start();
    let refuse = {
        let endpoint = stranger.endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let _ = incoming.await;
            }
        })
    };
    let dead = |name: &str| Member {
        name: name.into(),
        quic: stranger.addr.to_string(),
        http: String::new(),
    };
    on_a.members(7, vec![dead("gw-x"), dead("gw-y")]).await;
    // The agent leaves `a` (not a member) ...
    on_a.until(|m| matches!(m, Message::Drain).then_some(()))
        .await;
    // ... finds the members unreachable, and comes back to `a`.
    let mut again = a.accept().await;
    again.accept().await;
    again.next_stats().await;
    refuse.abort();
    let _ = stop.send(());
    tokio::time::timeout(WAIT, agent)
        .await
        .expect("the agent stops")
        .expect("join")
        .expect("clean stop");
}

#[tokio::test]
async fn a_gateway_alone_keeps_its_session_whatever_address_it_advertises() {
    let a = Gateway::start();
    let config = a.config(vec![ServiceConfig::new("echo", ServiceKind::Echo)]);
    let (stop, agent) = spawn_agent(config);
    let mut on_a = a.accept().await;
    on_a.accept().await;
    // A gateway without a cluster names itself by its listen address,
    // which may be no address to dial (`0.0.0.0`, port 0).
    let alone = Member {
        name: "0.0.0.0:0".into(),
        quic: "0.0.0.0:0".into(),
        http: String::new(),
    };
    on_a.members(1, vec![alone]).await;
    for _ in 0..3 {
        on_a.until(|m| match m {
            Message::Drain => panic!("the agent left its only gateway"),
            Message::Stats(_) => Some(()),
            _ => None,
        })
        .await;
    }
    let (_, body) = on_a.call("echo", b"here", 5000).await.expect("echo");
    assert_eq!(body, Bytes::from_static(b"here"));
    let _ = stop.send(());
    tokio::time::timeout(WAIT, agent)
        .await
        .expect("the agent stops")
        .expect("join")
        .expect("clean stop");
}

#[tokio::test]
async fn load_reports_are_coalesced_never_one_per_call() {
    let a = Gateway::start();
    let config = a.config(vec![ServiceConfig::new("echo", ServiceKind::Echo)]);
    let (stop, agent) = spawn_agent(config);
    let mut on_a = a.accept().await;
    on_a.accept().await;
    on_a.members(1, vec![member("gw-a", &a)]).await;
    // The first report (the prefix blocks' whole set) comes at once.
    on_a.next_load().await;
    const CALLS: u32 = 60;
    let calls = {
        let connection = on_a.connection.clone();
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            for _ in 0..CALLS {
                call(&connection, "echo", b"x", 5000).await.expect("echo");
            }
            start.elapsed()
        })
    };
    let mut loads = 0u32;
    let mut last = None;
    let end = loop {
        if calls.is_finished() {
            break calls.await.expect("join");
        }
        match tokio::time::timeout(Duration::from_millis(20), on_a.recv.recv()).await {
            Ok(Ok(Some(Message::Load(load)))) => {
                loads += 1;
                last = Some(load);
            }
            Ok(Ok(Some(_))) | Err(_) => {}
            other => panic!("control stream ended: {other:?}"),
        }
    };
    // The calls' end is reported too.
    let last = match last {
        Some(load) if load.in_flight == [("echo".to_string(), 0)] => load,
        _ => {
            on_a.until(|m| match m {
                Message::Load(load) if load.in_flight == [("echo".to_string(), 0)] => {
                    Some(load.clone())
                }
                _ => None,
            })
            .await
        }
    };
    assert_eq!(last.in_flight, [("echo".to_string(), 0)]);
    // 2 changes per call, at most one report per coalescing period.
    let periods =
        u32::try_from(end.as_millis() / link::LOAD_COALESCE.as_millis()).unwrap_or(u32::MAX);
    assert!(loads < CALLS, "{loads} load reports for {CALLS} calls");
    assert!(
        loads <= periods + 2,
        "{loads} load reports in {end:?} (at most one per {:?})",
        link::LOAD_COALESCE
    );
    let _ = stop.send(());
    tokio::time::timeout(WAIT, agent)
        .await
        .expect("the agent stops")
        .expect("join")
        .expect("clean stop");
}
