//! Token accounting through the HTTP ingress, in front of the toy model
//! server (which reports OpenAI `usage` as vLLM does): a JSON and a
//! streamed chat completion of a tenant, then `/metrics` holds the tokens
//! the server reported, by service, tenant and kind, and time-to-first-
//! token and time-per-output-token observations; a streaming caller that
//! did not ask for usage gets no usage chunk, one that asked gets it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use gateway::config::TenantConfig;

use crate::common::{Fleet, TOKEN, service};
use crate::openai::Toy;

const MODEL: &str = "tok-llama";
const TENANT: &str = "tok-team";
const KEY: &str = "sk-tok-team";
/// A prompt of more than two of the toy's 16-token KV blocks, so that
/// the same prompt again finds some in its cache.
const BODY: &str = r#""model":"tok-llama","max_tokens":6,"messages":[{"role":"user","content":"a b c d e f g h i j k l m n o p q r s t u v w x y z aa bb cc dd ee ff gg hh ii jj kk ll"}]"#;

/// `POST /v1/chat/completions` with `{BODY, extra}`: the status and body.
async fn chat(url: &str, extra: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(url)
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .body(format!("{{{BODY}{extra}}}"))
        .send()
        .await
        .expect("ingress answers");
    let status = response.status().as_u16();
    let body = response.bytes().await.expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The value of the series `name{labels...}` holding every one of
/// `labels` (`key="value"`), 0 when absent.
fn value(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn tokens(metrics: &str, kind: &str) -> f64 {
    value(
        metrics,
        "tokens_total",
        &[
            &format!("service=\"{MODEL}\""),
            &format!("tenant=\"{TENANT}\""),
            &format!("kind=\"{kind}\""),
        ],
    )
}

/// The data events of an SSE body, parsed (`[DONE]` left out).
fn events(body: &str) -> Vec<serde_json::Value> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("a JSON event"))
        .collect()
}

#[tokio::test]
async fn token_metrics_count_what_the_model_server_reported() {
    let toy = Toy::start(
        MODEL,
        &["--tokens-per-s", "200", "--kv-cache-tokens", "4096"],
    )
    .await;
    let mut fleet = Fleet::start(|config| {
        config.tenants = vec![TenantConfig {
            api_keys: vec![KEY.into()],
            ..TenantConfig::new(TENANT)
        }];
    })
    .await;
    let base_url = format!("base_url = \"{}/v1\"", toy.url);
    fleet.spawn_agent("node-tok", TOKEN, &service(MODEL, "openai", &base_url));
    fleet.wait_nodes(1).await;
    let url = format!(
        "{}/v1/chat/completions",
        fleet.gateway.http_url().expect("ingress")
    );
    let metrics_url = format!("http://{}/metrics", fleet.gateway.admin_addr().unwrap());
    let scrape = || async {
        reqwest::get(&metrics_url)
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    };

    // A JSON answer: its usage is what is counted.
    let (status, body) = chat(&url, "").await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("json");
    let usage = &answer["usage"];
    let prompt = usage["prompt_tokens"].as_f64().expect("prompt tokens");
    let completion = usage["completion_tokens"]
        .as_f64()
        .expect("completion tokens");
    let cached = usage["prompt_tokens_details"]["cached_tokens"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(prompt > 0.0 && completion > 0.0, "{usage}");
    let metrics = scrape().await;
    assert_eq!(tokens(&metrics, "prompt"), prompt, "{metrics}");
    assert_eq!(tokens(&metrics, "completion"), completion);
    assert_eq!(tokens(&metrics, "cached"), cached);

    // A stream whose caller did not ask for usage: no usage chunk reaches
    // it, but the gateway asked and counted it.
    let (status, body) = chat(&url, r#","stream":true"#).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    let streamed = events(&body);
    assert!(
        streamed
            .iter()
            .all(|e| e.get("usage").is_none_or(|u| u.is_null())),
        "no usage chunk for a caller that did not ask: {body}"
    );
    let said: Vec<&str> = streamed
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .filter(|c| !c.is_empty())
        .collect();
    assert!(!said.is_empty(), "{body}");
    let metrics = scrape().await;
    assert_eq!(tokens(&metrics, "prompt"), 2.0 * prompt, "{metrics}");
    assert_eq!(
        tokens(&metrics, "completion"),
        completion + said.len() as f64,
        "one completion token per streamed token"
    );
    assert!(
        tokens(&metrics, "cached") > cached,
        "the same prompt again is found in the server's cache"
    );
    let service = format!("service=\"{MODEL}\"");
    assert_eq!(
        value(&metrics, "time_to_first_token_seconds_count", &[&service]),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        value(&metrics, "time_per_output_token_seconds_count", &[&service]),
        1.0
    );
    assert!(value(&metrics, "time_per_output_token_seconds_sum", &[&service]) > 0.0);

    // A caller that asked gets the usage chunk, and it is counted once.
    let (status, body) = chat(
        &url,
        r#","stream":true,"stream_options":{"include_usage":true}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let last = events(&body).pop().expect("events");
    assert_eq!(last["choices"], serde_json::json!([]), "{body}");
    assert_eq!(last["usage"]["prompt_tokens"].as_f64(), Some(prompt));
    let metrics = scrape().await;
    assert_eq!(tokens(&metrics, "prompt"), 3.0 * prompt);
    assert_eq!(
        value(&metrics, "time_to_first_token_seconds_count", &[&service]),
        2.0
    );
}
