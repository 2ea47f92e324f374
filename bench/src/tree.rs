//! Section `tree`: what a level of a tree of gateways costs. Three gateways
//! in a chain (`gw-0` the root, `gw-1` under it with `[parent]`, `gw-2`
//! under that), the agents at the leaf gateway `gw-2`; the same calls
//! entered at the leaf, one level up and two levels up: calls per
//! CPU-second of the gateways on the path, p50 at 1 in flight, and the
//! latency each level adds.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use client::{CallOptions, Client, ClientConfig};
use loadgen::QuicTarget;

use crate::cluster::fleet::Gateways;
use crate::fleet::{FleetSpec, Ports, TOKEN, render_agent, render_gateway, wait_nodes};
use crate::report::{Section, col};
use crate::scenarios::{AnyTarget, Step, Timing, add_added_latency, interleaved};
use crate::sections::{Setup, payload, system};

/// The service the load calls (the agents' built-in echo).
const SERVICE: &str = "echo";
/// The baseline row: calls entered at the leaf gateway.
const BASELINE: &str = "tree-leaf";

/// Section `tree`; what could not be measured is said in its notes.
pub async fn section(s: &Setup<'_>, timing: &Timing) -> Section {
    let mut section = Section {
        id: "tree".into(),
        title: "A tree of gateways: the cost of a level".into(),
        timing: *timing,
        clk_tck: crate::procs::clock_ticks(),
        notes: Vec::new(),
        systems: Vec::new(),
        columns: vec![
            col("max calls/s", "max.calls_per_s", 0),
            col("calls/gateway-CPU-s", "max.calls_per_cpu_s_proxy", 0),
            col("1 in flight p50 µs", "one.p50_us", 0),
            col("added p50 µs", "added.one.p50_us", 0),
            col("errors", "max.errors", 0),
        ],
    };
    if let Err(e) = measured(s, timing, &mut section).await {
        section.notes.push(format!("Not measured: {e:#}"));
    }
    section
}

async fn measured(s: &Setup<'_>, timing: &Timing, section: &mut Section) -> Result<()> {
    let spec = FleetSpec {
        bin_dir: s.bin_dir.to_path_buf(),
        plugins_dir: s.plugins_dir.to_path_buf(),
        policies: s.policies.to_vec(),
        backends: s.backends.to_vec(),
        gateway_threads: Some(1),
    };
    let dir = s.scratch.join("tree");
    let chain = start_chain(s, &spec, &dir)?;
    let agents = s.backends.len();
    section.notes.push(format!(
        "Three gateways on one thread each (`worker_threads = 1`) in a chain: `gw-0` the root, `gw-1` with `[parent]` `gw-0`, `gw-2` with `[parent]` `gw-1` (stats every 1000 ms; one CA, `gw-0`'s); {agents} agents at `gw-2`. The load: the SDK calling the agents' built-in `{SERVICE}` with 64 bytes, entered at `gw-2` (`{BASELINE}`: no level above the nodes' gateway), at `gw-1` (one level) or at `gw-0` (two). max = closed loop, 16 in flight; 1 in flight = one caller; systems interleaved, medians. calls/gateway-CPU-s = calls ÷ the utime+stime of the gateways on the path; added p50 = p50 at 1 in flight minus `{BASELINE}`'s."
    ));
    let mut systems = Vec::new();
    for (name, path, entry) in [
        (BASELINE, "SDK → gw-2 → agent → echo", 2usize),
        ("tree-1-level", "SDK → gw-1 → gw-2 → agent → echo", 1),
        (
            "tree-2-levels",
            "SDK → gw-0 → gw-1 → gw-2 → agent → echo",
            0,
        ),
    ] {
        let client = Client::connect(ClientConfig::new(chain.quic_addr(entry), &chain.ca))
            .await
            .context("SDK connect")?;
        let target = QuicTarget::new(client, SERVICE.into(), payload(), CallOptions::default());
        let pids = chain.gateway_pids();
        systems.push(system(
            name,
            path,
            Arc::new(AnyTarget::Quic(target)),
            pids[entry..].to_vec(),
            chain.all_pids(),
        ));
    }
    let mut results = interleaved("tree", &systems, &[Step::Max, Step::One], timing).await;
    add_added_latency(&mut results, BASELINE);
    let p50 = |name: &str| {
        results
            .iter()
            .find(|r| r.name == name)
            .and_then(|r| r.medians.get("one.p50_us").copied())
    };
    if let (Some(leaf), Some(one), Some(two)) =
        (p50(BASELINE), p50("tree-1-level"), p50("tree-2-levels"))
    {
        section.notes.push(format!(
            "Added latency per level, p50 at 1 in flight: the first level {:.0} µs, the second {:.0} µs (leaf {leaf:.0} µs).",
            one - leaf,
            two - one
        ));
    }
    section.systems = results;
    Ok(())
}

/// The three gateways in a chain and the agents at the leaf; waits until
/// each level sees the one below.
fn start_chain(s: &Setup<'_>, spec: &FleetSpec, dir: &Path) -> Result<Gateways> {
    // Each gateway's parent is the one started before it.
    let started: RefCell<Vec<(Ports, PathBuf)>> = RefCell::new(Vec::new());
    let mut chain = Gateways::start(3, s.bin_dir, dir, None, |ports, data| {
        let mut started = started.borrow_mut();
        let mut text = format!("id = \"gw-{}\"\n", started.len());
        text.push_str(&render_gateway(spec, ports, data));
        if let (Some((above, _)), Some((_, root))) = (started.last(), started.first()) {
            text.push_str(&format!(
                "\n[parent]\naddress = \"127.0.0.1:{}\"\nca = \"{}\"\ntoken = \"{TOKEN}\"\n",
                above.quic,
                root.join("ca.pem").display()
            ));
        }
        started.push((ports, data.to_path_buf()));
        text
    })?;
    let leaf = chain.members[2].ports.quic;
    for (i, backend) in s.backends.iter().enumerate() {
        let text = render_agent(spec, i, leaf, &chain.ca, *backend);
        chain.spawn_agent(i, dir, &text)?;
    }
    let within = Duration::from_secs(20);
    wait_nodes(chain.members[2].ports.admin, s.backends.len(), within).context("gw-2's agents")?;
    wait_nodes(chain.members[1].ports.admin, 1, within).context("gw-1 has gw-2")?;
    wait_nodes(chain.members[0].ports.admin, 1, within).context("gw-0 has gw-1")?;
    Ok(chain)
}
