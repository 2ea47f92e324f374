//! Queries built at run time: their text with `$n` placeholders and
//! their arguments, bound in order.

use protocol::JobState;
use sqlx::Any;
use sqlx::any::AnyArguments;
use sqlx::query::Query;

/// Ids per `IN (...)` list (lease renewals, purges, loads).
pub(super) const IDS_PER_STATEMENT: usize = 500;

/// A value bound to a `$n` placeholder of a query built at run time.
#[derive(Debug, Clone)]
pub(super) enum Arg {
    /// A nullable `BIGINT`.
    Int(Option<i64>),
    /// A nullable `TEXT`.
    Text(Option<String>),
    /// A `BYTEA`.
    Bytes(Vec<u8>),
}

/// A query built at run time: its text and its arguments, `$1` first.
#[derive(Debug, Default)]
pub(super) struct Sql {
    pub(super) text: String,
    args: Vec<Arg>,
}

impl Sql {
    pub(super) fn new(text: &str) -> Self {
        Self {
            text: text.to_string(),
            args: Vec::new(),
        }
    }

    /// Appends text.
    pub(super) fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends the placeholder of a new argument.
    pub(super) fn arg(&mut self, arg: Arg) -> &mut Self {
        self.args.push(arg);
        let n = self.args.len();
        self.text.push_str(&format!("${n}"));
        self
    }

    /// Appends `(a, b, ...)` of text arguments (the caller makes sure the
    /// list is not empty).
    pub(super) fn list<'s>(&mut self, items: impl IntoIterator<Item = &'s str>) -> &mut Self {
        self.push("(");
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.arg(Arg::Text(Some(item.to_string())));
        }
        self.push(")")
    }

    /// The query with its arguments bound in order.
    pub(super) fn query(&self) -> Query<'_, Any, AnyArguments<'_>> {
        let mut q = sqlx::query(&self.text);
        for arg in &self.args {
            q = match arg {
                Arg::Int(v) => q.bind(*v),
                Arg::Text(v) => q.bind(v.clone()),
                Arg::Bytes(v) => q.bind(v.clone()),
            };
        }
        q
    }
}

/// The final states (everything but waiting and running), by name.
pub(super) fn final_states() -> impl Iterator<Item = &'static str> {
    JobState::ALL
        .into_iter()
        .filter(|s| s.is_final())
        .map(JobState::as_str)
}
