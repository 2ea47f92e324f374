//! Job requests over QUIC: a client stream whose first frame is
//! `Message::Job(JobRequest)` gets one `JobReply` or an `Error`; a
//! followed log (`JobOp::Log { follow: true }`) gets a `JobReply::Log`
//! per batch until the job ends, then `End`, and stops as soon as the
//! client leaves.

use std::sync::Arc;

use protocol::{CallError, ErrorKind, JobOp, JobReply, JobRequest, Message, Trailer};
use transport::FramedSend;

use super::{Access, JobError, Jobs};
use crate::Shared;

/// Most log lines one unfollowed `Log` answer carries.
const LOG_LIMIT: u32 = 10_000;

/// Serves one job stream whose first frame was `request`; never panics on
/// peer input.
pub(crate) async fn serve(shared: Arc<Shared>, request: JobRequest, mut send: FramedSend) {
    if let Err(error) = answer(&shared, request, &mut send).await {
        let _ = send.send(&Message::Error(error)).await;
    }
    let _ = send.finish();
}

/// Who the request speaks for: the admin when its admin token matches,
/// else the tenant its API key names.
///
/// # Errors
/// `Unauthorized` for a wrong admin token or an unknown API key.
pub(crate) fn access(shared: &Shared, request: &JobRequest) -> Result<Access, CallError> {
    if let Some(token) = &request.admin_token {
        if shared.admin_token.is_empty() || !crate::token_matches(token, &shared.admin_token) {
            return Err(CallError::new(ErrorKind::Unauthorized, "wrong admin token"));
        }
        return Ok(Access::Admin);
    }
    Ok(Access::Tenant(
        shared.tenants.authenticate(request.api_key.as_deref())?,
    ))
}

fn job_error(error: &JobError) -> CallError {
    CallError::new(error.kind(), error.to_string())
}

/// Runs the request and sends its answer; an error is sent by the caller.
async fn answer(
    shared: &Shared,
    request: JobRequest,
    send: &mut FramedSend,
) -> Result<(), CallError> {
    request
        .validate()
        .map_err(|e| CallError::new(ErrorKind::BadRequest, e.to_string()))?;
    let access = access(shared, &request)?;
    let jobs = shared.jobs().map_err(|e| job_error(&e))?;
    if let JobOp::Log {
        id,
        after,
        follow: true,
    } = &request.op
    {
        return follow(jobs, &access, id, *after, send).await;
    }
    let reply = run(jobs, &access, request.op)
        .await
        .map_err(|e| job_error(&e))?;
    send.send(&Message::JobReply(Box::new(reply)))
        .await
        .map_err(|e| CallError::new(ErrorKind::Internal, format!("sending the reply: {e}")))
}

/// Runs one operation that has a single answer.
async fn run(jobs: &Arc<Jobs>, access: &Access, op: JobOp) -> Result<JobReply, JobError> {
    Ok(match op {
        JobOp::Submit(spec) => JobReply::Job(Box::new(jobs.submit(access, spec, None).await?)),
        JobOp::Get(id) => JobReply::Job(Box::new(jobs.get(access, &id).await?)),
        JobOp::List(filter) => JobReply::Page(jobs.list(access, filter).await?),
        JobOp::Cancel(id) => JobReply::Job(Box::new(jobs.cancel(access, &id).await?)),
        JobOp::Restart(id) => JobReply::Job(Box::new(jobs.restart(access, &id).await?)),
        JobOp::Delete(id) => {
            jobs.delete(access, &id).await?;
            JobReply::Deleted(id)
        }
        JobOp::Log { id, after, .. } => {
            JobReply::Log(jobs.log(access, &id, after, LOG_LIMIT).await?)
        }
        JobOp::Settings(None) => JobReply::Settings(jobs.settings()),
        JobOp::Settings(Some(settings)) => {
            JobReply::Settings(jobs.set_settings(access, settings).await?)
        }
        JobOp::Result(id) => {
            let (data, content_type) = jobs.result(access, &id).await?;
            JobReply::Result { data, content_type }
        }
    })
}

/// Streams a job's log batches until it ends (then `End`), or until the
/// client leaves.
async fn follow(
    jobs: &Arc<Jobs>,
    access: &Access,
    id: &str,
    after: u64,
    send: &mut FramedSend,
) -> Result<(), CallError> {
    let mut batches = jobs
        .follow(access, id, after)
        .await
        .map_err(|e| job_error(&e))?;
    let gone = send.peer_gone();
    tokio::pin!(gone);
    loop {
        let batch = tokio::select! {
            batch = batches.recv() => batch,
            () = &mut gone => return Ok(()),
        };
        let frame = match batch {
            Some(Ok(lines)) => Message::JobReply(Box::new(JobReply::Log(lines))),
            Some(Err(e)) => return Err(job_error(&e)),
            None => Message::End(Trailer::default()),
        };
        let end = matches!(frame, Message::End(_));
        if send.send(&frame).await.is_err() || end {
            return Ok(());
        }
    }
}
