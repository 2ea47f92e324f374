//! `switchyard call SERVICE`: one call, its result written to stdout as
//! it arrives; `--look-aside` leases the node and calls it directly.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use client::{CallEvent, CallOptions, Client, Mode};

use crate::admission::AdmissionArgs;
use futures_util::StreamExt as _;

/// The `call` command's arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct CallArgs {
    /// Service name.
    service: String,
    /// Payload as text.
    #[arg(long, conflicts_with = "file", required_unless_present = "file")]
    data: Option<String>,
    /// Payload from a file (`-` for stdin).
    #[arg(long)]
    file: Option<PathBuf>,
    #[command(flatten)]
    admission: AdmissionArgs,
    /// Skip the gateway's result cache: run on a node (the fresh result
    /// is still cached).
    #[arg(long)]
    no_cache: bool,
    /// Accept a cached result only if it is at most this many seconds old.
    #[arg(long)]
    max_age_s: Option<u32>,
    /// For an OpenAI-compatible service: the endpoint the payload is for
    /// (/chat/completions, /completions or /embeddings).
    #[arg(long)]
    endpoint: Option<String>,
    /// Print queue positions while waiting, then the serving node, policy,
    /// timings and why the policy chose the node (its scores and reason),
    /// to stderr.
    #[arg(short, long)]
    verbose: bool,
    /// Call look-aside: lease a node from the gateway and send the
    /// payload to the node's direct port (through the gateway if that
    /// port cannot be reached).
    #[arg(long)]
    look_aside: bool,
}

/// Makes the call, writing its result's chunks to stdout as they arrive
/// (and with `--verbose` its queue positions, node, policy and timings to
/// stderr).
///
/// # Errors
/// An unreadable payload file, the call's error, or a failed write.
pub(crate) async fn run(client: &Client, args: CallArgs) -> anyhow::Result<()> {
    let CallArgs {
        service,
        data,
        file,
        admission,
        no_cache,
        max_age_s,
        endpoint,
        verbose,
        look_aside,
    } = args;
    let payload = match (data, file) {
        (Some(text), _) => text.into_bytes(),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
            buf
        }
        (None, Some(path)) => std::fs::read(&path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
        (None, None) => anyhow::bail!("give --data or --file"),
    };
    let mut options = admission.options();
    if verbose {
        options.hints.push(("explain".into(), "1".into()));
    }
    let options = CallOptions {
        no_cache,
        max_age: max_age_s.map(|s| Duration::from_secs(u64::from(s))),
        endpoint,
        mode: if look_aside {
            Mode::LookAside
        } else {
            Mode::Proxied
        },
        ..options
    };
    let mut stream = client
        .call(&service, payload)
        .options(options)
        .on_event(|event| {
            if verbose {
                eprintln!("{}", event_line(&service, &event));
            }
        })
        .stream()
        .await?;
    // Each chunk goes out as it arrives (a model's tokens, a
    // command's lines).
    let mut stdout = std::io::stdout();
    let mut len = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        len += chunk.len();
        stdout.write_all(&chunk)?;
        stdout.flush()?;
    }
    if verbose {
        let meta = &stream.meta;
        let t = meta.timings;
        eprintln!(
            "node={} policy={} bytes={len} queue_ms={:.2} node_ms={:.2} total_ms={:.2}",
            meta.node_id, meta.policy, t.queue_ms, t.node_ms, t.total_ms
        );
        if !meta.via.is_empty() {
            eprintln!("via={}", meta.via.join(","));
        }
        if let Some(cache) = meta.cache {
            eprintln!(
                "cache={} age_ms={}",
                if cache.coalesced { "coalesced" } else { "hit" },
                cache.age_ms
            );
        }
        if let Some(why) = &meta.explain {
            eprintln!("why: {why}");
        }
    }
    Ok(())
}

/// The line printed to stderr for a queue event (`switchyard call -v`,
/// `switchyard lease`).
pub(crate) fn event_line(service: &str, event: &CallEvent) -> String {
    match event {
        CallEvent::Queued { position } => format!("queued: position {position}"),
        CallEvent::Reserved {
            node_id,
            from,
            expected_ms,
        } => format!(
            "reserved: node {node_id} is loading {service} (was {}, usually {expected_ms} ms)",
            from.as_deref().unwrap_or("empty")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_aside_is_a_flag_of_call() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            let cli = crate::Cli::try_parse_from(args).expect("parses");
            let crate::Command::Call(args) = cli.command else {
                panic!("not the call command");
            };
            args
        };
        let args = parse(&["switchyard", "call", "echo", "--data", "x", "--look-aside"]);
        assert!(args.look_aside);
        assert_eq!(args.service, "echo");
        assert!(!parse(&["switchyard", "call", "echo", "--data", "x"]).look_aside);
    }

    #[test]
    fn events_read_as_switchyard_call_prints_them() {
        assert_eq!(
            event_line("echo", &CallEvent::Queued { position: 3 }),
            "queued: position 3"
        );
        let reserved = CallEvent::Reserved {
            node_id: "node-a".into(),
            from: None,
            expected_ms: 900,
        };
        assert_eq!(
            event_line("llama", &reserved),
            "reserved: node node-a is loading llama (was empty, usually 900 ms)"
        );
    }
}
