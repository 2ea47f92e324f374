//! Queries built at run time: their text with `$n` placeholders and
//! their arguments, bound in order.
//!
//! On SQLite a statement that writes many rows takes them as one argument,
//! a JSON array of arrays ([`Sql::json_rows`]), so its text is the same
//! for one row or five hundred: SQLite parses it once and sqlx keeps it
//! prepared (by its text), where a text that grew with its rows was parsed
//! anew for each group. PostgreSQL's texts are multi-row `VALUES` lists
//! (`many::values`): there the JSON texts made fewer submits per second
//! (see `docs/perf/jobs.md`).

use protocol::JobState;
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection};

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

/// The database a [`Script`] is for, where their SQL differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    /// SQLite (3.38 or later, for `->>`; 3.41, for `unhex`): rows as JSON.
    Sqlite,
    /// PostgreSQL: rows as `VALUES` lists.
    Postgres,
}

impl Dialect {
    /// The dialect of `conn`'s database.
    pub(super) fn of(conn: &AnyConnection) -> Self {
        if conn.backend_name().eq_ignore_ascii_case("sqlite") {
            Self::Sqlite
        } else {
            Self::Postgres
        }
    }
}

/// The type of a field of a [`Sql::json_rows`] table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    /// `TEXT`: a JSON string or null.
    Text,
    /// `BIGINT`: a JSON number or null.
    Int,
    /// `BYTEA`/`BLOB`: a JSON string of hex digits ([`hex_of`]) or null.
    Bytes,
}

/// A column of a [`Sql::select`] from a [`Sql::json_rows`] table.
#[derive(Debug, Clone, Copy)]
pub(super) enum Column<'a> {
    /// The row's next field, as this type.
    Next(Field),
    /// A constant, as SQL text (`0`, `NULL`).
    Constant(&'a str),
}

/// `data` as a JSON string of hex digits, for a [`Field::Bytes`].
pub(super) fn hex_of(data: &[u8]) -> serde_json::Value {
    serde_json::Value::String(hex::encode(data))
}

/// A query built at run time: its text and its arguments, `$1` first
/// (or, [`Sql::anonymous`], each `?`).
#[derive(Debug, Default)]
pub(super) struct Sql {
    pub(super) text: String,
    args: Vec<Arg>,
    anonymous: bool,
}

impl Sql {
    pub(super) fn new(text: &str) -> Self {
        Self {
            text: text.to_string(),
            ..Self::default()
        }
    }

    /// An empty query whose placeholders are `?`, bound in the order they
    /// appear (SQLite only). SQLite finds a numbered placeholder by a
    /// linear search of the statement's names, when it parses the text and
    /// again when each argument is bound: quadratic in a multi-row
    /// statement's arguments, where `?` costs nothing.
    pub(super) fn anonymous() -> Self {
        Self {
            anonymous: true,
            ..Self::default()
        }
    }

    /// Appends a table of `rows`, bound as one argument (a JSON array of
    /// arrays, whatever their number), named `e`: SQLite's `json_each`.
    /// Read each row's fields with [`Sql::select`].
    pub(super) fn json_rows(&mut self, rows: Vec<serde_json::Value>) -> &mut Self {
        let rows = serde_json::Value::Array(rows).to_string();
        self.push("json_each(")
            .arg(Arg::Text(Some(rows)))
            .push(") AS e")
    }

    /// Appends field `index` (from 0) of a [`Sql::json_rows`] row, as `kind`.
    fn field(&mut self, index: usize, kind: Field) -> &mut Self {
        let value = format!("e.value ->> {index}");
        let field = match kind {
            Field::Text => value,
            Field::Int => format!("CAST({value} AS BIGINT)"),
            Field::Bytes => format!("unhex({value})"),
        };
        self.push(&field)
    }

    /// Appends `SELECT` and `columns`, in order: a [`Column::Next`] is the
    /// next field of a [`Sql::json_rows`] row (the first is field 0).
    pub(super) fn select(&mut self, columns: &[Column<'_>]) -> &mut Self {
        self.select_columns(columns, false)
    }

    /// [`Sql::select`], each column named as a `VALUES` list's would be:
    /// `column1`, `column2`, ...
    pub(super) fn select_named(&mut self, columns: &[Column<'_>]) -> &mut Self {
        self.select_columns(columns, true)
    }

    fn select_columns(&mut self, columns: &[Column<'_>], named: bool) -> &mut Self {
        self.push("SELECT ");
        let mut index = 0;
        for (i, column) in columns.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            match column {
                Column::Next(kind) => {
                    self.field(index, *kind);
                    index += 1;
                }
                Column::Constant(text) => {
                    self.push(text);
                }
            }
            if named {
                self.push(&format!(" AS column{}", i + 1));
            }
        }
        self
    }

    /// Appends text.
    pub(super) fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends the placeholder of a new argument.
    pub(super) fn arg(&mut self, arg: Arg) -> &mut Self {
        self.args.push(arg);
        if self.anonymous {
            self.text.push('?');
        } else {
            let n = self.args.len();
            self.text.push_str(&format!("${n}"));
        }
        self
    }

    /// Appends one row of a `VALUES` list: `(a, b, ...)` of `args`.
    fn row(&mut self, args: impl IntoIterator<Item = Arg>) -> &mut Self {
        self.push("(");
        for (i, arg) in args.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.arg(arg);
        }
        self.push(")")
    }

    /// Appends the rows of a `VALUES` list, `, `-separated: each
    /// `(a, b, ...)` of its arguments ([`Sql::row`]).
    pub(super) fn rows<R: IntoIterator<Item = Arg>>(
        &mut self,
        rows: impl IntoIterator<Item = R>,
    ) -> &mut Self {
        for (i, row) in rows.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.row(row);
        }
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

/// Most arguments in one text of a [`Script`]: a group's texts stay
/// bounded.
const SCRIPT_MAX_ARGS: usize = 30_000;

/// Statements to run one after the other, as few texts as the database
/// takes: SQLite runs several `;`-separated statements of one text in one
/// hand-off to its connection's thread (`?` placeholders, bound in order
/// across the text), PostgreSQL prepares each statement on its own.
#[derive(Debug)]
pub(super) struct Script {
    dialect: Dialect,
    one_text: bool,
    texts: Vec<Sql>,
}

impl Script {
    /// An empty script for `dialect`: on SQLite statements share a text.
    pub(super) fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            one_text: dialect == Dialect::Sqlite,
            texts: Vec::new(),
        }
    }

    /// A script of one statement per text, for `dialect`.
    pub(super) fn each(dialect: Dialect) -> Self {
        Self {
            one_text: false,
            ..Self::new(dialect)
        }
    }

    /// Its texts, in order.
    #[cfg(test)]
    pub(super) fn texts(&self) -> Vec<&str> {
        self.texts.iter().map(|sql| sql.text.as_str()).collect()
    }

    /// Starts the next statement with `head`, then a [`Sql::select`] of
    /// `columns` from the [`Sql::json_rows`] of `rows`: the `Sql`, to
    /// write the rest into.
    pub(super) fn select_rows(
        &mut self,
        head: &str,
        columns: &[Column<'_>],
        rows: Vec<serde_json::Value>,
    ) -> &mut Sql {
        self.statement()
            .push(head)
            .select(columns)
            .push(" FROM ")
            .json_rows(rows)
    }

    /// The database it is for.
    pub(super) fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Whether it holds no statement.
    pub(super) fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// Starts the next statement: the `Sql` to write it into.
    pub(super) fn statement(&mut self) -> &mut Sql {
        let shared = self.one_text
            && self
                .texts
                .last()
                .is_some_and(|last| last.args.len() < SCRIPT_MAX_ARGS);
        if shared {
            let n = self.texts.len() - 1;
            self.texts[n].push("; ");
            return &mut self.texts[n];
        }
        self.texts.push(if self.one_text {
            Sql::anonymous()
        } else {
            Sql::default()
        });
        let n = self.texts.len() - 1;
        &mut self.texts[n]
    }

    /// Runs every statement in order on `conn`: the rows they return, all
    /// together, in order.
    ///
    /// # Errors
    /// The first statement's that fails (those after it are not run).
    pub(super) async fn run(
        self,
        conn: &mut sqlx::AnyConnection,
    ) -> Result<Vec<sqlx::any::AnyRow>, sqlx::Error> {
        let mut rows = Vec::new();
        for sql in &self.texts {
            rows.extend(sql.query().fetch_all(&mut *conn).await?);
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One text holds several statements, `?` placeholders, until it
    /// holds [`SCRIPT_MAX_ARGS`] arguments; one statement per text numbers
    /// its own.
    #[test]
    fn a_script_shares_texts_up_to_its_argument_limit() {
        let mut one = Script::new(Dialect::Sqlite);
        one.statement().push("SELECT ").arg(Arg::Int(Some(1)));
        one.statement().push("SELECT ").arg(Arg::Int(Some(2)));
        assert_eq!(one.texts.len(), 1);
        assert_eq!(one.texts[0].text, "SELECT ?; SELECT ?");
        let big = one.statement();
        big.push("SELECT 0");
        for _ in 0..SCRIPT_MAX_ARGS {
            big.push(", ").arg(Arg::Int(None));
        }
        one.statement().push("SELECT ").arg(Arg::Int(Some(3)));
        assert_eq!(one.texts.len(), 2);
        assert_eq!(one.texts[1].text, "SELECT ?");

        let mut each = Script::each(Dialect::Postgres);
        assert!(each.is_empty());
        each.statement().push("SELECT ").arg(Arg::Int(Some(1)));
        each.statement().push("SELECT ").arg(Arg::Int(Some(2)));
        let texts: Vec<&str> = each.texts.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts, ["SELECT $1", "SELECT $1"]);
    }

    /// SQLite runs a one-text script's statements in order, binding the
    /// placeholders in order across them, and answers the rows of all of
    /// them.
    #[tokio::test]
    async fn sqlite_runs_one_text_in_order() {
        sqlx::any::install_default_drivers();
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect("sqlite::memory:")
            .await
            .expect("connect");
        let mut script = Script::new(Dialect::Sqlite);
        script.statement().push("CREATE TABLE t (a BIGINT, b TEXT)");
        script
            .statement()
            .push("INSERT INTO t VALUES (")
            .arg(Arg::Int(Some(7)))
            .push(", ")
            .arg(Arg::Text(Some("x".into())))
            .push(")");
        script
            .statement()
            .push("UPDATE t SET a = a + ")
            .arg(Arg::Int(Some(3)))
            .push(" RETURNING a, b");
        script
            .statement()
            .push("SELECT b, a FROM t WHERE a = ")
            .arg(Arg::Int(Some(10)));
        assert_eq!(script.texts.len(), 1);
        let rows = script.run(&mut conn).await.expect("run");
        use sqlx::Row;
        let got: Vec<(String, i64)> = rows
            .iter()
            .map(|r| {
                (
                    r.try_get::<String, _>("b").expect("b"),
                    r.try_get::<i64, _>("a").expect("a"),
                )
            })
            .collect();
        assert_eq!(got, [("x".to_string(), 10), ("x".to_string(), 10)]);
    }
}
