//! Job requests over QUIC through the SDK: the gateway checks the request
//! and who asks before any job is touched (a wrong admin token is
//! `unauthorized`, a spec naming no service is a `bad request`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use client::{ErrorKind, JobSettings, JobSpec};
use futures_util::StreamExt;

use crate::common::Fleet;

#[tokio::test]
async fn job_requests_are_checked_before_they_reach_the_jobs() {
    let fleet = Fleet::start(|_| {}).await;
    let client = fleet.client().await;

    let spec = JobSpec {
        service: Some("echo".into()),
        ..JobSpec::default()
    };
    let err = client
        .clone()
        .with_admin_token("not the admin token")
        .submit_job(spec)
        .await
        .expect_err("wrong admin token");
    assert_eq!(err.kind(), Some(ErrorKind::Unauthorized), "{err}");

    let err = client
        .submit_job(JobSpec::default())
        .await
        .expect_err("no service nor template");
    assert_eq!(err.kind(), Some(ErrorKind::BadRequest), "{err}");
    assert!(err.to_string().contains("service"), "{err}");

    // A followed log of no such job: its error is the stream's last item.
    let mut log = Box::pin(client.follow_log("no-such-job", 0).await.expect("sent"));
    let first = log.next().await.expect("an item");
    assert!(first.is_err(), "{first:?}");
    assert!(log.next().await.is_none(), "the error ends the stream");
}

/// Submit → follow the log → result, over QUIC with the SDK, and the job
/// listed, cancelled and deleted the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_through_the_sdk_submit_follow_result() {
    let mut fleet = Fleet::start(|_| {}).await;
    fleet.spawn_agent("node-a", crate::common::TOKEN, &crate::jobs::shell(2));
    fleet.wait_nodes(1).await;
    let client = fleet.client().await;
    let job = client
        .submit_job(JobSpec {
            service: Some("sh".into()),
            payload: b"echo one; echo two >&2; sleep 0.2; echo three".to_vec(),
            idempotent: true,
            ..JobSpec::default()
        })
        .await
        .expect("submitted");
    let mut lines = Vec::new();
    let mut log = Box::pin(client.follow_log(&job.id, 0).await.expect("follows"));
    while let Some(batch) = tokio::time::timeout(std::time::Duration::from_secs(20), log.next())
        .await
        .expect("the log ends when the job does")
    {
        for entry in batch.expect("a batch") {
            lines.push(format!("{}: {}", entry.stream.as_str(), entry.line));
        }
    }
    for want in ["stdout: one", "stderr: two", "stdout: three"] {
        assert!(lines.iter().any(|l| l == want), "{want} not in {lines:?}");
    }
    let done = client.job(&job.id).await.expect("job");
    assert_eq!(done.state, client::JobState::Succeeded, "{done:?}");
    let (result, _) = client.job_result(&job.id).await.expect("result");
    assert_eq!(result, b"one\nthree\n");
    let page = client
        .jobs(client::JobFilter::default())
        .await
        .expect("list");
    assert!(page.jobs.iter().any(|j| j.id == job.id));

    let stuck = client
        .submit_job(JobSpec {
            service: Some("sh".into()),
            payload: b"sleep 1000".to_vec(),
            ..JobSpec::default()
        })
        .await
        .expect("submitted");
    let cancelled = client.cancel_job(&stuck.id).await.expect("cancel");
    assert_eq!(cancelled.state, client::JobState::Cancelled);
    client.delete_job(&stuck.id).await.expect("delete");
    let gone = client.job(&stuck.id).await.expect_err("deleted");
    assert_eq!(gone.kind(), Some(ErrorKind::UnknownService), "{gone}");
}

/// The job settings over QUIC: anyone reads them, only the admin token
/// changes them, and the HTTP routes see the change.
#[tokio::test]
async fn job_settings_through_the_sdk() {
    let fleet = Fleet::start(|_| {}).await;
    let client = fleet.client().await;
    let settings = client.job_settings().await.expect("settings");
    assert_eq!(settings, JobSettings { max_per_node: 0 });

    let three = JobSettings { max_per_node: 3 };
    let err = client
        .set_job_settings(three)
        .await
        .expect_err("a tenant may not change them");
    assert_eq!(err.kind(), Some(ErrorKind::Forbidden), "{err}");
    let admin = client.clone().with_admin_token(crate::common::ADMIN);
    assert_eq!(admin.set_job_settings(three).await.expect("set"), three);
    assert_eq!(client.job_settings().await.expect("settings"), three);

    let url = format!("{}/v1/job-settings", fleet.gateway.http_url().unwrap());
    let text = reqwest::get(&url)
        .await
        .expect("GET")
        .text()
        .await
        .expect("a body");
    let body: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(body, serde_json::json!({ "max_per_node": 3 }));
}
