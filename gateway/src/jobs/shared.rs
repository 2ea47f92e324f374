//! Job settings and templates in a cluster: with `[cluster]` they are
//! written to the shared run-time state in etcd (under `{prefix}/config/`)
//! rather than to this gateway's job store, and every gateway, the writer
//! included, takes them from its follower of that state into its store
//! and scheduler ([`Jobs::apply_shared_limit`],
//! [`Jobs::apply_shared_template`]).
//!
//! | key (after `{prefix}/config/`) | value |
//! |---|---|
//! | [`SETTINGS_KEY`] (`job-settings`) | JSON `{"max_per_node": N}` |
//! | `job-templates/{name}` ([`template_key`]) | the template, JSON `{"service", "payload", "defaults", "watchdog_s", "description"}` |

use std::time::Duration;

use protocol::JobSettings;

use super::{JobError, Jobs, now_ms};
use crate::config::TemplateConfig;

/// The key of the job settings, under `{prefix}/config/`.
pub(crate) const SETTINGS_KEY: &str = "job-settings";

/// The folder of the templates created over the API, under
/// `{prefix}/config/`: `job-templates/{name}`.
pub(crate) const TEMPLATES_DIR: &str = "job-templates";

/// How long a change made here waits for this gateway's follower of the
/// shared state to apply it before answering.
const APPLIED_WAIT: Duration = Duration::from_secs(2);

/// The key of template `name`, under `{prefix}/config/`.
pub(crate) fn template_key(name: &str) -> String {
    format!("{TEMPLATES_DIR}/{name}")
}

/// The JSON value of a template: the shape the job store keeps too.
pub(crate) fn template_json(t: &TemplateConfig) -> Vec<u8> {
    serde_json::json!({
        "service": t.service,
        "payload": t.payload,
        "defaults": t.defaults,
        "watchdog_s": t.watchdog_s,
        "description": t.description,
    })
    .to_string()
    .into_bytes()
}

/// The template a value holds.
///
/// # Errors
/// The JSON error for a value that is not a template (unknown fields
/// included), or one that names no service.
pub(crate) fn parse_template(value: &[u8]) -> Result<TemplateConfig, String> {
    let t: TemplateConfig = serde_json::from_slice(value).map_err(|e| e.to_string())?;
    if t.service.is_empty() {
        return Err("a template names a service".into());
    }
    Ok(t)
}

/// The per-node job limit a `job-settings` value holds.
///
/// # Errors
/// The JSON error for a value that is not `{"max_per_node": N}`.
pub(crate) fn parse_settings(value: &[u8]) -> Result<u32, String> {
    serde_json::from_slice::<JobSettings>(value)
        .map(|s| s.max_per_node)
        .map_err(|e| e.to_string())
}

impl Jobs {
    /// Writes `value` at `path` of the shared state and waits (at most
    /// 2 s) until this gateway has applied it; `false` without
    /// `[cluster]` (nothing written).
    ///
    /// # Errors
    /// [`JobError::Degraded`] while etcd does not take it.
    pub(super) async fn put_shared(&self, path: &str, value: Vec<u8>) -> Result<bool, JobError> {
        let Some(shared) = self.shared.upgrade() else {
            return Err(JobError::Disabled);
        };
        let Some(revision) = shared.cluster.put_config(path, value).await? else {
            return Ok(false);
        };
        if !shared.cluster.config_applied(revision, APPLIED_WAIT).await {
            tracing::warn!(
                key = path,
                revision,
                "a job change written to etcd is not applied here yet"
            );
        }
        Ok(true)
    }

    /// Puts the cluster's per-node job limit in force here and keeps it in
    /// the job store (so that a restart starts with it).
    ///
    /// # Errors
    /// `Store` when it cannot be stored (nothing changed; the follower
    /// tries again).
    pub(crate) async fn apply_shared_limit(&self, max_per_node: u32) -> Result<(), JobError> {
        self.store
            .put_setting(
                super::settings::MAX_PER_NODE,
                u64::from(max_per_node),
                now_ms(),
            )
            .await?;
        if self.settings().max_per_node != max_per_node {
            self.apply_limit(max_per_node);
        }
        Ok(())
    }

    /// Keeps the cluster's template `name` in the job store, where lookups
    /// find it; a name that `gateway.toml` defines here keeps that one.
    ///
    /// # Errors
    /// `Store` when it cannot be stored (the follower tries again).
    pub(crate) async fn apply_shared_template(
        &self,
        name: &str,
        template: &TemplateConfig,
    ) -> Result<(), JobError> {
        if self.templates.contains_key(name) {
            tracing::warn!(
                template = name,
                "the cluster's template is shadowed by this gateway's gateway.toml"
            );
            return Ok(());
        }
        self.store.put_template(name, template, now_ms()).await?;
        tracing::info!(template = name, "job template stored (cluster)");
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn templates_and_settings_round_trip_through_their_values() {
        let t = TemplateConfig {
            service: "batch".into(),
            payload: "run {n}".into(),
            defaults: [("n".to_string(), "3".to_string())].into(),
            watchdog_s: Some(30),
            description: "a batch run".into(),
        };
        assert_eq!(parse_template(&template_json(&t)), Ok(t));
        assert_eq!(template_key("nightly"), "job-templates/nightly");
        assert_eq!(parse_settings(br#"{"max_per_node": 2}"#), Ok(2));
        let json = serde_json::to_vec(&JobSettings { max_per_node: 5 }).expect("json");
        assert_eq!(parse_settings(&json), Ok(5));
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            &b""[..],
            b"{",
            br#"{"service": ""}"#,
            br#"{"service": "x", "extra": 1}"#,
            br#"{"payload": "x"}"#,
        ] {
            assert!(
                parse_template(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        for bad in [
            &b""[..],
            br#"{"max_per_node": -1}"#,
            br#"{"max_per_node": "2"}"#,
            br#"{"max": 2}"#,
        ] {
            assert!(
                parse_settings(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
