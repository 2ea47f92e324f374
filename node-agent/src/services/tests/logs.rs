//! A command's stderr as log chunks, when the call asks for its log: in
//! order among the stdout chunks, before the end; the failure still names
//! stderr's tail; a dropped stream or a timeout still kills the process.

use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::{ErrorKind, LogStream};

use super::{LONG, one};
use crate::services::{Body, Chunks, Item, ServiceKind, Services, Slot};

async fn start_logged(services: &Services, script: &str, timeout: Duration) -> (Chunks, Slot) {
    let slot = services.acquire("svc").expect("slot");
    let reply = slot
        .run_logged(Bytes::new(), timeout, None, true)
        .await
        .expect("started");
    match reply.body {
        Body::Stream(chunks) => (chunks, slot),
        Body::Whole(_) => panic!("expected a streamed body for {script}"),
    }
}

fn command(script: &str) -> Services {
    one(ServiceKind::command(["sh", "-c", script]))
}

/// Reads every item to the end: (is log, text) in order, and the outcome.
async fn drain(chunks: &mut Chunks) -> (Vec<(bool, String)>, Result<(), crate::ServiceError>) {
    let mut items = Vec::new();
    while let Some(item) = chunks.next_item().await {
        match item {
            Ok(Item::Data(data)) => items.push((false, String::from_utf8_lossy(&data).into())),
            Ok(Item::Log(chunk)) => {
                assert_eq!(chunk.stream, LogStream::Stderr);
                assert!(chunk.ts_ms > 0);
                items.push((true, String::from_utf8_lossy(&chunk.data).into()));
            }
            Err(e) => return (items, Err(e)),
        }
    }
    (items, Ok(()))
}

#[tokio::test]
async fn stderr_lines_arrive_as_log_chunks_in_order_while_it_runs() {
    let script = "echo out; echo err >&2; sleep 0.2; echo err2 >&2; printf tail >&2";
    let services = command(script);
    let (mut chunks, _slot) = start_logged(&services, script, LONG).await;
    // The first log line comes before the command ends (it sleeps first).
    let started = Instant::now();
    let mut early = Vec::new();
    while early.iter().all(|(log, _)| !log) {
        match chunks.next_item().await.expect("an item").expect("ok") {
            Item::Data(data) => early.push((false, String::from_utf8_lossy(&data).into_owned())),
            Item::Log(chunk) => early.push((true, String::from_utf8_lossy(&chunk.data).into())),
        }
    }
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "log came late"
    );
    let (rest, outcome) = drain(&mut chunks).await;
    outcome.expect("clean end");
    let logs: String = early
        .iter()
        .chain(&rest)
        .filter(|(log, _)| *log)
        .map(|(_, text)| text.as_str())
        .collect();
    let data: String = early
        .iter()
        .chain(&rest)
        .filter(|(log, _)| !*log)
        .map(|(_, text)| text.as_str())
        .collect();
    assert_eq!(logs, "err\nerr2\ntail");
    assert_eq!(data, "out\n");
    // Line-buffered: every chunk but the last is whole lines.
    let log_chunks: Vec<&String> = early
        .iter()
        .chain(&rest)
        .filter(|(log, _)| *log)
        .map(|(_, text)| text)
        .collect();
    assert_eq!(log_chunks.last().map(|s| s.as_str()), Some("tail"));
    for chunk in &log_chunks[..log_chunks.len() - 1] {
        assert!(chunk.ends_with('\n'), "{chunk:?} is not whole lines");
    }
}

#[tokio::test]
async fn without_log_stderr_stays_out_of_the_stream() {
    let services = command("echo out; echo err >&2");
    let slot = services.acquire("svc").expect("slot");
    let reply = slot.run(Bytes::new(), LONG, None).await.expect("started");
    let Body::Stream(mut chunks) = reply.body else {
        panic!("expected a stream");
    };
    let (items, outcome) = drain(&mut chunks).await;
    outcome.expect("clean end");
    assert_eq!(items, vec![(false, "out\n".to_string())]);
}

#[tokio::test]
async fn a_failing_logged_command_still_names_its_stderr() {
    let script = "echo broken >&2; exit 3";
    let services = command(script);
    let (mut chunks, _slot) = start_logged(&services, script, LONG).await;
    let (items, outcome) = drain(&mut chunks).await;
    assert_eq!(items, vec![(true, "broken\n".to_string())]);
    let err = outcome.expect_err("fails");
    assert_eq!(err.kind, ErrorKind::ServiceFailed);
    assert!(err.message.contains("exit status 3"), "{err}");
    assert!(err.message.contains("broken"), "{err}");
}

/// The pid a script wrote (`echo $$ > FILE; exec sleep 30`), once written.
async fn pid_of(file: &std::path::Path) -> String {
    for _ in 0..200 {
        if let Ok(pid) = std::fs::read_to_string(file)
            && !pid.trim().is_empty()
        {
            return pid.trim().to_string();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no pid written to {}", file.display());
}

async fn assert_gone(pid: &str) {
    let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    for _ in 0..200 {
        if !proc_dir.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("process {pid} still exists");
}

#[tokio::test]
async fn dropping_a_logged_stream_kills_the_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("pid");
    let script = format!(
        "echo started >&2; echo $$ > {}; exec sleep 30",
        pid_file.display()
    );
    let services = command(&script);
    let (mut chunks, slot) = start_logged(&services, &script, LONG).await;
    let first = chunks.next_item().await.expect("an item").expect("ok");
    assert!(matches!(first, Item::Log(_)), "{first:?}");
    let pid = pid_of(&pid_file).await;
    drop(chunks);
    drop(slot);
    assert_gone(&pid).await;
    assert_eq!(services.in_flight(), [("svc".to_string(), 0)]);
}

#[tokio::test]
async fn a_logged_command_past_its_timeout_is_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("pid");
    let script = format!(
        "echo started >&2; echo $$ > {}; exec sleep 30",
        pid_file.display()
    );
    let services = command(&script);
    let (mut chunks, _slot) = start_logged(&services, &script, Duration::from_millis(300)).await;
    let (items, outcome) = drain(&mut chunks).await;
    assert_eq!(items, vec![(true, "started\n".to_string())]);
    assert_eq!(outcome.expect_err("times out").kind, ErrorKind::Timeout);
    assert_gone(&pid_of(&pid_file).await).await;
}
