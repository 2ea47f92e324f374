//! The QUIC endpoint, one port for agents and clients, and the gateway it
//! fronts: [`Gateway::bind`] builds every part (TLS, policies, scheduler,
//! the HTTP ports, jobs) and [`Gateway::serve`] accepts connections until
//! shutdown.
//!
//! - [`admission`]: which connections are let in (`[quic]` limits);
//! - [`streams`]: a connection's first stream says what it is: an agent's
//!   `Register` ([`agents`]: its control stream) or a client's request
//!   (calls, listings, admin operations, jobs);
//! - [`certs`]: the server certificate, its reload, agents' certificates.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use crate::fleet::Registry;
use crate::policies::{Policies, WatchHandle};
use crate::{GatewayConfig, GatewayError, Shared, cache, scheduler};
use admission::Admission;

pub(crate) mod admission;
mod agents;
pub mod certs;
mod lease;
mod node_gauges;
mod streams;

/// A bound gateway, ready to serve.
#[derive(Clone)]
pub struct Gateway {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    ca: PathBuf,
    /// The generated token files, each with what it is for.
    token_files: Vec<(&'static str, PathBuf)>,
    _watch: Arc<WatchHandle>,
    /// The accept policy (`[quic]` limits).
    admission: Arc<Admission>,
    /// Reloads the certificates on SIGHUP or a file change.
    _reload: Arc<certs::ReloadHandle>,
    _scheduler: Arc<AbortOnDrop>,
    admin: Option<Arc<std::sync::Mutex<Option<tokio::net::TcpListener>>>>,
    admin_addr: Option<SocketAddr>,
    /// The HTTP ingress listener (taken by `serve`) and its TLS settings.
    ingress: Option<Arc<std::sync::Mutex<Option<Ingress>>>>,
    ingress_addr: Option<SocketAddr>,
}

/// The bound HTTP ingress, waiting to be served.
struct Ingress {
    listener: tokio::net::TcpListener,
    tls: Option<rustls::ServerConfig>,
}

/// Stops the scheduler's tick task when the last handle of the gateway goes.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Gateway {
    /// Creates TLS material and the agent token if missing, loads the
    /// policies and binds the QUIC endpoint.
    ///
    /// # Errors
    /// A [`GatewayError`] when any of that fails.
    pub async fn bind(config: GatewayConfig) -> Result<Self, GatewayError> {
        config.validate()?;
        let mut listens = vec![config.listen];
        if config.http.enabled {
            listens.push(config.http.listen);
        }
        crate::config::check_anonymous(&config, &listens)?;
        let tenants = crate::tenants::Tenants::new(&config.tenants)?;
        let known = known_names(&config);
        let files = config.tls_files();
        if files.create_if_missing(&certs::tls_names(&config))? {
            tracing::info!(ca = %files.ca.display(), "created a self-signed CA and server certificate");
        }
        let mut token_files = Vec::new();
        let mut token = |given: &Option<String>, file: &str, what: &'static str| match given {
            Some(token) => Ok(token.clone()),
            None => {
                let path = config.data_dir.join(file);
                let token = crate::load_or_create_token(&path);
                token_files.push((what, path));
                token
            }
        };
        let agent_token = token(
            &config.agent_token,
            "agent-token",
            "agent token file (agents' token_file)",
        )?;
        let admin_token = token(
            &config.admin_token,
            "admin-token",
            "admin token file (switchyard policy set, drain, cache purge)",
        )?;
        let endpoint = quinn::Endpoint::server(certs::server_config(&config)?, config.listen)
            .map_err(|source| GatewayError::Io {
                path: PathBuf::from(config.listen.to_string()),
                source,
            })?;
        let admission = Admission::new(config.quic, config.agents);
        let reload = certs::start(endpoint.clone(), config.clone());
        let core = scheduler::new_core(&config);
        let registry = Arc::new(Registry::new(core.clone()));
        let policies = Arc::new(Policies::new(&config, registry.clone())?);
        let scheduler = Arc::new(scheduler::Scheduler::new(
            core,
            registry.clone(),
            policies.clone(),
            config.scale.window(),
        ));
        let scheduler_task = tokio::spawn(scheduler.clone().run_ticks());
        if let Err(error) = std::fs::create_dir_all(&config.plugins_dir) {
            tracing::warn!(dir = %config.plugins_dir.display(), %error, "cannot create the plugins folder");
        }
        let watch = crate::policies::watch(policies.clone(), config.plugins_dir.clone()).await;
        if !policies.is_loaded(&config.default_policy) {
            tracing::warn!(
                policy = %config.default_policy,
                dir = %config.plugins_dir.display(),
                "default policy not loaded; picks use the built-in round-robin until it is"
            );
        }
        let codec = protocol::Codec::new(protocol::DEFAULT_MAX_FRAME_LEN);
        let tracer = otel::Tracer::start(&config.tracing, "switchyard-gateway")?;
        crate::telemetry::install(config.metrics.idle_timeout());
        describe_metrics();
        let admin = if config.admin_enabled {
            let listener = crate::admin::bind(config.admin_listen)
                .await
                .map_err(|source| GatewayError::Io {
                    path: PathBuf::from(config.admin_listen.to_string()),
                    source,
                })?;
            Some(listener)
        } else {
            None
        };
        let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
        let ingress = if config.http.enabled {
            let listener = crate::ingress::bind(config.http.listen)
                .await
                .map_err(|source| GatewayError::Io {
                    path: PathBuf::from(config.http.listen.to_string()),
                    source,
                })?;
            let tls = if config.http.uses_tls() {
                Some(files.server_config()?)
            } else {
                None
            };
            Some(Ingress { listener, tls })
        } else {
            None
        };
        let ingress_addr = ingress.as_ref().and_then(|i| i.listener.local_addr().ok());
        let (events, _) = tokio::sync::broadcast::channel(256);
        let cache = Arc::new(cache::ResultCache::new(&config));
        let drain: Arc<crate::drain::Drain> = Arc::default();
        let cluster = Arc::new(
            join_cluster(
                &config,
                &endpoint,
                ingress_addr,
                admin_addr,
                &registry,
                &drain,
            )
            .await?,
        );
        let gateway = Self {
            endpoint,
            shared: Arc::new(Shared {
                decisions: crate::policies::Decisions::new(config.decisions),
                first_seen: crate::ingress::models::FirstSeen::default(),
                sync: crate::sync::Sync::new(config.cluster.as_ref(), cluster.etcd()),
                leases: crate::leases::Leases::start(&config.leases),
                tree: crate::tree::Tree::new(config.gateway_id()),
                config,
                registry,
                policies,
                scheduler,
                started: Instant::now(),
                window: crate::telemetry::CallWindow::new(Instant::now()),
                events,
                cache,
                codec,
                agent_token,
                tracer,
                admin_token,
                next_call_id: AtomicU64::new(1),
                tenants,
                drain,
                jobs: std::sync::OnceLock::new(),
                _known: known,
                readiness: crate::health::Readiness::default(),
                cluster,
            }),
            ca: files.ca,
            token_files,
            _watch: Arc::new(watch),
            admission,
            _reload: Arc::new(reload),
            _scheduler: Arc::new(AbortOnDrop(scheduler_task)),
            admin: admin.map(|l| Arc::new(std::sync::Mutex::new(Some(l)))),
            admin_addr,
            ingress: ingress.map(|i| Arc::new(std::sync::Mutex::new(Some(i)))),
            ingress_addr,
        };
        if gateway.shared.config.jobs.enabled {
            let jobs = crate::jobs::Jobs::start(&gateway.shared)
                .await
                .map_err(|e| GatewayError::Jobs(e.to_string()))?;
            let _ = gateway.shared.jobs.set(jobs);
        }
        crate::sync::start(&gateway.shared).await;
        crate::tree::Tree::start(&gateway.shared);
        Ok(gateway)
    }

    /// The HTTP ingress address (OpenAI-compatible routes,
    /// `/v1/call/{service}`), if served.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.ingress_addr
    }

    /// The HTTP ingress's base URL (`http://` or `https://`), if served.
    pub fn http_url(&self) -> Option<String> {
        let addr = self.ingress_addr?;
        let scheme = if self.shared.config.http.uses_tls() {
            "https"
        } else {
            "http"
        };
        Some(format!("{scheme}://{addr}"))
    }

    /// The address the endpoint listens on (useful with port 0).
    ///
    /// # Errors
    /// When the socket is gone.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The admin HTTP address (`/metrics`, `/api`, dashboard), if served.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The CA file agents and clients must trust.
    pub fn ca_path(&self) -> &Path {
        &self.ca
    }

    /// The token agents must present.
    pub fn agent_token(&self) -> &str {
        &self.shared.agent_token
    }

    /// The token admin requests must present.
    pub fn admin_token(&self) -> &str {
        &self.shared.admin_token
    }

    /// The policy table.
    pub fn policies(&self) -> &Arc<Policies> {
        &self.shared.policies
    }

    /// The node registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.shared.registry
    }

    /// Every service's queue (as `switchyard queue` shows it).
    pub fn queues(&self) -> Vec<protocol::QueueView> {
        self.shared.scheduler.views(Instant::now())
    }

    /// The result cache's statistics (as `switchyard cache stats` shows them).
    pub fn cache_stats(&self) -> protocol::CacheStatsView {
        self.shared.cache.stats()
    }

    /// Names of the loaded policies.
    pub fn policy_names(&self) -> Vec<String> {
        self.shared.policies.names()
    }

    /// Prints where things are: address, CA file, the agent and admin
    /// token files (when generated), policies.
    pub fn print_banner(&self) {
        let addr = self.local_addr().map(crate::show).unwrap_or_default();
        tracing::info!(listen = %addr, ca = %self.ca.display(), "gateway listening");
        println!("switchyard gateway listening on {addr}");
        println!(
            "CA file (give it to agents and clients): {}",
            self.ca.display()
        );
        for (what, path) in &self.token_files {
            println!("{what}: {}", path.display());
        }
        let policies = self.policy_names();
        if policies.is_empty() {
            println!(
                "policies: none in {} (picks use the built-in round-robin; set plugins_dir)",
                self.shared.config.plugins_dir.display()
            );
        } else {
            println!("policies: {}", policies.join(", "));
        }
        if let Some(admin) = self.admin_addr {
            println!("dashboard: http://{admin}/  metrics: http://{admin}/metrics");
        }
        if let Some(url) = self.http_url() {
            println!("http ingress (OpenAI-compatible): {url}/v1");
        }
    }

    /// Serves connections until `shutdown` resolves, then shuts down
    /// gracefully: new connections (clients and agents) are refused and new
    /// calls answered `shutting down` (retry-safe) while the calls in
    /// flight finish, for at most `shutdown_grace_s`; then every connection
    /// closes with [`protocol::codes::close::SHUTDOWN`].
    pub async fn serve(&self, shutdown: impl std::future::Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let listener = self
            .admin
            .as_ref()
            .and_then(|l| l.lock().ok().and_then(|mut l| l.take()));
        if let Some(listener) = listener {
            tokio::spawn(crate::admin::serve(self.shared.clone(), listener, async {
                let _ = admin_stopped.await;
            }));
        }
        let (stop_ingress, ingress_stopped) = tokio::sync::oneshot::channel::<()>();
        let ingress = self
            .ingress
            .as_ref()
            .and_then(|i| i.lock().ok().and_then(|mut i| i.take()));
        if let Some(Ingress { listener, tls }) = ingress {
            tokio::spawn(crate::ingress::serve(
                self.shared.clone(),
                listener,
                tls,
                async {
                    let _ = ingress_stopped.await;
                },
            ));
        }
        loop {
            tokio::select! {
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    if let Some((incoming, ticket)) = self.admission.admit(incoming) {
                        tokio::spawn(streams::connection(self.shared.clone(), incoming, ticket));
                    }
                }
                () = &mut shutdown => break,
            }
        }
        let grace = Duration::from_secs(u64::from(self.shared.config.shutdown_grace_s));
        tracing::info!(
            in_flight = self.shared.drain.in_flight(),
            grace_s = grace.as_secs(),
            "gateway shutting down: refusing new calls, finishing those in flight"
        );
        self.shared.tree.leave();
        let drained = self.shared.drain.stop(grace);
        tokio::pin!(drained);
        let left = loop {
            tokio::select! {
                left = &mut drained => break left,
                incoming = self.endpoint.accept() => match incoming {
                    Some(incoming) => incoming.refuse(),
                    None => break self.shared.drain.in_flight(),
                },
            }
        };
        if left > 0 {
            tracing::warn!(
                in_flight = left,
                "shutdown grace passed; closing with calls in flight"
            );
        }
        tracing::info!("gateway shutting down");
        self.shared.cluster.leave().await;
        let _ = stop_admin.send(());
        let _ = stop_ingress.send(());
        self.endpoint.close(
            protocol::codes::close::SHUTDOWN.into(),
            b"gateway shutting down",
        );
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

/// This gateway's membership: a cluster of one without `[cluster]`, else
/// joined through etcd with the advertised addresses (default: the bound
/// ones) and the agents and calls in flight as its load.
async fn join_cluster(
    config: &GatewayConfig,
    endpoint: &quinn::Endpoint,
    ingress: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    registry: &Arc<Registry>,
    drain: &Arc<crate::drain::Drain>,
) -> Result<crate::cluster::Cluster, GatewayError> {
    let addr = |advertised: &Option<String>, bound: Option<SocketAddr>| {
        advertised
            .clone()
            .or_else(|| bound.map(|a| a.to_string()))
            .unwrap_or_default()
    };
    let Some(c) = &config.cluster else {
        let me = protocol::Member {
            name: config.listen.to_string(),
            quic: config.listen.to_string(),
            http: addr(&None, ingress),
        };
        return Ok(crate::cluster::Cluster::single(me).with_admin(addr(&None, admin)));
    };
    let quic = endpoint.local_addr().unwrap_or(config.listen);
    let me = protocol::Member {
        name: c.member_name(),
        quic: addr(&c.advertise_quic, Some(quic)),
        http: addr(&c.advertise_http, ingress),
    };
    let (registry, drain) = (registry.clone(), drain.clone());
    let load = Box::new(move || crate::cluster::LoadSummary {
        agents: registry.len() as u64,
        calls_in_flight: drain.in_flight() as u64,
    });
    crate::cluster::Cluster::start(c, me, addr(&c.advertise_admin, admin), load)
        .await
        .map_err(|e| GatewayError::Cluster(e.to_string()))
}

/// Describes every module's series (their `# HELP` lines); the recorder is
/// installed first, or the descriptions would be lost.
/// Holds the names `config` makes known as label values of their own:
/// the services of `[services.NAME]`, `[models]` and `[templates.NAME]`,
/// and the tenants (the anonymous one included).
fn known_names(config: &GatewayConfig) -> [crate::telemetry::labels::Known; 2] {
    use crate::telemetry::labels::{Kind, Known};
    let services = config
        .services
        .keys()
        .chain(config.models.values())
        .chain(config.templates.values().map(|t| &t.service))
        .map(String::as_str);
    let tenants = config
        .tenants
        .iter()
        .map(|t| t.name.as_str())
        .chain([crate::tenants::ANONYMOUS]);
    [
        Known::new(Kind::Service, services),
        Known::new(Kind::Tenant, tenants),
    ]
}

fn describe_metrics() {
    admission::describe_metrics();
    crate::cluster::describe_metrics();
    agents::describe_metrics();
    certs::describe_metrics();
    streams::describe_metrics();
    crate::admin::describe_metrics();
    crate::jobs::describe_metrics();
    crate::calls::describe_metrics();
    crate::leases::describe_metrics();
    crate::scheduler::describe_metrics();
    crate::policies::describe_metrics();
    crate::cache::describe_metrics();
    crate::ingress::describe_metrics();
    crate::tree::rebalance::describe_metrics();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    #[test]
    fn calls_and_queues_carry_the_tenant() {
        if crate::telemetry::install(None).is_none() {
            return; // another recorder owns this process
        }
        super::describe_metrics();
        use crate::telemetry::labels::{Kind, Known};
        let _known = [
            Known::new(Kind::Service, ["svc-t"]),
            Known::new(Kind::Tenant, ["team-a", "team-b"]),
        ];
        crate::calls::record_call("svc-t", "node-t", "rr", "ok", "team-a", 12.0);
        crate::scheduler::record_queue_length("svc-t", "team-b", 1);
        // Names the gateway does not know share one series.
        for i in 0..50 {
            let name = format!("flood-t-{i}");
            crate::calls::record_call(&name, "", "", "unknown_service", &name, 1.0);
        }
        let text = crate::telemetry::render();
        assert!(!text.contains("flood-t-"), "{text}");
        for needle in [
            r#"calls_total{service="svc-t",node="node-t",policy="rr",outcome="ok",tenant="team-a"} 1"#,
            r#"calls_total{service="_unknown",node="",policy="",outcome="unknown_service",tenant="_unknown"} 50"#,
            r#"queue_length{service="svc-t",tenant="team-b"} 1"#,
            "# HELP calls_total Calls finished, by service, node, policy, outcome and tenant.",
            "# HELP queue_length Calls waiting, by service and tenant.",
        ] {
            assert!(text.contains(needle), "missing {needle} in:\n{text}");
        }
        crate::scheduler::record_queue_length("svc-t", "team-b", 0);
        let text = crate::telemetry::render();
        assert!(
            text.contains(r#"queue_length{service="svc-t",tenant="team-b"} 0"#),
            "{text}"
        );
    }
}
