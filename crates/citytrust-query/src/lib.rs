//! Dataset content: every byte of a dataset passes through this crate.
//!
//! - [`ingest`] turns an uploaded file (CSV/TSV, JSON array, NDJSON, GeoJSON,
//!   Parquet) into one immutable Parquet file, streaming with bounded memory,
//!   and reports each bad row with its line and column.
//! - [`quality`] measures a written version (completeness, validity,
//!   uniqueness, outliers, time coverage and gaps) with DataFusion.
//! - [`export`] streams a version out as CSV, JSON, NDJSON, GeoJSON or Parquet.
//! - [`preview`] draws a version's geometry as an SVG map.
//! - [`sql`] runs one read-only `SELECT` over the versions a caller may read.
//! - [`objects`] keeps version files in a local directory or an S3-compatible bucket.
//!
//! No HTTP, no SQL store, no clock: the service crate decides who may read
//! what and logs it; this crate only transforms content.

pub mod export;
pub mod ingest;
pub mod levels;
pub mod objects;
pub mod preview;
pub mod quality;
pub mod risk;
pub mod sql;
pub mod subjects;
mod values;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use datafusion;
pub use ingest::{IngestOptions, IngestReport, OnError, RowError};
pub use objects::VersionStore;
pub use values::{ColumnType, Declared};

/// The formats an upload may come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    Csv,
    Tsv,
    Json,
    Ndjson,
    Geojson,
    Parquet,
}

impl InputFormat {
    /// From a media type (`text/csv; charset=utf-8` → CSV).
    pub fn from_media_type(media_type: &str) -> Option<InputFormat> {
        let essence = media_type.split(';').next()?.trim().to_ascii_lowercase();
        Some(match essence.as_str() {
            "text/csv" | "application/csv" => InputFormat::Csv,
            "text/tab-separated-values" => InputFormat::Tsv,
            "application/json" => InputFormat::Json,
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => {
                InputFormat::Ndjson
            }
            "application/geo+json" => InputFormat::Geojson,
            "application/vnd.apache.parquet" | "application/x-parquet" => InputFormat::Parquet,
            _ => return None,
        })
    }

    /// From a file name's extension (`trips.csv.gz` → CSV; the `.gz` is the caller's).
    pub fn from_file_name(name: &str) -> Option<InputFormat> {
        let name = name.to_ascii_lowercase();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        let ext = name.rsplit('.').next()?;
        Some(match ext {
            "csv" => InputFormat::Csv,
            "tsv" | "tab" => InputFormat::Tsv,
            "json" => InputFormat::Json,
            "ndjson" | "jsonl" => InputFormat::Ndjson,
            "geojson" => InputFormat::Geojson,
            "parquet" => InputFormat::Parquet,
            _ => return None,
        })
    }

    pub fn media_type(self) -> &'static str {
        match self {
            InputFormat::Csv => "text/csv",
            InputFormat::Tsv => "text/tab-separated-values",
            InputFormat::Json => "application/json",
            InputFormat::Ndjson => "application/x-ndjson",
            InputFormat::Geojson => "application/geo+json",
            InputFormat::Parquet => "application/vnd.apache.parquet",
        }
    }
}

impl fmt::Display for InputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InputFormat::Csv => "csv",
            InputFormat::Tsv => "tsv",
            InputFormat::Json => "json",
            InputFormat::Ndjson => "ndjson",
            InputFormat::Geojson => "geojson",
            InputFormat::Parquet => "parquet",
        })
    }
}

/// Writes through to `inner` while hashing (SHA-256) and counting what it writes.
pub struct DigestWriter<W> {
    inner: W,
    hasher: sha2::Sha256,
    bytes: u64,
}

impl<W: std::io::Write> DigestWriter<W> {
    pub fn new(inner: W) -> DigestWriter<W> {
        use sha2::Digest;
        DigestWriter {
            inner,
            hasher: sha2::Sha256::new(),
            bytes: 0,
        }
    }

    /// The inner writer, the bytes written and their SHA-256 in hex.
    pub fn finish(mut self) -> std::io::Result<(W, u64, String)> {
        use sha2::Digest;
        self.inner.flush()?;
        Ok((self.inner, self.bytes, hex::encode(self.hasher.finalize())))
    }
}

impl<W: std::io::Write> std::io::Write for DigestWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A column of a stored version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub column_type: ColumnType,
}

/// Whether content with these columns can be served as GeoJSON: a `geometry`
/// text column, or longitude and latitude number columns (as the export finds them).
pub fn has_geometry(columns: &[ColumnInfo]) -> bool {
    let named = |names: &[&str]| {
        columns.iter().any(|c| {
            names.contains(&c.name.to_ascii_lowercase().as_str())
                && c.column_type == ColumnType::Float
        })
    };
    columns
        .iter()
        .any(|c| c.name == ingest::GEOMETRY_COLUMN && c.column_type == ColumnType::Text)
        || (named(&["longitude", "lon", "lng", "long"]) && named(&["latitude", "lat"]))
}

/// Failures of this crate. Messages are safe to show to the person who asked.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The input is unusable as a whole (not CSV, empty, bad header, …).
    #[error("{0}")]
    Unreadable(String),
    /// Rows were bad and the owner asked to reject the whole upload.
    #[error("{} row(s) could not be read", .total)]
    Rejected { errors: Vec<RowError>, total: u64 },
    /// A SQL statement CityTrust will not run, or one that fails to plan.
    #[error("{0}")]
    Sql(String),
    /// A read that cannot be served in the asked form.
    #[error("{0}")]
    Unsupported(String),
    #[error("the query took longer than the limit of {0} s")]
    Timeout(u64),
    #[error("storage error: {0}")]
    Io(#[from] std::io::Error),
    #[error("engine error: {0}")]
    Engine(String),
}

impl From<datafusion::error::DataFusionError> for QueryError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        QueryError::Engine(e.to_string())
    }
}

impl From<datafusion::arrow::error::ArrowError> for QueryError {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        QueryError::Engine(e.to_string())
    }
}

impl From<datafusion::parquet::errors::ParquetError> for QueryError {
    fn from(e: datafusion::parquet::errors::ParquetError) -> Self {
        QueryError::Engine(e.to_string())
    }
}

pub type Result<T, E = QueryError> = std::result::Result<T, E>;
