//! Swapping services on idle nodes, end to end: agents whose swappable
//! services are real HTTP server processes (the toy model, as this
//! package's `switchyard-e2e-toy-model`) started by the `start` command and
//! stopped on swap.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{CallEvent, Client, ErrorKind};
use protocol::SlotView;

use switchyard_testkit::unassigned_port;

use crate::common::{Fleet, TOKEN};

/// A swappable `http` service backed by a toy model server on `port`.
fn model(name: &str, port: u16, load_ms: u32, work_ms: u32, extra_args: &str) -> String {
    format!(
        r#"
[[services]]
name = "{name}"
kind = "http"
url = "http://127.0.0.1:{port}/"
max_concurrent = 1
[services.swap]
start = [{toy:?}, "--port", "{port}", "--name", "{name}", "--load-ms", "{load_ms}", "--work-ms", "{work_ms}"{extra_args}]
ready_url = "http://127.0.0.1:{port}/health"
ready_timeout_s = 10
load_ms = {load_ms}
"#,
        toy = env!("CARGO_BIN_EXE_switchyard-e2e-toy-model"),
    )
}

/// One slot hosting `llama` and `mistral`, holding `loaded`.
fn slot(loaded: &str) -> String {
    format!(
        "\n[[slots]]\nname = \"gpu0\"\ncan_host = [\"llama\", \"mistral\"]\nloaded = \"{loaded}\"\n"
    )
}

type Seen = Arc<Mutex<Vec<CallEvent>>>;

async fn call(
    client: &Client,
    service: &str,
    timeout: Duration,
    seen: &Seen,
) -> Result<client::CallResult, client::ClientError> {
    let seen = seen.clone();
    client
        .call(service, format!("hello {service}"))
        .timeout(timeout)
        .on_event(move |e| seen.lock().unwrap().push(e))
        .await
}

fn slot_view(fleet: &Fleet) -> SlotView {
    let views = fleet.gateway.registry().views(Instant::now());
    views[0].slots[0].clone()
}

async fn wait_slot(fleet: &Fleet, what: &str, ok: impl Fn(&SlotView) -> bool) -> SlotView {
    let start = Instant::now();
    loop {
        let view = slot_view(fleet);
        if ok(&view) {
            return view;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "slot never {what}: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn port_answers(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_node_swaps_to_the_waiting_service_once_and_not_again_within_the_cooldown() {
    let mut fleet = Fleet::start(|_| {}).await;
    let (llama_port, mistral_port) = (unassigned_port().unwrap(), unassigned_port().unwrap());
    let services = format!(
        "{}{}{}",
        model("llama", llama_port, 300, 0, ""),
        model("mistral", mistral_port, 300, 1200, ""),
        slot("mistral"),
    );
    fleet.spawn_agent("node-b", TOKEN, &services);
    fleet.wait_nodes(1).await;
    wait_slot(&fleet, "loaded mistral", |s| {
        s.loaded.as_deref() == Some("mistral")
    })
    .await;
    let client = Arc::new(fleet.client().await);

    // A long mistral call keeps the node busy: no swap while it runs.
    let busy = {
        let client = client.clone();
        tokio::spawn(async move {
            let seen = Seen::default();
            call(&client, "mistral", Duration::from_secs(10), &seen).await
        })
    };
    let start = Instant::now();
    while fleet.gateway.registry().all()[0].in_flight("mistral") == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "mistral call never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = Seen::default();
    let llama = call(&client, "llama", Duration::from_secs(15), &seen)
        .await
        .expect("llama call served after the swap");
    let mistral = busy
        .await
        .unwrap()
        .expect("mistral call finished undisturbed");
    assert_eq!(&mistral.data[..], b"mistral: hello mistral");
    assert_eq!(&llama.data[..], b"llama: hello llama");
    assert_eq!(
        (llama.meta.node_id.as_str(), llama.meta.policy.as_str()),
        ("node-b", "swap")
    );
    let events = seen.lock().unwrap().clone();
    assert_eq!(
        events.first(),
        Some(&CallEvent::Queued { position: 1 }),
        "{events:?}"
    );
    assert!(
        events.contains(&CallEvent::Reserved {
            node_id: "node-b".into(),
            from: Some("mistral".into()),
            expected_ms: 300
        }),
        "{events:?}"
    );
    assert!(
        llama.meta.timings.queue_ms >= 1000.0,
        "the swap waited for the mistral call: {:?}",
        llama.meta.timings
    );
    let view = slot_view(&fleet);
    assert_eq!(view.loaded.as_deref(), Some("llama"));
    assert_eq!(view.swaps_total, 1);
    assert!(view.cooldown_left_ms > 50_000, "{view:?}");
    assert!(!port_answers(mistral_port), "mistral's server was stopped");

    // Mistral calls now wait, but the node's cooldown (60 s) forbids
    // swapping back: the call times out in the queue.
    let seen = Seen::default();
    let err = call(&client, "mistral", Duration::from_millis(1500), &seen)
        .await
        .expect_err("no swap within the cooldown");
    assert_eq!(err.kind(), Some(ErrorKind::Timeout), "{err}");
    assert_eq!(
        *seen.lock().unwrap(),
        [CallEvent::Queued { position: 1 }],
        "queued, never reserved"
    );
    let view = slot_view(&fleet);
    assert_eq!(
        (view.loaded.as_deref(), view.swaps_total),
        (Some("llama"), 1)
    );
    // Llama keeps serving.
    let again = call(&client, "llama", Duration::from_secs(5), &Seen::default())
        .await
        .expect("llama still loaded");
    assert_eq!(again.meta.node_id, "node-b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_start_puts_the_call_back_and_blocks_that_service_on_the_slot() {
    let mut fleet = Fleet::start(|c| c.swap.swap_cooldown_s = 0).await;
    let (llama_port, mistral_port) = (unassigned_port().unwrap(), unassigned_port().unwrap());
    let services = format!(
        "{}{}{}",
        model("llama", llama_port, 100, 0, r#", "--fail""#),
        model("mistral", mistral_port, 100, 0, ""),
        slot("mistral"),
    );
    fleet.spawn_agent("node-b", TOKEN, &services);
    fleet.wait_nodes(1).await;
    wait_slot(&fleet, "loaded mistral", |s| {
        s.loaded.as_deref() == Some("mistral")
    })
    .await;
    let client = fleet.client().await;

    let seen = Seen::default();
    let err = call(&client, "llama", Duration::from_secs(3), &seen)
        .await
        .expect_err("llama cannot start");
    assert_eq!(err.kind(), Some(ErrorKind::Timeout), "{err}");
    let events = seen.lock().unwrap().clone();
    // The swap starts as soon as the call is queued, so the first position
    // may be overtaken by the reservation before the client reads it.
    assert!(
        matches!(
            events.as_slice(),
            [
                ..,
                CallEvent::Reserved { .. },
                CallEvent::Queued { position: 1 }
            ]
        ),
        "reserved, then back at the head of the queue: {events:?}"
    );
    let view = slot_view(&fleet);
    assert_eq!(view.swaps_total, 1, "tried once, not again: {view:?}");
    assert_eq!(view.loaded, None, "mistral was stopped, llama failed");
    assert!(
        view.failed
            .iter()
            .any(|(s, left)| s == "llama" && *left > 20_000),
        "{view:?}"
    );

    // The slot still serves what it can load.
    let ok = call(
        &client,
        "mistral",
        Duration::from_secs(10),
        &Seen::default(),
    )
    .await
    .expect("mistral loads again");
    assert_eq!(&ok.data[..], b"mistral: hello mistral");
    assert_eq!(slot_view(&fleet).swaps_total, 2);
}
