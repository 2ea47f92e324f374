//! Section `cluster`: several gateways serving one fleet, their membership
//! on etcd (a throwaway member the section starts,
//! [`switchyard_testkit::Etcd`]). What membership and load reports cost
//! (calls per gateway-CPU-second and added latency, one gateway without
//! `[cluster]` against one and three with it), how fast the cluster and a
//! client get over a gateway's kill -9, how fast a pushed policy reaches
//! every gateway, and how well cache-aware routing keeps its KV-cache hits
//! when the calls are spread over three gateways.

mod failover;
pub(crate) mod fleet;
mod kv;
mod policy;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use client::{CallOptions, Client, ClientConfig};
use loadgen::QuicTarget;
use switchyard_testkit::Etcd;

use crate::fleet::{BUILTIN, FleetSpec, LEAST, render_agent, render_gateway};
use crate::llm::Settings;
use crate::report::{Section, col};
use crate::scenarios::{
    AnyTarget, QuicSpread, Step, System, SystemResult, Timing, add_added_latency, interleaved,
    medians,
};
use crate::sections::{Setup, payload, system};
use fleet::{Gateways, LEASE_TTL_S, Membership};

/// The service the load calls (the agents' built-in echo).
const SERVICE: &str = "echo";
/// The baseline row: one gateway, no `[cluster]`.
const BASELINE: &str = "1-gw";
/// The KV-cache figure of merit's target: the hit rate through three
/// gateways at least this share of the hit rate through one.
pub const KV_RATIO_TARGET: f64 = 0.9;

/// Section `cluster`; what could not be measured is said in its notes.
pub async fn section(s: &Setup<'_>, timing: &Timing, quick: bool) -> Section {
    let mut section = Section {
        id: "cluster".into(),
        title: "Cluster: several gateways on etcd, one fleet".into(),
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
            col("kill → removal ms", "kill_to_removal_ms", 0),
            col("kill → served elsewhere ms", "kill_to_served_ms", 0),
            col("cluster client: calls failed", "cluster_failed_calls", 0),
            col("restart → rejoined ms", "restart_to_rejoin_ms", 0),
            col("push → picked everywhere ms", "policy_propagation_ms", 0),
            col("KV hit %", "kv_hit_pct", 1),
            col("KV hit 3-gw ÷ 1-gw", "kv_ratio", 2),
        ],
    };
    if let Err(e) = measured(s, timing, quick, &mut section).await {
        section.notes.push(format!("Not measured: {e:#}"));
    }
    section
}

/// A QUIC target calling [`SERVICE`] through `addr`.
async fn target(addr: String, ca: &Path) -> Result<QuicTarget> {
    let client = Client::connect(ClientConfig::new(addr, ca))
        .await
        .context("SDK connect")?;
    Ok(QuicTarget::new(
        client,
        SERVICE.to_string(),
        payload(),
        CallOptions::default(),
    ))
}

/// A system calling [`SERVICE`] through every gateway of `g`, round-robin.
async fn spread_system(name: &str, path: &str, g: &Gateways) -> Result<System> {
    let mut targets = Vec::new();
    for i in 0..g.members.len() {
        targets.push(target(g.quic_addr(i), &g.ca).await?);
    }
    let any = if targets.len() == 1 {
        AnyTarget::Quic(targets.remove(0))
    } else {
        AnyTarget::Spread(QuicSpread::new(targets))
    };
    Ok(system(
        name,
        path,
        Arc::new(any),
        g.gateway_pids(),
        g.all_pids(),
    ))
}

/// `n` gateways (in `scratch/cluster/LABEL`) with the suite's fleet
/// config, with `membership` or none, and one agent per backend given
/// gateway 0's address; waits until each gateway has them all.
fn start_fleet(
    s: &Setup<'_>,
    spec: &FleetSpec,
    label: &str,
    n: usize,
    membership: Option<Membership>,
) -> Result<Gateways> {
    let dir = s.scratch.join("cluster").join(label);
    let mut g = Gateways::start(n, s.bin_dir, &dir, membership, |ports, data| {
        render_gateway(spec, ports, data)
    })?;
    let quic = g.members[0].ports.quic;
    for (i, backend) in s.backends.iter().enumerate() {
        let text = render_agent(spec, i, quic, &g.ca, *backend);
        g.spawn_agent(i, &dir, &text)?;
    }
    g.wait_nodes_everywhere(s.backends.len(), Duration::from_secs(20))
        .context("every gateway has the agents (given gw-0's address)")?;
    Ok(g)
}

async fn measured(
    s: &Setup<'_>,
    timing: &Timing,
    quick: bool,
    section: &mut Section,
) -> Result<()> {
    let etcd = Etcd::start_required().context("etcd")?;
    let membership = |prefix: &str| Membership {
        etcd: etcd.endpoint(),
        prefix: prefix.into(),
    };
    // The fleets load one plugin (their services' `least-request`), so the
    // others can be pushed at run time.
    let plugins = s.scratch.join("cluster").join("plugins");
    std::fs::create_dir_all(&plugins)?;
    let least = format!("{LEAST}.wasm");
    std::fs::copy(s.plugins_dir.join(&least), plugins.join(&least))
        .with_context(|| format!("{least} in the plugins folder"))?;
    let spec = FleetSpec {
        bin_dir: s.bin_dir.to_path_buf(),
        plugins_dir: plugins,
        policies: s.policies.to_vec(),
        backends: s.backends.to_vec(),
        gateway_threads: Some(1),
    };
    let agents = s.backends.len();
    section.notes.push(format!(
        "One etcd member (`etcd` from PATH, `switchyard_testkit::Etcd`: its data in a temporary folder of its own, free loopback ports). Each fleet: gateways on one thread (`worker_threads = 1`), the suite's fleet config, one CA (the first gateway's, served by the others through `[tls]`), {agents} agents each given gw-0's address alone; with `[cluster]`: `lease_ttl_s = {LEASE_TTL_S}`, one key prefix per fleet. The load: the SDK calling the agents' built-in `{SERVICE}` with 64 bytes; `3-gw-cluster` spreads the calls round-robin over one SDK client per gateway; `3-gw-cluster-gw-0` sends them all through the first of the same three (its CPU figures still count all three gateways). max = closed loop, 16 in flight; 1 in flight = one caller; systems interleaved, medians. calls/gateway-CPU-s = calls ÷ the gateways' utime+stime in the window (all three for `3-gw-cluster`); all adds the agents. Added p50 = p50 at 1 in flight minus `{BASELINE}`'s (one gateway, no `[cluster]`)."
    ));
    let plain = start_fleet(s, &spec, "plain", 1, None)?;
    let mut systems = vec![
        spread_system(
            BASELINE,
            "SDK → gateway (no [cluster]) → agent → echo",
            &plain,
        )
        .await?,
    ];
    let one = match start_fleet(s, &spec, "one", 1, Some(membership("/bench-one"))) {
        Ok(one) => {
            systems.push(
                spread_system(
                    "1-gw-cluster",
                    "SDK → gateway ([cluster], alone) → agent → echo",
                    &one,
                )
                .await?,
            );
            Some(one)
        }
        Err(e) => {
            section
                .notes
                .push(format!("`1-gw-cluster` not measured: {e:#}"));
            None
        }
    };
    let three = match start_fleet(s, &spec, "three", 3, Some(membership("/bench-three"))) {
        Ok(three) => {
            systems.push(
                spread_system(
                    "3-gw-cluster",
                    "SDK → one of 3 gateways (round-robin) → agent → echo",
                    &three,
                )
                .await?,
            );
            // The same cluster with every call through gw-0: membership
            // and the agents' load reports without the spreading.
            systems.push(system(
                "3-gw-cluster-gw-0",
                "SDK → gw-0 of the 3 (the others idle) → agent → echo",
                Arc::new(AnyTarget::Quic(
                    target(three.quic_addr(0), &three.ca).await?,
                )),
                three.gateway_pids(),
                three.all_pids(),
            ));
            Some(three)
        }
        Err(e) => {
            section.notes.push(format!(
                "`3-gw-cluster`, the kill -9 and the KV-cache figures not measured: {e:#}"
            ));
            None
        }
    };
    let mut results = interleaved("cluster", &systems, &[Step::Max, Step::One], timing).await;
    add_added_latency(&mut results, BASELINE);
    section.systems = results;
    drop(one);
    drop(plain);
    let Some(mut three) = three else {
        return Ok(());
    };
    match kills(&mut three, timing.reps, agents).await {
        Ok(row) => section.systems.push(row),
        Err(e) => section.notes.push(format!("kill -9 not measured: {e:#}")),
    }
    section.notes.push(format!(
        "kill -9: in each of {reps} reps, gateway gw-(rep mod 3) of `3-gw-cluster` is killed under a loop of `{SERVICE}` calls ({callers} callers, 2 s timeout) from an SDK client given all three addresses, the victim's first (`with_gateways`: calls go to the first gateway that is up; the SDK's default `dead_after`); removal = until both other members' `GET /api/cluster` lack it (polled every 10 ms); served elsewhere = until the first call started after the kill is served; calls failed = that client's failed calls. Beside it, a cluster client (`ClientConfig::for_cluster` on the same three addresses: calls spread over the members it learns) calls in its own loop of 4: its failed calls, and the time from the kill to the end of its last failed call. Then the victim is started again (same config and ports) and rejoined = until every member lists all three and it has the {agents} nodes again. Medians over the reps.",
        reps = timing.reps,
        callers = 4,
    ));
    let pushable: Vec<&String> = s
        .policies
        .iter()
        .filter(|p| *p != LEAST && *p != BUILTIN)
        .take(timing.reps.max(1))
        .collect();
    match pushes(&three, s.plugins_dir, &pushable).await {
        Ok(row) => section.systems.push(row),
        Err(e) => section.notes.push(format!(
            "Policy propagation not measured: {e:#}{}",
            if policy_push_available(s.bin_dir) {
                ""
            } else {
                " (this build's `switchyard policy` has no `push`: feature absent)"
            }
        )),
    }
    section.notes.push(format!(
        "Policy push: the fleets' gateways load `{LEAST}` alone; each of {n} reps pushes another plugin P ({names}) to gw-0 (`PUT /api/policies/P` on its admin port with its admin token, the route `switchyard policy push` uses) and polls `POST /v1/call/echo-P` (the service configured with policy P) on gw-1 and gw-2 every 5 ms until its `x-switchyard-policy` says P; propagation = from the push's start to the later of the two. Medians over the reps.",
        n = pushable.len(),
        names = pushable
            .iter()
            .map(|p| format!("`{p}`"))
            .collect::<Vec<_>>()
            .join(", "),
    ));
    drop(three);
    section.notes.push(beside_the_table(&section.systems));
    match kv_rows(s, &etcd, quick).await {
        Ok((rows, verdict)) => {
            section.systems.extend(rows);
            section.notes.push(verdict);
        }
        Err(e) => section
            .notes
            .push(format!("KV-cache figure not measured: {e:#}")),
    }
    Ok(())
}

/// `reps` kills of `three`'s gateways in turn, medians as one row.
async fn kills(three: &mut Gateways, reps: usize, agents: usize) -> Result<SystemResult> {
    let mut all = Vec::new();
    for rep in 0..reps.max(1) {
        let victim = rep % three.members.len();
        let figures = failover::kill_once(three, victim, agents, SERVICE)
            .await
            .with_context(|| format!("rep {}, gw-{victim}", rep + 1))?;
        println!(
            "[cluster kill -9 {}/{reps}] gw-{victim}: {figures:?}",
            rep + 1
        );
        all.push(figures);
    }
    Ok(SystemResult {
        name: "kill -9".into(),
        path: "one of 3 gateways killed under an SDK client given all three".into(),
        medians: medians(&all),
        reps: Vec::new(),
    })
}

/// The figures of `systems` the table leaves out, in words.
fn beside_the_table(systems: &[SystemResult]) -> String {
    let get = |name: &str, key: &str| {
        systems
            .iter()
            .find(|r| r.name == name)
            .and_then(|r| r.medians.get(key).copied())
    };
    let mut parts = Vec::new();
    let all: Vec<String> = [
        BASELINE,
        "1-gw-cluster",
        "3-gw-cluster",
        "3-gw-cluster-gw-0",
    ]
    .iter()
    .filter_map(|n| Some(format!("{n} {:.0}", get(n, "max.calls_per_cpu_s_all")?)))
    .collect();
    if !all.is_empty() {
        parts.push(format!(
            "calls per CPU-second of the gateways and agents together: {}",
            all.join(", ")
        ));
    }
    if let Some(v) = get("kill -9", "failed_calls") {
        parts.push(format!(
            "the failover client's failed calls around a kill: {v:.0}"
        ));
    }
    if let Some(v) = get("kill -9", "cluster_kill_to_last_failure_ms") {
        parts.push(format!(
            "the cluster client's last failed call ended {v:.0} ms after the kill"
        ));
    }
    if let Some(v) = get("policy push", "push_ms") {
        parts.push(format!("a push was answered in {v:.0} ms"));
    }
    if parts.is_empty() {
        return "Beside the table: nothing measured.".into();
    }
    format!(
        "Beside the table (medians; every figure is in `cluster.json`): {}.",
        parts.join("; ")
    )
}

/// Each of `policies` pushed to `three`'s gw-0 in turn, medians as one
/// row.
async fn pushes(
    three: &Gateways,
    plugins_dir: &Path,
    policies: &[&String],
) -> Result<SystemResult> {
    if policies.is_empty() {
        anyhow::bail!("no plugin besides {LEAST} to push");
    }
    let mut all = Vec::new();
    for (rep, p) in policies.iter().enumerate() {
        let figures = policy::push_once(three, plugins_dir, p)
            .await
            .with_context(|| format!("rep {}, {p}", rep + 1))?;
        println!(
            "[cluster policy push {}/{}] {p}: {figures:?}",
            rep + 1,
            policies.len()
        );
        all.push(figures);
    }
    Ok(SystemResult {
        name: "policy push".into(),
        path: "a plugin pushed to gw-0, picked through gw-1 and gw-2".into(),
        medians: medians(&all),
        reps: Vec::new(),
    })
}

/// Whether `bin_dir/switchyard policy --help` lists a `push` command.
fn policy_push_available(bin_dir: &Path) -> bool {
    std::process::Command::new(bin_dir.join("switchyard"))
        .args(["policy", "--help"])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim_start().starts_with("push"))
        })
}

/// The cache-aware chat through one gateway and over three: two rows and
/// the verdict on [`KV_RATIO_TARGET`].
async fn kv_rows(s: &Setup<'_>, etcd: &Etcd, quick: bool) -> Result<(Vec<SystemResult>, String)> {
    if !s.plugins_dir.join(format!("{}.wasm", kv::POLICY)).exists() {
        anyhow::bail!("no {}.wasm in the plugins folder", kv::POLICY);
    }
    let settings = Settings::new(quick);
    let dir = s.scratch.join("cluster");
    let one = kv::one_gateway(&settings, s.bin_dir, s.plugins_dir, &dir.join("kv-one")).await?;
    println!("[cluster kv 1 gateway] {one:?}");
    let membership = Membership {
        etcd: etcd.endpoint(),
        prefix: "/bench-kv".into(),
    };
    let mut three = kv::three_gateways(
        &settings,
        s.bin_dir,
        s.plugins_dir,
        &dir.join("kv-three"),
        membership,
    )
    .await?;
    println!("[cluster kv 3 gateways] {three:?}");
    let mut one = one;
    for figures in [&mut one, &mut three] {
        if let Some(e) = figures.get("errors").copied() {
            figures.insert("max.errors".into(), e);
        }
    }
    let ratio = kv_ratio(&one, &three);
    if let Some(r) = ratio {
        three.insert("kv_ratio".into(), r);
    }
    let verdict = match ratio {
        Some(r) => format!(
            "KV-cache: section 7's chat ({c} conversations × {t} turns, its seeded schedule and toy models, policy `{p}`) through one gateway (section 7's fleet) and spread over 3 gateways of one cluster (turn t of conversation c to gateway (c + t) mod 3; agent i given gateway i mod 3's address). Hit rate through 3 ÷ through 1 = {r:.2}; target ≥ {KV_RATIO_TARGET}: {}.",
            if r >= KV_RATIO_TARGET {
                "met"
            } else {
                "missed"
            },
            c = settings.shape.conversations,
            t = settings.shape.turns,
            p = kv::POLICY,
        ),
        None => "KV-cache ratio not judged: no hit rate through one gateway.".into(),
    };
    let row = |name: &str, path: &str, figures: BTreeMap<String, f64>| SystemResult {
        name: name.into(),
        path: path.into(),
        medians: figures,
        reps: Vec::new(),
    };
    Ok((
        vec![
            row("chat-1-gw", "cache-aware chat through 1 gateway", one),
            row(
                "chat-3-gw",
                "cache-aware chat round-robin over 3 gateways",
                three,
            ),
        ],
        verdict,
    ))
}

/// The hit rate through three gateways over the hit rate through one;
/// `None` when the one-gateway rate is missing or zero.
fn kv_ratio(one: &BTreeMap<String, f64>, three: &BTreeMap<String, f64>) -> Option<f64> {
    let (a, b) = (one.get("kv_hit_pct")?, three.get("kv_hit_pct")?);
    (*a > 0.0).then(|| b / a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_figures_beside_the_table_are_told_when_measured() {
        let row = |name: &str, pairs: &[(&str, f64)]| SystemResult {
            name: name.into(),
            path: String::new(),
            medians: pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            reps: Vec::new(),
        };
        let text = beside_the_table(&[
            row(BASELINE, &[("max.calls_per_cpu_s_all", 900.4)]),
            row("kill -9", &[("failed_calls", 4.0)]),
        ]);
        assert!(text.contains("1-gw 900"), "{text}");
        assert!(text.contains("failed calls around a kill: 4"), "{text}");
        assert!(!text.contains("push"), "{text}");
        assert_eq!(beside_the_table(&[]), "Beside the table: nothing measured.");
    }

    #[test]
    fn the_kv_ratio_is_three_over_one_and_none_without_hits_through_one() {
        let m = |v: f64| BTreeMap::from([("kv_hit_pct".to_string(), v)]);
        assert_eq!(kv_ratio(&m(80.0), &m(72.0)), Some(0.9));
        assert_eq!(kv_ratio(&m(0.0), &m(72.0)), None);
        assert_eq!(kv_ratio(&BTreeMap::new(), &m(72.0)), None);
    }
}
