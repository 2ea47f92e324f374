//! A TOML parse error as one line with its position.

use super::ConfigError;

/// Turns a TOML error into one line with a position.
pub(super) fn parse_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = e.span().map_or((0, 0), |span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    });
    let message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    ConfigError::Parse {
        line,
        column,
        message,
    }
}
