//! Rows chosen by whose they are (R-CIT-2, R-CIT-3): a personal dataset's
//! subject-key column decides which rows a read may include, which rows a
//! subject access request returns, and which rows an erasure removes.
//!
//! The filter is a function over the key column evaluated batch by batch
//! against a hash set, so it costs one hash lookup per row and keeps the
//! rows' order. It is never registered by name: a query cannot call it,
//! undo it, or read the table from under it.

use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;

use ahash::AHashSet;
use datafusion::arrow::array::{Array, AsArray, BooleanArray};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::{DataFrame, ParquetReadOptions, col};
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
}

impl SubjectFilter {
    pub fn only(column: &str, keys: impl IntoIterator<Item = String>) -> SubjectFilter {
        SubjectFilter {
            column: column.to_string(),
            keys: Arc::new(keys.into_iter().collect()),
            keep: true,
        }
    }
    pub fn all_but(column: &str, keys: impl IntoIterator<Item = String>) -> SubjectFilter {
        SubjectFilter {
            column: column.to_string(),
            keys: Arc::new(keys.into_iter().collect()),
            keep: false,
        }
    }

    /// `df` with only the rows this filter admits. A version without the
    /// key column is an error, never an unfiltered read.
    pub fn apply(&self, df: DataFrame) -> Result<DataFrame> {
        if df
            .schema()
            .field_with_unqualified_name(&self.column)
            .is_err()
        {
            return Err(QueryError::Sql(format!(
                "the subject-key column '{}' is not in this version, so whose rows they are \
                 cannot be told; nothing is served",
                self.column
            )));
        }
        if !self.keep && self.keys.is_empty() {
            return Ok(df);
        }
        let udf = ScalarUDF::new_from_impl(SubjectIn {
            keys: self.keys.clone(),
            keep: self.keep,
            signature: Signature::any(1, Volatility::Immutable),
        });
        Ok(df.filter(udf.call(vec![col(quoted(&self.column))]))?)
    }
}

/// A column reference that keeps the name's case and punctuation.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[derive(Debug)]
struct SubjectIn {
    keys: Arc<AHashSet<String>>,
    keep: bool,
    signature: Signature,
}

impl PartialEq for SubjectIn {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.keys, &other.keys) && self.keep == other.keep
    }
}
impl Eq for SubjectIn {}
impl Hash for SubjectIn {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.keys) as usize).hash(state);
        self.keep.hash(state);
    }
}

impl ScalarUDFImpl for SubjectIn {
    fn name(&self) -> &str {
        "citytrust_subject_admitted"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let array = args.args[0].to_array(args.number_rows)?;
        let text = match array.data_type() {
            DataType::Utf8 => array,
            _ => cast(&array, &DataType::Utf8)?,
        };
        let text = text.as_string::<i32>();
        let keep = self.keep;
        // Bits straight into the buffer; a row that names no one: no one
        // consented for it, and no one objected.
        let bits = if text.null_count() == 0 {
            BooleanBuffer::collect_bool(text.len(), |i| self.keys.contains(text.value(i)) == keep)
        } else {
            BooleanBuffer::collect_bool(text.len(), |i| {
                if text.is_null(i) {
                    !keep
                } else {
                    self.keys.contains(text.value(i)) == keep
                }
            })
        };
        let admitted = BooleanArray::new(bits, None);
        Ok(ColumnarValue::Array(Arc::new(admitted)))
    }
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
    let ctx = crate::export::session();
    versions.register(&ctx);
    let df = ctx
        .read_parquet(location, ParquetReadOptions::default())
        .await?;
    let before = df.clone().count().await? as u64;
    let df = filter.apply(df)?;
    let mut stream = df.execute_stream().await?;
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
