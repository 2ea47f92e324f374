//! The performance targets, each beside the figure this run measured: a
//! table at the top of `bench/results/README.md` and printed at the end of
//! the run. A target whose sections did not run shows `not measured`.

use std::fmt::Write as _;

use crate::report::Section;

/// One target and what this run measured for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Goal {
    /// What is measured, in words.
    pub what: String,
    /// The target, in words (`≤ 1.5×`, `≥ 3000/s`).
    pub target: String,
    /// The figure this run measured, in words; `None` when its section did
    /// not run or had no such figure.
    pub figure: Option<String>,
    /// Whether the figure meets the target.
    pub met: Option<bool>,
}

impl Goal {
    fn new(what: &str, target: &str, figure: Option<(String, bool)>) -> Self {
        let (figure, met) = figure.map_or((None, None), |(f, m)| (Some(f), Some(m)));
        Self {
            what: what.into(),
            target: target.into(),
            figure,
            met,
        }
    }
}

/// The figure `key` of system `system` in section `id`.
fn figure(sections: &[Section], id: &str, system: &str, key: &str) -> Option<f64> {
    sections
        .iter()
        .find(|s| s.id == id)?
        .systems
        .iter()
        .find(|r| r.name == system)?
        .medians
        .get(key)
        .copied()
}

/// Every target with this run's figure.
pub fn goals(sections: &[Section]) -> Vec<Goal> {
    let mut goals = Vec::new();
    let scale = |n: usize, key: &str| figure(sections, "scale", &format!("scale {n}"), key);

    // A call costs the same with 1 000 nodes as with 2, at each row's max
    // rate (two nodes' calls share packets there) and at the same offered
    // load (`fixed`).
    let sampled = sections
        .iter()
        .find(|s| s.id == "scale")
        .and_then(|s| {
            s.systems
                .iter()
                .find(|r| r.name.starts_with("scale 1000, sample "))
        })
        .map(|r| {
            (
                r.name.trim_start_matches("scale 1000, ").to_string(),
                &r.medians,
            )
        });
    let sample_name = sampled
        .as_ref()
        .map_or("a sample", |(name, _)| name.as_str());
    for (step, load) in [
        ("max", "at each one's max rate"),
        ("fixed", "at the same 1 000 calls/s"),
    ] {
        let key = format!("{step}.cpu_us_per_call_proxy");
        let ratio = |big: Option<f64>| {
            big.zip(scale(2, &key)).map(|(big, small)| {
                let r = big / small;
                (format!("{r:.2}× ({big:.0} µs ÷ {small:.0} µs)"), r <= 1.5)
            })
        };
        goals.push(Goal::new(
            &format!("gateway CPU per call, 1 000 nodes ÷ 2 nodes, {load}"),
            "≤ 1.5×",
            ratio(scale(1000, &key)),
        ));
        // The same with the policy offered a random sample (`max_candidates`).
        goals.push(Goal::new(
            &format!(
                "gateway CPU per call, 1 000 nodes with `max_candidates` ({sample_name}) ÷ 2 nodes, {load}"
            ),
            "≤ 1.5×",
            ratio(
                sampled
                    .as_ref()
                    .and_then(|(_, m)| m.get(&key).copied()),
            ),
        ));
    }
    goals.push(Goal::new(
        "policy pick over 1 000 candidates (`least-request`)",
        "≤ 20 µs",
        scale(1000, "pick_us_mean").map(|us| (format!("{us:.1} µs"), us <= 20.0)),
    ));
    goals.push(Goal::new(
        "policy pick among 1 000 nodes with `max_candidates` (`least-request`)",
        "≤ 20 µs",
        sampled
            .as_ref()
            .and_then(|(_, m)| m.get("pick_us_mean").copied())
            .map(|us| (format!("{us:.1} µs"), us <= 20.0)),
    ));
    goals.push(Goal::new(
        "1 000 idle agents: the gateway's CPU",
        "< 5% of a core",
        scale(1000, "idle.gateway_cpu_pct").map(|pct| (format!("{pct:.2}%"), pct < 5.0)),
    ));
    goals.push(Goal::new(
        "1 000 idle agents: the gateway's memory per node",
        "≤ 100 KiB",
        scale(1000, "idle.gateway_rss_kib_per_node")
            .map(|kib| (format!("{kib:.0} KiB"), kib <= 100.0)),
    ));

    // Jobs at thousands per second, still durable.
    for store in ["sqlite", "postgres"] {
        let system = format!("switchyard ({store})");
        goals.push(Goal::new(
            &format!("job submits per second, {store}, each committed before its 201"),
            "≥ 3 000/s",
            figure(sections, "jobs", &system, "submit_per_s")
                .map(|n| (format!("{n:.0}/s"), n >= 3000.0)),
        ));
        goals.push(Goal::new(
            &format!("10 000 stored jobs dispatched after a restart, {store}"),
            "≤ 5 s",
            figure(sections, "jobs", &system, "restart_dispatched_s")
                .map(|s| (format!("{s:.2} s"), s <= 5.0)),
        ));
    }

    // The forwarded call beside HAProxy with TLS: Switchyard's figure ÷
    // HAProxy's, met when `met` holds for the ratio.
    let beside_haproxy = |key: &str, unit: &str, met: fn(f64) -> bool| {
        let peer = |system: &str| figure(sections, "peers", system, key);
        peer("switchyard-quic")
            .zip(peer("haproxy-tls"))
            .filter(|(_, theirs)| *theirs > 0.0)
            .map(|(ours, theirs)| {
                let r = ours / theirs;
                (
                    format!("{r:.2}× ({ours:.0}{unit} ÷ {theirs:.0}{unit})"),
                    met(r),
                )
            })
    };
    goals.push(Goal::new(
        "forwarded call: calls per gateway-CPU-s ÷ HAProxy-TLS's",
        "≥ 1×",
        beside_haproxy("max.calls_per_cpu_s_proxy", "", |r| r >= 1.0),
    ));
    goals.push(Goal::new(
        "forwarded call: added p50 at 1 in flight ÷ HAProxy-TLS's",
        "≤ 2×",
        beside_haproxy("added.one.p50_us", " µs", |r| r <= 2.0),
    ));

    // The OpenAI path beside the LLM routers.
    let router = |system: &str, key: &str| figure(sections, "routers", system, key);
    goals.push(Goal::new(
        "OpenAI path: calls per CPU-s (gateway and agents) ÷ Envoy's",
        "≥ 1×",
        router("switchyard", "max.calls_per_cpu_s_all")
            .zip(router("envoy", "max.calls_per_cpu_s_all"))
            .filter(|(_, theirs)| *theirs > 0.0)
            .map(|(ours, theirs)| {
                let r = ours / theirs;
                (format!("{r:.2}× ({ours:.0} ÷ {theirs:.0})"), r >= 1.0)
            }),
    ));
    for (what, key) in [
        ("added p50 at 1 in flight", "added.one.p50_us"),
        (
            "added time to first token at 1 stream",
            "added.stream_one.ttft_p50_us",
        ),
    ] {
        goals.push(Goal::new(
            &format!("OpenAI path: {what}, beside vLLM's router's"),
            "≤ vLLM router's",
            router("switchyard", key)
                .zip(router("vllm-router", key))
                .map(|(ours, theirs)| (format!("{ours:.0} µs vs {theirs:.0} µs"), ours <= theirs)),
        ));
    }
    let key = "stream_max.cpu_us_per_call_proxy";
    let best = ["smg", "vllm-router", "envoy"]
        .iter()
        .filter_map(|p| router(p, key).map(|us| (*p, us)))
        .min_by(|a, b| a.1.total_cmp(&b.1));
    goals.push(Goal::new(
        "OpenAI path: gateway CPU per streamed turn, beside the best peer's",
        "≤ best peer's",
        router("switchyard", key)
            .zip(best)
            .map(|(ours, (peer, theirs))| {
                (
                    format!("{ours:.0} µs vs {theirs:.0} µs ({peer})"),
                    ours <= theirs,
                )
            }),
    ));
    goals
}

/// The targets as a Markdown table.
pub fn render(goals: &[Goal]) -> String {
    let mut s = String::from(
        "## Targets\n\nEach target beside the figure this run measured.\n\n| what | target | this run | met |\n|---|---|---|---|\n",
    );
    for g in goals {
        let figure = g.figure.as_deref().unwrap_or("not measured");
        let met = match g.met {
            Some(true) => "yes",
            Some(false) => "no",
            None => "–",
        };
        let _ = writeln!(s, "| {} | {} | {figure} | {met} |", g.what, g.target);
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::scenarios::{SystemResult, Timing};

    fn section(id: &str, systems: &[(&str, &[(&str, f64)])]) -> Section {
        Section {
            id: id.into(),
            title: id.into(),
            timing: Timing {
                reps: 1,
                duration_s: 1.0,
                warm_up_s: 0.0,
            },
            clk_tck: 100.0,
            notes: Vec::new(),
            systems: systems
                .iter()
                .map(|(name, figures)| SystemResult {
                    name: (*name).into(),
                    path: String::new(),
                    medians: figures
                        .iter()
                        .map(|(k, v)| ((*k).to_string(), *v))
                        .collect::<BTreeMap<_, _>>(),
                    reps: Vec::new(),
                })
                .collect(),
            columns: Vec::new(),
        }
    }

    #[test]
    fn each_target_reads_its_figures_and_says_whether_it_is_met() {
        let cpu = "max.cpu_us_per_call_proxy";
        let fixed = "fixed.cpu_us_per_call_proxy";
        let sections = [
            section(
                "scale",
                &[
                    ("scale 2", &[(cpu, 40.0), (fixed, 200.0)]),
                    (
                        "scale 1000",
                        &[(cpu, 80.0), (fixed, 320.0), ("pick_us_mean", 12.0)],
                    ),
                    (
                        "scale 1000, sample 16",
                        &[(cpu, 50.0), (fixed, 280.0), ("pick_us_mean", 25.0)],
                    ),
                ],
            ),
            section(
                "jobs",
                &[("switchyard (sqlite)", &[("submit_per_s", 3500.0)])],
            ),
        ];
        let goals = goals(&sections);
        let by = |what: &str| goals.iter().find(|g| g.what.starts_with(what)).expect(what);
        let ratio = by("gateway CPU per call");
        assert_eq!(ratio.met, Some(false), "2× is over 1.5×");
        assert!(
            ratio
                .figure
                .as_deref()
                .is_some_and(|f| f.starts_with("2.00×"))
        );
        assert_eq!(by("policy pick over").met, Some(true));
        let sampled = by("gateway CPU per call, 1 000 nodes with `max_candidates` (sample 16)");
        assert_eq!(sampled.figure.as_deref(), Some("1.25× (50 µs ÷ 40 µs)"));
        assert_eq!(sampled.met, Some(true));
        let same_load = by("gateway CPU per call, 1 000 nodes ÷ 2 nodes, at the same");
        assert_eq!(same_load.figure.as_deref(), Some("1.60× (320 µs ÷ 200 µs)"));
        assert_eq!(same_load.met, Some(false));
        let sampled_same_load = by(
            "gateway CPU per call, 1 000 nodes with `max_candidates` (sample 16) ÷ 2 nodes, at the same",
        );
        assert_eq!(sampled_same_load.met, Some(true), "1.4×");
        assert_eq!(by("policy pick among").met, Some(false), "25 µs");
        assert_eq!(by("job submits per second, sqlite").met, Some(true));
        assert_eq!(by("job submits per second, postgres").met, None);
        assert_eq!(by("forwarded call: calls").figure, None);
        let p50 = "added.one.p50_us";
        let peers = [section(
            "peers",
            &[
                ("switchyard-quic", &[(p50, 150.0)]),
                ("haproxy-tls", &[(p50, 100.0)]),
            ],
        )];
        let added = super::goals(&peers)
            .into_iter()
            .find(|g| g.what.starts_with("forwarded call: added p50"));
        let added = added.expect("added p50");
        assert_eq!(added.figure.as_deref(), Some("1.50× (150 µs ÷ 100 µs)"));
        assert_eq!(added.met, Some(true));
        let table = render(&goals);
        assert!(
            table.contains("| ≤ 1.5× | 2.00× (80 µs ÷ 40 µs) | no |"),
            "{table}"
        );
        assert!(table.contains("not measured | – |"), "{table}");
    }

    #[test]
    fn the_openai_path_is_held_to_envoy_vllm_router_and_the_best_peer() {
        let turn = "stream_max.cpu_us_per_call_proxy";
        let cpu = "max.calls_per_cpu_s_all";
        let ttft = "added.stream_one.ttft_p50_us";
        let routers = [section(
            "routers",
            &[
                ("switchyard", &[(cpu, 6000.0), (ttft, 300.0), (turn, 900.0)]),
                ("envoy", &[(cpu, 12000.0), (turn, 700.0)]),
                ("vllm-router", &[(ttft, 300.0), (turn, 1200.0)]),
                ("smg", &[(turn, 1500.0)]),
            ],
        )];
        let goals = goals(&routers);
        let by = |what: &str| goals.iter().find(|g| g.what.contains(what)).expect(what);
        let calls = by("OpenAI path: calls per CPU-s");
        assert_eq!(calls.figure.as_deref(), Some("0.50× (6000 ÷ 12000)"));
        assert_eq!(calls.met, Some(false));
        assert_eq!(by("time to first token").met, Some(true), "equal meets");
        assert_eq!(by("OpenAI path: added p50").met, None, "not measured");
        let streamed = by("per streamed turn");
        assert_eq!(
            streamed.figure.as_deref(),
            Some("900 µs vs 700 µs (envoy)"),
            "the best peer is the cheapest"
        );
        assert_eq!(streamed.met, Some(false));
    }
}
