//! What the catalogue's interoperable exports — DCAT-AP and the CKAN action
//! API — need beyond the dataset records: a summary of each dataset's latest
//! content, made only of figures that are public (invariant 10: that a
//! version exists, its size, columns and quality shares; never values).

use std::collections::HashMap;

use citytrust_model::Dataset;
use citytrust_query::ColumnInfo;
use citytrust_query::quality::QualityStatement;

use crate::{Result, Service, ServiceError};

/// The latest version of a dataset, as the catalogue may publish it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentSummary {
    pub version: i64,
    pub rows: i64,
    /// Size of the stored Parquet file.
    pub bytes: i64,
    /// SHA-256 (hex) of the stored Parquet file.
    pub sha256: String,
    pub published_at: String,
    pub columns: usize,
    /// Whether the content can be served as GeoJSON.
    pub has_geometry: bool,
    /// Share of cells holding a value, 0..1 (1 when there are no cells).
    pub completeness: f64,
    /// Values beyond Tukey's far fences, over all columns.
    pub outliers: u64,
    /// Values outside the declared valid ranges, over all columns.
    pub out_of_range: u64,
    /// Rows whose declared key appears more than once (`None`: no key declared).
    pub duplicate_key_rows: Option<u64>,
}

impl ContentSummary {
    fn from_parts(
        version: i64,
        rows: i64,
        bytes: i64,
        sha256: String,
        published_at: String,
        columns: &[ColumnInfo],
        quality: &QualityStatement,
    ) -> ContentSummary {
        let cells: u64 = quality.rows.saturating_mul(quality.columns.len() as u64);
        let nulls: u64 = quality.columns.iter().map(|c| c.nulls).sum();
        let completeness = if cells == 0 {
            1.0
        } else {
            1.0 - nulls.min(cells) as f64 / cells as f64
        };
        ContentSummary {
            version,
            rows,
            bytes,
            sha256,
            published_at,
            columns: columns.len(),
            has_geometry: citytrust_query::has_geometry(columns),
            completeness,
            outliers: quality
                .columns
                .iter()
                .filter_map(|c| c.outliers.as_ref().map(|o| o.count))
                .sum(),
            out_of_range: quality
                .columns
                .iter()
                .filter_map(|c| c.validity.as_ref().map(|v| v.violations))
                .sum(),
            duplicate_key_rows: quality.keys.as_ref().map(|k| k.duplicate_rows),
        }
    }
}

impl Service {
    /// Up to `limit` catalogue entries after the id `after`, in id order ("" for the first page).
    pub async fn datasets_after(&self, after: &str, limit: usize) -> Result<Vec<Dataset>> {
        Ok(self
            .store
            .datasets_after(after, limit.min(1000) as i64)
            .await?)
    }

    /// The latest content of each of `dataset_ids` that has any, by dataset id.
    /// Closed datasets carry no content (invariant 6), so none is summarised.
    pub async fn content_summaries(
        &self,
        dataset_ids: &[String],
    ) -> Result<HashMap<String, ContentSummary>> {
        let mut out = HashMap::with_capacity(dataset_ids.len());
        for v in self.store.latest_versions(dataset_ids).await? {
            let columns: Vec<ColumnInfo> = serde_json::from_str(&v.columns)
                .map_err(|e| ServiceError::Internal(format!("stored columns: {e}")))?;
            let quality: QualityStatement = serde_json::from_str(&v.quality)
                .map_err(|e| ServiceError::Internal(format!("stored quality: {e}")))?;
            let summary = ContentSummary::from_parts(
                v.version,
                v.rows,
                v.bytes,
                v.sha256,
                v.created_at,
                &columns,
                &quality,
            );
            out.insert(v.dataset_id, summary);
        }
        Ok(out)
    }
}
