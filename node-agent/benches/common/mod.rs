//! What the benches share: an in-process gateway's configuration on
//! loopback port 0 (QUIC, admin and HTTP ingress) and its plugins folder.

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
