//! Tests that need something a machine may lack (PostgreSQL's server, a
//! component built from another language's toolchain): one decision,
//! [`skip_or_fail`], whether such a test skips or fails.
//!
//! On a developer's machine it skips: it prints one line to stderr,
//! `SWITCHYARD-SKIPPED: <binary> <test>: missing <what> (<how to get it>)`,
//! and appends the same line to the file named by `SWITCHYARD_SKIP_LOG`
//! when that is set (cargo test shows a passing test's stderr only with
//! `--nocapture`; `make test` counts the file's lines). With
//! `SWITCHYARD_REQUIRE_ALL=1` (CI's `.ci/run` sets it) it panics instead,
//! so nothing a test needs can go missing there unnoticed.

use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;

/// Set to anything but empty or `0`, every skip fails its test.
pub const REQUIRE_ALL_ENV: &str = "SWITCHYARD_REQUIRE_ALL";

/// A file each skip appends its line to (created when absent).
pub const SKIP_LOG_ENV: &str = "SWITCHYARD_SKIP_LOG";

/// What each skip's line starts with.
pub const SKIPPED_PREFIX: &str = "SWITCHYARD-SKIPPED";

/// For a test that cannot run because `what` is missing (a program, a
/// file: named so that a reader can find it), `how` saying how to get it
/// (e.g. "`make setup` installs it"). Returns when the test may skip,
/// after printing and logging its `SWITCHYARD-SKIPPED` line; the caller
/// then returns. Panics when `SWITCHYARD_REQUIRE_ALL` is set.
///
/// The test is named by its binary and its thread, which libtest names
/// after the test.
///
/// # Panics
/// Under `SWITCHYARD_REQUIRE_ALL`, or when the line cannot be appended to
/// `SWITCHYARD_SKIP_LOG`'s file.
#[track_caller]
pub fn skip_or_fail(what: &str, how: &str) {
    let test = test_name();
    if required(std::env::var_os(REQUIRE_ALL_ENV).as_deref()) {
        panic!(
            "{test}: missing {what} ({how}); {REQUIRE_ALL_ENV} is set, so this test \
             fails instead of skipping"
        );
    }
    let line = skip_line(&test, what, how);
    eprintln!("{line}");
    if let Some(log) = std::env::var_os(SKIP_LOG_ENV).filter(|p| !p.is_empty())
        && let Err(e) = append_line(Path::new(&log), &line)
    {
        panic!("{test}: cannot append to {SKIP_LOG_ENV} {log:?}: {e}");
    }
}

/// Whether the value of `SWITCHYARD_REQUIRE_ALL` turns skips into failures:
/// set, and neither empty nor `0`.
fn required(value: Option<&OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != "0")
}

/// The running test: its test binary (cargo's name for it, without the
/// hash) and its name (its thread's), e.g. `plugins polyglot::a_test`.
fn test_name() -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(binary_name(exe.file_name()?.to_str()?).to_string()));
    let thread = std::thread::current();
    let test = thread
        .name()
        .filter(|name| *name != "main")
        .map(str::to_string);
    match (binary, test) {
        (Some(binary), Some(test)) => format!("{binary} {test}"),
        (Some(name), None) | (None, Some(name)) => name,
        (None, None) => "a test".into(),
    }
}

/// A test binary's file name less cargo's `-<16 hex digits>` suffix.
fn binary_name(file: &str) -> &str {
    match file.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name
        }
        _ => file,
    }
}

/// The line a skip prints: `SWITCHYARD-SKIPPED: TEST: missing WHAT (HOW)`
/// on one line whatever the arguments hold.
fn skip_line(test: &str, what: &str, how: &str) -> String {
    let line = format!("{SKIPPED_PREFIX}: {test}: missing {what} ({how})");
    line.replace(['\n', '\r'], " ")
}

/// Appends `line` and a newline to `path` in one write (`O_APPEND`: lines
/// of test binaries running at once do not interleave).
fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(format!("{line}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_set_nonzero_value_requires_all() {
        assert!(!required(None));
        assert!(!required(Some(OsStr::new(""))));
        assert!(!required(Some(OsStr::new("0"))));
        assert!(required(Some(OsStr::new("1"))));
        assert!(required(Some(OsStr::new("yes"))));
    }

    #[test]
    fn the_line_is_one_greppable_line() {
        let line = skip_line("a::b", "the\nthing", "`make it`");
        assert_eq!(
            line,
            "SWITCHYARD-SKIPPED: a::b: missing the thing (`make it`)"
        );
    }

    #[test]
    fn the_test_is_named_by_its_binary_and_thread() {
        assert_eq!(
            test_name(),
            "switchyard_testkit skip::tests::the_test_is_named_by_its_binary_and_thread"
        );
        assert_eq!(binary_name("e2e-0123456789abcdef"), "e2e");
        assert_eq!(binary_name("switchyard-demo"), "switchyard-demo");
    }

    #[test]
    fn lines_are_appended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("skipped.log");
        append_line(&log, "one").expect("first");
        append_line(&log, "two").expect("second");
        assert_eq!(std::fs::read_to_string(&log).expect("read"), "one\ntwo\n");
    }
}
