//! Wire version negotiation by ALPN over real QUIC on loopback: each side
//! offers every version up to its `max_wire_version`, the connection
//! speaks the newest both know, and its frames carry that version.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use protocol::{Codec, Message, WireVersion};
use switchyard_transport::{EndpointConfig, FramedRecv, FramedSend, TlsFiles};

async fn negotiate(server_max: WireVersion, client_max: WireVersion) -> WireVersion {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = TlsFiles::in_dir(dir.path());
    files
        .create_if_missing(&["localhost".to_string()])
        .expect("tls files");
    let server = switchyard_transport::server_endpoint(
        "127.0.0.1:0".parse().unwrap(),
        &files,
        &EndpointConfig {
            max_wire_version: server_max,
            ..EndpointConfig::default()
        },
    )
    .expect("server");
    let addr = server.local_addr().unwrap();
    let serve = tokio::spawn(async move {
        let connection = server.accept().await.unwrap().await.unwrap();
        let version = switchyard_transport::wire_version(&connection);
        let codec = switchyard_transport::codec_for(&connection, Codec::default());
        let (send, recv) = connection.accept_bi().await.unwrap();
        let mut send = FramedSend::new(send, codec);
        let mut recv = FramedRecv::new(recv, codec);
        let got = recv.recv().await.unwrap();
        assert_eq!(got, Some(Message::Queued(7)));
        send.send(&Message::Ack("ok".into())).await.unwrap();
        send.finish().unwrap();
        send.stopped().await;
        version
    });
    let client = switchyard_transport::client_endpoint(
        &files.ca,
        addr,
        &EndpointConfig {
            max_wire_version: client_max,
            ..EndpointConfig::default()
        },
    )
    .expect("client");
    let connection = client.connect(addr, "localhost").unwrap().await.unwrap();
    let version = switchyard_transport::wire_version(&connection);
    // open_bi frames in the negotiated version whatever the codec said.
    let (mut send, mut recv) = switchyard_transport::open_bi(&connection, Codec::default())
        .await
        .unwrap();
    send.send(&Message::Queued(7)).await.unwrap();
    assert_eq!(recv.recv().await.unwrap(), Some(Message::Ack("ok".into())));
    assert_eq!(serve.await.unwrap(), version, "both ends agree");
    version
}

#[tokio::test]
async fn the_newest_common_version_is_picked() {
    use WireVersion::{V1, V2};
    assert_eq!(negotiate(V2, V2).await, V2);
    assert_eq!(negotiate(V2, V1).await, V1, "a v1 client on a v2 server");
    assert_eq!(negotiate(V1, V2).await, V1, "a v2 client on a v1 server");
    assert_eq!(negotiate(V1, V1).await, V1);
}
