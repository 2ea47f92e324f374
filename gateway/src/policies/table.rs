//! The policy table: which plugin file provides which policy, which
//! service uses which, and the files refused. The watcher ([`super::watcher`])
//! loads and removes files; the admin API lists the table and changes a
//! service's policy.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use policy_host::{Policy, PolicyError};
use protocol::{PolicyTable, PolicyView, RejectedFile, ServicePolicy};

use super::{BUILTIN_ROUND_ROBIN, Policies};

/// The loaded policies by name and by file, the services' configured
/// policies, and the files refused.
#[derive(Default)]
pub(super) struct Table {
    pub(super) by_name: HashMap<String, Arc<Policy>>,
    /// Which file provides which policy name.
    pub(super) by_file: HashMap<PathBuf, String>,
    /// Service → configured policy name (`gateway.toml`, then `policy set`).
    pub(super) services: HashMap<String, String>,
    /// Service → the policy the latest node registering it asked for
    /// (`ServiceSpec::policy`), used while none is configured.
    pub(super) asked: HashMap<String, String>,
    /// Files whose latest version was refused.
    pub(super) rejected: BTreeMap<PathBuf, RejectedFile>,
}

impl Policies {
    /// Compiles, instantiates and names the plugin `bytes` read from `path`
    /// (content hash `hash`), then installs it, replacing the version the file
    /// provided before. On failure the old version stays and the file is
    /// listed as rejected.
    pub fn load_file(&self, path: &Path, bytes: &[u8], hash: &str) {
        let origin = path.display().to_string();
        let loaded = self
            .compile(bytes, &origin)
            .and_then(|policy| self.install(path, policy));
        match loaded {
            Ok(name) => tracing::debug!(policy = %name, file = %origin, hash, "plugin file loaded"),
            Err(error) => self.reject(path, &error),
        }
    }

    /// Compiles, instantiates and names the component `bytes` without
    /// installing it (`origin` names it in logs and errors).
    ///
    /// # Errors
    /// The [`PolicyError`] that refuses it: not a component, no policy
    /// world, a `name` export that fails or answers a bad name.
    pub fn compile(&self, bytes: &[u8], origin: &str) -> Result<Policy, PolicyError> {
        self.engine
            .load_bytes(bytes, origin, self.directory.clone())
    }

    /// Installs `policy` as the one `source` (a plugin file, or
    /// [`pushed_source`]) provides, replacing the version `source` provided
    /// before; returns its name.
    ///
    /// # Errors
    /// [`PolicyError::Instantiate`] when another source provides a policy
    /// of the same name (nothing changes).
    pub fn install(&self, source: &Path, policy: Policy) -> Result<String, PolicyError> {
        let name = policy.name().to_string();
        let origin = source.display().to_string();
        let mut table = self.write();
        // Another source providing the name keeps it, unless this one is
        // pushed and that one a plugin file: a pushed policy is the
        // cluster's, and overrides one gateway's file of the same name.
        let owner = table
            .by_file
            .iter()
            .find(|(f, n)| **n == name && f.as_path() != source)
            .map(|(f, _)| f.clone());
        if let Some(owner) = owner
            && (is_pushed(&owner) || !is_pushed(source))
        {
            return Err(PolicyError::Instantiate {
                policy: name,
                reason: format!("policy name already provided by {}", owner.display()),
            });
        }
        let replaced = table.by_file.insert(source.to_path_buf(), name.clone());
        if let Some(old) = replaced.filter(|old| *old != name) {
            table.by_name.remove(&old);
            tracing::warn!(file = %origin, old = %old, new = %name, "plugin file now provides another policy");
        }
        let hash = policy.content_hash().to_string();
        let previous = table.by_name.insert(name.clone(), Arc::new(policy));
        table.rejected.remove(source);
        drop(table);
        metrics::counter!("policy_loads_total", "policy" => name.clone()).increment(1);
        match previous {
            Some(old) => {
                tracing::info!(policy = %name, file = %origin, hash, old_hash = old.content_hash(), "policy replaced")
            }
            None => tracing::info!(policy = %name, file = %origin, hash, "policy loaded"),
        }
        Ok(name)
    }

    /// Lists `source` as refused for `error` (its previous version, if
    /// any, stays), logs and counts it.
    pub(crate) fn reject(&self, source: &Path, error: &PolicyError) {
        let origin = source.display().to_string();
        tracing::error!(file = %origin, %error, "policy rejected; the previous version (if any) stays");
        metrics::counter!("policy_load_failures_total").increment(1);
        self.write().rejected.insert(
            source.to_path_buf(),
            RejectedFile {
                file: origin,
                reason: error.to_string(),
                at_unix_ms: unix_ms(SystemTime::now()),
            },
        );
    }

    /// The plugin file in the plugins folder that provides `name`, if one
    /// does.
    pub(crate) fn file_of(&self, name: &str) -> Option<PathBuf> {
        self.read()
            .by_file
            .iter()
            .find(|(f, n)| *n == name && !is_pushed(f))
            .map(|(f, _)| f.clone())
    }

    /// Whether the policy `name` in force was pushed to the cluster.
    pub(crate) fn is_pushed(&self, name: &str) -> bool {
        self.read()
            .by_file
            .get(&pushed_source(name))
            .is_some_and(|n| n == name)
    }

    /// The content hash of the loaded policy `name`, if loaded.
    pub(crate) fn hash_of(&self, name: &str) -> Option<String> {
        self.read()
            .by_name
            .get(name)
            .map(|p| p.content_hash().to_string())
    }

    /// Unloads the policy `path` provided. Services that used it fall back to
    /// the default policy (with a warning).
    pub fn remove_file(&self, path: &Path) {
        let mut table = self.write();
        table.rejected.remove(path);
        let Some(name) = table.by_file.remove(path) else {
            return;
        };
        if table.by_file.values().any(|n| *n == name) {
            // A pushed policy of the same name stays in force.
            tracing::info!(policy = %name, file = %path.display(), "plugin file removed; the pushed policy of that name stays");
            return;
        }
        table.by_name.remove(&name);
        let users: Vec<String> = table
            .services
            .iter()
            .filter(|(_, p)| **p == name)
            .map(|(s, _)| s.clone())
            .collect();
        drop(table);
        tracing::info!(policy = %name, file = %path.display(), "policy removed");
        if !users.is_empty() || name == self.default_policy {
            tracing::warn!(policy = %name, services = ?users, default = %self.default_policy, "removed policy was in use; those services fall back to the default policy");
        }
    }

    /// Makes `service` use the loaded policy `name` from the next call on.
    /// Returns the policy it used to be configured with.
    ///
    /// # Errors
    /// A message naming the loaded policies when `name` is not loaded.
    pub fn set_service_policy(&self, service: &str, name: &str) -> Result<Option<String>, String> {
        let mut table = self.write();
        if !table.by_name.contains_key(name) {
            let mut loaded: Vec<_> = table.by_name.keys().cloned().collect();
            loaded.sort();
            return Err(format!(
                "no policy named {name:?} is loaded (loaded: {})",
                loaded.join(", ")
            ));
        }
        Ok(table.services.insert(service.to_string(), name.to_string()))
    }

    /// Records the policies `node`'s services ask for (its
    /// registration's `ServiceSpec::policy`): each such service uses it
    /// while its operator configured none (`gateway.toml`, `policy set`).
    /// An unloaded name is kept (it counts once loaded) and warned about.
    pub fn asked_by(&self, node: &protocol::NodeSpec) {
        let mut table = self.write();
        for service in &node.services {
            let Some(policy) = &service.policy else {
                continue;
            };
            if !table.by_name.contains_key(policy) {
                tracing::warn!(node = %node.id, service = %service.name, %policy, "a node asks for a policy that is not loaded; the service uses the default meanwhile");
            }
            table.asked.insert(service.name.clone(), policy.clone());
        }
    }

    /// Whether a policy named `name` is loaded.
    pub fn is_loaded(&self, name: &str) -> bool {
        self.read().by_name.contains_key(name)
    }

    /// Names of the loaded policies, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<_> = self.read().by_name.keys().cloned().collect();
        names.sort();
        names
    }

    /// The table for `switchyard policies`; `hosted` are the services nodes
    /// host now (listed even without a configured policy).
    pub fn table(&self, hosted: &[String]) -> PolicyTable {
        let table = self.read();
        let mut policies: Vec<PolicyView> = table
            .by_name
            .values()
            .map(|p| PolicyView {
                name: p.name().to_string(),
                file: table
                    .by_file
                    .iter()
                    .filter(|(_, n)| n.as_str() == p.name())
                    .max_by_key(|(f, _)| is_pushed(f))
                    .map(|(f, _)| f.display().to_string())
                    .unwrap_or_default(),
                content_hash: p.content_hash().to_string(),
                loaded_at_unix_ms: unix_ms(p.loaded_at()),
                picks_total: p.picks_total(),
                traps_total: p.traps_total(),
            })
            .collect();
        policies.sort_by(|a, b| a.name.cmp(&b.name));
        let mut names: Vec<&String> = table.services.keys().chain(hosted).collect();
        names.sort();
        names.dedup();
        let services = names
            .into_iter()
            .map(|service| ServicePolicy {
                service: service.clone(),
                configured: table.services.get(service).cloned(),
                active: Self::resolve(&table, &self.default_policy, service, None)
                    .map_or_else(|| BUILTIN_ROUND_ROBIN.to_string(), |p| p.name().to_string()),
            })
            .collect();
        PolicyTable {
            default_policy: self.default_policy.clone(),
            fail_open: self.fail_open,
            policies,
            services,
            rejected: table.rejected.values().cloned().collect(),
        }
    }
}

/// The source a policy pushed to the cluster (`switchyard policy push`)
/// is listed under in the table: `etcd:{name}`.
pub(crate) fn pushed_source(name: &str) -> PathBuf {
    PathBuf::from(format!("{PUSHED}{name}"))
}

/// Whether `source` is a [`pushed_source`].
fn is_pushed(source: &Path) -> bool {
    source.to_str().is_some_and(|s| s.starts_with(PUSHED))
}

/// The start of a [`pushed_source`].
const PUSHED: &str = "etcd:";

/// `t` in ms since the Unix epoch (0 before it).
fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
