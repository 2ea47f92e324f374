//! An error and its causes on one line, for a program's last word.

use std::error::Error;

/// `error` and its chain of causes joined by `": "`, leaving out a cause
/// whose text the line already holds (an error that prints its source in
/// its own message and also returns it from [`Error::source`] would
/// otherwise be read twice or three times).
///
/// `"tls setup failed: ca.pem: No such file"` with the causes
/// `"ca.pem: No such file"` and `"No such file"` reads once.
pub fn one_line(error: &(dyn Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let text = next.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = next.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{path}: {source}")]
    struct Read {
        path: &'static str,
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("tls setup failed: {0}")]
    struct Setup(#[from] Read);

    #[derive(Debug, thiserror::Error)]
    #[error("cannot start")]
    struct Start(#[source] std::io::Error);

    fn not_found() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let error = Setup(Read {
            path: "ca.pem",
            source: not_found(),
        });
        assert_eq!(one_line(&error), "tls setup failed: ca.pem: no such file");
    }

    #[test]
    fn a_cause_not_in_the_message_is_added() {
        assert_eq!(one_line(&Start(not_found())), "cannot start: no such file");
    }

    #[test]
    fn anyhow_contexts_read_once_each() {
        let error = anyhow::Error::new(Setup(Read {
            path: "ca.pem",
            source: not_found(),
        }))
        .context("cannot start the agent");
        assert_eq!(
            one_line(error.as_ref()),
            "cannot start the agent: tls setup failed: ca.pem: no such file"
        );
    }
}
