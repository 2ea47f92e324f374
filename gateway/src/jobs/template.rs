//! Templates (pre-configured scripts): a payload pattern whose
//! `{param}` placeholders a job's parameters fill in.

use std::collections::BTreeMap;

/// Fills `pattern`'s `{name}` placeholders from `params`, then `defaults`;
/// `{{` and `}}` stand for literal braces.
///
/// # Errors
/// A message naming a placeholder with no value, an unclosed `{`, or a
/// parameter the pattern does not use (a typo would otherwise pass
/// silently).
pub(crate) fn render(
    pattern: &str,
    params: &BTreeMap<String, String>,
    defaults: &BTreeMap<String, String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(pattern.len());
    let mut used = std::collections::BTreeSet::new();
    let mut rest = pattern;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{{") {
            out.push('{');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            out.push('}');
            rest = after;
        } else if let Some(after) = tail.strip_prefix('{') {
            let end = after
                .find('}')
                .ok_or_else(|| format!("unclosed {{ in the template at byte {i}"))?;
            let name = &after[..end];
            let value = params
                .get(name)
                .or_else(|| defaults.get(name))
                .ok_or_else(|| format!("template parameter {name:.64} has no value"))?;
            out.push_str(value);
            used.insert(name);
            rest = &after[end + 1..];
        } else {
            return Err(format!("a lone }} in the template at byte {i}"));
        }
    }
    out.push_str(rest);
    if let Some(unused) = params.keys().find(|k| !used.contains(k.as_str())) {
        return Err(format!("the template has no parameter {unused:.64}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn fills_params_over_defaults() {
        let defaults = map(&[("n", "3"), ("msg", "hi")]);
        let got = render(
            "echo {msg} x{n} {{literal}}",
            &map(&[("n", "7")]),
            &defaults,
        );
        assert_eq!(got.as_deref(), Ok("echo hi x7 {literal}"));
    }

    #[test]
    fn refuses_missing_unknown_and_unclosed() {
        let none = BTreeMap::new();
        assert!(
            render("{a}", &none, &none)
                .expect_err("no value")
                .contains('a')
        );
        assert!(render("x", &map(&[("zz", "1")]), &none).is_err());
        assert!(render("{open", &none, &none).is_err());
        assert!(render("a } b", &none, &none).is_err());
    }
}
