//! Resource requirements: the grammar of the `require` hint (and of direct
//! metric hints), parsed once per pick and checked per candidate.
//!
//! An expression is `<metric><op><value>`, `<op>` one of `>=`, `<=`, `>`, `<`,
//! `=`, `!=`. Metrics (units as in the WIT `candidates` record):
//!
//! | metric              | meaning                                       |
//! |---------------------|-----------------------------------------------|
//! | `gpu_mem_mib`       | largest free memory on one GPU, MiB           |
//! | `gpu_mem_total_mib` | GPU memory installed, all GPUs, MiB           |
//! | `gpu_count`         | number of GPUs                                |
//! | `gpu_util_pct`      | mean GPU utilisation, %                       |
//! | `cpu_pct`           | CPU utilisation, %                            |
//! | `mem_free_mib`      | memory free (total - used), MiB               |
//! | `mem_total_mib`     | memory installed, MiB                         |
//! | `in_flight`         | calls of this service in flight on the node   |
//! | `cost_per_hour`     | the node's cost per hour                      |
//! | `region`            | the node's region (text: `=` / `!=` only)     |
//! | `label:<key>`       | the node's label `<key>` (text: `=` / `!=`)   |
//!
//! Where requirements come from ([`requirements`]), all of them must hold:
//! - every hint `require`, a comma-separated list of expressions
//!   (`require=gpu_mem_mib>=16000,region=eu-west`);
//! - every hint whose key is a metric: value starting with an operator
//!   (`gpu_mem_mib` = `>=16000`) or, without one, equality (`region` =
//!   `eu-west`, `label:tier` = `premium`);
//! - every hint whose key is a metric followed by `>`, `<` or `!`: what a
//!   `KEY=VALUE` splitter (the CLI's `--hint`) makes of `gpu_mem_mib>=16000`
//!   (key `gpu_mem_mib>`, value `16000`).
//!
//! Text metrics read the host's node facts: an unset region or label is the
//! empty string (so `label:tier!=premium` holds for a node without `tier`),
//! and a node the host does not know meets no text requirement. Thresholds on
//! `f32` metrics (`cpu_pct`, `gpu_util_pct`, `cost_per_hour`) are rounded to
//! `f32` first, so `cpu_pct>=50.1` holds for a node reporting `50.1`.

use std::fmt;

use crate::{Candidate, Hints, NodeFacts};

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `>=`
    Ge,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `<`
    Lt,
    /// `=`
    Eq,
    /// `!=`
    Ne,
}

impl Op {
    /// How the operator is written.
    #[must_use]
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Ge => ">=",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Lt => "<",
            Self::Eq => "=",
            Self::Ne => "!=",
        }
    }

    /// Whether `a <op> b` holds.
    #[must_use]
    pub fn holds<T: PartialOrd + ?Sized>(self, a: &T, b: &T) -> bool {
        match self {
            Self::Ge => a >= b,
            Self::Le => a <= b,
            Self::Gt => a > b,
            Self::Lt => a < b,
            Self::Eq => a == b,
            Self::Ne => a != b,
        }
    }

    /// Splits `<metric><op><value>` at its first operator.
    fn split(expr: &str) -> Option<(&str, Self, &str)> {
        let at = expr.find(['<', '>', '=', '!'])?;
        let (metric, rest) = expr.split_at(at);
        let op = [Self::Ge, Self::Le, Self::Ne, Self::Gt, Self::Lt, Self::Eq]
            .into_iter()
            .find(|op| rest.starts_with(op.symbol()))?;
        Some((metric, op, rest.get(op.symbol().len()..)?))
    }
}

/// What a requirement is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Metric {
    /// `gpu_mem_mib`: the largest free memory on one GPU, MiB.
    GpuMemMib,
    /// `gpu_mem_total_mib`: GPU memory installed, summed over GPUs, MiB.
    GpuMemTotalMib,
    /// `gpu_count`: number of GPUs.
    GpuCount,
    /// `gpu_util_pct`: mean GPU utilisation, 0..=100 %.
    GpuUtilPct,
    /// `cpu_pct`: CPU utilisation, 0..=100 %.
    CpuPct,
    /// `mem_free_mib`: memory free on the node, MiB.
    MemFreeMib,
    /// `mem_total_mib`: memory installed on the node, MiB.
    MemTotalMib,
    /// `in_flight`: calls of this service in flight on the node.
    InFlight,
    /// `cost_per_hour`: the node's cost, operator's currency per hour.
    CostPerHour,
    /// `region`: the node's region (text).
    Region,
    /// `label:<key>`: the node's label `<key>` (text).
    Label(String),
}

/// The numeric metrics by name.
const NUMERIC: [(&str, Metric); 9] = [
    ("gpu_mem_mib", Metric::GpuMemMib),
    ("gpu_mem_total_mib", Metric::GpuMemTotalMib),
    ("gpu_count", Metric::GpuCount),
    ("gpu_util_pct", Metric::GpuUtilPct),
    ("cpu_pct", Metric::CpuPct),
    ("mem_free_mib", Metric::MemFreeMib),
    ("mem_total_mib", Metric::MemTotalMib),
    ("in_flight", Metric::InFlight),
    ("cost_per_hour", Metric::CostPerHour),
];

/// The list of metrics, for error messages.
const KNOWN: &str = "gpu_mem_mib, gpu_mem_total_mib, gpu_count, gpu_util_pct, cpu_pct, \
                     mem_free_mib, mem_total_mib, in_flight, cost_per_hour, region, label:<key>";

impl Metric {
    /// The metric named `name` (`label:<key>` with any non-empty key).
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        if name == "region" {
            return Some(Self::Region);
        }
        if let Some(key) = name.strip_prefix("label:") {
            return (!key.is_empty()).then(|| Self::Label(key.to_owned()));
        }
        NUMERIC
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| m.clone())
    }

    /// How the metric is written, e.g. `gpu_mem_mib` or `label:tier`.
    #[must_use]
    pub fn name(&self) -> String {
        match self {
            Self::Region => "region".to_owned(),
            Self::Label(key) => format!("label:{key}"),
            numeric => NUMERIC
                .iter()
                .find(|(_, m)| m == numeric)
                .map(|(n, _)| (*n).to_owned())
                .unwrap_or_default(),
        }
    }

    /// Whether the metric is text (`region`, `label:<key>`): it needs the
    /// host's node facts and takes only `=` and `!=`.
    #[must_use]
    pub fn is_text(&self) -> bool {
        matches!(self, Self::Region | Self::Label(_))
    }

    /// Whether the candidate field behind the metric is an `f32`.
    fn is_f32(&self) -> bool {
        matches!(self, Self::GpuUtilPct | Self::CpuPct | Self::CostPerHour)
    }

    /// The metric's value on `c`; `None` for a text metric.
    #[allow(clippy::cast_precision_loss)] // MiB counts are far below 2^53
    fn number(&self, c: &Candidate) -> Option<f64> {
        Some(match self {
            Self::GpuMemMib => c.gpu_mem_free_mib as f64,
            Self::GpuMemTotalMib => c.gpu_mem_total_mib as f64,
            Self::GpuCount => f64::from(c.gpu_count),
            Self::GpuUtilPct => f64::from(c.gpu_util_pct),
            Self::CpuPct => f64::from(c.cpu_pct),
            Self::MemFreeMib => c.mem_free_mib() as f64,
            Self::MemTotalMib => c.mem_total_mib as f64,
            Self::InFlight => f64::from(c.in_flight),
            Self::CostPerHour => f64::from(c.cost_per_hour),
            Self::Region | Self::Label(_) => return None,
        })
    }
}

/// A metric's value on one node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// A numeric metric's value.
    Number(f64),
    /// A text metric's value (empty when unset).
    Text(&'a str),
}

/// The right-hand side of a requirement.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    Number(f64),
    Text(String),
}

/// One parsed requirement, e.g. `gpu_mem_mib>=16000`.
#[derive(Debug, Clone, PartialEq)]
pub struct Requirement {
    metric: Metric,
    op: Op,
    target: Target,
    /// The expression as written (trimmed), for messages.
    expr: String,
}

impl Requirement {
    /// Parses one expression `<metric><op><value>`.
    ///
    /// # Errors
    /// `bad requirement "EXPR": WHY` for a missing operator, an unknown metric,
    /// a value that is not a number, or an ordering operator on a text metric.
    pub fn parse(expr: &str) -> Result<Self, String> {
        let expr = expr.trim();
        let bad = |why: String| format!("bad requirement {expr:?}: {why}");
        let (name, op, value) = Op::split(expr).ok_or_else(|| {
            bad("expected <metric><op><value> with <op> one of >=, <=, >, <, =, !=".to_owned())
        })?;
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() {
            return Err(bad(format!("missing metric before {}", op.symbol())));
        }
        let metric = Metric::parse(name)
            .ok_or_else(|| bad(format!("unknown metric {name:?} (known: {KNOWN})")))?;
        let target = if metric.is_text() {
            if !matches!(op, Op::Eq | Op::Ne) {
                return Err(bad(format!("{name} takes = or != only")));
            }
            Target::Text(value.to_owned())
        } else {
            let x = value
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| bad(format!("{value:?} is not a number")))?;
            // Compare like with like: an f32 field against an f32 threshold.
            #[allow(clippy::cast_possible_truncation)]
            Target::Number(if metric.is_f32() {
                f64::from(x as f32)
            } else {
                x
            })
        };
        Ok(Self {
            expr: format!("{}{}{value}", metric.name(), op.symbol()),
            metric,
            op,
            target,
        })
    }

    /// What the requirement is about.
    #[must_use]
    pub fn metric(&self) -> &Metric {
        &self.metric
    }

    /// The comparison.
    #[must_use]
    pub fn op(&self) -> Op {
        self.op
    }

    /// The numeric threshold (rounded to `f32` for an `f32` metric); `None`
    /// for a text metric.
    #[must_use]
    pub fn threshold(&self) -> Option<f64> {
        match self.target {
            Target::Number(x) => Some(x),
            Target::Text(_) => None,
        }
    }

    /// Whether checking it needs the host's node facts (region, labels).
    #[must_use]
    pub fn needs_facts(&self) -> bool {
        self.metric.is_text()
    }

    /// The metric's value on a node: `None` for a text metric of a node the
    /// host does not know (`facts` is `None`).
    #[must_use]
    pub fn value<'a>(&self, c: &Candidate, facts: Option<&'a NodeFacts>) -> Option<Value<'a>> {
        match &self.metric {
            Metric::Region => facts.map(|f| Value::Text(&f.region)),
            Metric::Label(key) => facts.map(|f| Value::Text(f.label(key).unwrap_or_default())),
            numeric => numeric.number(c).map(Value::Number),
        }
    }

    /// Whether the node meets the requirement.
    #[must_use]
    pub fn holds(&self, c: &Candidate, facts: Option<&NodeFacts>) -> bool {
        match (self.value(c, facts), &self.target) {
            (Some(Value::Number(x)), Target::Number(t)) => self.op.holds(&x, t),
            (Some(Value::Text(s)), Target::Text(t)) => self.op.holds(s, t.as_str()),
            _ => false,
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}

/// Every requirement the hints carry (see the module docs), in hint order.
///
/// # Errors
/// The first malformed expression's message (see [`Requirement::parse`]).
pub fn requirements(hints: Hints<'_>) -> Result<Vec<Requirement>, String> {
    let mut out = Vec::new();
    for (key, value) in hints.iter() {
        let (key, value) = (key.trim(), value.trim());
        if key == "require" {
            for expr in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                out.push(Requirement::parse(expr)?);
            }
        } else if let Some(expr) = direct_expression(key, value) {
            out.push(Requirement::parse(&expr)?);
        }
    }
    Ok(out)
}

/// The expression a hint whose key names a metric stands for, if it does.
fn direct_expression(key: &str, value: &str) -> Option<String> {
    let stem = key.trim_end_matches(['<', '>', '!']);
    Metric::parse(stem.trim_end())?;
    Some(
        if stem.len() < key.len() || !value.starts_with(['<', '>', '=', '!']) {
            format!("{key}={value}")
        } else {
            format!("{key}{value}")
        },
    )
}

#[cfg(test)]
mod tests;
