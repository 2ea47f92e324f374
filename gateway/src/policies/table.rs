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
            .engine
            .load_bytes(bytes, &origin, self.directory.clone())
            .and_then(|policy| {
                let table = self.read();
                match table.by_name.get(policy.name()) {
                    Some(_)
                        if table.by_file.get(path).map(String::as_str) != Some(policy.name()) =>
                    {
                        let owner = table
                            .by_file
                            .iter()
                            .find(|(_, n)| *n == policy.name())
                            .map(|(f, _)| f.display().to_string())
                            .unwrap_or_default();
                        Err(PolicyError::Instantiate {
                            policy: policy.name().to_string(),
                            reason: format!("policy name already provided by {owner}"),
                        })
                    }
                    _ => Ok(policy),
                }
            });
        match loaded {
            Ok(policy) => {
                let name = policy.name().to_string();
                let mut table = self.write();
                let replaced = table.by_file.insert(path.to_path_buf(), name.clone());
                if let Some(old) = replaced.filter(|old| *old != name) {
                    table.by_name.remove(&old);
                    tracing::warn!(file = %origin, old = %old, new = %name, "plugin file now provides another policy");
                }
                let previous = table.by_name.insert(name.clone(), Arc::new(policy));
                table.rejected.remove(path);
                drop(table);
                metrics::counter!("policy_loads_total", "policy" => name.clone()).increment(1);
                match previous {
                    Some(old) => {
                        tracing::info!(policy = %name, file = %origin, hash, old_hash = old.content_hash(), "policy replaced")
                    }
                    None => tracing::info!(policy = %name, file = %origin, hash, "policy loaded"),
                }
            }
            Err(error) => {
                tracing::error!(file = %origin, %error, "policy rejected; the previous version (if any) stays");
                metrics::counter!("policy_load_failures_total").increment(1);
                self.write().rejected.insert(
                    path.to_path_buf(),
                    RejectedFile {
                        file: origin,
                        reason: error.to_string(),
                        at_unix_ms: unix_ms(SystemTime::now()),
                    },
                );
            }
        }
    }

    /// Unloads the policy `path` provided. Services that used it fall back to
    /// the default policy (with a warning).
    pub fn remove_file(&self, path: &Path) {
        let mut table = self.write();
        table.rejected.remove(path);
        let Some(name) = table.by_file.remove(path) else {
            return;
        };
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
                    .find(|(_, n)| n.as_str() == p.name())
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

/// `t` in ms since the Unix epoch (0 before it).
fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
