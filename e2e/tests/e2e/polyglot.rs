//! The policies written in Python and JavaScript through the gateway: the
//! components `make plugins-polyglot` builds into `plugins/dist-polyglot/`
//! when their toolchains install (`least-loaded-py`, `least-loaded-js`),
//! copied into a gateway's plugins folder beside Rust ones and loaded with
//! nothing granted, each routing real calls. A test whose component is absent
//! skips as `switchyard_testkit::skip_or_fail` decides: it passes with a
//! `SWITCHYARD-SKIPPED` line, or fails under `SWITCHYARD_REQUIRE_ALL=1`.
//! (Each component costs 15-20 s of CPU to compile, so only these two tests
//! load one.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{Fleet, TOKEN, plugin_copies, service};

/// How the components are built, for a test that finds one absent.
const POLYGLOT_HOW: &str = "`make plugins-polyglot` builds it (`make plugins` runs that) \
     once Python's componentize-py and npm's jco install";

/// `plugins/dist-polyglot/NAME.wasm` if it was built; if not, the test
/// skips or fails (`switchyard_testkit::skip_or_fail`).
fn built(name: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/dist-polyglot")
        .join(format!("{name}.wasm"));
    if path.is_file() {
        return Some(path);
    }
    switchyard_testkit::skip_or_fail(&path.display().to_string(), POLYGLOT_HOW);
    None
}

/// Two nodes, node-a made busy by three long calls (pinned there by a label
/// requirement through `resource-aware`): every call `policy` routes must go
/// to node-b, the less loaded, and say that `policy` picked it.
async fn routes_to_the_less_loaded_node(policy: &str, component: &Path) {
    let mut fleet = Fleet::start(|c| {
        let dir = plugin_copies(
            c.data_dir.parent().unwrap(),
            &["round-robin", "resource-aware"],
        );
        std::fs::copy(component, dir.join(format!("{policy}.wasm"))).unwrap();
        c.plugins_dir = dir;
    })
    .await;
    let sleep = service("sleep", "sleep", "max_concurrent = 8");
    fleet.spawn_agent_with("node-a", TOKEN, "labels = { busy = \"yes\" }", &sleep);
    fleet.spawn_agent_with("node-b", TOKEN, "labels = { busy = \"no\" }", &sleep);
    fleet.wait_nodes(2).await;
    let client = Arc::new(fleet.client().await);

    let table = client.policies().await.unwrap();
    assert!(
        table.policies.iter().any(|p| p.name == policy),
        "{policy} did not load: {:?}",
        table.rejected
    );

    let long: Vec<_> = (0..3)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .call("sleep", "2500")
                    .policy("resource-aware")
                    .hint("label:busy", "yes")
                    .timeout(Duration::from_secs(20))
                    .await
            })
        })
        .collect();
    let start = Instant::now();
    loop {
        let a = fleet
            .gateway
            .registry()
            .all()
            .into_iter()
            .find(|n| n.spec.id == "node-a")
            .unwrap();
        if a.in_flight("sleep") == 3 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "long calls never reached node-a"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    for _ in 0..10 {
        let r = client.call("sleep", "10").policy(policy).await.unwrap();
        assert_eq!(r.meta.policy, policy, "the call was picked by {policy}");
        assert_eq!(r.meta.node_id, "node-b", "{policy} avoided the busy node");
    }
    for call in long {
        assert_eq!(call.await.unwrap().unwrap().meta.node_id, "node-a");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_policy_routes_calls() {
    if let Some(path) = built("least-loaded-py") {
        routes_to_the_less_loaded_node("least-loaded-py", &path).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_policy_routes_calls() {
    if let Some(path) = built("least-loaded-js") {
        routes_to_the_less_loaded_node("least-loaded-js", &path).await;
    }
}
