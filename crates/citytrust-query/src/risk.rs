//! The re-identification risk of a stored version on its declared
//! quasi-identifiers (R-PRV-6), measured at upload with DataFusion: the class
//! sizes come from one `GROUP BY` per combination of quasi-identifiers, the
//! figures from `citytrust_privacy::risk`. Only counts leave here, never a
//! value from the data, so the statement is public like the quality shares.

use std::path::Path;

use citytrust_privacy::RiskReport;
use datafusion::arrow::array::{Array, Int64Array};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use serde::{Deserialize, Serialize};

use crate::quality::quote_ident;
use crate::{ColumnInfo, Result};

/// Up to this many quasi-identifiers, every combination of one to three of
/// them is measured too (at most 92 combinations); above it, one at a time.
const COMBINATIONS_UP_TO: usize = 8;
/// Above this many rows only single columns are measured beside the whole set
/// (each combination is one scan of the version).
const COMBINATIONS_ROWS: u64 = 1_000_000;

/// The risk statement of one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskStatement {
    /// The declared quasi-identifiers present in the version.
    pub quasi_identifiers: Vec<String>,
    /// Declared quasi-identifiers the version has no column for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// The risk on all of them together.
    pub overall: RiskReport,
    /// Smaller combinations (what an attacker who knows only some of them
    /// could do), the most singling-out first.
    pub combinations: Vec<Combination>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Combination {
    pub columns: Vec<String>,
    pub equivalence_classes: usize,
    pub unique_records: usize,
    pub uniqueness: f64,
    pub records_at_risk: usize,
}

/// Measures the risk of the version at `parquet` on `declared`, or `None`
/// when none of them is a column of it.
pub async fn measure_risk(
    parquet: &Path,
    columns: &[ColumnInfo],
    declared: &[String],
    rows: u64,
) -> Result<Option<RiskStatement>> {
    let (present, missing): (Vec<String>, Vec<String>) = declared
        .iter()
        .cloned()
        .partition(|d| columns.iter().any(|c| &c.name == d));
    if present.is_empty() {
        return Ok(None);
    }
    let ctx = SessionContext::new_with_config(crate::export::config());
    ctx.register_parquet(
        "v",
        parquet.to_string_lossy().as_ref(),
        ParquetReadOptions::default(),
    )
    .await?;
    let overall = class_risk(&ctx, &present).await?;
    let mut combinations = Vec::new();
    let most = if present.len() <= COMBINATIONS_UP_TO && rows <= COMBINATIONS_ROWS {
        3
    } else {
        1
    };
    for size in 1..=most.min(present.len().saturating_sub(1)) {
        for pick in choose(present.len(), size) {
            let cols: Vec<String> = pick.iter().map(|i| present[*i].clone()).collect();
            let r = class_risk(&ctx, &cols).await?;
            combinations.push(Combination {
                columns: cols,
                equivalence_classes: r.equivalence_classes,
                unique_records: r.unique_records,
                uniqueness: r.uniqueness,
                records_at_risk: r.prosecutor.records_at_risk,
            });
        }
    }
    combinations.sort_by(|a, b| {
        b.unique_records
            .cmp(&a.unique_records)
            .then(a.columns.len().cmp(&b.columns.len()))
            .then(a.columns.cmp(&b.columns))
    });
    Ok(Some(RiskStatement {
        quasi_identifiers: present,
        missing,
        overall,
        combinations,
    }))
}

/// The risk on `cols`: class sizes, counted by size.
async fn class_risk(ctx: &SessionContext, cols: &[String]) -> Result<RiskReport> {
    let list = cols
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT n, COUNT(*) AS classes FROM (SELECT COUNT(*) AS n FROM v GROUP BY {list}) GROUP BY n"
    );
    let batches = ctx.sql(&sql).await?.collect().await?;
    let mut sizes = Vec::new();
    let mut records = 0usize;
    for batch in &batches {
        let (Some(n), Some(k)) = (
            batch.column(0).as_any().downcast_ref::<Int64Array>(),
            batch.column(1).as_any().downcast_ref::<Int64Array>(),
        ) else {
            continue;
        };
        for i in 0..batch.num_rows() {
            let (size, classes) = (n.value(i).max(0) as usize, k.value(i).max(0) as usize);
            records += size * classes;
            let size = u32::try_from(size).unwrap_or(u32::MAX);
            sizes.extend(std::iter::repeat_n(size, classes));
        }
    }
    Ok(citytrust_privacy::risk_of_sizes(&sizes, records, 1.0))
}

/// Every `k`-subset of `0..n`, in lexicographic order.
fn choose(n: usize, k: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut pick: Vec<usize> = (0..k).collect();
    if k == 0 || k > n {
        return out;
    }
    loop {
        out.push(pick.clone());
        // The rightmost index that can still move right.
        let Some(i) = (0..k).rev().find(|&i| pick[i] < n - k + i) else {
            return out;
        };
        pick[i] += 1;
        for j in i + 1..k {
            pick[j] = pick[j - 1] + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choose_lists_every_subset_once() {
        assert_eq!(choose(4, 2).len(), 6);
        assert_eq!(choose(6, 3).len(), 20);
        assert_eq!(choose(3, 3), vec![vec![0, 1, 2]]);
        assert!(choose(2, 3).is_empty());
        let mut all = choose(5, 2);
        all.dedup();
        assert_eq!(all.len(), 10);
    }
}
