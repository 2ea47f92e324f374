//! Results stream end to end: a command's stdout reaches the SDK chunk by
//! chunk as the program writes it, a failure midway ends the stream with
//! the service's error, and dropping the stream kills the command.

use std::time::{Duration, Instant};

use client::ErrorKind;
use futures_util::StreamExt;

use crate::common::{Fleet, TOKEN, eventually, service};

/// A command that writes a line, then another 600 ms later, then a third.
const TICKS: &str =
    r#"command = ["sh", "-c", "echo one; sleep 0.6; echo two; sleep 0.6; echo three"]"#;

#[tokio::test]
async fn a_streamed_call_yields_chunks_as_the_command_writes_them() {
    let mut fleet = Fleet::start(|_| {}).await;
    fleet.spawn_agent("node-a", TOKEN, &service("ticks", "command", TICKS));
    fleet.wait_nodes(1).await;
    let client = fleet.client().await;

    let started = Instant::now();
    let mut stream = client
        .call("ticks", Vec::new())
        .stream()
        .await
        .expect("stream");
    assert_eq!(stream.meta.node_id, "node-a");
    assert_eq!(stream.meta.payload_len, None, "a command's result streams");
    let mut chunks = Vec::new();
    let mut first_at = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("chunk");
        first_at.get_or_insert_with(|| started.elapsed());
        chunks.push(chunk);
    }
    let total = started.elapsed();
    let first_at = first_at.expect("a chunk");
    let text: String = chunks
        .iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    assert_eq!(text, "one\ntwo\nthree\n");
    assert!(chunks.len() >= 3, "one chunk per line written: {chunks:?}");
    assert!(
        first_at < total / 2,
        "the first line came at {first_at:?}, before half of {total:?}"
    );
    // `call` still collects the whole result.
    let whole = client.call("ticks", Vec::new()).await.expect("call");
    assert_eq!(&whole.data[..], b"one\ntwo\nthree\n");
}

#[tokio::test]
async fn a_failure_midway_ends_the_stream_with_the_service_error() {
    let mut fleet = Fleet::start(|_| {}).await;
    let script = r#"command = ["sh", "-c", "echo partial; sleep 0.2; echo broken >&2; exit 3"]"#;
    fleet.spawn_agent("node-a", TOKEN, &service("flaky", "command", script));
    fleet.wait_nodes(1).await;
    let client = fleet.client().await;

    let mut stream = client
        .call("flaky", Vec::new())
        .stream()
        .await
        .expect("the head comes with the first line");
    let first = stream.next().await.expect("an item").expect("a chunk");
    assert_eq!(&first[..], b"partial\n");
    let err = stream.next().await.expect("an item").expect_err("the exit");
    assert_eq!(err.kind(), Some(ErrorKind::ServiceFailed), "{err}");
    assert!(err.to_string().contains("exit status 3"), "{err}");
    assert!(err.to_string().contains("broken"), "stderr is kept: {err}");
    assert!(stream.next().await.is_none(), "the error is the last item");

    let err = client
        .call("flaky", Vec::new())
        .await
        .expect_err("call fails too");
    assert_eq!(err.kind(), Some(ErrorKind::ServiceFailed));
}

#[tokio::test]
async fn dropping_the_stream_kills_the_command() {
    let mut fleet = Fleet::start(|_| {}).await;
    let mark = fleet.dir.path().join("finished");
    let script = format!(
        "command = [\"sh\", \"-c\", \"echo started; sleep 2; touch {}\"]\nmax_concurrent = 1",
        mark.display()
    );
    fleet.spawn_agent("node-a", TOKEN, &service("slow", "command", &script));
    fleet.wait_nodes(1).await;
    let client = fleet.client().await;

    let mut stream = client
        .call("slow", Vec::new())
        .stream()
        .await
        .expect("stream");
    let first = stream.next().await.expect("an item").expect("a chunk");
    assert_eq!(&first[..], b"started\n");
    drop(stream);

    // The slot frees at once (the gateway saw the client leave) and the
    // agent killed the command: the file it would write never appears.
    let registry = fleet.gateway.registry().clone();
    eventually(Duration::from_secs(2), || {
        let nodes = registry.views(Instant::now());
        let in_flight = nodes[0].services[0].in_flight;
        (in_flight == 0)
            .then_some(())
            .ok_or(format!("{in_flight} in flight"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!mark.exists(), "the command ran to its end");
    // The node takes calls again (max_concurrent 1: its slot was freed).
    let mut again = client
        .call("slow", Vec::new())
        .stream()
        .await
        .expect("a new call");
    assert_eq!(
        &again.next().await.expect("item").expect("chunk")[..],
        b"started\n"
    );
}
