//! What a dropped `FramedRecv` tells its peer, over real QUIC on loopback:
//! nothing when the stream's end had already arrived (the peer's send
//! completes as acknowledged), `STOP_SENDING` when the peer was still
//! sending.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use protocol::{Codec, Message};
use switchyard_transport::{EndpointConfig, TlsFiles};

/// How a server's raw send stream ended after the client read one framed
/// message from it and dropped its `FramedRecv` (`Ok(None)` when every byte
/// was acknowledged, `Ok(Some(code))` when the client stopped it first),
/// and how many `STOP_SENDING` frames the server received by then.
async fn send_ends(finish: bool) -> (Result<Option<quinn::VarInt>, quinn::StoppedError>, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = TlsFiles::in_dir(dir.path());
    files
        .create_if_missing(&["localhost".to_string()])
        .expect("tls files");
    let config = EndpointConfig::default();
    let server =
        switchyard_transport::server_endpoint("127.0.0.1:0".parse().unwrap(), &files, &config)
            .expect("server");
    let addr = server.local_addr().unwrap();
    let serve = tokio::spawn(async move {
        let connection = server.accept().await.unwrap().await.unwrap();
        let codec = switchyard_transport::codec_for(&connection, Codec::default());
        let (mut send, _recv) = connection.accept_bi().await.unwrap();
        let mut buf = Vec::new();
        codec
            .encode(&Message::Ack("done".into()), &mut buf)
            .unwrap();
        send.write_all(&buf).await.unwrap();
        if finish {
            send.finish().unwrap();
        }
        let ended = tokio::time::timeout(Duration::from_secs(5), send.stopped())
            .await
            .expect("the client acknowledged or stopped the stream");
        // A STOP_SENDING the client sent arrives well within this on
        // loopback, after the ACK or with it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        (ended, connection.stats().frame_rx.stop_sending)
    });
    let client = switchyard_transport::client_endpoint(&files.ca, addr, &config).expect("client");
    let connection = client.connect(addr, "localhost").unwrap().await.unwrap();
    let (mut send, mut recv) = switchyard_transport::open_bi(&connection, Codec::default())
        .await
        .unwrap();
    // The server learns of the stream from its first frame.
    send.send(&Message::Queued(1)).await.unwrap();
    assert_eq!(
        recv.recv().await.unwrap(),
        Some(Message::Ack("done".into()))
    );
    // Dropped at once, before this side's delayed ACK goes out: the server
    // wrote the message and its FIN in one go, so both came in one packet.
    drop(recv);
    let ended = serve.await.unwrap();
    drop(connection);
    ended
}

#[tokio::test]
async fn a_stream_whose_end_arrived_is_not_stopped() {
    let (ended, stop_sending) = send_ends(true).await;
    assert_eq!(ended.unwrap(), None, "the whole stream was acknowledged");
    assert_eq!(
        stop_sending, 0,
        "no STOP_SENDING for a stream read to its end"
    );
}

#[tokio::test]
async fn a_stream_still_sending_is_stopped() {
    let (ended, stop_sending) = send_ends(false).await;
    assert_eq!(ended.unwrap(), Some(0u32.into()), "dropped before its end");
    assert_eq!(stop_sending, 1);
}
