//! Jobs survive faults: kill -9 the gateway with 200 jobs
//! acknowledged, or under running jobs with default options, and start it
//! again on the same data directory; SIGSTOP the agent running a job until
//! its lease runs out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{GatewayProcess, agent_process, scenario};
use crate::common::{Fleet, TOKEN, service};
use crate::jobs::{Db, Jobs, shell, wait_log};

const JOBS: usize = 200;
/// The first jobs sleep long enough to be running at the kill.
const SLOW: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_the_gateway_with_200_jobs_acknowledged() {
    kill_9_the_gateway(Db::sqlite(), "jobs-kill-gateway").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_the_gateway_with_200_jobs_acknowledged_on_postgres() {
    kill_9_the_gateway(Db::postgres(), "jobs-kill-gateway-postgres").await;
}

async fn kill_9_the_gateway(db: Db, name: &str) {
    scenario(name, Duration::from_secs(150), async {
        let dir = tempfile::tempdir().unwrap();
        let tables = db.jobs_section("lease_timeout_s = 3\n");
        let tables = tables.as_str();
        let mut gw = GatewayProcess::start(dir.path(), "gw", tables, None).await;
        let slots = shell(SLOW as u32);
        let agent = agent_process(dir.path(), "node-1", gw.addr, &gw.ca, 200, &slots);
        let client = gw.client(1).await;
        gw.wait_nodes(&client, 1).await;
        let jobs = Jobs::new(format!("http://{}", gw.http), None);
        let mut acked: HashMap<String, bool> = HashMap::new();
        let submitted = Instant::now();
        for i in 0..JOBS {
            let payload = if i < SLOW {
                format!("sleep 3; echo slow-{i}")
            } else {
                format!("echo quick-{i}")
            };
            let idempotent = i % 2 == 0;
            let job = jobs
                .submit(json!({
                    "service": "sh", "payload": payload,
                    "idempotent": idempotent, "max_attempts": 3,
                }))
                .await;
            acked.insert(job["id"].as_str().unwrap().to_owned(), idempotent);
            if i + 1 == SLOW {
                // The slow ones hold every slot before the rest arrive.
                for id in acked.keys() {
                    jobs.wait_state(id, &["running"], Duration::from_secs(20))
                        .await;
                }
            }
        }
        let ack_s = submitted.elapsed().as_secs_f64();
        let before = jobs.list("state=running&limit=1000").await;
        let running_at_kill: Vec<String> = before["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect();
        gw.process.kill();
        drop(agent);
        drop(client);
        eprintln!(
            "{name}: {JOBS} acknowledged in {ack_s:.2} s, {} running at the kill",
            running_at_kill.len()
        );
        assert!(
            !running_at_kill.is_empty(),
            "no job was running at the kill"
        );

        let restarted = Instant::now();
        let gw = GatewayProcess::start(dir.path(), "gw", tables, None).await;
        let _agent = agent_process(dir.path(), "node-2", gw.addr, &gw.ca, 200, &slots);
        let jobs = Jobs::new(format!("http://{}", gw.http), None);
        let mut ended: HashMap<String, Value> = HashMap::new();
        while ended.len() < JOBS {
            assert!(
                restarted.elapsed() < Duration::from_secs(90),
                "{} of {JOBS} jobs ended after the restart",
                ended.len()
            );
            let page = jobs.list("limit=1000").await;
            let listed = page["jobs"].as_array().unwrap();
            assert_eq!(listed.len(), JOBS, "an acknowledged job was lost");
            for job in listed {
                let state = job["state"].as_str().unwrap();
                if !["waiting", "running"].contains(&state) {
                    ended.insert(job["id"].as_str().unwrap().to_owned(), job.clone());
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!(
            "{name}: all {JOBS} ended {:.1} s after the restart",
            restarted.elapsed().as_secs_f64()
        );
        let (mut rerun, mut failed) = (0, 0);
        for (id, idempotent) in &acked {
            let job = &ended[id];
            let was_running = running_at_kill.contains(id);
            match (was_running, idempotent) {
                (true, true) => {
                    assert_eq!(job["state"], "succeeded", "{job}");
                    assert_eq!(
                        job["attempt"], 1,
                        "the lost gateway spent no attempt: {job}"
                    );
                    rerun += 1;
                }
                (true, false) => {
                    assert_eq!(job["state"], "failed", "{job}");
                    assert!(
                        job["error"].as_str().unwrap().contains("gateway restarted"),
                        "{job}"
                    );
                    failed += 1;
                }
                (false, _) => assert_eq!(job["state"], "succeeded", "{job}"),
            }
        }
        eprintln!("{name}: {rerun} ran again, {failed} failed with the reason");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_job_with_default_options_outlives_a_kill_9_of_its_gateway() {
    kill_9_under_a_running_job(Db::sqlite(), "jobs-redeliver").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_job_outlives_a_kill_9_of_its_gateway_on_postgres() {
    kill_9_under_a_running_job(Db::postgres(), "jobs-redeliver-postgres").await;
}

/// Two jobs with default options (`max_attempts` 1) running when the
/// gateway is killed: the idempotent one runs again as attempt 1 of 1 and
/// succeeds; the other fails, saying why.
async fn kill_9_under_a_running_job(db: Db, name: &str) {
    scenario(name, Duration::from_secs(90), async {
        let dir = tempfile::tempdir().unwrap();
        let tables = db.jobs_section("");
        let mut gw = GatewayProcess::start(dir.path(), "gw", &tables, None).await;
        let slots = shell(2);
        let agent = agent_process(dir.path(), "node-1", gw.addr, &gw.ca, 200, &slots);
        let client = gw.client(1).await;
        gw.wait_nodes(&client, 1).await;
        let jobs = Jobs::new(format!("http://{}", gw.http), None);
        let mut ids = Vec::new();
        for idempotent in [true, false] {
            let job = jobs
                .submit(json!({
                    "service": "sh", "payload": "echo start; sleep 2; echo done",
                    "idempotent": idempotent,
                }))
                .await;
            assert_eq!(job["max_attempts"], 1, "the default: {job}");
            ids.push(job["id"].as_str().unwrap().to_owned());
        }
        for id in &ids {
            wait_log(&jobs, id, "stdout: start").await;
        }
        gw.process.kill();
        drop(agent);
        drop(client);

        let gw = GatewayProcess::start(dir.path(), "gw", &tables, None).await;
        let _agent = agent_process(dir.path(), "node-2", gw.addr, &gw.ca, 200, &slots);
        let jobs = Jobs::new(format!("http://{}", gw.http), None);
        let ended = ["succeeded", "failed", "timed_out", "cancelled"];
        let again = jobs
            .wait_state(&ids[0], &ended, Duration::from_secs(40))
            .await;
        assert_eq!(again["state"], "succeeded", "{again}");
        assert_eq!(again["attempt"], 1, "no attempt spent: {again}");
        assert_eq!(again["node"], "node-2", "{again}");
        assert_eq!(jobs.result(&ids[0]).await.1, "start\ndone\n");
        let notes: Vec<&str> = again["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["note"].as_str())
            .collect();
        assert!(
            notes.contains(&"gateway restarted: waiting again, attempt 1 of 1 not spent"),
            "{notes:?}"
        );
        let lost = jobs
            .wait_state(&ids[1], &ended, Duration::from_secs(20))
            .await;
        assert_eq!(lost["state"], "failed", "{lost}");
        assert_eq!(
            lost["error"], "gateway restarted while it ran (not idempotent: not run again)",
            "{lost}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_agent_loses_the_lease_and_its_late_result_is_discarded() {
    stop_the_agent(Db::sqlite(), "jobs-stop-agent").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_agent_loses_the_lease_on_postgres() {
    stop_the_agent(Db::postgres(), "jobs-stop-agent-postgres").await;
}

async fn stop_the_agent(db: Db, name: &str) {
    scenario(name, Duration::from_secs(90), async {
        let url = db.url.clone();
        let mut fleet = Fleet::start(|c| {
            c.jobs.lease_timeout_s = 1;
            c.jobs.database_url = url;
        })
        .await;
        let sh = |node: &str| {
            service(
                "sh",
                "command",
                &format!("command = [\"sh\"]\nmax_concurrent = 1\nenv = {{ NODE = \"{node}\" }}"),
            )
        };
        let a = fleet.spawn_agent_process("node-a", TOKEN, &sh("a"));
        fleet.wait_nodes(1).await;
        let jobs = Jobs::new(fleet.gateway.http_url().unwrap(), None);
        let job = jobs
            .submit(json!({
                "service": "sh",
                "payload": "echo start-$NODE; sleep 2; echo done-$NODE",
                "idempotent": true, "max_attempts": 2,
            }))
            .await;
        let id = job["id"].as_str().unwrap().to_owned();
        wait_log(&jobs, &id, "stdout: start-a").await;
        // A second node joins; then the first stops mid-job.
        fleet.spawn_agent("node-b", TOKEN, &sh("b"));
        fleet.wait_nodes(2).await;
        let stopped = Instant::now();
        let pid = fleet.agent(a).child.id();
        signal(pid, "STOP");
        let done = jobs
            .wait_state(&id, &["succeeded", "failed"], Duration::from_secs(30))
            .await;
        eprintln!(
            "{name}: moved on and ended {:.1} s after the SIGSTOP",
            stopped.elapsed().as_secs_f64()
        );
        assert_eq!(done["state"], "succeeded", "{done}");
        assert_eq!(done["attempt"], 2, "{done}");
        assert_eq!(done["node"], "node-b", "{done}");
        signal(pid, "CONT");
        // The first attempt finishes on the resumed node: its result is
        // discarded, the job keeps the second's.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = jobs.get(&id).await;
        assert_eq!(after["attempt"], 2, "{after}");
        assert_eq!(after["state"], "succeeded", "{after}");
        let (_, result) = jobs.result(&id).await;
        assert_eq!(result, "start-b\ndone-b\n");
    })
    .await;
}

fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill(1) runs");
    assert!(status.success(), "kill -{signal} {pid}");
}
