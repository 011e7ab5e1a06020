//! The data quality of one stored version (R-CAT-4), measured with DataFusion
//! over its Parquet file: completeness per column, validity against declared
//! ranges, uniqueness of declared keys, outliers (Tukey's far fences,
//! 3 × IQR beyond the quartiles), and for date/time columns the span covered,
//! the share of a declared period it covers and the largest gap.

use std::collections::BTreeMap;
use std::path::Path;

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::{ColumnInfo, ColumnType, Result};

/// What the owner declares about a dataset's content, checked at every upload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityRules {
    /// Columns whose values together identify a row; duplicates are counted.
    #[serde(default)]
    pub key_columns: Vec<String>,
    /// Valid ranges per numeric column (inclusive); values outside are counted.
    #[serde(default)]
    pub ranges: BTreeMap<String, Range>,
    /// The period the data should cover (YYYY-MM-DD), to measure coverage.
    #[serde(default)]
    pub period_start: Option<String>,
    #[serde(default)]
    pub period_end: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
}

/// The machine-readable quality statement of one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityStatement {
    pub rows: u64,
    pub columns: Vec<ColumnQuality>,
    /// Duplicate key values, when key columns are declared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<KeyQuality>,
    /// Re-identification risk on the declared quasi-identifiers (counts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<crate::risk::RiskStatement>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnQuality {
    pub name: String,
    #[serde(rename = "type")]
    pub column_type: ColumnType,
    pub nulls: u64,
    /// Share of rows with a value, 0..1.
    pub completeness: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stddev: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outliers: Option<Outliers>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validity: Option<Validity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<TimeQuality>,
}

/// Values beyond Tukey's far fences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outliers {
    pub count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_fence: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_fence: Option<f64>,
    /// The most extreme values found beyond the fences.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<f64>,
}

/// Values outside the owner's declared range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Validity {
    pub range: Range,
    pub violations: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeQuality {
    /// The largest step between consecutive distinct values, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub largest_gap_seconds: Option<i64>,
    /// Share of the declared period that lies between the first and last value, 0..1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period_coverage: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyQuality {
    pub columns: Vec<String>,
    /// Rows whose key value appears more than once.
    pub duplicate_rows: u64,
    pub unique: bool,
}

impl QualityStatement {
    /// The statement without values from the data (minimum, maximum, mean,
    /// spread, outlier fences and examples, time gaps and coverage), for someone who may see that
    /// the dataset exists but not read it. Counts and shares stay.
    pub fn without_values(mut self) -> QualityStatement {
        for c in &mut self.columns {
            c.min = None;
            c.max = None;
            c.mean = None;
            c.stddev = None;
            // The largest gap and the period covered are read off the
            // values (first, last, consecutive times): withheld too.
            c.time = None;
            if let Some(o) = &mut c.outliers {
                o.low_fence = None;
                o.high_fence = None;
                o.examples.clear();
            }
        }
        self
    }
}

/// Quote a column name for SQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn scalar_string(batch: &RecordBatch, i: usize) -> Option<String> {
    let col = batch.column(i);
    if col.is_null(0) {
        return None;
    }
    array_value_to_string(col, 0).ok()
}

fn scalar_f64(batch: &RecordBatch, i: usize) -> Option<f64> {
    scalar_string(batch, i).and_then(|s| s.parse().ok())
}

fn scalar_u64(batch: &RecordBatch, i: usize) -> u64 {
    scalar_string(batch, i)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn one_row(ctx: &SessionContext, sql: &str) -> Result<Option<RecordBatch>> {
    let batches = ctx.sql(sql).await?.collect().await?;
    Ok(batches.into_iter().find(|b| b.num_rows() > 0))
}

/// Aggregates planned in one query at most: planning grows faster than the
/// number of expressions, so a wide table is measured a slice at a time.
const EXPRESSIONS_PER_QUERY: usize = 200;

/// `SELECT exprs FROM v` as one row, run a slice of expressions at a time
/// and put back together in order.
async fn one_row_of(ctx: &SessionContext, exprs: &[String]) -> Result<Option<RecordBatch>> {
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (i, chunk) in exprs.chunks(EXPRESSIONS_PER_QUERY).enumerate() {
        let aliased: Vec<String> = chunk
            .iter()
            .enumerate()
            .map(|(j, e)| format!("{e} AS e{}", i * EXPRESSIONS_PER_QUERY + j))
            .collect();
        let Some(batch) = one_row(ctx, &format!("SELECT {} FROM v", aliased.join(", "))).await?
        else {
            return Ok(None);
        };
        fields.extend(batch.schema().fields().iter().cloned());
        columns.extend(batch.columns().iter().cloned());
    }
    let schema = std::sync::Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
    Ok(Some(RecordBatch::try_new(schema, columns)?))
}

/// Working memory of one measurement; beyond it, sorts and groupings spill to disk.
const MEASURE_MEMORY: usize = 96 * 1024 * 1024;

/// Measure the version stored at `parquet`.
pub async fn measure(
    parquet: &Path,
    columns: &[ColumnInfo],
    rules: &QualityRules,
) -> Result<QualityStatement> {
    // Sorting distinct times and grouping keys grows with the data: a spilling
    // pool keeps the measurement's memory bounded whatever the file's size.
    let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_memory_pool(std::sync::Arc::new(
            datafusion::execution::memory_pool::FairSpillPool::new(MEASURE_MEMORY),
        ))
        .build_arc()?;
    let ctx = SessionContext::new_with_config_rt(crate::export::config(), runtime);
    let path = parquet.to_string_lossy().to_string();
    ctx.register_parquet("v", &path, ParquetReadOptions::default())
        .await?;

    // Pass 1: counts, extremes, moments and quartiles of every column.
    let mut exprs = vec!["COUNT(*)".to_string()];
    let mut slots = Vec::new(); // per column: index of its first expression
    for c in columns {
        let q = quote_ident(&c.name);
        slots.push(exprs.len());
        exprs.push(format!("COUNT({q})"));
        match c.column_type {
            ColumnType::Integer | ColumnType::Float => {
                exprs.push(format!("MIN({q})"));
                exprs.push(format!("MAX({q})"));
                exprs.push(format!("AVG(CAST({q} AS DOUBLE))"));
                exprs.push(format!("STDDEV(CAST({q} AS DOUBLE))"));
                exprs.push(format!(
                    "approx_percentile_cont(0.25) WITHIN GROUP (ORDER BY CAST({q} AS DOUBLE))"
                ));
                exprs.push(format!(
                    "approx_percentile_cont(0.75) WITHIN GROUP (ORDER BY CAST({q} AS DOUBLE))"
                ));
            }
            ColumnType::Date | ColumnType::Timestamp => {
                exprs.push(format!("MIN({q})"));
                exprs.push(format!("MAX({q})"));
            }
            ColumnType::Boolean | ColumnType::Text => {}
        }
    }
    let Some(first) = one_row_of(&ctx, &exprs).await? else {
        return Ok(QualityStatement {
            rows: 0,
            columns: Vec::new(),
            keys: None,
            risk: None,
        });
    };
    let rows = scalar_u64(&first, 0);
    let mut out = Vec::new();
    let mut fences = Vec::new();
    for (c, &slot) in columns.iter().zip(&slots) {
        let present = scalar_u64(&first, slot);
        let nulls = rows.saturating_sub(present);
        let mut q = ColumnQuality {
            name: c.name.clone(),
            column_type: c.column_type,
            nulls,
            completeness: if rows == 0 {
                1.0
            } else {
                present as f64 / rows as f64
            },
            min: None,
            max: None,
            mean: None,
            stddev: None,
            outliers: None,
            validity: None,
            time: None,
        };
        if c.column_type.is_numeric() || c.column_type.is_temporal() {
            q.min = scalar_string(&first, slot + 1);
            q.max = scalar_string(&first, slot + 2);
        }
        if c.column_type.is_numeric() {
            q.mean = scalar_f64(&first, slot + 3).filter(|v| v.is_finite());
            q.stddev = scalar_f64(&first, slot + 4).filter(|v| v.is_finite());
            if let (Some(q1), Some(q3)) =
                (scalar_f64(&first, slot + 5), scalar_f64(&first, slot + 6))
            {
                let iqr = q3 - q1;
                fences.push((out.len(), q1 - 3.0 * iqr, q3 + 3.0 * iqr));
            }
        }
        out.push(q);
    }

    // Pass 2: outliers beyond the fences and values outside declared ranges.
    let mut exprs = Vec::new();
    let mut wants = Vec::new();
    for &(i, lo, hi) in &fences {
        let q = quote_ident(&out[i].name);
        wants.push(("outliers", i, lo, hi));
        exprs.push(format!(
            "SUM(CASE WHEN CAST({q} AS DOUBLE) < {lo:?} OR CAST({q} AS DOUBLE) > {hi:?} THEN 1 ELSE 0 END)"
        ));
    }
    for (name, range) in &rules.ranges {
        let Some(i) = out
            .iter()
            .position(|c| &c.name == name && c.column_type.is_numeric())
        else {
            continue;
        };
        let q = quote_ident(name);
        let lo = range.min.unwrap_or(f64::NEG_INFINITY);
        let hi = range.max.unwrap_or(f64::INFINITY);
        let mut cond = Vec::new();
        if let Some(min) = range.min {
            cond.push(format!("CAST({q} AS DOUBLE) < {min:?}"));
        }
        if let Some(max) = range.max {
            cond.push(format!("CAST({q} AS DOUBLE) > {max:?}"));
        }
        if cond.is_empty() {
            continue;
        }
        wants.push(("range", i, lo, hi));
        exprs.push(format!(
            "SUM(CASE WHEN {} THEN 1 ELSE 0 END)",
            cond.join(" OR ")
        ));
    }
    if !exprs.is_empty()
        && let Some(second) = one_row_of(&ctx, &exprs).await?
    {
        for (k, &(what, i, lo, hi)) in wants.iter().enumerate() {
            let count = scalar_u64(&second, k);
            if what == "outliers" {
                let examples = if count > 0 {
                    outlier_examples(&ctx, &out[i].name, lo, hi).await?
                } else {
                    Vec::new()
                };
                out[i].outliers = Some(Outliers {
                    count,
                    low_fence: Some(lo),
                    high_fence: Some(hi),
                    examples,
                });
            } else if let Some(range) = rules.ranges.get(&out[i].name) {
                out[i].validity = Some(Validity {
                    range: *range,
                    violations: count,
                });
            }
        }
    }

    // Time: the largest gap between consecutive distinct values, and coverage of the declared period.
    for c in out.iter_mut().filter(|c| c.column_type.is_temporal()) {
        let q = quote_ident(&c.name);
        let seconds = if c.column_type == ColumnType::Date {
            "CAST(CAST(t AS TIMESTAMP) AS BIGINT) / 1000000000".to_string()
        } else {
            "CAST(t AS BIGINT) / 1000000".to_string()
        };
        if let Some((f, l, gap)) = time_extent(&ctx, &q, &seconds).await? {
            let coverage = match period(rules) {
                Some((ps, pe)) if pe > ps => {
                    let covered = (l.min(pe) - f.max(ps)).max(0);
                    Some(covered as f64 / (pe - ps) as f64)
                }
                _ => None,
            };
            c.time = Some(TimeQuality {
                largest_gap_seconds: gap,
                period_coverage: coverage,
            });
        }
    }

    // Keys.
    let keys = if rules.key_columns.is_empty() {
        None
    } else {
        let cols: Vec<String> = rules.key_columns.iter().map(|k| quote_ident(k)).collect();
        let known = rules
            .key_columns
            .iter()
            .all(|k| columns.iter().any(|c| &c.name == k));
        if known {
            let sql = format!(
                "SELECT COALESCE(SUM(n), 0) FROM (SELECT COUNT(*) AS n FROM v GROUP BY {} HAVING COUNT(*) > 1)",
                cols.join(", ")
            );
            let duplicate_rows = match one_row(&ctx, &sql).await? {
                Some(b) => scalar_u64(&b, 0),
                None => 0,
            };
            Some(KeyQuality {
                columns: rules.key_columns.clone(),
                duplicate_rows,
                unique: duplicate_rows == 0,
            })
        } else {
            None
        }
    };

    Ok(QualityStatement {
        rows,
        columns: out,
        keys,
        risk: None,
    })
}

/// Buckets for the largest-gap measure: the gap found is exact whenever it is
/// at least (last − first) / `GAP_BUCKETS` seconds — every gap worth reporting
/// (a year of data: from 31 s up; under 12 days of data: to the second) — and
/// memory stays at 16 MiB whatever the number of rows: no sort of every value.
const GAP_BUCKETS: i64 = 1 << 20;

/// First and last value (seconds) of a time column and the largest step
/// between consecutive distinct values (`None` with fewer than two).
async fn time_extent(
    ctx: &SessionContext,
    q: &str,
    seconds: &str,
) -> Result<Option<(i64, i64, Option<i64>)>> {
    let values =
        format!("SELECT {seconds} AS s FROM (SELECT {q} AS t FROM v WHERE {q} IS NOT NULL)");
    let Some(b) = one_row(ctx, &format!("SELECT MIN(s), MAX(s) FROM ({values})")).await? else {
        return Ok(None);
    };
    let (Some(first), Some(last)) = (
        scalar_string(&b, 0).and_then(|s| s.parse::<i64>().ok()),
        scalar_string(&b, 1).and_then(|s| s.parse::<i64>().ok()),
    ) else {
        return Ok(None);
    };
    if first == last {
        return Ok(Some((first, last, None)));
    }
    let span = last.saturating_sub(first).max(1);
    let width = (span / GAP_BUCKETS + 1).max(1);
    let buckets = usize::try_from(span / width + 1).unwrap_or(1);
    let mut low = vec![i64::MAX; buckets];
    let mut high = vec![i64::MIN; buckets];
    let mut stream = ctx.sql(&values).await?.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let column = datafusion::arrow::compute::cast(
            batch.column(0),
            &datafusion::arrow::datatypes::DataType::Int64,
        )?;
        let column = column
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
            .ok_or_else(|| crate::QueryError::Engine("time gap: not an integer column".into()))?;
        for s in column.iter().flatten() {
            let i = usize::try_from((s - first) / width)
                .unwrap_or(0)
                .min(buckets - 1);
            low[i] = low[i].min(s);
            high[i] = high[i].max(s);
        }
    }
    let mut gap: Option<i64> = None;
    let mut previous: Option<i64> = None;
    for (lo, hi) in low.iter().zip(&high) {
        if *lo == i64::MAX {
            continue;
        }
        // Steps inside a bucket are shorter than its width: only the steps
        // across buckets can be the largest gap worth reporting.
        if let Some(p) = previous {
            gap = Some(gap.map_or(lo - p, |g| g.max(lo - p)));
        }
        previous = Some(*hi);
    }
    Ok(Some((first, last, gap)))
}

async fn outlier_examples(ctx: &SessionContext, name: &str, lo: f64, hi: f64) -> Result<Vec<f64>> {
    let q = quote_ident(name);
    let sql = format!(
        "SELECT DISTINCT CAST({q} AS DOUBLE) AS x FROM v WHERE CAST({q} AS DOUBLE) < {lo:?} OR CAST({q} AS DOUBLE) > {hi:?} \
         ORDER BY ABS(x - {mid:?}) DESC LIMIT 5",
        mid = (lo + hi) / 2.0
    );
    let batches = ctx.sql(&sql).await?.collect().await?;
    let mut out = Vec::new();
    for b in batches {
        for row in 0..b.num_rows() {
            if let Some(v) = array_value_to_string(b.column(0), row)
                .ok()
                .and_then(|s| s.parse().ok())
            {
                out.push(v);
            }
        }
    }
    Ok(out)
}

/// The declared period in seconds since the epoch.
fn period(rules: &QualityRules) -> Option<(i64, i64)> {
    let parse = |s: &str| {
        chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|d| d.and_utc().timestamp())
    };
    let start = parse(rules.period_start.as_deref()?)?;
    let end = parse(rules.period_end.as_deref()?)? + 86_400;
    Some((start, end))
}
