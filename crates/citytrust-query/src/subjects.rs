//! Rows chosen by whose they are (R-CIT-2, R-CIT-3): a personal dataset's
//! subject-key column decides which rows a read may include, which rows a
//! subject access request returns, and which rows an erasure removes.
//!
//! A [`SubjectFilter`] is applied inside the scan of a version
//! ([`crate::governed`]): one hash lookup per row against the admitted (or
//! excluded) keys, rows kept in order, before any expression of the reader's
//! sees a row.

use std::path::Path;
use std::sync::Arc;

use ahash::AHashSet;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::prelude::{ParquetReadOptions, col};
use futures::StreamExt;

use crate::{QueryError, Result};

/// Which rows of a personal dataset a read gets, by their subject key.
#[derive(Debug, Clone)]
pub struct SubjectFilter {
    /// The subject-key column.
    pub column: String,
    pub keys: Arc<AHashSet<String>>,
    /// `true`: only rows whose key is in `keys` (rows without a key are left
    /// out). `false`: every row except those whose key is in `keys`.
    pub keep: bool,
    /// Which filter this is, unique in the process (clones share it): the
    /// governed scan caches the rows a filter admits in a file under it.
    pub id: u64,
}

/// The next [`SubjectFilter::id`].
fn next_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl SubjectFilter {
    pub fn only(column: &str, keys: impl IntoIterator<Item = String>) -> SubjectFilter {
        SubjectFilter {
            column: column.to_string(),
            keys: Arc::new(keys.into_iter().collect()),
            keep: true,
            id: next_id(),
        }
    }
    pub fn all_but(column: &str, keys: impl IntoIterator<Item = String>) -> SubjectFilter {
        SubjectFilter {
            column: column.to_string(),
            keys: Arc::new(keys.into_iter().collect()),
            keep: false,
            id: next_id(),
        }
    }
}

/// A column reference that keeps the name's case and punctuation.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The distinct subject keys in a local Parquet file (for the subject index).
pub async fn distinct_keys(file: &Path, column: &str) -> Result<Vec<String>> {
    let ctx = crate::export::session();
    let df = ctx
        .read_parquet(
            file.to_string_lossy().as_ref(),
            ParquetReadOptions::default(),
        )
        .await?;
    if df.schema().field_with_unqualified_name(column).is_err() {
        return Err(QueryError::Sql(format!(
            "the dataset names '{column}' as its subject key, but the file has no such column"
        )));
    }
    let df = df
        .select(vec![
            datafusion::logical_expr::cast(col(quoted(column)), DataType::Utf8).alias("k"),
        ])?
        .filter(col("k").is_not_null())?
        .distinct()?;
    let mut stream = df.execute_stream().await?;
    let mut keys = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let a = batch.column(0).as_string::<i32>();
        keys.extend((0..a.len()).map(|i| a.value(i).to_string()));
    }
    keys.sort_unstable();
    Ok(keys)
}

/// What an erasure did to one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    pub rows: u64,
    pub rows_removed: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// Write the version at `location` again to `out` without the rows `filter`
/// drops (an erasure passes `all_but` the subject's keys). Columns, types and
/// row order are kept.
pub async fn rewrite(
    versions: &crate::VersionStore,
    location: &str,
    filter: &SubjectFilter,
    out: &Path,
) -> Result<Rewritten> {
    let ctx = versions.session();
    let before = ctx
        .read_parquet(location, ParquetReadOptions::default())
        .await?
        .count()
        .await? as u64;
    let table = crate::governed::governed_table(&ctx, location, None, Some(filter)).await?;
    let mut stream = ctx.read_table(table)?.execute_stream().await?;
    let mut writer = crate::ingest::open_parquet(out, stream.schema())?;
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        writer.write(&batch)?;
    }
    let (bytes, sha256) = crate::ingest::close_parquet(writer)?;
    Ok(Rewritten {
        rows,
        rows_removed: before - rows,
        bytes,
        sha256,
    })
}

/// Copy a rejects file (the CSV a quarantine upload wrote: `line, column,
/// field, message, record`) to `out` without the rows whose raw record holds
/// `key` as one of its fields. A rejected row was never parsed into columns,
/// so which field is the subject key is unknown: any field equal to the key
/// counts, which may remove more rejected rows than the subject's, never fewer.
/// Returns how many rows were removed.
pub fn strip_rejects(input: &Path, out: &Path, key: &str) -> Result<u64> {
    let io = |e: csv::Error| QueryError::Io(std::io::Error::other(e.to_string()));
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(input)
        .map_err(io)?;
    let mut writer = csv::Writer::from_path(out).map_err(io)?;
    let mut removed = 0u64;
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(io)?;
        let holds_key = i > 0
            && record.get(4).is_some_and(|raw| {
                csv::ReaderBuilder::new()
                    .has_headers(false)
                    .flexible(true)
                    .from_reader(raw.as_bytes())
                    .records()
                    .flatten()
                    .any(|fields| fields.iter().any(|f| f.trim() == key))
            });
        if holds_key {
            removed += 1;
        } else {
            writer.write_record(&record).map_err(io)?;
        }
    }
    writer.flush()?;
    Ok(removed)
}

#[cfg(test)]
mod rejects_tests {
    use super::strip_rejects;

    #[test]
    fn strip_rejects_removes_only_rows_holding_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("rejects.csv");
        std::fs::write(
            &input,
            "line,column,field,message,record\n\
             3,2,kwh,not a number,\"H-2,abc,2026-01-01\"\n\
             4,2,kwh,not a number,\"H-20,abc,2026-01-01\"\n\
             5,3,when,bad date,\"H-3,1.5,yesterday\"\n",
        )
        .unwrap();
        let out = dir.path().join("out.csv");
        assert_eq!(strip_rejects(&input, &out, "H-2").unwrap(), 1);
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(
            text,
            "line,column,field,message,record\n\
             4,2,kwh,not a number,\"H-20,abc,2026-01-01\"\n\
             5,3,when,bad date,\"H-3,1.5,yesterday\"\n"
        );
    }
}
