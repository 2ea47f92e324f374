//! Durable jobs: submit a job the gateway owns (it survives this client),
//! look at it, follow its log, fetch its result, cancel, restart or delete
//! it. Each request is one `Job` stream; the client's API key
//! ([`crate::ClientConfig::api_key`]) names the tenant, or the admin token
//! ([`Client::with_admin_token`]) reaches every tenant's jobs.

use std::sync::Arc;

use futures_util::Stream;
use protocol::{
    JobFilter, JobOp, JobPage, JobReply, JobRequest, JobSettings, JobSpec, JobView, LogEntry,
    Message,
};
use transport::FramedSend;

use crate::pool::PooledRecv;
use crate::{Client, ClientError, unexpected};

impl Client {
    /// The same client (sharing its pool) presenting `token`, the gateway's
    /// admin token, on job requests: every tenant's jobs instead of the API
    /// key's own.
    #[must_use]
    pub fn with_admin_token(mut self, token: impl Into<String>) -> Self {
        self.admin_token = Some(Arc::from(token.into()));
        self
    }

    fn job_request(&self, op: JobOp) -> Message {
        Message::Job(Box::new(JobRequest {
            api_key: self.config.api_key.clone(),
            admin_token: self.admin_token.as_deref().map(str::to_string),
            op,
        }))
    }

    /// Sends one job operation and reads its single reply.
    async fn job_op(&self, op: JobOp) -> Result<JobReply, ClientError> {
        match self.request(self.job_request(op)).await? {
            Message::JobReply(reply) => Ok(*reply),
            other => Err(unexpected(&other)),
        }
    }

    /// Stores a job and returns it as stored (its id, state `waiting`).
    ///
    /// # Errors
    /// [`ClientError::Call`]: `bad request` (unknown template, bad option),
    /// `forbidden` (the tenant's services), `overloaded` (too many jobs
    /// waiting), `unauthorized`; or a connection error.
    pub async fn submit_job(&self, spec: JobSpec) -> Result<JobView, ClientError> {
        job_view(self.job_op(JobOp::Submit(spec)).await?)
    }

    /// One job, with its history.
    ///
    /// # Errors
    /// [`ClientError::Call`] with `unknown service` for no such job (or
    /// another tenant's), or a connection error.
    pub async fn job(&self, id: &str) -> Result<JobView, ClientError> {
        job_view(self.job_op(JobOp::Get(id.to_string())).await?)
    }

    /// Jobs matching `filter`, newest first, one page.
    ///
    /// # Errors
    /// A typed or connection error.
    pub async fn jobs(&self, filter: JobFilter) -> Result<JobPage, ClientError> {
        match self.job_op(JobOp::List(filter)).await? {
            JobReply::Page(page) => Ok(page),
            other => Err(wrong_reply(&other)),
        }
    }

    /// Cancels a waiting or running job; returns it.
    ///
    /// # Errors
    /// As [`Client::job`].
    pub async fn cancel_job(&self, id: &str) -> Result<JobView, ClientError> {
        job_view(self.job_op(JobOp::Cancel(id.to_string())).await?)
    }

    /// Starts a job again as a new attempt; returns it.
    ///
    /// # Errors
    /// As [`Client::job`].
    pub async fn restart_job(&self, id: &str) -> Result<JobView, ClientError> {
        job_view(self.job_op(JobOp::Restart(id.to_string())).await?)
    }

    /// Removes a job, its history and its log.
    ///
    /// # Errors
    /// As [`Client::job`].
    pub async fn delete_job(&self, id: &str) -> Result<(), ClientError> {
        match self.job_op(JobOp::Delete(id.to_string())).await? {
            JobReply::Deleted(_) => Ok(()),
            other => Err(wrong_reply(&other)),
        }
    }

    /// The job settings in force: the most jobs one node runs at once.
    ///
    /// # Errors
    /// [`ClientError::Call`] (`forbidden` for a bad key); connection errors.
    pub async fn job_settings(&self) -> Result<JobSettings, ClientError> {
        match self.job_op(JobOp::Settings(None)).await? {
            JobReply::Settings(settings) => Ok(settings),
            other => Err(wrong_reply(&other)),
        }
    }

    /// Stores new job settings and puts them in force on the gateway (and,
    /// at their next sweep, on the gateways sharing its store); returns
    /// them. Needs the admin token ([`Client::with_admin_token`]).
    ///
    /// # Errors
    /// [`ClientError::Call`]: `forbidden` without the admin token,
    /// `internal` when the store fails (retry-safe); a gateway older than
    /// the settings refuses the frame as malformed.
    pub async fn set_job_settings(
        &self,
        settings: JobSettings,
    ) -> Result<JobSettings, ClientError> {
        match self.job_op(JobOp::Settings(Some(settings))).await? {
            JobReply::Settings(settings) => Ok(settings),
            other => Err(wrong_reply(&other)),
        }
    }

    /// The job's log lines after `after` (0: from the start), as stored now.
    ///
    /// # Errors
    /// As [`Client::job`].
    pub async fn job_log(&self, id: &str, after: u64) -> Result<Vec<LogEntry>, ClientError> {
        let op = JobOp::Log {
            id: id.to_string(),
            after,
            follow: false,
        };
        match self.job_op(op).await? {
            JobReply::Log(lines) => Ok(lines),
            other => Err(wrong_reply(&other)),
        }
    }

    /// The job's stored result and its media type.
    ///
    /// # Errors
    /// [`ClientError::Call`] with `bad request` when the job has no result
    /// (yet), else as [`Client::job`].
    pub async fn job_result(&self, id: &str) -> Result<(Vec<u8>, Option<String>), ClientError> {
        match self.job_op(JobOp::Result(id.to_string())).await? {
            JobReply::Result { data, content_type } => Ok((data, content_type)),
            other => Err(wrong_reply(&other)),
        }
    }

    /// Follows the job's log from after `after`: the stored lines first,
    /// then new batches as they are written, ending once the job has ended
    /// and every line was given. A failure is the stream's last item;
    /// dropping the stream stops following.
    ///
    /// # Errors
    /// An item is [`ClientError::Call`] for no such job, or a connection
    /// or protocol error.
    pub async fn follow_log(
        &self,
        id: &str,
        after: u64,
    ) -> Result<impl Stream<Item = Result<Vec<LogEntry>, ClientError>> + Send + use<>, ClientError>
    {
        let (mut send, recv) = self.open().await?;
        let op = JobOp::Log {
            id: id.to_string(),
            after,
            follow: true,
        };
        send.send(&self.job_request(op)).await?;
        send.finish()?;
        let state = Follow {
            _send: send,
            recv,
            done: false,
        };
        Ok(futures_util::stream::unfold(
            state,
            |mut state| async move {
                if state.done {
                    return None;
                }
                let item = state.next().await;
                if !matches!(item, Some(Ok(_))) {
                    state.done = true;
                }
                item.map(|item| (item, state))
            },
        ))
    }
}

/// A followed log's open stream.
struct Follow {
    /// Kept open (finished) while the answer streams.
    _send: FramedSend,
    recv: PooledRecv,
    done: bool,
}

impl Follow {
    /// The next batch; `None` at the log's end.
    async fn next(&mut self) -> Option<Result<Vec<LogEntry>, ClientError>> {
        match self.recv.recv().await {
            Ok(Some(Message::JobReply(reply))) => match *reply {
                JobReply::Log(lines) => Some(Ok(lines)),
                other => Some(Err(wrong_reply(&other))),
            },
            Ok(Some(Message::End(_))) => None,
            Ok(Some(Message::Error(e))) => Some(Err(e.into())),
            Ok(Some(other)) => Some(Err(unexpected(&other))),
            Ok(None) => Some(Err(ClientError::Protocol(
                "the log stream ended without its end frame".into(),
            ))),
            Err(e) => Some(Err(e.into())),
        }
    }
}

fn job_view(reply: JobReply) -> Result<JobView, ClientError> {
    match reply {
        JobReply::Job(view) => Ok(*view),
        other => Err(wrong_reply(&other)),
    }
}

fn wrong_reply(reply: &JobReply) -> ClientError {
    let what = match reply {
        JobReply::Job(_) => "job",
        JobReply::Page(_) => "page",
        JobReply::Log(_) => "log",
        JobReply::Deleted(_) => "deleted",
        JobReply::Result { .. } => "result",
        JobReply::Settings(_) => "settings",
    };
    ClientError::Protocol(format!("unexpected {what} reply from the gateway"))
}
