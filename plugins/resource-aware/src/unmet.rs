//! The reject reason when no candidate meets a requirement.
//!
//! `no node meets <requirement>[ among nodes meeting <earlier>, ...] (<nearest>)`
//! where `<earlier>` are the requirements checked before it (numeric ones
//! first, then region and labels; each in hint order), and `<nearest>` shows
//! what the nodes still in the running offer:
//!
//! | requirement        | nearest                                          |
//! |--------------------|--------------------------------------------------|
//! | `>=`, `>`          | `best: <largest value>`                          |
//! | `<=`, `<`          | `best: <smallest value>`                         |
//! | `=` (numeric)      | `best: <closest value>`                          |
//! | `!=` (numeric)     | `found: <value>`                                 |
//! | region, label      | `found: <distinct values, sorted, at most 5>`    |
//!
//! An unset region or label shows as `(unset)`, a node the host does not know
//! as `(unknown node)`; more than 5 values end with `, ...`.

use policy_sdk::{Candidate, FactsCache, Op, Requirement, Value, fmt_num};

/// Distinct text values shown at most.
const MAX_SHOWN: usize = 5;

/// The reject reason for `unmet`, which none of `alive` (indices into
/// `candidates`, each meeting every requirement in `earlier`) meets.
#[must_use]
pub fn reason(
    unmet: &Requirement,
    earlier: &[Requirement],
    alive: &[usize],
    candidates: &[Candidate],
    facts: &FactsCache<'_>,
) -> String {
    let among = if earlier.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = earlier.iter().map(ToString::to_string).collect();
        format!(" among nodes meeting {}", names.join(", "))
    };
    format!(
        "no node meets {unmet}{among} ({})",
        nearest(unmet, alive, candidates, facts)
    )
}

/// What the nodes offer for the requirement (see the module docs).
fn nearest(
    r: &Requirement,
    alive: &[usize],
    candidates: &[Candidate],
    facts: &FactsCache<'_>,
) -> String {
    let values = alive.iter().filter_map(|&i| {
        let c = candidates.get(i)?;
        Some(r.value(c, if r.needs_facts() { facts.get(i) } else { None }))
    });
    let numbers = values.clone().filter_map(|v| match v {
        Some(Value::Number(x)) => Some(x),
        _ => None,
    });
    let best = match (r.op(), r.threshold()) {
        (Op::Ge | Op::Gt, Some(_)) => numbers.reduce(f64::max),
        (Op::Le | Op::Lt, Some(_)) => numbers.reduce(f64::min),
        (Op::Eq, Some(t)) => {
            numbers.reduce(|a, x| if (x - t).abs() < (a - t).abs() { x } else { a })
        }
        _ => None,
    };
    if let Some(best) = best {
        return format!("best: {}", fmt_num(best));
    }
    let mut shown: Vec<String> = values
        .map(|v| match v {
            Some(Value::Number(x)) => fmt_num(x),
            Some(Value::Text("")) => "(unset)".to_owned(),
            Some(Value::Text(s)) => s.to_owned(),
            None => "(unknown node)".to_owned(),
        })
        .collect();
    shown.sort_unstable();
    shown.dedup();
    let more = shown.len() > MAX_SHOWN;
    shown.truncate(MAX_SHOWN);
    format!(
        "found: {}{}",
        shown.join(", "),
        if more { ", ..." } else { "" }
    )
}
