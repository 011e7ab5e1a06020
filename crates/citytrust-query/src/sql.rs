//! Read-only SQL over stored versions.
//!
//! A dataset is the table named by its id with `-` replaced by `_` (its
//! latest version); `"<table>@<N>"` (quoted, since `@` is not an identifier
//! character) is version N. Only one `SELECT` (or `WITH … SELECT`) runs:
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
        let (base, version) = match table.split_once('@') {
            Some((base, v)) => {
                let n: i64 = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    QueryError::Sql(format!(
                        "'{table}': the part after @ must be a version number"
                    ))
                })?;
                (base, Some(n))
            }
            None => (table.as_str(), None),
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
    files: &[(String, String)],
    limits: Limits,
) -> Result<SendableRecordBatchStream> {
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(limits.memory_bytes, 1.0)
        .build_arc()?;
    let config = crate::export::config().with_information_schema(false);
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    versions.register(&ctx);
    for (table, location) in files {
        ctx.register_parquet(table.as_str(), location, ParquetReadOptions::default())
            .await?;
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
    }
}
