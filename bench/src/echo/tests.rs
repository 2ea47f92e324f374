//! The echo server against the unmodified SDK, real QUIC on loopback.

use super::*;
use client::{Client, ClientConfig};

/// An echo server on a free loopback port, serving in the background, and
/// an SDK client connected to it.
async fn server_and_client(dir: &Path) -> Result<Client> {
    let server = EchoServer::bind("127.0.0.1:0".parse()?, dir)?;
    let addr = server.local_addr()?;
    let config = ClientConfig::new(addr.to_string(), server.ca());
    tokio::spawn(server.serve());
    Ok(Client::connect(config).await?)
}

#[test]
fn the_result_head_has_the_length_and_the_time_taken() {
    let head = result_head(64, Duration::from_micros(1500));
    assert_eq!(head.payload_len, Some(64));
    assert_eq!(head.node_id, NODE_ID);
    assert_eq!(head.policy, POLICY);
    assert!((head.timings.node_ms - 1.5).abs() < 1e-3);
    assert_eq!(head.timings.total_ms, head.timings.node_ms);
    assert_eq!(head.timings.queue_ms, 0.0);
    assert_eq!(head.timings.attempts, 1);
    assert_eq!(head.cache, None);
}

#[tokio::test]
async fn the_sdk_gets_its_payload_back_small_empty_and_in_chunks() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let client = server_and_client(dir.path()).await?;
    let large: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    for payload in [b"hello".to_vec(), Vec::new(), large] {
        let result = client.call("any-service", payload.clone()).await?;
        assert_eq!(result.data.as_ref(), payload.as_slice());
        assert_eq!(result.meta.node_id, NODE_ID);
        assert_eq!(result.meta.policy, POLICY);
        assert_eq!(result.meta.cache, None);
    }
    Ok(())
}

#[tokio::test]
async fn concurrent_calls_each_get_their_own_payload() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let client = server_and_client(dir.path()).await?;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..32u8 {
        let client = client.clone();
        calls.spawn(async move {
            let payload = vec![i; 64 + usize::from(i)];
            let result = client.call("echo", payload.clone()).await;
            (payload, result)
        });
    }
    while let Some(joined) = calls.join_next().await {
        let (payload, result) = joined?;
        assert_eq!(result?.data.as_ref(), payload.as_slice());
    }
    Ok(())
}

#[tokio::test]
async fn a_stream_that_is_not_a_call_is_a_bad_request() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let client = server_and_client(dir.path()).await?;
    let err = client.nodes().await.expect_err("not a call");
    assert_eq!(err.kind(), Some(client::ErrorKind::BadRequest), "{err}");
    // The connection still serves calls.
    let result = client.call("echo", b"x".to_vec());
    assert_eq!(result.await?.data.as_ref(), b"x");
    Ok(())
}

#[tokio::test]
async fn a_bad_service_name_is_refused_not_echoed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let client = server_and_client(dir.path()).await?;
    let err = client
        .call("", b"x".to_vec())
        .await
        .expect_err("empty service name");
    assert_eq!(err.kind(), Some(client::ErrorKind::BadRequest), "{err}");
    Ok(())
}

#[test]
fn the_address_file_is_written_and_the_ca_made() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let args = ServerArgs {
        listen: "127.0.0.1:0".parse()?,
        dir: dir.path().join("srv"),
    };
    // `run` serves forever: check what it writes from a thread, then leave
    // it to die with the test process.
    let runner = args.clone();
    std::thread::spawn(move || run(&runner));
    let addr_file = args.dir.join(ADDR_FILE);
    let started = Instant::now();
    while !addr_file.exists() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let addr: SocketAddr = std::fs::read_to_string(&addr_file)?.trim().parse()?;
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0);
    assert!(TlsFiles::in_dir(&args.dir).ca.exists());
    Ok(())
}
