//! Read-only SQL over stored versions.
//!
//! A dataset is the table named by its id with `-` replaced by `_` (its
//! latest version); `"<table>@<N>"` (quoted, since `@` is not an identifier
//! character) is version N, and `"<table>@<date or time>"` the version in
//! force then (`@2026-03-01`: as the day ended, UTC; `@2026-03-01T12:00:00Z`:
//! at that instant). Only one `SELECT` (or `WITH … SELECT`) runs:
//! anything else is refused before planning, and DataFusion is told to
//! refuse DDL, DML and statements too, as a second lock.

use crate::{ProblemCode, VersionChoice};
use std::time::Duration;

use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::{ParquetReadOptions, SQLOptions, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::Statement;

use crate::{QueryError, Result};

/// A table named in a query: the dataset it stands for and the version it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    /// As written (and as registered): `barcelona_air_quality` or `barcelona_air_quality@2`.
    pub table: String,
    pub dataset_id: String,
    pub version: VersionChoice,
}

/// A table a query may read: its name, its version's file, and the columns
/// the reader may see (`None`: all).
#[derive(Debug, Clone)]
pub struct TableSource {
    pub table: String,
    pub location: String,
    pub columns: Option<Vec<String>>,
    /// Whose rows the reader may see (`None`: every row).
    pub subjects: Option<crate::subjects::SubjectFilter>,
}

/// A parsed, checked query: one read-only statement and the tables it reads.
pub struct CheckedQuery {
    statement: DFStatement,
    pub tables: Vec<TableName>,
}

/// The table name of a dataset id.
pub fn table_name(dataset_id: &str) -> String {
    dataset_id.replace('-', "_")
}

/// The longest SQL text taken (bytes).
pub const MAX_SQL_BYTES: usize = 32 * 1024;
/// The deepest nesting of expressions and queries taken: `a + b + c` is 3
/// deep (operators chain to the left), `(SELECT … (SELECT …))` counts each query.
pub const MAX_DEPTH: usize = 100;

/// Parse `sql`, refuse anything but a single query no longer than
/// [`MAX_SQL_BYTES`] and no deeper than [`MAX_DEPTH`], and list the tables it
/// reads. Parsing and measuring run on a thread with a large stack, and a
/// refused statement is dropped there too, so no input can overflow the
/// server's stack (a chain of 10,000 `+` parses without recursion but would
/// be recursed through by everything after the parser).
pub fn check(sql: &str) -> Result<CheckedQuery> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(QueryError::refused(
            ProblemCode::SqlTooLong,
            format!(
                "the query is {} bytes long; the trust takes at most {MAX_SQL_BYTES}",
                sql.len()
            ),
        ));
    }
    let text = sql.to_string();
    std::thread::Builder::new()
        .name("sql-check".into())
        .stack_size(256 * 1024 * 1024)
        .spawn(move || check_on_this_thread(&text))
        .map_err(QueryError::Io)?
        .join()
        .map_err(|_| QueryError::Engine("the SQL checker stopped".into()))?
}

/// How deep a statement nests, counted until it passes `limit`.
struct Depth {
    now: usize,
    max: usize,
    limit: usize,
}

impl Depth {
    fn enter(&mut self) -> std::ops::ControlFlow<()> {
        self.now += 1;
        self.max = self.max.max(self.now);
        if self.now > self.limit {
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        }
    }
    fn leave(&mut self) -> std::ops::ControlFlow<()> {
        self.now = self.now.saturating_sub(1);
        std::ops::ControlFlow::Continue(())
    }
}

impl datafusion::sql::sqlparser::ast::Visitor for Depth {
    type Break = ();
    fn pre_visit_expr(
        &mut self,
        _: &datafusion::sql::sqlparser::ast::Expr,
    ) -> std::ops::ControlFlow<()> {
        self.enter()
    }
    fn post_visit_expr(
        &mut self,
        _: &datafusion::sql::sqlparser::ast::Expr,
    ) -> std::ops::ControlFlow<()> {
        self.leave()
    }
    fn pre_visit_query(
        &mut self,
        _: &datafusion::sql::sqlparser::ast::Query,
    ) -> std::ops::ControlFlow<()> {
        self.enter()
    }
    fn post_visit_query(
        &mut self,
        _: &datafusion::sql::sqlparser::ast::Query,
    ) -> std::ops::ControlFlow<()> {
        self.leave()
    }
}

fn check_on_this_thread(sql: &str) -> Result<CheckedQuery> {
    use datafusion::sql::sqlparser::ast::Visit;
    let mut statements = DFParser::parse_sql(sql).map_err(|e| {
        QueryError::refused(
            ProblemCode::SqlSyntax,
            format!(
                "the SQL could not be parsed: {}",
                parser_message(&e.to_string())
            ),
        )
    })?;
    if statements.len() != 1 {
        return Err(QueryError::refused(
            ProblemCode::NotASelect,
            format!(
                "send exactly one SELECT statement (found {})",
                statements.len()
            ),
        ));
    }
    let statement = statements.pop_front().ok_or_else(|| {
        QueryError::refused(ProblemCode::NotASelect, "send exactly one SELECT statement")
    })?;
    let inner = match &statement {
        DFStatement::Statement(inner) if matches!(inner.as_ref(), Statement::Query(_)) => inner,
        other => {
            let first_word = other
                .to_string()
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            return Err(QueryError::refused(
                ProblemCode::NotASelect,
                format!("only a read-only SELECT may run here; this is a {first_word} statement"),
            ));
        }
    };
    let mut depth = Depth {
        now: 0,
        max: 0,
        limit: MAX_DEPTH,
    };
    if inner.visit(&mut depth).is_break() {
        return Err(QueryError::refused(
            ProblemCode::SqlTooDeep,
            format!(
                "the query nests more than {MAX_DEPTH} deep (operators, function calls and \
                 subqueries inside one another); split it, or use IN (…) instead of long chains \
                 of OR"
            ),
        ));
    }
    let ctx = SessionContext::new();
    let (references, _ctes) = ctx
        .state()
        .resolve_table_references(&statement)
        .map(|refs| (refs, ()))
        .map_err(|e| {
            tracing::debug!(error = %e, "table references");
            QueryError::refused(
                ProblemCode::InvalidQuery,
                "the tables the query reads could not be told from it",
            )
        })?;
    let mut tables: Vec<TableName> = Vec::new();
    for reference in references {
        if reference.schema().is_some() || reference.catalog().is_some() {
            return Err(QueryError::refused(
                ProblemCode::UnknownTable,
                format!(
                    "'{reference}': name datasets by their table name alone (no schema or catalogue)"
                ),
            ));
        }
        let table = reference.table().to_string();
        if tables.iter().any(|t| t.table == table) {
            continue;
        }
        let (base, version) = match table.split_once('@') {
            Some((base, v)) => (
                base,
                VersionChoice::from_suffix(v).map_err(|e| {
                    QueryError::refused(
                        ProblemCode::InvalidVersion,
                        format!("'{table}': {}", e.message),
                    )
                })?,
            ),
            None => (table.as_str(), VersionChoice::Latest),
        };
        if base.is_empty()
            || !base
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(QueryError::refused(
                ProblemCode::UnknownTable,
                format!("'{table}' is not a dataset table name (lower-case letters, digits and _)"),
            ));
        }
        tables.push(TableName {
            dataset_id: base.replace('_', "-"),
            version,
            table,
        });
    }
    Ok(CheckedQuery { statement, tables })
}

/// The parser's message, which quotes only the query itself: `Expected: …,
/// found: … at Line: 1, Column: 8`, without its "sql parser error:" prefix.
fn parser_message(message: &str) -> String {
    let m = message.trim();
    let m = m.strip_prefix("SQL error: ").unwrap_or(m);
    let m = m.strip_prefix("ParserError(\"").unwrap_or(m);
    let m = m.strip_prefix("sql parser error: ").unwrap_or(m);
    m.trim_end_matches("\")").to_string()
}

/// Limits on one query (its memory and spill are the node's shared
/// allowance: see [`crate::limits`]).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_rows: usize,
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_rows: 100_000,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Plan the checked query over the given files (one per table it names) and
/// start it; at most `limits.max_rows + 1` rows come out, so the caller can
/// tell a result was cut. A table with a column limit or a subject filter is
/// the governed scan ([`crate::governed`]); functions are bounded
/// ([`crate::limits`]). A failure is a [`QueryError::Failed`]: its message is
/// CityTrust's, the engine's text only its detail.
pub async fn start(
    query: CheckedQuery,
    versions: &crate::VersionStore,
    files: &[TableSource],
    limits: Limits,
) -> Result<SendableRecordBatchStream> {
    let mut ctx = versions.session();
    crate::limits::bound_functions(&mut ctx)?;
    for source in files {
        if source.columns.is_none() && source.subjects.is_none() {
            ctx.register_parquet(
                source.table.as_str(),
                &source.location,
                ParquetReadOptions::default(),
            )
            .await?;
            continue;
        }
        let table = crate::governed::governed_table(
            &ctx,
            &source.location,
            source.columns.as_deref(),
            source.subjects.as_ref(),
        )
        .await?;
        ctx.register_table(source.table.as_str(), table)?;
    }
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let plan = ctx.state().statement_to_plan(query.statement).await?;
    options.verify_plan(&plan)?;
    let df = ctx.execute_logical_plan(plan).await?;
    let df = df.limit(0, Some(limits.max_rows.saturating_add(1)))?;
    Ok(df.execute_stream().await?)
}

#[cfg(test)]
mod hidden_rows;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_select_passes() {
        let ok = check(
            "SELECT * FROM barcelona_air_quality a JOIN \"barcelona_districts@1\" d ON a.x = d.y",
        )
        .unwrap();
        let names: Vec<_> = ok
            .tables
            .iter()
            .map(|t| (t.dataset_id.as_str(), t.version))
            .collect();
        assert_eq!(
            names,
            [
                ("barcelona-air-quality", VersionChoice::Latest),
                ("barcelona-districts", VersionChoice::Number(1))
            ]
        );
        for bad in [
            "DELETE FROM t",
            "DROP TABLE t",
            "CREATE TABLE t AS SELECT 1",
            "INSERT INTO t VALUES (1)",
            "SELECT 1; SELECT 2",
            "COPY t TO '/tmp/x'",
            "SET datafusion.execution.batch_size = 1",
            "EXPLAIN SELECT 1",
        ] {
            let err = check(bad).err().unwrap_or_else(|| panic!("{bad} passed"));
            assert!(matches!(err, QueryError::Refused { .. }), "{bad}: {err}");
        }
        assert!(check("SELECT * FROM other.t").is_err());
        assert!(check("SELECT * FROM \"t@x\"").is_err());
        assert!(check("SELECT * FROM \"t@0\"").is_err());
        assert!(check("SELECT * FROM \"t@2026-13-01\"").is_err());
    }

    #[test]
    fn tables_are_read_as_of_a_day_or_an_instant() {
        let ok = check(
            "SELECT * FROM \"meters@2026-03-01\" a JOIN \"meters@2026-03-01T12:00:00+01:00\" b ON true",
        )
        .unwrap();
        let at: Vec<_> = ok.tables.iter().map(|t| t.version).collect();
        // The end of 1 March 2026 UTC, and 11:00 UTC that day.
        assert_eq!(
            at,
            [
                VersionChoice::AsOf(1_772_409_599),
                VersionChoice::AsOf(1_772_362_800)
            ]
        );
    }
}
