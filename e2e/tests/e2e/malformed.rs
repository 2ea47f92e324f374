//! Bad input from a peer gets a clear error and the gateway stays healthy.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{Fleet, TOKEN, service};
use client::ErrorKind;
use protocol::{Codec, Message};
use transport::{EndpointConfig, FramedRecv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_a_clear_error() {
    let mut fleet = Fleet::start(|_| {}).await;
    fleet.spawn_agent("node-a", TOKEN, &service("echo", "echo", ""));
    fleet.wait_nodes(1).await;

    let addr = fleet.addr.parse().unwrap();
    let endpoint =
        transport::client_endpoint(&fleet.ca(), addr, &EndpointConfig::default()).unwrap();
    let connection = endpoint.connect(addr, "localhost").unwrap().await.unwrap();

    // A frame header announcing 4 GiB: refused before anything is allocated.
    let (mut send, recv) = connection.open_bi().await.unwrap();
    send.write_all(&[protocol::VERSION, 10, 0, 0, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    send.finish().unwrap();
    let mut recv = FramedRecv::new(recv, Codec::default());
    match recv.recv().await.unwrap() {
        Some(Message::Error(e)) => {
            assert_eq!(e.kind, ErrorKind::BadRequest);
            assert!(e.message.contains("exceeds the maximum"), "{}", e.message);
        }
        other => panic!("expected an error, got {other:?}"),
    }

    // Garbage where a call head should be.
    let (mut send, recv) = connection.open_bi().await.unwrap();
    send.write_all(&[protocol::VERSION, 5, 0, 0, 0, 0, 0, 3, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    send.finish().unwrap();
    let mut recv = FramedRecv::new(recv, Codec::default());
    match recv.recv().await.unwrap() {
        Some(Message::Error(e)) => assert!(e.message.contains("malformed"), "{}", e.message),
        other => panic!("expected an error, got {other:?}"),
    }

    // A client speaking a future frame version.
    let (mut send, recv) = connection.open_bi().await.unwrap();
    send.write_all(&[9, 5, 0, 0, 0, 0, 0, 0]).await.unwrap();
    send.finish().unwrap();
    let mut recv = FramedRecv::new(recv, Codec::default());
    match recv.recv().await.unwrap() {
        Some(Message::Error(e)) => assert!(e.message.contains("version"), "{}", e.message),
        other => panic!("expected an error, got {other:?}"),
    }

    // The same gateway still serves good calls.
    let client = fleet.client().await;
    let r = client.call("echo", "still fine").await.unwrap();
    assert_eq!(&r.data[..], b"still fine");
}
