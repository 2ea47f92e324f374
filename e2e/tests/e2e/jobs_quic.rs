//! Job requests over QUIC through the SDK: the gateway checks the request
//! and who asks before any job is touched (a wrong admin token is
//! `unauthorized`, a spec naming no service is a `bad request`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use client::{ErrorKind, JobSpec};
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
