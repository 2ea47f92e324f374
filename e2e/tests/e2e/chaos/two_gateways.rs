//! Two gateways on one PostgreSQL job store: each sees the other's jobs, runs waiting jobs the
//! other was handed when it has the free slot, and takes over the running
//! job of a gateway killed with -9 once that gateway's lease runs out.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{GatewayProcess, agent_process, scenario};
use crate::common::service;
use crate::jobs::{Db, Jobs, wait_log};

/// Quick jobs handed to gateway A while its only slot is busy.
const QUICK: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_a_postgres_store_and_take_over_a_killed_ones_job() {
    let name = "jobs-two-gateways";
    let db = Db::postgres();
    scenario(name, Duration::from_secs(120), async {
        let dir = tempfile::tempdir().unwrap();
        let tables = format!(
            "[jobs]\nlease_timeout_s = 3\ndatabase_url = {:?}\n",
            db.url.as_deref().unwrap()
        );
        let sh = |node: &str| {
            service(
                "sh",
                "command",
                &format!("command = [\"sh\"]\nmax_concurrent = 1\nenv = {{ NODE = \"{node}\" }}"),
            )
        };
        let mut a = GatewayProcess::start(dir.path(), "gw-a", &tables, None).await;
        let b = GatewayProcess::start(dir.path(), "gw-b", &tables, None).await;
        let agent_a = agent_process(dir.path(), "node-a", a.addr, &a.ca, 200, &sh("a"));
        let client_a = a.client(1).await;
        a.wait_nodes(&client_a, 1).await;
        let on_a = Jobs::new(format!("http://{}", a.http), None);
        let on_b = Jobs::new(format!("http://{}", b.http), None);

        // A long idempotent job on A's node; B has no node yet, so it only
        // watches. B reads its state and log from the shared store.
        let long = on_a
            .submit(json!({
                "service": "sh",
                "payload": "echo start-$NODE; sleep 6; echo done-$NODE",
                "idempotent": true, "max_attempts": 2,
            }))
            .await;
        let long = long["id"].as_str().unwrap().to_owned();
        on_a.wait_state(&long, &["running"], Duration::from_secs(20))
            .await;
        wait_log(&on_b, &long, "stdout: start-a").await;
        assert_eq!(on_b.get(&long).await["node"], "node-a");

        // A's only slot is busy: quick jobs handed to A wait until B, with
        // a node of its own, takes them from the shared store.
        let mut quick = Vec::new();
        for i in 0..QUICK {
            let job = on_a
                .submit(json!({ "service": "sh", "payload": format!("echo quick-{i}-$NODE") }))
                .await;
            quick.push(job["id"].as_str().unwrap().to_owned());
        }
        let listed = on_b.list("state=waiting&service=sh&limit=100").await;
        assert_eq!(
            listed["jobs"].as_array().unwrap().len(),
            QUICK,
            "B lists A's waiting jobs: {listed}"
        );
        let _agent_b = agent_process(dir.path(), "node-b", b.addr, &b.ca, 200, &sh("b"));
        let client_b = b.client(1).await;
        b.wait_nodes(&client_b, 1).await;
        for (i, id) in quick.iter().enumerate() {
            let job = on_a
                .wait_state(id, &["succeeded", "failed"], Duration::from_secs(20))
                .await;
            assert_eq!(job["state"], "succeeded", "{job}");
            assert_eq!(job["node"], "node-b", "{job}");
            assert_eq!(on_a.result(id).await.1, format!("quick-{i}-b\n"));
        }
        assert_eq!(on_b.get(&long).await["state"], "running");

        // kill -9 A (and its node): B takes the long job over once A's
        // lease has run out, on its own node; A's loss spends no attempt.
        let killed = Instant::now();
        a.process.kill();
        drop(agent_a);
        drop(client_a);
        let done = on_b
            .wait_state(&long, &["succeeded", "failed"], Duration::from_secs(40))
            .await;
        eprintln!(
            "{name}: B finished A's job {:.1} s after A's kill -9",
            killed.elapsed().as_secs_f64()
        );
        assert_eq!(done["state"], "succeeded", "{done}");
        assert_eq!(done["attempt"], 1, "{done}");
        assert_eq!(done["node"], "node-b", "{done}");
        assert_eq!(on_b.result(&long).await.1, "start-b\ndone-b\n");
        let notes: Vec<&str> = done["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["note"].as_str())
            .collect();
        assert!(
            notes
                .iter()
                .any(|n| n.contains("lease of its gateway expired")),
            "{notes:?}"
        );
    })
    .await;
}
