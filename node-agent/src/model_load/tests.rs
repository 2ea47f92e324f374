use super::*;
use crate::ServiceKind;
use crate::config::ModelServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const VLLM: &str = include_str!("testdata/vllm.txt");
const SGLANG: &str = include_str!("testdata/sglang.txt");

fn vllm() -> MetricsScrape {
    MetricsScrape::new("http://127.0.0.1:1/metrics", ModelServer::Vllm)
}

#[test]
fn a_vllm_page_reads_as_waiting_running_and_kv_percent() {
    let (load, missing) = read_load("llm", &vllm(), VLLM).expect("good page");
    assert_eq!(load.service, "llm");
    assert_eq!((load.waiting, load.running), (3, 7));
    assert!((load.kv_cache_pct - 42.17).abs() < 1e-3, "{load:?}");
    assert!(missing.is_empty());
}

#[test]
fn an_sglang_page_reads_with_sglang_names() {
    let scrape = MetricsScrape::new("http://127.0.0.1:1/metrics", ModelServer::Sglang);
    let (load, missing) = read_load("qwen", &scrape, SGLANG).expect("good page");
    assert_eq!((load.waiting, load.running), (5, 12));
    assert!((load.kv_cache_pct - 18.0).abs() < 1e-3, "{load:?}");
    assert!(missing.is_empty());
    // vLLM's names find nothing there: a failed scrape, not zeros.
    assert!(read_load("qwen", &vllm(), SGLANG).is_err());
}

#[test]
fn newer_vllm_kv_cache_name_is_read_when_the_old_one_is_absent() {
    let page = VLLM.replace("vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc");
    let (load, missing) = read_load("llm", &vllm(), &page).expect("good page");
    assert!((load.kv_cache_pct - 42.17).abs() < 1e-3, "{load:?}");
    assert!(missing.is_empty());
}

#[test]
fn models_add_up_kv_takes_the_largest_and_values_are_bounded() {
    let page = "\
vllm:num_requests_waiting{model_name=\"a\"} 2
vllm:num_requests_waiting{model_name=\"b\"} 1.6
vllm:num_requests_running{model_name=\"a\"} -4
vllm:num_requests_running{model_name=\"b\"} 1e12
vllm:gpu_cache_usage_perc{model_name=\"a\"} 0.5
vllm:gpu_cache_usage_perc{model_name=\"b\"} 1.7
";
    let (load, _) = read_load("llm", &vllm(), page).expect("good page");
    assert_eq!(load.waiting, 4, "2 + 1.6 rounded");
    assert_eq!(load.running, u32::MAX, "saturates");
    assert_eq!(load.kv_cache_pct, 100.0, "clamped");
}

#[test]
fn overridden_names_are_read_and_missing_ones_are_zero() {
    let mut scrape = vllm();
    scrape.waiting = "my_queue".into();
    let (load, missing) = read_load("llm", &scrape, "my_queue 9\n").expect("one gauge is enough");
    assert_eq!((load.waiting, load.running, load.kv_cache_pct), (9, 0, 0.0));
    assert_eq!(
        missing,
        vec![
            "vllm:num_requests_running".to_string(),
            "vllm:gpu_cache_usage_perc".to_string()
        ]
    );
}

fn loads(interval_ms: u64) -> ModelLoads {
    let mut service = ServiceConfig::new("llm", ServiceKind::openai("http://127.0.0.1:1/v1"));
    service.metrics = Some(vllm());
    let plain = ServiceConfig::new("echo", ServiceKind::Echo);
    ModelLoads::new(&[service, plain], Duration::from_millis(interval_ms))
}

#[test]
fn a_sample_is_reported_for_three_intervals_then_dropped() {
    let loads = loads(1000);
    let t0 = Instant::now();
    assert!(loads.current(t0).is_empty(), "nothing scraped yet");
    let load = ServiceLoad {
        service: "llm".into(),
        waiting: 1,
        running: 2,
        kv_cache_pct: 3.0,
    };
    *loads.scraped[0].latest.lock().expect("lock") = Some((t0, load.clone()));
    assert_eq!(loads.current(t0 + Duration::from_millis(3000)), vec![load]);
    assert!(loads.current(t0 + Duration::from_millis(3001)).is_empty());
    assert_eq!(loads.timeout(), Duration::from_millis(750));
    assert_eq!(
        self::loads(60_000).timeout(),
        Duration::from_secs(5),
        "capped"
    );
}

/// A one-page HTTP server on loopback port 0: answers every request with
/// `status` and `body`, then closes.
async fn serve(status: &'static str, body: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    format!("http://{addr}/metrics")
}

async fn wait_for(loads: &ModelLoads, want_some: bool) -> Vec<ServiceLoad> {
    let start = Instant::now();
    loop {
        let now = loads.current(Instant::now());
        if now.is_empty() != want_some {
            return now;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "never changed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_real_endpoint_is_scraped_and_a_failing_one_reports_nothing() {
    let url = serve("200 OK", VLLM.to_string()).await;
    let mut service = ServiceConfig::new("llm", ServiceKind::openai("http://127.0.0.1:1/v1"));
    service.metrics = Some(MetricsScrape::new(url, ModelServer::Vllm));
    let loads = ModelLoads::new(&[service], Duration::from_millis(20));
    let client = crate::services::http_client().expect("client");
    let tasks = loads.spawn(&client);
    let got = wait_for(&loads, true).await;
    assert_eq!((got[0].waiting, got[0].running), (3, 7));
    drop(tasks);

    // A 500 and a page without the gauges are failed scrapes.
    for (status, body) in [("500 Internal Server Error", VLLM), ("200 OK", SGLANG)] {
        let url = serve(status, body.to_string()).await;
        let mut service = ServiceConfig::new("llm", ServiceKind::http("http://127.0.0.1:1/"));
        service.metrics = Some(MetricsScrape::new(url, ModelServer::Vllm));
        let loads = ModelLoads::new(&[service], Duration::from_millis(20));
        *loads.scraped[0].latest.lock().expect("lock") = Some((
            Instant::now() + Duration::from_secs(60),
            ServiceLoad::default(),
        ));
        let _tasks = loads.spawn(&client);
        wait_for(&loads, false).await;
    }
}

#[tokio::test]
async fn an_oversized_page_fails() {
    let big = format!("{VLLM}{}", "# padding\n".repeat(MAX_METRICS_BYTES / 10 + 1));
    let url = serve("200 OK", big).await;
    let client = crate::services::http_client().expect("client");
    let err = fetch(&client, &url, Duration::from_secs(5))
        .await
        .expect_err("too big");
    assert!(err.contains("over"), "{err}");
}
