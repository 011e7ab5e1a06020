//! Content out: a stream of Arrow batches written as CSV, JSON, NDJSON,
//! GeoJSON or Parquet. Used for downloads and for SQL results alike.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Float64Type, Schema, SchemaRef};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::ingest::GEOMETRY_COLUMN;
use crate::{QueryError, Result};

/// The formats content is served in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    #[default]
    Csv,
    Json,
    Ndjson,
    Geojson,
    Parquet,
}

impl OutputFormat {
    pub fn media_type(self) -> &'static str {
        match self {
            OutputFormat::Csv => "text/csv; charset=utf-8",
            OutputFormat::Json => "application/json",
            OutputFormat::Ndjson => "application/x-ndjson",
            OutputFormat::Geojson => "application/geo+json",
            OutputFormat::Parquet => "application/vnd.apache.parquet",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Csv => "csv",
            OutputFormat::Json => "json",
            OutputFormat::Ndjson => "ndjson",
            OutputFormat::Geojson => "geojson",
            OutputFormat::Parquet => "parquet",
        }
    }
}

/// Which rows of a version to serve.
#[derive(Debug, Clone, Copy, Default)]
pub struct Slice {
    pub offset: usize,
    pub limit: Option<usize>,
}

/// A session for reading stored versions: few partitions, bounded memory.
pub fn session() -> SessionContext {
    SessionContext::new_with_config(config())
}

/// Reading settings shared by every session: text stays `Utf8` (not views),
/// so what is served has the types that were stored.
pub fn config() -> datafusion::prelude::SessionConfig {
    let mut config = datafusion::prelude::SessionConfig::new()
        .with_target_partitions(2)
        .with_batch_size(8192);
    config
        .options_mut()
        .execution
        .parquet
        .schema_force_view_types = false;
    config
}

/// A stored version as a DataFrame in a fresh session: only `columns`
/// (`None`: all) of the rows `subjects` admits (`None`: all), through the
/// governed scan ([`crate::governed`]).
pub(crate) async fn open_version(
    versions: &crate::VersionStore,
    location: &str,
    columns: Option<&[String]>,
    subjects: Option<&crate::subjects::SubjectFilter>,
) -> Result<(
    datafusion::prelude::SessionContext,
    datafusion::prelude::DataFrame,
)> {
    let ctx = versions.session();
    let table = crate::governed::governed_table(&ctx, location, columns, subjects).await?;
    let df = ctx.read_table(table)?;
    Ok((ctx, df))
}

/// Stream one stored version (a slice of it) into `out` in `format`; returns the rows written.
pub async fn export_version(
    source: crate::governed::Source<'_>,
    slice: Slice,
    format: OutputFormat,
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    let crate::governed::Source {
        versions,
        location,
        columns,
        subjects,
    } = source;
    let (_ctx, df) = open_version(versions, location, columns, subjects).await?;
    let df = if slice.offset > 0 || slice.limit.is_some() {
        df.limit(slice.offset, slice.limit)?
    } else {
        df
    };
    let stream = df.execute_stream().await?;
    write_stream(stream, format, out).await
}

/// Keep only `columns` (those of them this version has, in the version's
/// order); none of them present is an error rather than an empty table.
pub fn project(
    df: datafusion::prelude::DataFrame,
    columns: &[String],
) -> Result<datafusion::prelude::DataFrame> {
    let keep: Vec<String> = df
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|name| columns.iter().any(|c| c == name))
        .collect();
    if keep.is_empty() {
        return Err(QueryError::Sql(
            "none of the columns you may read is in this version".into(),
        ));
    }
    let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
    Ok(df.select_columns(&keep)?)
}

/// Write every batch of `stream` to `out`.
pub async fn write_stream(
    mut stream: SendableRecordBatchStream,
    format: OutputFormat,
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    let schema = stream.schema();
    let mut rows = 0u64;
    match format {
        OutputFormat::Csv => {
            // The header is written even when there are no rows.
            let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
            {
                let mut w = csv_header_writer(&mut *out);
                w.write_record(&names)
                    .map_err(|e| QueryError::Io(std::io::Error::other(e.to_string())))?;
                w.flush()?;
            }
            let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(false)
                .build(&mut *out);
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                writer.write(&batch)?;
            }
        }
        OutputFormat::Json => {
            let mut writer = datafusion::arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, datafusion::arrow::json::writer::JsonArray>(&mut *out);
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                writer.write(&batch)?;
            }
            // Writes `[]` when there were no rows.
            writer.finish()?;
        }
        OutputFormat::Ndjson => {
            let mut writer = datafusion::arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, datafusion::arrow::json::writer::LineDelimited>(&mut *out);
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                writer.write(&batch)?;
            }
            writer.finish()?;
        }
        OutputFormat::Geojson => {
            let geometry = Geometry::find(&schema).ok_or_else(|| {
                QueryError::Unsupported(
                    "this content has no geometry: GeoJSON needs a 'geometry' column or longitude and latitude columns".into(),
                )
            })?;
            out.write_all(b"{\"type\":\"FeatureCollection\",\"features\":[")?;
            let mut first = true;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                write_features(&batch, &geometry, out, &mut first)?;
            }
            out.write_all(b"]}")?;
        }
        OutputFormat::Parquet => {
            let props = WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .build();
            let mut writer = ArrowWriter::try_new(&mut *out, schema.clone(), Some(props))?;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                writer.write(&batch)?;
            }
            writer.close()?;
        }
    }
    out.flush()?;
    Ok(rows)
}

fn csv_header_writer<W: Write>(out: W) -> csv::Writer<W> {
    csv::WriterBuilder::new().from_writer(out)
}

/// Where a row's geometry comes from.
pub(crate) enum Geometry {
    /// GeoJSON text in this column.
    Column(usize),
    /// A point from longitude and latitude columns.
    Point { lon: usize, lat: usize },
}

impl Geometry {
    pub(crate) fn find(schema: &Schema) -> Option<Geometry> {
        let by = |names: &[&str]| {
            schema.fields().iter().position(|f| {
                names.contains(&f.name().to_ascii_lowercase().as_str())
                    && matches!(f.data_type(), DataType::Float64)
            })
        };
        if let Some(i) = schema
            .fields()
            .iter()
            .position(|f| f.name() == GEOMETRY_COLUMN && f.data_type() == &DataType::Utf8)
        {
            return Some(Geometry::Column(i));
        }
        Some(Geometry::Point {
            lon: by(&["longitude", "lon", "lng", "long"])?,
            lat: by(&["latitude", "lat"])?,
        })
    }

    fn skips(&self, i: usize) -> bool {
        match self {
            Geometry::Column(g) => *g == i,
            Geometry::Point { .. } => false,
        }
    }
}

fn write_features(
    batch: &RecordBatch,
    geometry: &Geometry,
    out: &mut (dyn Write + Send),
    first: &mut bool,
) -> Result<()> {
    // Properties: every other column, encoded by the JSON writer one row per line.
    let keep: Vec<usize> = (0..batch.num_columns())
        .filter(|i| !geometry.skips(*i))
        .collect();
    let props = batch.project(&keep)?;
    let mut lines = Vec::new();
    {
        let mut writer = datafusion::arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, datafusion::arrow::json::writer::LineDelimited>(&mut lines);
        writer.write(&props)?;
        writer.finish()?;
    }
    let mut props_lines = lines.split(|b| *b == b'\n');
    for row in 0..batch.num_rows() {
        let properties = props_lines.next().unwrap_or(b"{}");
        if !*first {
            out.write_all(b",")?;
        }
        *first = false;
        out.write_all(b"\n{\"type\":\"Feature\",\"geometry\":")?;
        match geometry {
            Geometry::Column(g) => {
                let col = batch.column(*g).as_string::<i32>();
                if col.is_null(row) || col.value(row).is_empty() {
                    out.write_all(b"null")?;
                } else {
                    out.write_all(col.value(row).as_bytes())?;
                }
            }
            Geometry::Point { lon, lat } => {
                let lon_col = batch.column(*lon).as_primitive::<Float64Type>();
                let lat_col = batch.column(*lat).as_primitive::<Float64Type>();
                if lon_col.is_null(row) || lat_col.is_null(row) {
                    out.write_all(b"null")?;
                } else {
                    write!(
                        out,
                        "{{\"type\":\"Point\",\"coordinates\":[{},{}]}}",
                        lon_col.value(row),
                        lat_col.value(row)
                    )?;
                }
            }
        }
        out.write_all(b",\"properties\":")?;
        out.write_all(if properties.is_empty() {
            b"{}"
        } else {
            properties
        })?;
        out.write_all(b"}")?;
    }
    Ok(())
}

/// The schema of a stored version, from its Parquet footer.
pub fn stored_schema(parquet: &Path) -> Result<SchemaRef> {
    let file = std::fs::File::open(parquet)?;
    let builder =
        datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?;
    Ok(Arc::clone(builder.schema()))
}
