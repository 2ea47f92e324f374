//! `switchyard policy push FILE [--name NAME]`: the component's bytes to
//! the gateway's admin API (`PUT /api/policies/{name}`, or `POST
//! /api/policies` without a name), which loads it and keeps it.

use std::path::Path;

/// Largest component pushed, bytes (the gateway's own bound, 64 MiB).
const MAX_COMPONENT: u64 = 64 << 20;

/// What the gateway answers a push with.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Pushed {
    /// The policy's name.
    pub(crate) name: String,
    /// BLAKE3 of the component, hex.
    pub(crate) hash: String,
    /// Its length, bytes.
    pub(crate) bytes: u64,
    /// Where it is kept: `etcd`, or the gateway's plugins file.
    pub(crate) stored: String,
}

/// The line printed for a push.
pub(crate) fn describe(pushed: &Pushed) -> String {
    let whom = if pushed.stored == "etcd" {
        "stored in etcd: every gateway of the cluster loads it".to_string()
    } else {
        format!("kept in {}", pushed.stored)
    };
    format!(
        "policy {} loaded (blake3 {}, {} bytes), {whom}",
        pushed.name, pushed.hash, pushed.bytes
    )
}

/// The admin URL a push goes to.
pub(crate) fn url(admin_url: &str, name: Option<&str>) -> String {
    let base = admin_url.trim_end_matches('/');
    match name {
        Some(name) => format!("{base}/api/policies/{name}"),
        None => format!("{base}/api/policies"),
    }
}

/// Pushes the component `file` to the gateway at `admin_url`.
///
/// # Errors
/// A file that cannot be read or is over 64 MiB, a gateway that cannot be
/// reached, or its refusal (its status and JSON error: a component that
/// does not load, `cluster_degraded` while etcd is down).
pub(crate) async fn push(
    admin_url: &str,
    file: &Path,
    name: Option<&str>,
    token: &str,
) -> anyhow::Result<()> {
    let len = std::fs::metadata(file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?
        .len();
    if len > MAX_COMPONENT {
        anyhow::bail!(
            "{} is {len} bytes; a policy component is at most {} MiB",
            file.display(),
            MAX_COMPONENT >> 20
        );
    }
    let bytes =
        std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let url = url(admin_url, name);
    let client = reqwest::Client::new();
    let request = match name {
        Some(_) => client.put(&url),
        None => client.post(&url),
    };
    let request = request
        .header("content-type", "application/wasm")
        .body(bytes);
    let body = crate::send_admin(request, &url, token, "policy push").await?;
    let pushed: Pushed = serde_json::from_str(&body)
        .map_err(|e| anyhow::anyhow!("unexpected answer from {url}: {e}: {body:.200}"))?;
    println!("{}", describe(&pushed));
    Ok(())
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_name_puts_and_none_posts() {
        assert_eq!(
            url("http://127.0.0.1:4490/", Some("latency")),
            "http://127.0.0.1:4490/api/policies/latency"
        );
        assert_eq!(
            url("http://127.0.0.1:4490", None),
            "http://127.0.0.1:4490/api/policies"
        );
    }

    #[test]
    fn the_answer_says_where_the_policy_is_kept() {
        let pushed: Pushed =
            serde_json::from_str(r#"{"name":"latency","hash":"ab12","bytes":10,"stored":"etcd"}"#)
                .expect("json");
        let line = describe(&pushed);
        assert!(
            line.contains("blake3 ab12") && line.contains("every gateway"),
            "{line}"
        );
        let local = Pushed {
            stored: "plugins/latency.wasm".into(),
            ..pushed
        };
        assert!(describe(&local).contains("kept in plugins/latency.wasm"));
    }

    #[tokio::test]
    async fn a_missing_file_is_named() {
        let error = push(
            "http://127.0.0.1:9",
            Path::new("/nonexistent/p.wasm"),
            None,
            "t",
        )
        .await
        .expect_err("missing");
        assert!(error.to_string().contains("/nonexistent/p.wasm"), "{error}");
    }
}
