//! What the benches share: an in-process gateway's configuration on
//! loopback port 0 (QUIC, admin and HTTP ingress) and its plugins folder,
//! and a fleet of that gateway and one in-process agent.

// Each bench is its own crate and uses part of this.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use gateway::GatewayConfig;

/// The agent token the benches' gateway and agents share.
pub const TOKEN: &str = "bench-agent-token";

/// A gateway configuration with every port on `127.0.0.1:0`, its data in
/// `scratch`, the repository's built plugins (see [`plugins_dir`]), a
/// generous pick deadline (the machine is shared) and a fixed seed.
///
/// # Errors
/// When the scratch plugins folder cannot be made.
pub fn gateway_config(scratch: &Path) -> anyhow::Result<GatewayConfig> {
    Ok(GatewayConfig {
        listen: "127.0.0.1:0".parse()?,
        admin_listen: "127.0.0.1:0".parse()?,
        http: gateway::config::HttpConfig {
            listen: "127.0.0.1:0".parse()?,
            ..Default::default()
        },
        data_dir: scratch.join("gateway"),
        plugins_dir: plugins_dir(scratch)?,
        agent_token: Some(TOKEN.into()),
        admin_token: Some("bench-admin-token".into()),
        pick_deadline_ms: 50,
        seed: Some(7),
        ..GatewayConfig::default()
    })
}

/// The repository's built plugins if there are (round-robin is the default
/// policy), else an empty folder (the built-in round-robin picks).
///
/// # Errors
/// When the empty folder cannot be made.
pub fn plugins_dir(scratch: &Path) -> anyhow::Result<PathBuf> {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist");
    if built.join("round-robin.wasm").exists() {
        return Ok(built);
    }
    let empty = scratch.join("plugins");
    std::fs::create_dir_all(&empty)?;
    Ok(empty)
}

/// A gateway serving on its own task and one in-process agent
/// (`bench-node`) registered with it.
pub struct Fleet {
    /// The gateway (its addresses, CA, registry).
    pub gateway: gateway::Gateway,
    /// Its QUIC address, `host:port`.
    pub addr: String,
    /// The CA file clients trust.
    pub ca: PathBuf,
    stop_agent: tokio::sync::oneshot::Sender<()>,
    agent: tokio::task::JoinHandle<Result<(), node_agent::AgentError>>,
    stop_gateway: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<()>,
}

impl Fleet {
    /// Binds a gateway with `config`, serves it, starts an agent hosting
    /// `services` and waits (at most 20 s) until it registered.
    ///
    /// # Errors
    /// When the gateway does not bind or the agent does not register.
    pub async fn start(
        config: GatewayConfig,
        services: Vec<node_agent::ServiceConfig>,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let gateway = gateway::Gateway::bind(config)
            .await
            .context("gateway binds")?;
        let addr = gateway.local_addr()?.to_string();
        let ca = gateway.ca_path().to_path_buf();
        let (stop_gateway, gateway_stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = gateway.clone();
        let serving = tokio::spawn(async move {
            serving
                .serve(async {
                    let _ = gateway_stopped.await;
                })
                .await;
        });
        let agent = node_agent::AgentConfig::new(addr.clone(), &ca, TOKEN, "bench-node", services);
        let (stop_agent, agent_stopped) = tokio::sync::oneshot::channel::<()>();
        let agent = tokio::spawn(node_agent::run(agent, async {
            let _ = agent_stopped.await;
        }));
        let start = std::time::Instant::now();
        while gateway.registry().len() != 1 {
            anyhow::ensure!(
                start.elapsed() < std::time::Duration::from_secs(20),
                "the agent did not register"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Ok(Self {
            gateway,
            addr,
            ca,
            stop_agent,
            agent,
            stop_gateway,
            serving,
        })
    }

    /// Stops the agent, then the gateway.
    ///
    /// # Errors
    /// The agent's error, or a task that panicked.
    pub async fn stop(self) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let _ = self.stop_agent.send(());
        self.agent.await?.context("agent")?;
        let _ = self.stop_gateway.send(());
        self.serving.await?;
        Ok(())
    }
}
