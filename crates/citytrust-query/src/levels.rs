//! The access levels below identified rows (R-ACC-3), computed over a stored
//! version with DataFusion and protected by `citytrust_privacy`:
//!
//! * thresholded aggregates: one `GROUP BY` (columns, or coordinates snapped
//!   to a grid of areas), then small-cell and secondary suppression;
//! * the inputs of differentially private statistics (a count, a numeric
//!   column, a categorical column) — the noise is added by the caller with
//!   `citytrust_privacy::dp`, which owns the budget question;
//! * pseudonymised rows: the personal columns replaced, batch by batch, by
//!   keyed pseudonyms particular to the reader's agreement;
//! * anonymised rows: personal and unclassified-location columns left out,
//!   the quasi-identifiers generalised to k-anonymity.
//!
//! Every function reads the version after the subject filter (whose rows
//! the reader may see), so no level reaches a row the identified level
//! would not.

use std::io::Write;
use std::sync::Arc;

use citytrust_privacy::cells::Protected;
use datafusion::arrow::array::{Array, ArrayRef, Float64Array, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::{DataFrame, SessionContext};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::export::{OutputFormat, Slice};
use crate::quality::quote_ident;
use crate::subjects::SubjectFilter;
use crate::{QueryError, Result};

/// The most dimensions of a thresholded table.
pub const MAX_DIMENSIONS: usize = 4;
/// The largest version anonymised on the read path (it is held in memory);
/// larger ones are prepared by the owner with `citytrust anonymise`.
pub const MAX_ANONYMISE_ROWS: usize = 1_000_000;

/// One dimension of a thresholded table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum GroupKey {
    /// A column's values.
    Column(String),
    /// The area (a grid cell of `degrees` on a side) a pair of coordinate
    /// columns falls in, named by its south-west corner, `lat,lon`.
    Grid {
        latitude: String,
        longitude: String,
        degrees: f64,
    },
}

impl GroupKey {
    /// The columns the key reads.
    pub fn columns(&self) -> Vec<&str> {
        match self {
            GroupKey::Column(c) => vec![c.as_str()],
            GroupKey::Grid {
                latitude,
                longitude,
                ..
            } => vec![latitude.as_str(), longitude.as_str()],
        }
    }

    /// How the dimension is named in the output.
    pub fn name(&self) -> String {
        match self {
            GroupKey::Column(c) => c.clone(),
            GroupKey::Grid {
                latitude,
                longitude,
                degrees,
            } => format!("grid({latitude}, {longitude}, {degrees})"),
        }
    }
}

/// A version as its reader may see it (the governed scan: admitted rows,
/// allowed columns), as table `v` of a session.
async fn frame(
    versions: &crate::VersionStore,
    location: &str,
    allowed: Option<&[String]>,
    subjects: Option<&SubjectFilter>,
) -> Result<(SessionContext, DataFrame)> {
    let (ctx, df) = crate::export::open_version(versions, location, allowed, subjects).await?;
    ctx.register_table("v", df.clone().into_view())?;
    Ok((ctx, df))
}

/// Refuse a column the version lacks, or one the reader may not read.
fn check_column(df: &DataFrame, allowed: Option<&[String]>, column: &str) -> Result<DataType> {
    if allowed.is_some_and(|a| !a.iter().any(|c| c == column)) {
        return Err(QueryError::Unsupported(format!(
            "column {column:?} is not one your agreement lets you read"
        )));
    }
    let field = df
        .schema()
        .fields()
        .iter()
        .find(|f| f.name() == column)
        .ok_or_else(|| QueryError::Unsupported(format!("the version has no column {column:?}")))?;
    Ok(field.data_type().clone())
}

fn is_numeric(t: &DataType) -> bool {
    t.is_numeric()
}

/// The label a null key value gets.
pub const MISSING: &str = "(missing)";

fn strings(a: &ArrayRef) -> Result<StringArray> {
    let c = cast(a, &DataType::Utf8)?;
    c.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| QueryError::Engine("a key column did not cast to text".into()))
}

/// A thresholded table, as counted and protected.
#[derive(Debug, Clone, Serialize)]
pub struct Aggregate {
    pub dimensions: Vec<String>,
    /// The measure summed, if any.
    pub measure: Option<String>,
    /// Records counted (after the subject filter). Not served: it is the
    /// grand total, which is suppressed when small.
    #[serde(skip)]
    pub records: u64,
    pub table: Protected,
    /// Milliseconds spent counting (the GROUP BY) and protecting (margins,
    /// suppression), for the server's log.
    #[serde(skip)]
    pub timings_ms: (u128, u128),
}

/// Count (and optionally sum `measure`) by `by`, then suppress the cells
/// below `threshold` and the cells that would give them away.
pub async fn aggregate(
    versions: &crate::VersionStore,
    location: &str,
    allowed: Option<&[String]>,
    subjects: Option<&SubjectFilter>,
    by: &[GroupKey],
    measure: Option<&str>,
    threshold: u64,
) -> Result<Aggregate> {
    if by.is_empty() || by.len() > MAX_DIMENSIONS {
        return Err(QueryError::Unsupported(format!(
            "count by one to {MAX_DIMENSIONS} dimensions, not {}",
            by.len()
        )));
    }
    let started = std::time::Instant::now();
    let (ctx, df) = frame(versions, location, allowed, subjects).await?;
    let mut select = Vec::new();
    for (i, key) in by.iter().enumerate() {
        match key {
            GroupKey::Column(c) => {
                check_column(&df, allowed, c)?;
                // Grouped by the value itself; only the groups are turned into text.
                select.push(format!("{} AS k{i}", quote_ident(c)));
            }
            GroupKey::Grid {
                latitude,
                longitude,
                degrees,
            } => {
                if !(degrees.is_finite() && *degrees >= 0.0001 && *degrees <= 10.0) {
                    return Err(QueryError::Unsupported(format!(
                        "a grid cell is 0.0001 to 10 degrees on a side, not {degrees}"
                    )));
                }
                for (axis, c) in [("a", latitude), ("b", longitude)] {
                    let t = check_column(&df, allowed, c)?;
                    if !is_numeric(&t) {
                        return Err(QueryError::Unsupported(format!(
                            "column {c:?} holds {t}, not coordinates in degrees"
                        )));
                    }
                    // Nudged so a coordinate on a cell edge (41.3 / 0.1) lands in its cell.
                    select.push(format!(
                        "CAST(FLOOR(CAST({} AS DOUBLE) / {degrees:e} + 1e-9) AS BIGINT) AS k{i}{axis}",
                        quote_ident(c)
                    ));
                }
            }
        }
    }
    if let Some(m) = measure {
        let t = check_column(&df, allowed, m)?;
        if !is_numeric(&t) {
            return Err(QueryError::Unsupported(format!(
                "column {m:?} holds {t}: only a number column can be summed"
            )));
        }
    }
    let keys: Vec<String> = select
        .iter()
        .map(|s| s.rsplit(" AS ").next().unwrap_or_default().to_string())
        .collect();
    let mut sql = format!("SELECT {}, COUNT(*) AS n", select.join(", "));
    if let Some(m) = measure {
        sql.push_str(&format!(", SUM(CAST({} AS DOUBLE)) AS s", quote_ident(m)));
    }
    sql.push_str(&format!(" FROM v GROUP BY {}", keys.join(", ")));
    let batches = ctx.sql(&sql).await?.collect().await?;
    let mut rows: Vec<(Vec<String>, u64, Vec<f64>)> = Vec::new();
    let mut records = 0u64;
    for batch in &batches {
        let key_arrays: Vec<StringArray> = (0..keys.len())
            .map(|i| strings(batch.column(i)))
            .collect::<Result<_>>()?;
        let counts = batch
            .column(keys.len())
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| QueryError::Engine("COUNT(*) is not a BIGINT".into()))?;
        let sums = measure
            .map(|_| {
                batch
                    .column(keys.len() + 1)
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .cloned()
                    .ok_or_else(|| QueryError::Engine("SUM is not a DOUBLE".into()))
            })
            .transpose()?;
        for r in 0..batch.num_rows() {
            let mut key = Vec::with_capacity(by.len());
            let mut col = 0;
            for k in by {
                match k {
                    GroupKey::Column(_) => {
                        let a = &key_arrays[col];
                        key.push(if a.is_null(r) {
                            MISSING.to_string()
                        } else {
                            a.value(r).to_string()
                        });
                        col += 1;
                    }
                    GroupKey::Grid { degrees, .. } => {
                        let (a, b) = (&key_arrays[col], &key_arrays[col + 1]);
                        key.push(if a.is_null(r) || b.is_null(r) {
                            MISSING.to_string()
                        } else {
                            grid_label(a.value(r), b.value(r), *degrees)
                        });
                        col += 2;
                    }
                }
            }
            let n = u64::try_from(counts.value(r)).unwrap_or(0);
            records += n;
            let s = sums
                .as_ref()
                .map(|s| vec![if s.is_null(r) { 0.0 } else { s.value(r) }])
                .unwrap_or_default();
            rows.push((key, n, s));
        }
    }
    let counted = started.elapsed().as_millis();
    let started = std::time::Instant::now();
    let mut table = citytrust_privacy::cells::protect(by.len(), &rows, threshold)
        .map_err(|e| QueryError::Unsupported(e.to_string()))?;
    // Empty combinations (an origin–destination grid is mostly empty) are
    // left out: a cell not listed counts zero. A suppressed one stays.
    table
        .cells
        .retain(|c| !(c.status == citytrust_privacy::cells::Status::Shown && c.count == Some(0)));
    Ok(Aggregate {
        dimensions: by.iter().map(GroupKey::name).collect(),
        measure: measure.map(str::to_string),
        records,
        table,
        timings_ms: (counted, started.elapsed().as_millis()),
    })
}

/// A grid cell's name: its south-west corner, at the grid's precision.
fn grid_label(lat_index: &str, lon_index: &str, degrees: f64) -> String {
    let decimals = (-degrees.log10().floor()).max(0.0) as usize;
    let corner = |i: &str| i.parse::<f64>().unwrap_or(0.0) * degrees;
    format!(
        "{:.decimals$},{:.decimals$}",
        corner(lat_index),
        corner(lon_index)
    )
}

/// Write a protected table: JSON as is; CSV one row per cell (the
/// dimensions, `count`, the measure's sum, `status`; a total's key is
/// `(total)`, a suppressed cell's numbers are empty).
pub fn write_aggregate(
    agg: &Aggregate,
    format: OutputFormat,
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    match format {
        OutputFormat::Json => {
            serde_json::to_writer(&mut *out, agg).map_err(|e| QueryError::Engine(e.to_string()))?;
            out.write_all(b"\n")?;
        }
        OutputFormat::Csv => {
            let mut w = csv::Writer::from_writer(&mut *out);
            let mut header: Vec<String> = agg.dimensions.clone();
            header.push("count".into());
            if let Some(m) = &agg.measure {
                header.push(format!("sum of {m}"));
            }
            header.push("status".into());
            w.write_record(&header)
                .map_err(|e| QueryError::Engine(e.to_string()))?;
            for cell in &agg.table.cells {
                let mut rec: Vec<String> = cell
                    .key
                    .iter()
                    .map(|k| k.clone().unwrap_or_else(|| "(total)".into()))
                    .collect();
                rec.push(cell.count.map(|c| c.to_string()).unwrap_or_default());
                if agg.measure.is_some() {
                    rec.push(
                        cell.sums
                            .as_ref()
                            .and_then(|s| s.first())
                            .map(|s| s.to_string())
                            .unwrap_or_default(),
                    );
                }
                rec.push(
                    match cell.status {
                        citytrust_privacy::cells::Status::Shown => "shown",
                        citytrust_privacy::cells::Status::Primary => "suppressed: small",
                        citytrust_privacy::cells::Status::Secondary => "suppressed: would reveal",
                    }
                    .into(),
                );
                w.write_record(&rec)
                    .map_err(|e| QueryError::Engine(e.to_string()))?;
            }
            w.flush()?;
        }
        other => {
            return Err(QueryError::Unsupported(format!(
                "a thresholded table is served as CSV or JSON, not {}",
                other.extension()
            )));
        }
    }
    Ok(agg.table.cells.len() as u64)
}

/// Whether any row (the reader may see) holds `value` in `column`,
/// compared as text: the index level's answer, and nothing more.
pub async fn exists(
    versions: &crate::VersionStore,
    location: &str,
    allowed: Option<&[String]>,
    subjects: Option<&SubjectFilter>,
    column: &str,
    value: &str,
) -> Result<bool> {
    let (_ctx, df) = frame(versions, location, allowed, subjects).await?;
    check_column(&df, allowed, column)?;
    use datafusion::logical_expr::Expr;
    let target = Expr::Column(datafusion::common::Column::from_name(column));
    let found = df
        .filter(
            datafusion::prelude::cast(target, DataType::Utf8).eq(datafusion::prelude::lit(value)),
        )?
        .limit(0, Some(1))?
        .count()
        .await?;
    Ok(found > 0)
}

/// The input of a differentially private statistic.
pub enum DpInput {
    Rows(usize),
    Numbers(Vec<f64>),
    Categories(Vec<String>),
}

/// What a DP statistic reads: `None` counts rows; `numeric` decides
/// whether the column is read as numbers or as categories.
pub async fn dp_input(
    versions: &crate::VersionStore,
    location: &str,
    allowed: Option<&[String]>,
    subjects: Option<&SubjectFilter>,
    column: Option<&str>,
    numeric: bool,
) -> Result<DpInput> {
    let (ctx, df) = frame(versions, location, allowed, subjects).await?;
    let Some(column) = column else {
        let rows = df.count().await?;
        return Ok(DpInput::Rows(rows));
    };
    let t = check_column(&df, allowed, column)?;
    if numeric && !is_numeric(&t) {
        return Err(QueryError::Unsupported(format!(
            "column {column:?} holds {t}: a sum or mean needs a number column"
        )));
    }
    let target = if numeric { "DOUBLE" } else { "VARCHAR" };
    let batches = ctx
        .sql(&format!(
            "SELECT CAST({} AS {target}) FROM v",
            quote_ident(column)
        ))
        .await?
        .collect()
        .await?;
    if numeric {
        let mut out = Vec::new();
        for b in &batches {
            if let Some(a) = b.column(0).as_any().downcast_ref::<Float64Array>() {
                out.extend(a.iter().flatten());
            }
        }
        Ok(DpInput::Numbers(out))
    } else {
        let mut out = Vec::new();
        for b in &batches {
            let a = strings(b.column(0))?;
            out.extend(a.iter().map(|v| v.unwrap_or_default().to_string()));
        }
        Ok(DpInput::Categories(out))
    }
}

/// Stream a version's rows with `personal` columns replaced by the
/// reader's pseudonyms (text; a null stays null).
#[allow(clippy::too_many_arguments)]
pub async fn export_pseudonymised(
    versions: &crate::VersionStore,
    location: &str,
    allowed: Option<&[String]>,
    subjects: Option<&SubjectFilter>,
    personal: &[String],
    pseudonymiser: Arc<citytrust_privacy::pseudonym::Pseudonymiser>,
    slice: Slice,
    format: OutputFormat,
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    let (_ctx, df) = frame(versions, location, allowed, subjects).await?;
    let df = if slice.offset > 0 || slice.limit.is_some() {
        df.limit(slice.offset, slice.limit)?
    } else {
        df
    };
    let input = df.schema().as_arrow().clone();
    let replace: Vec<usize> = input
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| personal.iter().any(|p| p == f.name()))
        .map(|(i, _)| i)
        .collect();
    let schema = Arc::new(Schema::new(
        input
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                if replace.contains(&i) {
                    Arc::new(Field::new(f.name(), DataType::Utf8, true))
                } else {
                    f.clone()
                }
            })
            .collect::<Vec<_>>(),
    ));
    let stream = df.execute_stream().await?;
    let out_schema = schema.clone();
    let mapped = stream.map(move |batch| {
        let batch = batch?;
        let mut columns = batch.columns().to_vec();
        for &i in &replace {
            let domain = out_schema.field(i).name().clone();
            let text = cast(&columns[i], &DataType::Utf8)?;
            let text = text
                .as_any()
                .downcast_ref::<StringArray>()
                .cloned()
                .unwrap_or_else(|| StringArray::new_null(batch.num_rows()));
            let replaced: StringArray = text
                .iter()
                .map(|v| v.map(|v| pseudonymiser.pseudonym(&domain, v)))
                .collect();
            columns[i] = Arc::new(replaced);
        }
        Ok(RecordBatch::try_new(out_schema.clone(), columns)?)
    });
    let stream = Box::pin(RecordBatchStreamAdapter::new(schema, mapped));
    crate::export::write_stream(stream, format, out).await
}

/// What the anonymised level released.
#[derive(Debug, Clone, Serialize)]
pub struct AnonymisedRead {
    /// `None` when no quasi-identifier was left to generalise.
    pub report: Option<citytrust_privacy::Report>,
    /// Columns left out (personal, or places not declared quasi-identifying).
    pub dropped: Vec<String>,
    pub quasi_identifiers: Vec<String>,
}

/// Anonymised rows: `personal` and `drop` columns left out, the
/// quasi-identifiers generalised (hierarchies built from the values) until
/// every released combination is shared by at least `k` rows, with at most
/// `suppression_percent` of rows left out to get there.
#[allow(clippy::too_many_arguments)]
pub async fn export_anonymised(
    versions: &crate::VersionStore,
    location: &str,
    allowed: Option<&[String]>,
    subjects: Option<&SubjectFilter>,
    quasi: &[String],
    drop: &[String],
    k: usize,
    suppression_percent: f64,
    format: OutputFormat,
    out: &mut (dyn Write + Send),
) -> Result<(u64, AnonymisedRead)> {
    let (_ctx, df) = frame(versions, location, allowed, subjects).await?;
    let names: Vec<String> = df
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let keep: Vec<String> = names
        .iter()
        .filter(|n| !drop.contains(n))
        .cloned()
        .collect();
    let dropped: Vec<String> = names.iter().filter(|n| drop.contains(n)).cloned().collect();
    if keep.is_empty() {
        return Err(QueryError::Unsupported(
            "every column you may read is personal or a place: nothing is left to anonymise".into(),
        ));
    }
    let quasi: Vec<String> = keep.iter().filter(|n| quasi.contains(n)).cloned().collect();
    let keep_refs: Vec<&str> = keep.iter().map(String::as_str).collect();
    let df = df.select_columns(&keep_refs)?;
    let rows = df.clone().count().await?;
    if rows > MAX_ANONYMISE_ROWS {
        return Err(QueryError::Unsupported(format!(
            "{rows} rows are too many to anonymise on the read path (at most {MAX_ANONYMISE_ROWS}); \
             ask the owner for a prepared extract (citytrust anonymise)"
        )));
    }
    // Every kept column as text, in memory.
    let mut columns: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(rows); keep.len()];
    for batch in df.collect().await? {
        for (i, col) in columns.iter_mut().enumerate() {
            let a = strings(batch.column(i))?;
            col.extend(a.iter().map(|v| v.map(str::to_string)));
        }
    }
    let qi_index: Vec<usize> = quasi
        .iter()
        .filter_map(|q| keep.iter().position(|k| k == q))
        .collect();
    let (out_columns, report) = if qi_index.is_empty() {
        (columns, None)
    } else {
        let texts: Vec<Vec<&str>> = qi_index
            .iter()
            .map(|&i| {
                columns[i]
                    .iter()
                    .map(|v| v.as_deref().unwrap_or(""))
                    .collect()
            })
            .collect();
        let hierarchies: Vec<citytrust_privacy::Hierarchy> = qi_index
            .iter()
            .zip(&texts)
            .map(|(&i, values)| {
                citytrust_privacy::Hierarchy::automatic(values.iter().copied(), &keep[i], None)
                    .map_err(|e| QueryError::Unsupported(format!("column {:?}: {e}", keep[i])))
            })
            .collect::<Result<_>>()?;
        let qis: Vec<citytrust_privacy::QuasiIdentifier<'_>> = qi_index
            .iter()
            .zip(&texts)
            .zip(&hierarchies)
            .map(|((&i, values), h)| citytrust_privacy::QuasiIdentifier {
                name: &keep[i],
                values: values.clone(),
                hierarchy: h,
            })
            .collect();
        let result = citytrust_privacy::anonymise(
            &qis,
            None,
            citytrust_privacy::Criteria {
                k,
                suppression_percent,
                l_diversity: None,
                t_closeness: None,
            },
        )
        .map_err(|e| QueryError::Unsupported(format!("no anonymised release: {e}")))?;
        // The released table, as text.
        let mut out_columns: Vec<Vec<Option<String>>> = vec![Vec::new(); keep.len()];
        for r in 0..rows {
            if result.suppressed(r) {
                continue;
            }
            for (c, col) in columns.iter().enumerate() {
                let value = match qi_index.iter().position(|&q| q == c) {
                    Some(q) => result.label(r, q).map(str::to_string),
                    None => col[r].clone(),
                };
                out_columns[c].push(value);
            }
        }
        (out_columns, Some(result.report))
    };
    let schema = Arc::new(Schema::new(
        keep.iter()
            .map(|n| Field::new(n, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let arrays: Vec<ArrayRef> = out_columns
        .into_iter()
        .map(|c| Arc::new(StringArray::from(c)) as ArrayRef)
        .collect();
    let batch = RecordBatch::try_new(schema.clone(), arrays)?;
    let stream = Box::pin(RecordBatchStreamAdapter::new(
        schema,
        futures::stream::iter([Ok(batch)]),
    ));
    let written = crate::export::write_stream(stream, format, out).await?;
    Ok((
        written,
        AnonymisedRead {
            report,
            dropped,
            quasi_identifiers: quasi,
        },
    ))
}
