//! The results: one JSON file per section (`bench/results/<id>.json`) and
//! one Markdown file of tables (`bench/results/README.md`).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::scenarios::{SystemResult, Timing};

/// One section's results.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    /// File stem: `peers`, `overhead`, `policies`, `cache`, `scale`, `idle`.
    pub id: String,
    /// Heading.
    pub title: String,
    /// Lengths of its measurements.
    pub timing: Timing,
    /// Clock ticks per second the CPU figures were read with.
    pub clk_tck: f64,
    /// What to know when reading it.
    pub notes: Vec<String>,
    /// The systems measured (none for a section that only has notes).
    pub systems: Vec<SystemResult>,
    /// The table's columns.
    #[serde(skip)]
    pub columns: Vec<Column>,
}

/// A table column: a figure's key and how to show it.
#[derive(Debug, Clone)]
pub struct Column {
    /// Header text.
    pub header: &'static str,
    /// The figure's key in [`SystemResult::medians`].
    pub key: &'static str,
    /// Decimals shown.
    pub digits: usize,
}

/// A column.
pub const fn col(header: &'static str, key: &'static str, digits: usize) -> Column {
    Column {
        header,
        key,
        digits,
    }
}

/// The Markdown table of `systems`: a `system` column, a `path` column, then
/// `columns` (a figure missing for a system shows `–`).
pub fn render_table(systems: &[SystemResult], columns: &[Column]) -> String {
    let mut s = String::from("| system | path |");
    for c in columns {
        let _ = write!(s, " {} |", c.header);
    }
    s.push_str("\n|---|---|");
    for _ in columns {
        s.push_str("---:|");
    }
    s.push('\n');
    for r in systems {
        let _ = write!(s, "| {} | {} |", r.name, r.path);
        for c in columns {
            match r.medians.get(c.key) {
                Some(v) => {
                    let _ = write!(s, " {:.*} |", c.digits, v);
                }
                None => s.push_str(" – |"),
            }
        }
        s.push('\n');
    }
    s
}

/// A section in Markdown: heading, notes, table.
pub fn render_section(section: &Section) -> String {
    let mut s = format!("## {}\n\n", section.title);
    for n in &section.notes {
        let _ = writeln!(s, "{n}\n");
    }
    if !section.systems.is_empty() {
        s.push_str(&render_table(&section.systems, &section.columns));
        s.push('\n');
    }
    s
}

/// Writes `out/<id>.json` for each section and `out/README.md` with a
/// header and every section's table.
///
/// # Errors
/// A file cannot be written.
pub fn write_all(out: &Path, header: &str, sections: &[Section]) -> Result<()> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut md = format!("{header}\n\n");
    for section in sections {
        let path = out.join(format!("{}.json", section.id));
        fs::write(&path, serde_json::to_string_pretty(section)?)
            .with_context(|| format!("writing {}", path.display()))?;
        md.push_str(&render_section(section));
    }
    fs::write(out.join("README.md"), md)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_table_has_a_row_per_system_and_dashes_for_missing_figures() {
        let sys = |name: &str, pairs: &[(&str, f64)]| SystemResult {
            name: name.into(),
            path: "a → b".into(),
            medians: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<BTreeMap<_, _>>(),
            reps: Vec::new(),
        };
        let table = render_table(
            &[sys("x", &[("max.calls_per_s", 1234.56)]), sys("y", &[])],
            &[
                col("calls/s", "max.calls_per_s", 0),
                col("p99 µs", "one.p99_us", 1),
            ],
        );
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "| system | path | calls/s | p99 µs |");
        assert_eq!(lines[1], "|---|---|---:|---:|");
        assert_eq!(lines[2], "| x | a → b | 1235 | – |");
        assert_eq!(lines[3], "| y | a → b | – | – |");
    }
}
