//! The shared state as etcd holds it ([`Desired`]), what this gateway has
//! applied of it ([`Applied`]), and the steps from one to the other
//! ([`plan`]): pure data, so the rules are tested without etcd.

use std::collections::{BTreeMap, BTreeSet};

use super::keys::{Key, PolicyRef};
use crate::config::TemplateConfig;
use crate::jobs::shared::{parse_settings, parse_template};

/// The shared state read from etcd (keys this gateway does not know, and
/// values it cannot read, are left out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Desired {
    /// Pushed policies: name → the component that provides it.
    pub(crate) policies: BTreeMap<String, PolicyRef>,
    /// Service → the name of the policy it uses.
    pub(crate) services: BTreeMap<String, String>,
    /// Nodes that take no new calls.
    pub(crate) drains: BTreeSet<String>,
    /// Cache purges not yet expired: id → the service (`None`: all).
    pub(crate) purges: BTreeMap<String, Option<String>>,
    /// The per-node job limit (`None`: never set through the cluster).
    pub(crate) job_limit: Option<u32>,
    /// Job templates created over the API, by name.
    pub(crate) templates: BTreeMap<String, TemplateConfig>,
}

impl Desired {
    /// The state the entries (paths relative to `{prefix}/config/`) hold.
    pub(crate) fn from_entries<'a>(entries: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Self {
        let mut desired = Self::default();
        for (path, value) in entries {
            desired.put(path, value);
        }
        desired
    }

    /// Takes in a key written at `path` with `value`.
    pub(crate) fn put(&mut self, path: &str, value: &[u8]) {
        let Some(key) = Key::parse(path) else {
            return;
        };
        let text = std::str::from_utf8(value).ok().map(str::trim);
        match key {
            // Chunks are read when the name that refers to them is applied.
            Key::Chunk { .. } => {}
            Key::PolicyName(name) => match serde_json::from_slice::<PolicyRef>(value) {
                Ok(reference) => {
                    self.policies.insert(name, reference);
                }
                Err(error) => {
                    tracing::warn!(policy = %name, %error, "unreadable policy reference in etcd; skipped")
                }
            },
            Key::ServicePolicy(service) => {
                if let Some(policy) = text.filter(|t| !t.is_empty()) {
                    self.services.insert(service, policy.to_string());
                }
            }
            Key::Drain(node) => {
                self.drains.insert(node);
            }
            Key::CachePurge(id) => {
                let service = text.filter(|t| *t != "*" && !t.is_empty());
                self.purges.insert(id, service.map(str::to_string));
            }
            Key::JobSettings => match parse_settings(value) {
                Ok(limit) => self.job_limit = Some(limit),
                Err(error) => tracing::warn!(%error, "unreadable job settings in etcd; skipped"),
            },
            Key::JobTemplate(name) => match parse_template(value) {
                Ok(template) => {
                    self.templates.insert(name, template);
                }
                Err(error) => {
                    tracing::warn!(template = %name, %error, "unreadable job template in etcd; skipped")
                }
            },
        }
    }

    /// Takes in the deletion of the key at `path`.
    pub(crate) fn delete(&mut self, path: &str) {
        match Key::parse(path) {
            Some(Key::PolicyName(name)) => {
                self.policies.remove(&name);
            }
            Some(Key::ServicePolicy(service)) => {
                self.services.remove(&service);
            }
            Some(Key::Drain(node)) => {
                self.drains.remove(&node);
            }
            Some(Key::CachePurge(id)) => {
                self.purges.remove(&id);
            }
            // A limit or template taken off etcd stays in force where it
            // was applied (the job stores keep them).
            Some(Key::JobSettings) => self.job_limit = None,
            Some(Key::JobTemplate(name)) => {
                self.templates.remove(&name);
            }
            Some(Key::Chunk { .. }) | None => {}
        }
    }
}

/// What this gateway has applied of the shared state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    /// Pushed policies tried: name → the hash tried (loaded, or refused:
    /// it is not tried again until the name refers to other bytes).
    pub(crate) policies: BTreeMap<String, String>,
    /// Service → the policy it was set to.
    pub(crate) services: BTreeMap<String, String>,
    /// Nodes drained through the shared state.
    pub(crate) drains: BTreeSet<String>,
    /// Cache purges done.
    pub(crate) purges: BTreeSet<String>,
    /// The per-node job limit put in force.
    pub(crate) job_limit: Option<u32>,
    /// Job templates stored, by name.
    pub(crate) templates: BTreeMap<String, TemplateConfig>,
}

/// One step towards the shared state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Load the component `reference` names as the policy `name`.
    Load {
        /// The policy's name.
        name: String,
        /// Its component.
        reference: PolicyRef,
    },
    /// Unload the pushed policy `name`.
    Unload(String),
    /// Make `service` use `policy`.
    SetService {
        /// The service.
        service: String,
        /// The policy's name.
        policy: String,
    },
    /// Stop sending new calls to the node.
    Drain(String),
    /// Let the node take calls again.
    Undrain(String),
    /// Drop cached results of a service (`None`: all).
    Purge {
        /// The purge's id.
        id: String,
        /// Its service.
        service: Option<String>,
    },
    /// Put the per-node job limit in force (and keep it in the job store).
    JobLimit(u32),
    /// Keep the job template in the job store.
    Template {
        /// Its name.
        name: String,
        /// The template.
        template: TemplateConfig,
    },
}

/// The steps that bring `applied` to `desired`, in the order to take
/// them: policies first (a service may name one just pushed), then
/// services, drains, purges, the job limit and job templates. Forgets purges no longer in `desired` (their
/// lease ended).
pub(crate) fn plan(desired: &Desired, applied: &mut Applied) -> Vec<Step> {
    let mut steps = Vec::new();
    for (name, reference) in &desired.policies {
        if applied.policies.get(name) != Some(&reference.hash) {
            steps.push(Step::Load {
                name: name.clone(),
                reference: reference.clone(),
            });
        }
    }
    for name in applied.policies.keys() {
        if !desired.policies.contains_key(name) {
            steps.push(Step::Unload(name.clone()));
        }
    }
    for (service, policy) in &desired.services {
        if applied.services.get(service) != Some(policy) {
            steps.push(Step::SetService {
                service: service.clone(),
                policy: policy.clone(),
            });
        }
    }
    for node in desired.drains.difference(&applied.drains) {
        steps.push(Step::Drain(node.clone()));
    }
    for node in applied.drains.difference(&desired.drains) {
        steps.push(Step::Undrain(node.clone()));
    }
    for (id, service) in &desired.purges {
        if !applied.purges.contains(id) {
            steps.push(Step::Purge {
                id: id.clone(),
                service: service.clone(),
            });
        }
    }
    applied.purges.retain(|id| desired.purges.contains_key(id));
    if let Some(limit) = desired.job_limit
        && applied.job_limit != Some(limit)
    {
        steps.push(Step::JobLimit(limit));
    }
    for (name, template) in &desired.templates {
        if applied.templates.get(name) != Some(template) {
            steps.push(Step::Template {
                name: name.clone(),
                template: template.clone(),
            });
        }
    }
    steps
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use crate::sync::keys::chunks;

    fn reference(bytes: &[u8]) -> (PolicyRef, Vec<u8>) {
        let (r, _) = chunks(bytes);
        let json = serde_json::to_vec(&r).expect("json");
        (r, json)
    }

    #[test]
    fn entries_make_the_desired_state() {
        let (r, json) = reference(b"component");
        let desired = Desired::from_entries([
            ("policy-names/latency", json.as_slice()),
            ("policies/whatever/0000", b"ignored".as_slice()),
            ("services/llama/policy", b"latency\n".as_slice()),
            ("services/empty/policy", b"".as_slice()),
            ("drains/gpu-1", b"1".as_slice()),
            ("cache-purges/a1", b"*".as_slice()),
            ("cache-purges/a2", b"llama".as_slice()),
            ("policy-names/broken", b"{not json".as_slice()),
            ("somebody-elses/key", b"x".as_slice()),
        ]);
        assert_eq!(desired.policies.get("latency"), Some(&r));
        assert_eq!(desired.policies.len(), 1);
        assert_eq!(
            desired.services.get("llama").map(String::as_str),
            Some("latency")
        );
        assert!(!desired.services.contains_key("empty"));
        assert!(desired.drains.contains("gpu-1"));
        assert_eq!(desired.purges.get("a1"), Some(&None));
        assert_eq!(desired.purges.get("a2"), Some(&Some("llama".into())));
    }

    #[test]
    fn job_settings_and_templates_are_planned_once_each_and_bad_ones_skipped() {
        let template = br#"{"service": "batch", "payload": "run {n}", "defaults": {"n": "1"}}"#;
        let mut desired = Desired::from_entries([
            ("job-settings", br#"{"max_per_node": 2}"#.as_slice()),
            ("job-templates/nightly", template.as_slice()),
            ("job-templates/broken", b"{not json".as_slice()),
            (
                "job-templates/no-service",
                br#"{"payload": "x"}"#.as_slice(),
            ),
        ]);
        assert_eq!(desired.job_limit, Some(2));
        assert_eq!(
            desired.templates.keys().collect::<Vec<_>>(),
            ["nightly"],
            "unreadable templates are skipped"
        );
        let nightly = desired.templates["nightly"].clone();
        assert_eq!(nightly.service, "batch");
        let mut applied = Applied::default();
        assert_eq!(
            plan(&desired, &mut applied),
            [
                Step::JobLimit(2),
                Step::Template {
                    name: "nightly".into(),
                    template: nightly.clone()
                }
            ]
        );
        applied.job_limit = Some(2);
        applied.templates.insert("nightly".into(), nightly);
        assert_eq!(plan(&desired, &mut applied), []);
        // A new limit; an unreadable one leaves the last readable in place.
        desired.put("job-settings", br#"{"max_per_node": 0}"#);
        desired.put("job-settings", b"{\"max_per_node\": -3}");
        assert_eq!(plan(&desired, &mut applied), [Step::JobLimit(0)]);
        // A template replaced.
        desired.put(
            "job-templates/nightly",
            br#"{"service": "batch", "payload": "run twice"}"#,
        );
        assert!(matches!(
            plan(&desired, &mut applied).as_slice(),
            [Step::JobLimit(0), Step::Template { name, template }]
                if name == "nightly" && template.payload == "run twice"
        ));
        // Taken off etcd: nothing to undo.
        desired.delete("job-settings");
        desired.delete("job-templates/nightly");
        assert_eq!(plan(&desired, &mut applied), []);
    }

    #[test]
    fn the_plan_loads_policies_before_setting_services_and_does_each_once() {
        let (r, json) = reference(b"component");
        let mut desired = Desired::from_entries([
            ("services/llama/policy", b"latency".as_slice()),
            ("policy-names/latency", json.as_slice()),
            ("drains/gpu-1", b"1".as_slice()),
            ("cache-purges/p1", b"*".as_slice()),
        ]);
        let mut applied = Applied::default();
        let steps = plan(&desired, &mut applied);
        assert_eq!(
            steps,
            [
                Step::Load {
                    name: "latency".into(),
                    reference: r.clone()
                },
                Step::SetService {
                    service: "llama".into(),
                    policy: "latency".into()
                },
                Step::Drain("gpu-1".into()),
                Step::Purge {
                    id: "p1".into(),
                    service: None
                },
            ]
        );
        // All done: nothing more to do.
        applied.policies.insert("latency".into(), r.hash.clone());
        applied.services.insert("llama".into(), "latency".into());
        applied.drains.insert("gpu-1".into());
        applied.purges.insert("p1".into());
        assert_eq!(plan(&desired, &mut applied), []);
        // Undrain, a new version, the purge's lease ended.
        desired.delete("drains/gpu-1");
        desired.delete("cache-purges/p1");
        let (r2, json2) = reference(b"component v2");
        desired.put("policy-names/latency", &json2);
        let steps = plan(&desired, &mut applied);
        assert_eq!(
            steps,
            [
                Step::Load {
                    name: "latency".into(),
                    reference: r2
                },
                Step::Undrain("gpu-1".into()),
            ]
        );
        assert!(applied.purges.is_empty());
        // The pushed policy removed.
        desired.delete("policy-names/latency");
        assert_eq!(
            plan(&desired, &mut applied),
            [
                Step::Unload("latency".into()),
                Step::Undrain("gpu-1".into())
            ]
        );
    }
}
