//! Hot-swap: watches the plugins folder and reconciles the policy table with
//! the `*.wasm` files in it.
//!
//! A change is acted on after the folder has been quiet for [`DEBOUNCE`], and
//! the folder is also rescanned every [`RESCAN`] in case an event was missed.
//! A new or changed file is compiled, instantiated and asked its `name`
//! *before* it replaces anything; a file that fails is logged, counted
//! (`policy_load_failures_total`) and remembered by content hash so it is not
//! retried until it changes, and the version it would have replaced stays.
//! Calls in flight keep the `Arc<Policy>` that picked them, so they finish on
//! the old version. Installing with write-then-rename is the documented way;
//! a half-written file simply fails to compile and is retried when it changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::Watcher as _;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::Policies;

/// Quiet time after the last file event before reloading.
pub(super) const DEBOUNCE: Duration = Duration::from_millis(150);
/// Period of the safety-net rescan.
pub(super) const RESCAN: Duration = Duration::from_secs(2);

/// What the watcher knows of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    len: u64,
    modified: Option<SystemTime>,
    /// Inode number (0 off Unix): a rename-over always changes it.
    inode: u64,
    hash: String,
}

/// Keeps the file watcher alive; dropping it stops hot-swapping.
pub(crate) struct WatchHandle {
    _watcher: Option<notify::RecommendedWatcher>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Loads every policy in `dir` now, then keeps the table in step with the
/// folder until the handle is dropped.
pub(crate) async fn start(policies: Arc<Policies>, dir: PathBuf) -> WatchHandle {
    let mut seen = HashMap::new();
    reconcile_blocking(&policies, &dir, &mut seen).await;
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let watcher = match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = tx.send(());
        }
    }) {
        Ok(mut w) => match w.watch(&dir, notify::RecursiveMode::NonRecursive) {
            Ok(()) => Some(w),
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "cannot watch the plugins folder; rescanning every {:?}", RESCAN);
                None
            }
        },
        Err(error) => {
            tracing::warn!(%error, "no file watcher; rescanning the plugins folder every {:?}", RESCAN);
            None
        }
    };
    let task = tokio::spawn(async move {
        let mut rescan = tokio::time::interval(RESCAN);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = rx.recv() => {
                    if event.is_none() {
                        // The watcher is gone; the rescan still runs.
                        rescan.tick().await;
                    }
                    // Debounce: wait until the folder is quiet.
                    while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
                }
                _ = rescan.tick() => {}
            }
            reconcile_blocking(&policies, &dir, &mut seen).await;
        }
    });
    WatchHandle {
        _watcher: watcher,
        task,
    }
}

async fn reconcile_blocking(
    policies: &Arc<Policies>,
    dir: &Path,
    seen: &mut HashMap<PathBuf, Seen>,
) {
    let (p, d, mut s) = (policies.clone(), dir.to_path_buf(), std::mem::take(seen));
    match tokio::task::spawn_blocking(move || {
        reconcile(&p, &d, &mut s);
        s
    })
    .await
    {
        Ok(s) => *seen = s,
        Err(error) => tracing::error!(%error, "plugin reload task failed"),
    }
}

/// Brings the policy table in line with the `*.wasm` files in `dir`.
fn reconcile(policies: &Policies, dir: &Path, seen: &mut HashMap<PathBuf, Seen>) {
    let files = match wasm_files(dir) {
        Ok(files) => files,
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "cannot read the plugins folder");
            return;
        }
    };
    for (path, meta) in &files {
        let len = meta.len();
        let modified = meta.modified().ok();
        let inode = inode(meta);
        if let Some(s) = seen.get(path)
            && s.len == len
            && s.modified == modified
            && s.inode == inode
        {
            continue;
        }
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        let hash = hex(&Sha256::digest(&bytes));
        let unchanged = seen.get(path).is_some_and(|s| s.hash == hash);
        seen.insert(
            path.clone(),
            Seen {
                len,
                modified,
                inode,
                hash: hash.clone(),
            },
        );
        if unchanged {
            continue;
        }
        policies.load_file(path, &bytes, &hash);
    }
    let gone: Vec<PathBuf> = seen
        .keys()
        .filter(|p| !files.iter().any(|(f, _)| f == *p))
        .cloned()
        .collect();
    for path in gone {
        seen.remove(&path);
        policies.remove_file(&path);
    }
}

/// The visible `*.wasm` files in `dir` (hidden ones are temporary installs).
fn wasm_files(dir: &Path) -> std::io::Result<Vec<(PathBuf, std::fs::Metadata)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if hidden || path.extension().is_none_or(|e| e != "wasm") {
            continue;
        }
        if let Ok(meta) = entry.metadata()
            && meta.is_file()
        {
            out.push((path, meta));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[cfg(unix)]
fn inode(meta: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

#[cfg(not(unix))]
fn inode(_: &std::fs::Metadata) -> u64 {
    0
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_visible_wasm_files_are_policies() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in [
            "b.wasm",
            "a.wasm",
            ".a.wasm.tmp.1",
            ".hidden.wasm",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(name), b"x").expect("write");
        }
        std::fs::create_dir(dir.path().join("sub.wasm")).expect("mkdir");
        let names: Vec<_> = wasm_files(dir.path())
            .expect("list")
            .into_iter()
            .map(|(p, _)| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        assert_eq!(names, [Some("a.wasm".into()), Some("b.wasm".into())]);
    }

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(hex(&[0, 10, 255]), "000aff");
    }
}
