//! Read-only SQL over stored versions.
//!
//! A dataset is the table named by its id with `-` replaced by `_` (its
//! latest version); `"<table>@<N>"` (quoted, since `@` is not an identifier
//! character) is version N, and `"<table>@<date or time>"` the version in
//! force then (`@2026-03-01`: as the day ended, UTC; `@2026-03-01T12:00:00Z`:
//! at that instant). Only one `SELECT` (or `WITH … SELECT`) runs:
//! anything else is refused before planning, and DataFusion is told to
//! refuse DDL, DML and statements too, as a second lock.

use std::time::Duration;

use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{ParquetReadOptions, SQLOptions, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::Statement;

use crate::{QueryError, Result};

/// A table named in a query: the dataset it stands for and, if given, the version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    /// As written (and as registered): `barcelona_air_quality` or `barcelona_air_quality@2`.
    pub table: String,
    pub dataset_id: String,
    pub version: Option<i64>,
    /// The version in force at this instant (seconds since the epoch, UTC).
    pub as_of: Option<i64>,
}

/// An "as of" time: `2026-03-01` (the end of that day, UTC) or an RFC 3339
/// instant; seconds since the epoch.
pub fn parse_as_of(text: &str) -> Option<i64> {
    if let Ok(day) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return day.and_hms_opt(23, 59, 59).map(|t| t.and_utc().timestamp());
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp())
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

/// Parse `sql`, refuse anything but a single query, and list the tables it reads.
pub fn check(sql: &str) -> Result<CheckedQuery> {
    let mut statements = DFParser::parse_sql(sql)
        .map_err(|e| QueryError::Sql(format!("the SQL could not be parsed: {e}")))?;
    if statements.len() != 1 {
        return Err(QueryError::Sql(format!(
            "send exactly one SELECT statement (found {})",
            statements.len()
        )));
    }
    let statement = statements
        .pop_front()
        .ok_or_else(|| QueryError::Sql("send exactly one SELECT statement".into()))?;
    match &statement {
        DFStatement::Statement(inner) if matches!(inner.as_ref(), Statement::Query(_)) => {}
        other => {
            let first_word = other
                .to_string()
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            return Err(QueryError::Sql(format!(
                "only a read-only SELECT may run here; this is a {first_word} statement"
            )));
        }
    }
    let ctx = SessionContext::new();
    let (references, _ctes) = ctx
        .state()
        .resolve_table_references(&statement)
        .map(|refs| (refs, ()))
        .map_err(|e| QueryError::Sql(e.to_string()))?;
    let mut tables: Vec<TableName> = Vec::new();
    for reference in references {
        if reference.schema().is_some() || reference.catalog().is_some() {
            return Err(QueryError::Sql(format!(
                "'{reference}': name datasets by their table name alone (no schema or catalogue)"
            )));
        }
        let table = reference.table().to_string();
        if tables.iter().any(|t| t.table == table) {
            continue;
        }
        let (base, version, as_of) = match table.split_once('@') {
            Some((base, v)) => match v.parse::<i64>() {
                Ok(n) if n > 0 => (base, Some(n), None),
                _ => {
                    let at = parse_as_of(v).ok_or_else(|| {
                        QueryError::Sql(format!(
                            "'{table}': the part after @ must be a version number (\"t@2\"), a date \
                             (\"t@2026-03-01\") or an RFC 3339 time (\"t@2026-03-01T12:00:00Z\")"
                        ))
                    })?;
                    (base, None, Some(at))
                }
            },
            None => (table.as_str(), None, None),
        };
        if base.is_empty()
            || !base
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(QueryError::Sql(format!(
                "'{table}' is not a dataset table name (lower-case letters, digits and _)"
            )));
        }
        tables.push(TableName {
            dataset_id: base.replace('_', "-"),
            version,
            as_of,
            table,
        });
    }
    Ok(CheckedQuery { statement, tables })
}

/// Limits on one query.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_rows: usize,
    pub timeout: Duration,
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_rows: 100_000,
            timeout: Duration::from_secs(30),
            memory_bytes: 512 * 1024 * 1024,
        }
    }
}

/// Plan the checked query over the given files (one per table it names) and
/// start it; at most `limits.max_rows + 1` rows come out, so the caller can
/// tell a result was cut.
pub async fn start(
    query: CheckedQuery,
    versions: &crate::VersionStore,
    files: &[TableSource],
    limits: Limits,
) -> Result<SendableRecordBatchStream> {
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(limits.memory_bytes, 1.0)
        .build_arc()?;
    let config = crate::export::config().with_information_schema(false);
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    versions.register(&ctx);
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
        // Only the rows and columns the reader may see: a view over an
        // unnamed scan, so the full table is never addressable by name.
        let mut df = ctx
            .read_parquet(source.location.as_str(), ParquetReadOptions::default())
            .await?;
        if let Some(filter) = &source.subjects {
            df = filter.apply(df)?;
        }
        if let Some(columns) = &source.columns {
            df = crate::export::project(df, columns)?;
        }
        ctx.register_table(source.table.as_str(), df.into_view())?;
    }
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let plan = ctx
        .state()
        .statement_to_plan(query.statement)
        .await
        .map_err(|e| QueryError::Sql(plain(&e.to_string())))?;
    options
        .verify_plan(&plan)
        .map_err(|e| QueryError::Sql(plain(&e.to_string())))?;
    let df = ctx
        .execute_logical_plan(plan)
        .await
        .map_err(|e| QueryError::Sql(plain(&e.to_string())))?;
    let df = df.limit(0, Some(limits.max_rows.saturating_add(1)))?;
    Ok(df.execute_stream().await?)
}

/// DataFusion's messages without its "Error during planning:" prefixes.
fn plain(message: &str) -> String {
    let mut m = message.trim();
    for prefix in ["Error during planning: ", "SQL error: ", "Schema error: "] {
        m = m.strip_prefix(prefix).unwrap_or(m);
    }
    m.to_string()
}

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
                ("barcelona-air-quality", None),
                ("barcelona-districts", Some(1))
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
            assert!(matches!(err, QueryError::Sql(_)), "{bad}: {err}");
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
        let at: Vec<_> = ok.tables.iter().map(|t| (t.version, t.as_of)).collect();
        // The end of 1 March 2026 UTC, and 11:00 UTC that day.
        assert_eq!(
            at,
            [(None, Some(1_772_409_599)), (None, Some(1_772_362_800))]
        );
    }
}
