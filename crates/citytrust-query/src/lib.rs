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
pub mod governed;
pub mod ingest;
pub mod levels;
pub mod limits;
pub mod objects;
pub mod preview;
pub mod quality;
pub mod risk;
pub mod sql;
pub mod subjects;
mod values;
pub mod version;

use std::fmt;

pub use citytrust_model::ProblemCode;
use serde::{Deserialize, Serialize};
pub use version::VersionChoice;

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

/// Failures of this crate. Messages are safe to show to the person who asked,
/// except [`QueryError::Engine`] and the detail of [`QueryError::Failed`],
/// which may quote stored values and go to the server's log only.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The input is unusable as a whole (not CSV, empty, bad header, …).
    #[error("{0}")]
    Unreadable(String),
    /// Rows were bad and the owner asked to reject the whole upload.
    #[error("{} row(s) could not be read", .total)]
    Rejected { errors: Vec<RowError>, total: u64 },
    /// A SQL statement CityTrust will not run (written by CityTrust).
    #[error("{0}")]
    Sql(String),
    /// A query refused before it ran, with a stable code: too long, too
    /// deep, not a SELECT, a syntax error, an unknown name. The message is
    /// CityTrust's and quotes only the query.
    #[error("{message}")]
    Refused { code: ProblemCode, message: String },
    /// A read that cannot be served in the asked form.
    #[error("{0}")]
    Unsupported(String),
    #[error("the query took longer than the limit of {0} s")]
    Timeout(u64),
    #[error("storage error: {0}")]
    Io(#[from] std::io::Error),
    /// The object store holding versions did not answer (or failed): the
    /// text, for the server log only, says how.
    #[error("the object store is unavailable: {0}")]
    StoreUnavailable(String),
    /// The engine failed (planning or running): what kind of failure, in
    /// CityTrust's words, and the engine's own text for the server log.
    #[error("{}", .0.message)]
    Failed(EngineFailure),
    /// Something in this crate went wrong (never shown).
    #[error("engine error: {0}")]
    Engine(String),
}

impl QueryError {
    pub fn refused(code: ProblemCode, message: impl Into<String>) -> QueryError {
        QueryError::Refused {
            code,
            message: message.into(),
        }
    }
}

/// An engine failure as CityTrust describes it: a stable code and a message
/// chosen by its kind alone (so it carries nothing of the data), and the
/// engine's text (`detail`), which may quote a value and is never sent.
#[derive(Debug, Clone)]
pub struct EngineFailure {
    pub code: ProblemCode,
    pub message: String,
    pub detail: String,
}

/// A size limit a function's result hit (see [`limits`]): an error of our own
/// inside DataFusion's, recognised again by [`EngineFailure::of`].
#[derive(Debug)]
pub struct LimitExceeded(pub String);

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for LimitExceeded {}

impl EngineFailure {
    /// Describe `e` by its kind. Planning errors (names, types) depend only
    /// on the query and the visible columns; running errors may depend on
    /// values, so their message names the kind of operation, never a value.
    pub fn of(e: &datafusion::error::DataFusionError) -> EngineFailure {
        use datafusion::arrow::error::ArrowError;
        use datafusion::common::SchemaError;
        use datafusion::error::DataFusionError as D;
        let detail = e.to_string();
        if from_object_store(e) {
            return EngineFailure {
                code: ProblemCode::StoreUnavailable,
                message: "the store holding the dataset's versions did not answer; nothing was \
                          served. Try again shortly"
                    .into(),
                detail,
            };
        }
        let (code, message): (ProblemCode, String) = match e.find_root() {
            D::ArrowError(a, _) => match a.as_ref() {
                ArrowError::CastError(_) | ArrowError::ParseError(_) => (
                    ProblemCode::CastFailed,
                    "a value could not be converted to the type asked for (by a CAST, or by a \
                     function that reads numbers or dates from text); TRY_CAST gives NULL instead"
                        .into(),
                ),
                ArrowError::DivideByZero => (
                    ProblemCode::DivisionByZero,
                    "the query divided by zero; NULLIF(divisor, 0) gives NULL instead".into(),
                ),
                ArrowError::ArithmeticOverflow(_) => (
                    ProblemCode::ArithmeticOverflow,
                    "a calculation went beyond the range of its number type; cast to a wider \
                     type (BIGINT, DOUBLE) first"
                        .into(),
                ),
                ArrowError::MemoryError(_) => (
                    ProblemCode::QueryTooLarge,
                    "the query needed more memory than the trust gives a query".into(),
                ),
                _ => (
                    ProblemCode::QueryFailed,
                    "a function or operator of the query failed on an argument it cannot use \
                     (a number out of range, a date or format it cannot read)"
                        .into(),
                ),
            },
            D::ResourcesExhausted(_) => (
                ProblemCode::QueryTooLarge,
                "the query needed more memory or temporary disk than the trust gives a query; \
                 aggregate or filter it, or add a LIMIT"
                    .into(),
            ),
            D::External(inner) if inner.downcast_ref::<LimitExceeded>().is_some() => {
                (ProblemCode::ResultTooLarge, inner.to_string())
            }
            D::SchemaError(s, _) => match s.as_ref() {
                SchemaError::FieldNotFound { field, .. } => (
                    ProblemCode::UnknownColumn,
                    format!(
                        "no column {:?} in the tables of this query (that you may read)",
                        field.name
                    ),
                ),
                SchemaError::AmbiguousReference { field } => (
                    ProblemCode::AmbiguousColumn,
                    format!(
                        "column {:?} is in more than one table of the query: name its table",
                        field.name
                    ),
                ),
                _ => (
                    ProblemCode::InvalidQuery,
                    "the query names a column twice or in a way that cannot be resolved".into(),
                ),
            },
            D::SQL(..) => (ProblemCode::SqlSyntax, "the SQL could not be parsed".into()),
            D::NotImplemented(_) => (
                ProblemCode::SqlUnsupported,
                "the query uses SQL that the trust's engine does not support".into(),
            ),
            D::Plan(m) if m.contains("Invalid function") || m.contains("No function matches") => (
                ProblemCode::UnknownFunction,
                "the query calls a function that does not exist, or with arguments it does not \
                 take"
                    .into(),
            ),
            D::Plan(_) => (
                ProblemCode::InvalidQuery,
                "the query could not be planned: a type or a name does not fit (a function's \
                 arguments, text compared with a number, a selected column missing from GROUP BY)"
                    .into(),
            ),
            _ => (
                ProblemCode::QueryFailed,
                "the query failed while it ran".into(),
            ),
        };
        EngineFailure {
            code,
            message,
            detail,
        }
    }
}

/// Whether the object store failed under `e` (DataFusion's own variant, or
/// wrapped by the Parquet reader or an external error, at any depth).
fn from_object_store(e: &datafusion::error::DataFusionError) -> bool {
    if matches!(
        e.find_root(),
        datafusion::error::DataFusionError::ObjectStore(_)
    ) {
        return true;
    }
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    for _ in 0..16 {
        let Some(err) = next else { return false };
        if err.downcast_ref::<object_store::Error>().is_some() {
            return true;
        }
        next = err.source();
    }
    false
}

impl From<datafusion::error::DataFusionError> for QueryError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        QueryError::Failed(EngineFailure::of(&e))
    }
}

impl From<datafusion::arrow::error::ArrowError> for QueryError {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        QueryError::from(datafusion::error::DataFusionError::from(e))
    }
}

impl From<datafusion::parquet::errors::ParquetError> for QueryError {
    fn from(e: datafusion::parquet::errors::ParquetError) -> Self {
        QueryError::Engine(e.to_string())
    }
}

pub type Result<T, E = QueryError> = std::result::Result<T, E>;
