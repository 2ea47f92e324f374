//! A small reader of the Prometheus text exposition format (0.0.4, and the
//! OpenMetrics text that vLLM and SGLang may serve), enough to sum a few
//! named gauges over their label sets.
//!
//! Why not a crate: `prometheus-parse` 0.2 matches metric names with `\w+`,
//! so it skips every `vllm:...` and `sglang:...` sample (a colon is legal
//! in a Prometheus name), and splits labels on commas inside quoted values.
//!
//! Only the lines of the wanted names are parsed; anything malformed is
//! skipped, never a panic.

use crate::config::is_metric_name;

/// The sum and the largest value of one metric over its label sets.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Gauge {
    /// Sum of the samples' values.
    pub(crate) sum: f64,
    /// Largest sample value.
    pub(crate) max: f64,
    /// Samples seen (label sets).
    pub(crate) samples: u32,
}

impl Gauge {
    fn add(&mut self, value: f64) {
        self.max = if self.samples == 0 {
            value
        } else {
            self.max.max(value)
        };
        self.sum += value;
        self.samples = self.samples.saturating_add(1);
    }
}

/// Reads `text` and returns, for each of `names` (in order), the sum and
/// max of its samples over every label set. A sample whose value is not a
/// finite number (`NaN`, `+Inf`) or does not parse is skipped; a name with
/// no sample gets a `Gauge` with `samples == 0`.
pub(crate) fn gauges<const N: usize>(text: &str, names: [&str; N]) -> [Gauge; N] {
    let mut out = [Gauge::default(); N];
    for line in text.lines() {
        let Some((name, value)) = sample(line) else {
            continue;
        };
        for (i, wanted) in names.iter().enumerate() {
            if name == *wanted {
                out[i].add(value);
            }
        }
    }
    out
}

/// One sample line: its metric name and value; `None` for comments, blank
/// lines and anything malformed or not finite.
fn sample(line: &str) -> Option<(&str, f64)> {
    let line = line.trim_start();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| c == '{' || c.is_ascii_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return None;
    }
    let mut rest = &line[name_end..];
    if rest.starts_with('{') {
        rest = &rest[labels_len(rest)?..];
    }
    // Whitespace, the value, then an optional timestamp (ignored).
    let value = rest.split_ascii_whitespace().next()?;
    let value: f64 = value.parse().ok()?;
    value.is_finite().then_some((name, value))
}

/// The length in bytes of the label block `{...}` that `s` starts with,
/// closing brace included, stepping over quoted values (with `\"` and `\\`
/// escapes) so a `}` or space inside one does not end it. `None` when it
/// never closes.
fn labels_len(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, b) in s.bytes().enumerate() {
        if quoted {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => quoted = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => quoted = true,
                b'}' => return Some(i + 1),
                _ => {}
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
