//! Mixed wire versions: peers of the first release (`switchyard/1`,
//! postcard bodies) and of this one (`switchyard/2`, CBOR bodies) work
//! together, each connection speaking the version its handshake picked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{Fleet, TOKEN, service};
use client::{Client, ClientConfig};
use protocol::{Codec, Message, WireVersion};
use transport::{EndpointConfig, FramedRecv};

async fn echo_calls(client: &Client, n: usize) {
    for i in 0..n {
        let payload = format!("call {i}");
        let r = client.call("echo", payload.clone()).await.unwrap();
        assert_eq!(&r.data[..], payload.as_bytes());
        assert_eq!(r.meta.node_id, "old-agent");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_agent_and_v1_clients_work_through_a_v2_gateway() {
    let mut fleet = Fleet::start(|_| {}).await;
    // A real agent that offers only `switchyard/1`: the first release's
    // format, frozen in `protocol::v1`.
    fleet.spawn_agent_with(
        "old-agent",
        TOKEN,
        "max_wire_version = 1",
        &service("echo", "echo", ""),
    );
    fleet.wait_nodes(1).await;
    let node = fleet.gateway.registry().get("old-agent").unwrap();
    assert_eq!(transport::wire_version(&node.connection), WireVersion::V1);

    // A v2 client's calls are relayed to the v1 agent.
    let v2 = fleet.client().await;
    echo_calls(&v2, 20).await;

    // An SDK pinned to v1 calls and lists the nodes.
    let v1 = Client::connect(
        ClientConfig::new(fleet.addr.clone(), fleet.ca()).with_max_wire_version(WireVersion::V1),
    )
    .await
    .unwrap();
    echo_calls(&v1, 20).await;
    let nodes = v1.nodes().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].spec.id, "old-agent");

    // The bytes on a v1 connection are the first release's: a v1 header
    // with an empty `ListNodes` body, answered by a frame of version 1.
    let addr = fleet.addr.parse().unwrap();
    let config = EndpointConfig {
        max_wire_version: WireVersion::V1,
        ..EndpointConfig::default()
    };
    let endpoint = transport::client_endpoint(&fleet.ca(), addr, &config).unwrap();
    let connection = endpoint.connect(addr, "localhost").unwrap().await.unwrap();
    assert_eq!(transport::wire_version(&connection), WireVersion::V1);
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(&[1, protocol::FrameKind::ListNodes as u8, 0, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    send.finish().unwrap();
    let mut head = [0u8; protocol::HEADER_LEN];
    recv.read_exact(&mut head).await.unwrap();
    assert_eq!(head[0], 1, "a v1 frame answers a v1 request");
    assert_eq!(head[1], protocol::FrameKind::Nodes as u8);

    // A v2 frame on a v1 connection is refused with a clear error.
    let (mut send, recv) = connection.open_bi().await.unwrap();
    send.write_all(&[2, protocol::FrameKind::ListNodes as u8, 0, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    send.finish().unwrap();
    let mut recv = FramedRecv::new(recv, Codec::default().with_version(WireVersion::V1));
    match recv.recv().await.unwrap() {
        Some(Message::Error(e)) => assert!(e.message.contains("version"), "{}", e.message),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_agent_and_client_fall_back_to_a_v1_only_gateway() {
    let mut fleet = Fleet::start(|config| config.max_wire_version = WireVersion::V1).await;
    fleet.spawn_agent("old-agent", TOKEN, &service("echo", "echo", ""));
    fleet.wait_nodes(1).await;
    let node = fleet.gateway.registry().get("old-agent").unwrap();
    assert_eq!(transport::wire_version(&node.connection), WireVersion::V1);
    let client = fleet.client().await;
    echo_calls(&client, 20).await;
}
