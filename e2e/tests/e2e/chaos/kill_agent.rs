//! Scenario 1: kill -9 one of four agents with about 1000 calls in flight,
//! half of an idempotent service and half of a non-idempotent one. Every
//! call ends with a result or a typed error within its deadline, and no
//! non-idempotent call runs twice (the nodes count their runs in files).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{Client, ClientConfig};

use super::{Record, assert_all_ended_typed, print_figures, scenario, timed_call};
use crate::common::{Fleet, TOKEN, service};

const CALLS_PER_SERVICE: usize = 500;
const TIMEOUT: Duration = Duration::from_secs(20);

/// What the idempotent half must show: every call succeeds, those that
/// were on the killed node by a retry on another one.
fn check_idempotent_half(idem: &[Record]) {
    let lost = idem.iter().filter(|r| !r.ok()).count();
    let retried = idem.iter().filter(|r| r.attempts > 1).count();
    eprintln!(
        "chaos kill-agent: idempotent calls retried elsewhere {retried}, failed {lost} of {}",
        idem.len()
    );
    assert!(
        retried > 0,
        "the killed node's idempotent calls were retried"
    );
    assert_eq!(
        lost, 0,
        "every idempotent call succeeds on the other three nodes"
    );
}

async fn start_fleet() -> (Fleet, std::path::PathBuf) {
    let fleet = Fleet::start(|c| {
        c.services.insert(
            "idem".into(),
            gateway::config::ServiceConfig {
                idempotent: true,
                ..Default::default()
            },
        );
        // A quarter of the service's calls are on the node that dies: the
        // default budget (retries at most 20% of the calls under way) is
        // for retry storms, this scenario checks that retries recover
        // every call of a lost node.
        c.retry.budget_percent = 100;
    })
    .await;
    let runs = fleet.dir.path().join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    (fleet, runs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_one_of_four_agents_with_1000_calls_in_flight() {
    scenario("kill-agent", Duration::from_secs(90), async {
        let (mut fleet, runs) = start_fleet().await;
        for i in 0..4 {
            // `once` appends the call's id to this node's run log, then
            // takes a second: a run is counted before it can be lost.
            let log = runs.join(format!("node-{i}.log"));
            let once = format!(
                "command = [\"sh\", \"-c\", \"cat >> {}; sleep 1\"]\nmax_concurrent = 64",
                log.display()
            );
            let services = service("idem", "sleep", "max_concurrent = 64")
                + &service("once", "command", &once);
            fleet.spawn_agent_process(&format!("node-{i}"), TOKEN, &services);
        }
        fleet.wait_nodes(4).await;
        // 4 connections × 256 streams: the SDK's stream cap holds none back.
        let client = Client::connect(
            ClientConfig::new(fleet.addr.clone(), fleet.ca()).with_pool_size(4),
        )
        .await
        .unwrap();
        let client = Arc::new(client);
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..CALLS_PER_SERVICE {
            let c = client.clone();
            tasks.push(tokio::spawn(async move {
                ("idem", timed_call(&c, "idem", "1000", TIMEOUT, t0).await)
            }));
            let c = client.clone();
            tasks.push(tokio::spawn(async move {
                let id = format!("call-{i}\n");
                ("once", timed_call(&c, "once", id, TIMEOUT, t0).await)
            }));
        }
        // Let the calls reach the nodes (4 × 128 run, the rest queue).
        let gateway = fleet.gateway.clone();
        let start = Instant::now();
        while gateway.registry().all().iter().map(|n| n.in_flight_total()).sum::<u32>() < 400 {
            assert!(start.elapsed() < Duration::from_secs(20), "calls never reached the nodes");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let killed_at = t0.elapsed();
        fleet.agent(0).kill();
        let mut idem = Vec::new();
        let mut once = Vec::new();
        for task in tasks {
            let (service, record) = task.await.unwrap();
            if service == "idem" { idem.push(record) } else { once.push(record) }
        }
        eprintln!("chaos kill-agent: node-0 killed at {:.1} s", killed_at.as_secs_f64());
        print_figures("kill-agent idempotent", &idem);
        print_figures("kill-agent non-idempotent", &once);
        assert_all_ended_typed("kill-agent", &idem);
        assert_all_ended_typed("kill-agent", &once);
        assert!(
            idem.iter().chain(&once).all(|r| r.took <= TIMEOUT + super::GRACE),
            "every call ends within its deadline"
        );
        assert!(
            once.iter().chain(&idem).any(|r| r.kind() == "node lost"),
            "the kill cost calls on node-0: they end as `node lost`"
        );

        // Nothing ran twice: every id appears at most once in all run logs,
        // and every call that returned a result ran exactly once.
        let mut runs_of: BTreeMap<String, usize> = BTreeMap::new();
        for i in 0..4 {
            let text = std::fs::read_to_string(runs.join(format!("node-{i}.log"))).unwrap_or_default();
            for id in text.lines() {
                *runs_of.entry(id.to_string()).or_default() += 1;
            }
        }
        let twice: Vec<_> = runs_of.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "non-idempotent calls ran twice: {twice:?}");
        let served = once.iter().filter(|r| r.ok()).count();
        assert!(runs_of.len() >= served, "{} runs for {served} results", runs_of.len());
        eprintln!(
            "chaos kill-agent: non-idempotent runs counted {} for {} calls ({served} served), none twice",
            runs_of.len(),
            once.len()
        );
        check_idempotent_half(&idem);
    })
    .await;
}
