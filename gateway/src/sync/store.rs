//! The shared state's view of etcd, over the gateway's one etcd client
//! (the cluster membership's: one connection per gateway): every request
//! bounded by `[cluster] connect_timeout_ms`, every failure a
//! [`SyncError::Degraded`].

use std::time::Duration;

use etcd_client::{Client, GetOptions, PutOptions, WatchOptions, WatchStream};

use super::SyncError;
use super::keys::Key;
use crate::config::ClusterConfig;

/// The cluster's etcd, rooted at `{prefix}/config/`.
#[derive(Clone)]
pub(crate) struct Store {
    client: Client,
    /// `{prefix}/config/`.
    root: String,
    timeout: Duration,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.root)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// One key and value read back, its path relative to the root.
pub(crate) type Entry = (String, Vec<u8>);

impl Store {
    /// The store of `config`'s cluster over `client` (a clone shares its
    /// connection; while etcd is down its requests fail within the
    /// timeout).
    pub(crate) fn new(client: Client, config: &ClusterConfig) -> Self {
        Self {
            client,
            root: format!("{}/config/", config.prefix),
            timeout: Duration::from_millis(u64::from(config.connect_timeout_ms)),
        }
    }

    /// The key `key` stands for.
    fn full(&self, key: &Key) -> String {
        format!("{}{}", self.root, key.path())
    }

    /// The path of `key` relative to the root, if it is under it.
    pub(crate) fn relative<'a>(&self, key: &'a [u8]) -> Option<&'a str> {
        std::str::from_utf8(key).ok()?.strip_prefix(&self.root)
    }

    /// Writes `value` at `key`, attached to `lease` when given.
    ///
    /// # Errors
    /// [`SyncError::Degraded`] when etcd does not answer in time or fails.
    pub(crate) async fn put(
        &self,
        key: &Key,
        value: Vec<u8>,
        lease: Option<i64>,
    ) -> Result<(), SyncError> {
        let options = lease.map(|id| PutOptions::new().with_lease(id));
        let mut kv = self.client.kv_client();
        bounded(self.timeout, kv.put(self.full(key), value, options)).await?;
        Ok(())
    }

    /// Deletes `key` (none there is fine).
    ///
    /// # Errors
    /// [`SyncError::Degraded`] when etcd does not answer in time or fails.
    pub(crate) async fn delete(&self, key: &Key) -> Result<(), SyncError> {
        let mut kv = self.client.kv_client();
        bounded(self.timeout, kv.delete(self.full(key), None)).await?;
        Ok(())
    }

    /// Deletes every key under `{root}{path}`.
    ///
    /// # Errors
    /// [`SyncError::Degraded`] when etcd does not answer in time or fails.
    pub(crate) async fn delete_prefix(&self, path: &str) -> Result<(), SyncError> {
        let mut kv = self.client.kv_client();
        let options = etcd_client::DeleteOptions::new().with_prefix();
        bounded(
            self.timeout,
            kv.delete(format!("{}{path}", self.root), Some(options)),
        )
        .await?;
        Ok(())
    }

    /// Every key under `{root}{path}` with its value, and the store's
    /// revision at the read.
    ///
    /// # Errors
    /// [`SyncError::Degraded`] when etcd does not answer in time or fails.
    pub(crate) async fn list(&self, path: &str) -> Result<(i64, Vec<Entry>), SyncError> {
        let mut kv = self.client.kv_client();
        let got = bounded(
            self.timeout,
            kv.get(
                format!("{}{path}", self.root),
                Some(GetOptions::new().with_prefix()),
            ),
        )
        .await?;
        let revision = got.header().map_or(0, |h| h.revision());
        let entries = got
            .kvs()
            .iter()
            .filter_map(|kv| Some((self.relative(kv.key())?.to_string(), kv.value().to_vec())))
            .collect();
        Ok((revision, entries))
    }

    /// A lease of `ttl_s` seconds (keys attached to it go when it ends).
    ///
    /// # Errors
    /// [`SyncError::Degraded`] when etcd does not answer in time or fails.
    pub(crate) async fn lease(&self, ttl_s: i64) -> Result<i64, SyncError> {
        let mut lease = self.client.lease_client();
        Ok(bounded(self.timeout, lease.grant(ttl_s, None)).await?.id())
    }

    /// Watches every key under the root from `revision` on.
    ///
    /// # Errors
    /// [`SyncError::Degraded`] when etcd does not answer in time or fails.
    pub(crate) async fn watch(&self, revision: i64) -> Result<WatchStream, SyncError> {
        let mut watch = self.client.watch_client();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision);
        bounded(self.timeout, watch.watch(self.root.clone(), Some(options))).await
    }
}

/// `request`, failing with [`SyncError::Degraded`] after `timeout` or on
/// an etcd error.
async fn bounded<T>(
    timeout: Duration,
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, SyncError> {
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(SyncError::Degraded(error.to_string())),
        Err(_) => Err(SyncError::Degraded(format!(
            "no answer in {} ms",
            timeout.as_millis()
        ))),
    }
}
