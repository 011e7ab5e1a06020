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

use crate::ProblemCode;
use std::io::Write;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Float64Array, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::{DataFrame, SessionContext};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::export::{OutputFormat, Slice};
use crate::governed::Source;
use crate::quality::quote_ident;
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
    /// A time or date column truncated to `unit` (hour, day, week, month,
    /// year), named by the start of the period.
    Time { column: String, unit: String },
    /// A number column in intervals of `width`, named `[lower, upper)`.
    Bins { column: String, width: f64 },
}

/// The units a time dimension is truncated to, finest first.
pub const TIME_UNITS: [&str; 5] = ["hour", "day", "week", "month", "year"];

/// The finest a column may be tabulated, as its owner declared it.
#[derive(Debug, Clone, PartialEq)]
pub enum Bin {
    /// An index into [`TIME_UNITS`].
    Time(usize),
    Width(f64),
    Grid(f64),
}

/// How a table is protected from a reader who may not read its rows (the
/// owner, or an identified-rows grant, gets exact counts, still thresholded):
/// dimensions binned as the owner declares, a mostly-small table refused,
/// and every shown count and sum perturbed by its cell key.
#[derive(Debug, Clone, Default)]
pub struct TableProtection {
    /// Seeds of the record keys (from the trust's secret; never shown).
    pub record_seeds: [u64; 4],
    /// Columns that are places: tabulated only on a grid.
    pub spatial: Vec<String>,
    /// Columns that are times: tabulated only truncated.
    pub temporal: Vec<String>,
    /// The owner's declared bins per column.
    pub bins: Vec<(String, Bin)>,
}

/// The coarsest grid a reader who may not read rows gets when the owner
/// declared none: 0.01° (about a kilometre).
pub const DEFAULT_MIN_GRID_DEGREES: f64 = 0.01;
/// The finest time unit such a reader gets when the owner declared none.
pub const DEFAULT_MIN_TIME_UNIT: usize = 1; // day

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
            GroupKey::Time { column, .. } | GroupKey::Bins { column, .. } => vec![column.as_str()],
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
            GroupKey::Time { column, unit } => format!("{unit}({column})"),
            GroupKey::Bins { column, width } => format!("bins({column}, {width})"),
        }
    }
}

/// A version as its reader may see it (the governed scan: admitted rows,
/// allowed columns), as table `v` of a session.
async fn frame(source: Source<'_>) -> Result<(SessionContext, DataFrame)> {
    let Source {
        versions,
        location,
        columns,
        subjects,
    } = source;
    let (ctx, df) = crate::export::open_version(versions, location, columns, subjects).await?;
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
    /// The cells shown, margins (`null` in a dimension: its total) included.
    /// A cell not listed counts zero or fewer than the threshold — which of
    /// the two is not said.
    pub cells: Vec<ShownCell>,
    pub threshold: u64,
    /// Whether counts and sums are perturbed (a reader who may not read the
    /// rows): each by a small amount fixed by the records in the cell, so
    /// asking again, or in another table, gives the same value.
    pub perturbed: bool,
    /// How many cells were suppressed (small, and to protect small ones):
    /// for the server's log, never served.
    #[serde(skip)]
    pub suppressed: (usize, usize),
    /// Milliseconds spent counting (the GROUP BY) and protecting (margins,
    /// suppression), for the server's log.
    #[serde(skip)]
    pub timings_ms: (u128, u128),
}

/// One shown cell of a thresholded table.
#[derive(Debug, Clone, Serialize)]
pub struct ShownCell {
    /// The cell's value per dimension; `None` is that dimension's total.
    pub key: Vec<Option<String>>,
    pub count: u64,
    /// The measure's sum, when one was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sum: Option<f64>,
}

/// Record keys are this many bits; a cell's key is the sum of its records'
/// modulo 2^RECORD_KEY_BITS (exact in f64 up to 2^33 records).
const RECORD_KEY_BITS: u32 = 20;

/// The SQL that makes one dimension's key column(s), checked against the
/// version's types, the reader's columns and (for a reader who may not read
/// rows) the owner's declared bins.
fn dimension_sql(
    df: &DataFrame,
    allowed: Option<&[String]>,
    protection: Option<&TableProtection>,
    key: &GroupKey,
    i: usize,
) -> Result<Vec<String>> {
    let declared = |c: &str| {
        protection.and_then(|p| p.bins.iter().find(|(n, _)| n == c).map(|(_, b)| b.clone()))
    };
    let refuse = |m: String| Err(QueryError::Unsupported(m));
    match key {
        GroupKey::Column(c) => {
            let t = check_column(df, allowed, c)?;
            if let Some(p) = protection {
                // Coordinates go on a grid; a named area (a district) is a
                // category like any other.
                if p.spatial.contains(c) && is_numeric(&t) {
                    return refuse(format!(
                        "column {c:?} is a place: tabulate it on a grid ({{\"grid\": {{\"latitude\": …, \"longitude\": …, \"degrees\": …}}}})"
                    ));
                }
                // Times go by a period; a month number or a weekday name is a
                // category like any other (and text that is near-unique, such
                // as times never declared as such, makes a table refused
                // below as mostly small cells).
                if t.is_temporal() {
                    return refuse(format!(
                        "column {c:?} holds times: tabulate them by a period ({{\"time\": {{\"column\": {c:?}, \"unit\": \"day\"}}}})"
                    ));
                }
                if let Some(bin) = declared(c) {
                    return refuse(format!(
                        "column {c:?} is tabulated only in bins its owner set ({bin:?} at the finest)"
                    ));
                }
            }
            Ok(vec![format!("{} AS k{i}", quote_ident(c))])
        }
        GroupKey::Time { column, unit } => {
            let t = check_column(df, allowed, column)?;
            let declared_temporal = protection.is_some_and(|p| p.temporal.contains(column));
            if !(t.is_temporal() || (declared_temporal && t == DataType::Utf8)) {
                return refuse(format!("column {column:?} holds {t}, not times or dates"));
            }
            let Some(rank) = TIME_UNITS.iter().position(|u| u == unit) else {
                return refuse(format!(
                    "a time dimension's unit is one of {}, not {unit:?}",
                    TIME_UNITS.join(", ")
                ));
            };
            if protection.is_some() {
                let min = match declared(column) {
                    Some(Bin::Time(m)) => m,
                    _ => DEFAULT_MIN_TIME_UNIT,
                };
                if rank < min {
                    return refuse(format!(
                        "column {column:?} is tabulated by {} at the finest, not by {unit}",
                        TIME_UNITS[min]
                    ));
                }
            }
            // Text declared as times: what does not read as a time is "(missing)".
            Ok(vec![format!(
                "CAST(date_trunc('{unit}', TRY_CAST({} AS TIMESTAMP)) AS VARCHAR) AS k{i}",
                quote_ident(column)
            )])
        }
        GroupKey::Bins { column, width } => {
            let t = check_column(df, allowed, column)?;
            if !is_numeric(&t) {
                return refuse(format!("column {column:?} holds {t}, not numbers"));
            }
            if !(width.is_finite() && *width > 0.0) {
                return refuse(format!("a bin's width is a positive number, not {width}"));
            }
            if let (Some(_), Some(Bin::Width(min))) = (protection, declared(column)) {
                let ratio = width / min;
                if ratio < 1.0 - 1e-9 || (ratio - ratio.round()).abs() > 1e-9 {
                    return refuse(format!(
                        "column {column:?} is tabulated in bins of {min} or multiples of it, not {width}"
                    ));
                }
            }
            Ok(vec![format!(
                "CAST(FLOOR(CAST({} AS DOUBLE) / {width:e} + 1e-9) AS BIGINT) AS k{i}",
                quote_ident(column)
            )])
        }
        GroupKey::Grid {
            latitude,
            longitude,
            degrees,
        } => {
            if !(degrees.is_finite() && *degrees >= 0.0001 && *degrees <= 10.0) {
                return refuse(format!(
                    "a grid cell is 0.0001 to 10 degrees on a side, not {degrees}"
                ));
            }
            if protection.is_some() {
                let min = [latitude, longitude]
                    .iter()
                    .filter_map(|c| match declared(c) {
                        Some(Bin::Grid(g)) => Some(g),
                        _ => None,
                    })
                    .fold(DEFAULT_MIN_GRID_DEGREES, f64::max);
                if *degrees < min - 1e-12 {
                    return refuse(format!(
                        "these coordinates are tabulated on a grid of {min}° or more, not {degrees}°"
                    ));
                }
            }
            let mut out = Vec::new();
            for (axis, c) in [("a", latitude), ("b", longitude)] {
                let t = check_column(df, allowed, c)?;
                if !is_numeric(&t) {
                    return refuse(format!(
                        "column {c:?} holds {t}, not coordinates in degrees"
                    ));
                }
                // Nudged so a coordinate on a cell edge (41.3 / 0.1) lands in its cell.
                out.push(format!(
                    "CAST(FLOOR(CAST({} AS DOUBLE) / {degrees:e} + 1e-9) AS BIGINT) AS k{i}{axis}",
                    quote_ident(c)
                ));
            }
            Ok(out)
        }
    }
}

/// Count (and optionally sum `measure`) by `by`, then suppress the cells
/// below `threshold` and the cells that would give them away; for a reader
/// who may not read the rows (`protection`), also bin the dimensions as the
/// owner declared, refuse a table that is mostly small cells, and perturb
/// what is shown by each cell's key. Only shown cells are returned.
pub async fn aggregate(
    source: Source<'_>,
    by: &[GroupKey],
    measure: Option<&str>,
    threshold: u64,
    protection: Option<&TableProtection>,
) -> Result<Aggregate> {
    let allowed = source.columns;
    if by.is_empty() || by.len() > MAX_DIMENSIONS {
        return Err(QueryError::Unsupported(format!(
            "count by one to {MAX_DIMENSIONS} dimensions, not {}",
            by.len()
        )));
    }
    let started = std::time::Instant::now();
    let (ctx, df) = frame(source).await?;
    let mut select = Vec::new();
    for (i, key) in by.iter().enumerate() {
        select.extend(dimension_sql(&df, allowed, protection, key, i)?);
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
    if let Some(p) = protection {
        // Every record's key, from all of its columns the reader may see:
        // the same record always has the same key, whatever table it is in.
        ctx.register_udf(record_key_udf(p.record_seeds));
        let all: Vec<String> = df
            .schema()
            .fields()
            .iter()
            .map(|f| quote_ident(f.name()))
            .collect();
        sql.push_str(&format!(
            ", SUM(citytrust_record_key({})) AS rk",
            all.join(", ")
        ));
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
        let record_keys = protection
            .map(|_| {
                let a = cast(batch.column(batch.num_columns() - 1), &DataType::Float64)?;
                a.as_any()
                    .downcast_ref::<Float64Array>()
                    .cloned()
                    .ok_or_else(|| QueryError::Engine("record keys are not numbers".into()))
            })
            .transpose()?;
        for r in 0..batch.num_rows() {
            let mut key = Vec::with_capacity(by.len());
            let mut col = 0;
            for k in by {
                match k {
                    GroupKey::Column(_) | GroupKey::Time { .. } => {
                        let a = &key_arrays[col];
                        key.push(if a.is_null(r) {
                            MISSING.to_string()
                        } else {
                            a.value(r).to_string()
                        });
                        col += 1;
                    }
                    GroupKey::Bins { width, .. } => {
                        let a = &key_arrays[col];
                        key.push(if a.is_null(r) {
                            MISSING.to_string()
                        } else {
                            bin_label(a.value(r), *width)
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
            let mut measures = Vec::new();
            if let Some(s) = &sums {
                measures.push(if s.is_null(r) { 0.0 } else { s.value(r) });
            }
            if let Some(k) = &record_keys {
                measures.push(if k.is_null(r) { 0.0 } else { k.value(r) });
            }
            rows.push((key, n, measures));
        }
    }
    let counted = started.elapsed().as_millis();
    let started = std::time::Instant::now();
    let table = citytrust_privacy::cells::protect(by.len(), &rows, threshold)
        .map_err(|e| QueryError::Unsupported(e.to_string()))?;
    if protection.is_some() {
        // A table of mostly small cells is a list of records: refused when
        // most of its records are in cells below the threshold, or nearly
        // all of its (non-empty) cells are.
        let nonempty = rows.iter().filter(|r| r.1 > 0).count();
        let small: Vec<&(Vec<String>, u64, Vec<f64>)> =
            rows.iter().filter(|r| r.1 > 0 && r.1 < threshold).collect();
        let in_small: u64 = small.iter().map(|r| r.1).sum();
        if in_small * 2 > records || small.len() * 5 > nonempty * 4 {
            return Err(QueryError::refused(
                ProblemCode::TableTooSparse,
                format!(
                    "most of this table would be cells of fewer than {threshold}: it would list \
                     records rather than count them; ask for fewer or coarser dimensions"
                ),
            ));
        }
    }
    let modulus = f64::from(1u32 << RECORD_KEY_BITS);
    let cells: Vec<ShownCell> = table
        .cells
        .iter()
        .filter(|c| c.status == citytrust_privacy::cells::Status::Shown && c.count != Some(0))
        .filter_map(|c| {
            let count = c.count?;
            let sums = c.sums.clone().unwrap_or_default();
            let mut sum = measure.map(|_| sums.first().copied().unwrap_or(0.0));
            let count = match protection {
                Some(_) => {
                    let record_keys = sums.last().copied().unwrap_or(0.0);
                    let cell_key = (record_keys % modulus) / modulus;
                    if let Some(s) = sum.as_mut() {
                        *s *= citytrust_privacy::cells::sum_factor(cell_key);
                    }
                    count.saturating_add_signed(citytrust_privacy::cells::perturbation(cell_key))
                }
                None => count,
            };
            Some(ShownCell {
                key: c.key.clone(),
                count,
                sum,
            })
        })
        .collect();
    Ok(Aggregate {
        dimensions: by.iter().map(GroupKey::name).collect(),
        measure: measure.map(str::to_string),
        records,
        cells,
        threshold,
        perturbed: protection.is_some(),
        suppressed: (table.primary, table.secondary),
        timings_ms: (counted, started.elapsed().as_millis()),
    })
}

/// A bin's name: `[lower, upper)`.
fn bin_label(index: &str, width: f64) -> String {
    let lower = index.parse::<f64>().unwrap_or(0.0) * width;
    format!("[{lower}, {})", lower + width)
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

/// `citytrust_record_key(col, …)`: a record's key, a keyed hash of all its
/// values reduced to [`RECORD_KEY_BITS`] bits. Registered only in the
/// session of one table, never where a reader's SQL runs.
fn record_key_udf(seeds: [u64; 4]) -> datafusion::logical_expr::ScalarUDF {
    datafusion::logical_expr::ScalarUDF::new_from_impl(RecordKey {
        seeds,
        signature: datafusion::logical_expr::Signature::variadic_any(
            datafusion::logical_expr::Volatility::Immutable,
        ),
    })
}

#[derive(Debug)]
struct RecordKey {
    seeds: [u64; 4],
    signature: datafusion::logical_expr::Signature,
}

impl PartialEq for RecordKey {
    fn eq(&self, other: &Self) -> bool {
        self.seeds == other.seeds
    }
}
impl Eq for RecordKey {}
impl std::hash::Hash for RecordKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Not the seeds themselves: they are secret.
        0u8.hash(state);
    }
}

impl datafusion::logical_expr::ScalarUDFImpl for RecordKey {
    fn name(&self) -> &str {
        "citytrust_record_key"
    }
    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Int64)
    }
    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<datafusion::logical_expr::ColumnarValue> {
        let rows = args.number_rows;
        let arrays: Vec<ArrayRef> = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<datafusion::error::Result<_>>()?;
        let state = ahash::RandomState::with_seeds(
            self.seeds[0],
            self.seeds[1],
            self.seeds[2],
            self.seeds[3],
        );
        let mut hashes = vec![0u64; rows];
        datafusion::common::hash_utils::create_hashes_with_hasher(&arrays, &state, &mut hashes)?;
        let mask = (1u64 << RECORD_KEY_BITS) - 1;
        let keys: Int64Array = hashes
            .iter()
            .map(|h| {
                // A last keyed mix, so the key is not the engine's hash itself.
                let mixed = (h ^ self.seeds[1]).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                Some(((mixed >> 17) & mask) as i64)
            })
            .collect();
        Ok(datafusion::logical_expr::ColumnarValue::Array(Arc::new(
            keys,
        )))
    }
}

/// Write a table: JSON as is; CSV one row per shown cell (the dimensions,
/// `count`, the measure's sum; a total's key is `(total)`).
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
            w.write_record(&header)
                .map_err(|e| QueryError::Engine(e.to_string()))?;
            for cell in &agg.cells {
                let mut rec: Vec<String> = cell
                    .key
                    .iter()
                    .map(|k| k.clone().unwrap_or_else(|| "(total)".into()))
                    .collect();
                rec.push(cell.count.to_string());
                if agg.measure.is_some() {
                    rec.push(cell.sum.map(|s| s.to_string()).unwrap_or_default());
                }
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
    Ok(agg.cells.len() as u64)
}

/// Whether any row (the reader may see) holds `value` in `column`,
/// compared as text: the index level's answer, and nothing more.
pub async fn exists(source: Source<'_>, column: &str, value: &str) -> Result<bool> {
    let allowed = source.columns;
    let (_ctx, df) = frame(source).await?;
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
pub async fn dp_input(source: Source<'_>, column: Option<&str>, numeric: bool) -> Result<DpInput> {
    let allowed = source.columns;
    let (ctx, df) = frame(source).await?;
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
pub async fn export_pseudonymised(
    source: Source<'_>,
    personal: &[String],
    pseudonymiser: Arc<citytrust_privacy::pseudonym::Pseudonymiser>,
    slice: Slice,
    format: OutputFormat,
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    let (_ctx, df) = frame(source).await?;
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
    /// Columns left out: all but the declared quasi-identifiers and
    /// non-identifying columns.
    pub dropped: Vec<String>,
    pub quasi_identifiers: Vec<String>,
}

/// How rows are anonymised: the owner's declarations and the trust's
/// parameters (see [`export_anonymised`]).
#[derive(Clone, Copy)]
pub struct Anonymisation<'a> {
    pub quasi: &'a [String],
    pub non_identifying: &'a [String],
    /// The subject key, if the dataset has one: k counts distinct values of it.
    pub subject: Option<&'a str>,
    pub k: usize,
    pub suppression_percent: f64,
}

/// Anonymised rows: only the declared quasi-identifiers (generalised over
/// hierarchies built from the values) and the columns declared
/// non-identifying (as they are); every other column is left out. Every
/// released combination of quasi-identifiers is shared by at least `k`
/// people — distinct values of the `subject` column when the dataset has a
/// subject key (one person's many rows are not many people), rows otherwise
/// — with at most `suppression_percent` of rows left out to get there.
pub async fn export_anonymised(
    source: Source<'_>,
    how: Anonymisation<'_>,
    format: OutputFormat,
    out: &mut (dyn Write + Send),
) -> Result<(u64, AnonymisedRead)> {
    let Anonymisation {
        quasi,
        non_identifying,
        subject,
        k,
        suppression_percent,
    } = how;
    let allowed = source.columns;
    // The subject key is read (to count people) even when the reader may
    // not see it; it is never released.
    let read_columns: Option<Vec<String>> = allowed.map(|a| {
        let mut c = a.to_vec();
        if let Some(s) = subject
            && !c.iter().any(|x| x == s)
        {
            c.push(s.to_string());
        }
        c
    });
    let (_ctx, df) = frame(Source {
        columns: read_columns.as_deref(),
        ..source
    })
    .await?;
    let names: Vec<String> = df
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| allowed.is_none_or(|a| a.contains(n)))
        .collect();
    let keep: Vec<String> = names
        .iter()
        .filter(|n| quasi.contains(n) || non_identifying.contains(n))
        .cloned()
        .collect();
    let dropped: Vec<String> = names
        .iter()
        .filter(|n| !keep.contains(n))
        .cloned()
        .collect();
    if keep.is_empty() {
        return Err(QueryError::Unsupported(
            "no column you may read is declared quasi-identifying or non-identifying: \
             nothing can be released as anonymised rows"
                .into(),
        ));
    }
    let quasi: Vec<String> = keep.iter().filter(|n| quasi.contains(n)).cloned().collect();
    let mut read: Vec<&str> = keep.iter().map(String::as_str).collect();
    let subject_at = match subject {
        Some(s) if df.schema().field_with_unqualified_name(s).is_ok() => {
            read.push(s);
            Some(read.len() - 1)
        }
        _ => None,
    };
    let df = df.select_columns(&read)?;
    let rows = df.clone().count().await?;
    if rows > MAX_ANONYMISE_ROWS {
        return Err(QueryError::Unsupported(format!(
            "{rows} rows are too many to anonymise on the read path (at most {MAX_ANONYMISE_ROWS}); \
             ask the owner for a prepared extract (citytrust anonymise)"
        )));
    }
    // Every read column as text, in memory.
    let mut columns: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(rows); read.len()];
    for batch in df.collect().await? {
        for (i, col) in columns.iter_mut().enumerate() {
            let a = strings(batch.column(i))?;
            col.extend(a.iter().map(|v| v.map(str::to_string)));
        }
    }
    let people: Option<Vec<Option<String>>> = subject_at.map(|i| columns.remove(i));
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
        // k counts people: raise the row threshold until every released
        // class holds k distinct subjects (at k × the most rows one person
        // has it must, so this ends).
        let most_rows = people.as_ref().map_or(1, |p| most_rows_per_person(p));
        let mut k_rows = k;
        let result = loop {
            let result = citytrust_privacy::anonymise(
                &qis,
                None,
                citytrust_privacy::Criteria {
                    k: k_rows,
                    suppression_percent,
                    l_diversity: None,
                    t_closeness: None,
                },
            )
            .map_err(|e| QueryError::Unsupported(format!("no anonymised release: {e}")))?;
            let fewest = match &people {
                Some(p) => fewest_people_per_class(&result, p, qi_index.len(), rows),
                None => k,
            };
            if fewest >= k {
                break result;
            }
            if k_rows >= k.saturating_mul(most_rows) {
                return Err(QueryError::Unsupported(format!(
                    "no release keeps {k} different people in every group within the \
                     suppression limit"
                )));
            }
            k_rows = (k_rows * 2).min(k.saturating_mul(most_rows));
        };
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

/// The most rows any one subject has.
fn most_rows_per_person(people: &[Option<String>]) -> usize {
    let mut counts: ahash::AHashMap<&str, usize> = ahash::AHashMap::new();
    for p in people.iter().flatten() {
        *counts.entry(p.as_str()).or_default() += 1;
    }
    counts.values().copied().max().unwrap_or(1).max(1)
}

/// The fewest distinct subjects in any released class of `result`.
fn fewest_people_per_class(
    result: &citytrust_privacy::Anonymised<'_>,
    people: &[Option<String>],
    qis: usize,
    rows: usize,
) -> usize {
    // A row naming no one counts as a person of its own.
    let mut classes: ahash::AHashMap<Vec<&str>, (ahash::AHashSet<&str>, usize)> =
        ahash::AHashMap::new();
    for (r, person) in people.iter().enumerate().take(rows) {
        if result.suppressed(r) {
            continue;
        }
        let key: Vec<&str> = (0..qis).map(|q| result.label(r, q).unwrap_or("")).collect();
        let (set, unnamed) = classes.entry(key).or_default();
        match person {
            Some(p) => {
                set.insert(p.as_str());
            }
            None => *unnamed += 1,
        }
    }
    classes
        .values()
        .map(|(s, unnamed)| s.len() + unnamed)
        .min()
        .unwrap_or(usize::MAX)
}
