//! A call that asks for its log (`CallHead::log`, what the job manager
//! sends) gets the command's stderr as `Log` frames relayed through the
//! gateway, in order among the stdout `Data`, before the end; a call that
//! does not ask gets none.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use protocol::{CallHead, Codec, LogStream, Message};
use transport::EndpointConfig;

use crate::common::{Fleet, TOKEN, service};

const SCRIPT: &str =
    r#"command = ["sh", "-c", "echo out; echo err >&2; sleep 0.2; echo err2 >&2"]"#;

/// Makes one raw v2 call of `service` and returns its frames after the
/// `Result` head, to the end.
async fn raw_call(fleet: &Fleet, service: &str, log: bool) -> Vec<Message> {
    let addr = fleet.addr.parse().unwrap();
    let endpoint =
        transport::client_endpoint(&fleet.ca(), addr, &EndpointConfig::default()).unwrap();
    let connection = endpoint.connect(addr, "localhost").unwrap().await.unwrap();
    let codec = transport::codec_for(&connection, Codec::default());
    let (mut send, mut recv) = transport::open_bi(&connection, codec).await.unwrap();
    let head = CallHead {
        service: service.into(),
        payload_len: 0,
        timeout_ms: 10_000,
        hints: Vec::new(),
        priority: 0,
        realtime: false,
        no_cache: false,
        max_age_s: None,
        api_key: None,
        endpoint: None,
        log,
        traceparent: None,
        request_id: None,
        lease: None,
    };
    send.send(&Message::Call(head)).await.unwrap();
    send.finish().unwrap();
    let mut frames = Vec::new();
    let mut headed = false;
    while let Some(frame) = recv.recv().await.unwrap() {
        match frame {
            Message::Queued(_) | Message::Reserved(_) => {}
            Message::Result(head) => {
                assert_eq!(head.payload_len, None, "a command's result streams");
                headed = true;
            }
            other => {
                assert!(headed, "{other:?} before the result head");
                let end = matches!(other, Message::End(_) | Message::Error(_));
                frames.push(other);
                if end {
                    break;
                }
            }
        }
    }
    frames
}

#[tokio::test]
async fn a_call_asking_for_its_log_gets_stderr_relayed_in_order() {
    let mut fleet = Fleet::start(|_| {}).await;
    fleet.spawn_agent("node-a", TOKEN, &service("job", "command", SCRIPT));
    fleet.wait_nodes(1).await;

    let frames = raw_call(&fleet, "job", true).await;
    let mut logs = String::new();
    let mut data = String::new();
    for frame in &frames[..frames.len() - 1] {
        match frame {
            Message::Log(chunk) => {
                assert_eq!(chunk.stream, LogStream::Stderr);
                assert!(chunk.ts_ms > 0);
                logs.push_str(&String::from_utf8_lossy(&chunk.data));
            }
            Message::Data(chunk) => data.push_str(&String::from_utf8_lossy(chunk)),
            other => panic!("unexpected {other:?} mid-result"),
        }
    }
    assert_eq!(logs, "err\nerr2\n");
    assert_eq!(data, "out\n");
    match frames.last() {
        // The log is not part of the result's length.
        Some(Message::End(trailer)) => assert_eq!(trailer.len, 4),
        other => panic!("expected the end, got {other:?}"),
    }

    // Not asked: only the result.
    let frames = raw_call(&fleet, "job", false).await;
    assert!(
        frames.iter().all(|f| !matches!(f, Message::Log(_))),
        "{frames:?}"
    );
}
