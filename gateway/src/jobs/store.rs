//! TEMPORARY type-checking stand-in (replaced by the real store).
#![allow(missing_docs, clippy::unused_async)]
use std::collections::BTreeMap;
use std::path::Path;

use protocol::{JobFilter, JobPage, JobState, JobView, LogEntry, LogStream};

use crate::config::TemplateConfig;

#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("job store: {0}")]
    Db(String),
}
fn no<T>() -> Result<T, StoreError> {
    Err(StoreError::Db("stand-in".into()))
}
#[derive(Clone)]
pub(crate) struct JobStore;
pub(crate) struct NewJob {
    pub id: String,
    pub service: String,
    pub template: Option<String>,
    pub state: JobState,
    pub tenant: Option<String>,
    pub priority: i32,
    pub realtime: bool,
    pub watchdog_s: u32,
    pub max_attempts: u32,
    pub idempotent: bool,
    pub created_ms: u64,
    pub payload: Vec<u8>,
    pub hints: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub note: Option<String>,
}
pub(crate) struct StoredJob {
    pub view: JobView,
    pub payload: Vec<u8>,
    pub owner: Option<String>,
    pub lease_until_ms: Option<u64>,
}
pub(crate) struct Change<'a> {
    pub id: &'a str,
    pub from: &'a [JobState],
    pub attempt: Option<u32>,
    pub to: JobState,
    pub new_attempt: Option<u32>,
    pub node: Option<Option<String>>,
    pub owner: Option<Option<String>>,
    pub lease_until_ms: Option<Option<u64>>,
    pub started_ms: Option<Option<u64>>,
    pub finished_ms: Option<Option<u64>>,
    pub error: Option<Option<String>>,
    pub clear_result: bool,
    pub at_ms: u64,
    pub note: Option<String>,
}
impl JobStore {
    pub async fn open(_url: &str, _m: u32) -> Result<Self, StoreError> {
        no()
    }
    pub fn sqlite_url(_p: &Path) -> String {
        String::new()
    }
    pub fn backend(&self) -> &'static str {
        "x"
    }
    pub async fn insert(&self, _j: &NewJob) -> Result<(), StoreError> {
        no()
    }
    pub async fn get(&self, _id: &str) -> Result<Option<StoredJob>, StoreError> {
        no()
    }
    pub async fn list(&self, _f: &JobFilter) -> Result<JobPage, StoreError> {
        no()
    }
    pub async fn change(&self, _c: &Change<'_>) -> Result<bool, StoreError> {
        no()
    }
    pub async fn set_result(
        &self,
        _id: &str,
        _a: u32,
        _d: &[u8],
        _c: Option<&str>,
    ) -> Result<bool, StoreError> {
        no()
    }
    pub async fn result(&self, _id: &str) -> Result<Option<(Vec<u8>, Option<String>)>, StoreError> {
        no()
    }
    pub async fn append_log(
        &self,
        _id: &str,
        _l: &[(u32, u64, LogStream, String)],
    ) -> Result<u64, StoreError> {
        no()
    }
    pub async fn log_after(
        &self,
        _id: &str,
        _a: u64,
        _l: u32,
    ) -> Result<Vec<LogEntry>, StoreError> {
        no()
    }
    pub async fn delete(&self, _id: &str) -> Result<bool, StoreError> {
        no()
    }
    pub async fn unfinished(&self) -> Result<Vec<StoredJob>, StoreError> {
        no()
    }
    pub async fn renew_leases(&self, _o: &str, _ids: &[String], _u: u64) -> Result<(), StoreError> {
        no()
    }
    pub async fn purge_finished_before(&self, _c: u64) -> Result<u64, StoreError> {
        no()
    }
    pub async fn counts(&self) -> Result<Vec<(String, JobState, u64)>, StoreError> {
        no()
    }
    pub async fn put_template(
        &self,
        _n: &str,
        _t: &TemplateConfig,
        _now: u64,
    ) -> Result<(), StoreError> {
        no()
    }
    pub async fn templates(&self) -> Result<Vec<(String, TemplateConfig)>, StoreError> {
        no()
    }
}
