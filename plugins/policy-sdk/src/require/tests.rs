use super::{Metric, Op, Requirement, Value, requirements};
use crate::{Candidate, Hints, NodeFacts};

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn exprs(list: &[(&str, &str)]) -> Result<Vec<String>, String> {
    let p = pairs(list);
    requirements(Hints::new(&p)).map(|rs| rs.iter().map(ToString::to_string).collect())
}

fn parse(expr: &str) -> Requirement {
    Requirement::parse(expr).expect("valid expression")
}

#[test]
fn parses_every_operator_and_metric() {
    for (expr, op) in [
        ("gpu_mem_mib>=16000", Op::Ge),
        ("gpu_mem_total_mib<=80000", Op::Le),
        ("gpu_count>1", Op::Gt),
        ("gpu_util_pct<50", Op::Lt),
        ("cpu_pct = 10", Op::Eq),
        ("mem_free_mib!=0", Op::Ne),
        ("mem_total_mib>=1", Op::Ge),
        ("in_flight<4", Op::Lt),
        ("cost_per_hour<=2.5", Op::Le),
        ("region=eu-west", Op::Eq),
        ("label:tier!=spot", Op::Ne),
    ] {
        let r = parse(expr);
        assert_eq!(r.op(), op, "{expr}");
        assert_eq!(r.to_string(), expr.replace(' ', ""));
    }
    assert_eq!(
        parse("label:tier=x").metric(),
        &Metric::Label("tier".into())
    );
    assert!(parse("region!=").needs_facts());
    assert!(!parse("gpu_count=0").needs_facts());
}

#[test]
fn collects_require_lists_and_direct_hints() {
    let got = exprs(&[
        ("require", "gpu_mem_mib>=16000, region=eu-west,"),
        ("gpu_count", ">=2"),
        ("gpu_mem_mib>", "100"),
        ("cpu_pct<", "90"),
        ("region!", "us-east"),
        ("label:tier", "premium"),
        ("max_cost", "0.5"),
        ("gpu_mem>", "1"),
        ("require", "in_flight<3"),
    ]);
    assert_eq!(
        got.expect("valid"),
        [
            "gpu_mem_mib>=16000",
            "region=eu-west",
            "gpu_count>=2",
            "gpu_mem_mib>=100",
            "cpu_pct<=90",
            "region!=us-east",
            "label:tier=premium",
            "in_flight<3",
        ]
    );
    assert_eq!(exprs(&[("require", " , ")]), Ok(vec![]));
}

#[test]
fn bad_expressions_have_clear_messages() {
    let err = |list: &[(&str, &str)]| exprs(list).expect_err("malformed");
    assert_eq!(
        err(&[("require", "gpu_mem_mib")]),
        "bad requirement \"gpu_mem_mib\": expected <metric><op><value> \
         with <op> one of >=, <=, >, <, =, !="
    );
    assert!(err(&[("require", "gpu_mem>=1")]).starts_with(
        "bad requirement \"gpu_mem>=1\": unknown metric \"gpu_mem\" (known: gpu_mem_mib, "
    ));
    assert_eq!(
        err(&[("gpu_mem_mib", ">=lots")]),
        "bad requirement \"gpu_mem_mib>=lots\": \"lots\" is not a number"
    );
    assert_eq!(
        err(&[("require", "region>=eu")]),
        "bad requirement \"region>=eu\": region takes = or != only"
    );
    assert_eq!(
        err(&[("require", ">=5")]),
        "bad requirement \">=5\": missing metric before >="
    );
    assert!(err(&[("require", "label:=x")]).contains("unknown metric \"label:\""));
    assert!(err(&[("require", "gpu_count!2")]).contains("expected <metric><op><value>"));
    assert!(err(&[("require", "gpu_count==2")]).contains("\"=2\" is not a number"));
}

#[test]
fn numeric_requirements_hold_on_candidate_fields() {
    let c = Candidate {
        gpu_mem_free_mib: 8192,
        gpu_count: 2,
        cpu_pct: 50.1,
        mem_used_mib: 1000,
        mem_total_mib: 4000,
        in_flight: 3,
        cost_per_hour: 2.5,
        ..Candidate::default()
    };
    for (expr, want) in [
        ("gpu_mem_mib>=8192", true),
        ("gpu_mem_mib>8192", false),
        ("gpu_mem_mib>=16000", false),
        ("gpu_count=2", true),
        ("gpu_count!=2", false),
        ("cpu_pct>=50.1", true),
        ("cpu_pct<=50.1", true),
        ("cpu_pct<50.1", false),
        ("mem_free_mib=3000", true),
        ("in_flight<3", false),
        ("cost_per_hour<=2.5", true),
    ] {
        assert_eq!(parse(expr).holds(&c, None), want, "{expr}");
    }
    assert_eq!(
        parse("gpu_mem_mib>1").value(&c, None),
        Some(Value::Number(8192.0))
    );
    assert_eq!(parse("gpu_mem_mib>1").threshold(), Some(1.0));
    assert_eq!(parse("region=x").threshold(), None);
}

#[test]
fn text_requirements_read_facts() {
    let c = Candidate::default();
    let facts = NodeFacts {
        region: "eu-west".into(),
        labels: vec![("tier".into(), "premium".into())],
        ..NodeFacts::default()
    };
    let bare = NodeFacts::default();
    for (expr, on, want) in [
        ("region=eu-west", Some(&facts), true),
        ("region!=eu-west", Some(&facts), false),
        ("region=", Some(&bare), true),
        ("label:tier=premium", Some(&facts), true),
        ("label:tier!=premium", Some(&bare), true),
        ("label:zone=", Some(&facts), true),
        ("region!=us", None, false),
        ("label:tier!=x", None, false),
    ] {
        assert_eq!(parse(expr).holds(&c, on), want, "{expr}");
    }
}
