//! From an uploaded file to one Parquet file, streaming.
//!
//! Two passes over the (already spooled) input: the first reads a sample to
//! decide each column's type (unless the owner declared it), the second
//! converts every record, appends good rows to Arrow builders and writes a
//! Parquet row group every so often. CSV and TSV are converted on every core
//! ([`parallel`]); JSON, NDJSON and GeoJSON on one. Memory is bounded by one batch plus one
//! row group, whatever the file's size. A bad row is reported with its line,
//! column and reason; by default any bad row rejects the upload, or bad rows
//! go to a rejects file the owner can download (`OnError::Quarantine`).

use std::cell::Cell as StdCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use serde::de::{DeserializeSeed, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

mod parallel;

use crate::values::{Cell, ColumnBuilder, ColumnType, Declared, Inference, Value, convert};
use crate::{ColumnInfo, DigestWriter, InputFormat, QueryError, Result};

/// What to do with rows that cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Any bad row rejects the whole upload (the default).
    #[default]
    Reject,
    /// Keep the good rows; bad rows go to a rejects file.
    Quarantine,
}

/// How to read an upload.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub format: InputFormat,
    pub on_error: OnError,
    /// Column types the owner declared, by column name; the rest are inferred.
    pub declared: BTreeMap<String, Declared>,
    /// How many records the type inference reads.
    pub sample_rows: usize,
    /// How many row errors a rejection lists (all are counted).
    pub max_errors: usize,
}

impl IngestOptions {
    pub fn new(format: InputFormat) -> IngestOptions {
        IngestOptions {
            format,
            on_error: OnError::Reject,
            declared: BTreeMap::new(),
            sample_rows: 10_000,
            max_errors: 100,
        }
    }
}

/// One row that could not be read: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    /// 1-based line of the input (for JSON arrays and GeoJSON, the line where the record ends).
    pub line: u64,
    /// 1-based column number, when the error is about one field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    /// The column's name, when the error is about one field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

/// What an ingest produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngestReport {
    pub rows: u64,
    /// Rows moved to the rejects file (quarantine only).
    pub rejected: u64,
    pub columns: Vec<ColumnInfo>,
    /// The first rejected rows' errors (quarantine only).
    pub errors: Vec<RowError>,
    /// Size and SHA-256 (hex) of the Parquet file written.
    pub bytes: u64,
    pub sha256: String,
}

/// How far an ingest has got, for progress bars.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub rows: u64,
    /// Bytes of the input consumed so far.
    pub bytes: u64,
}

const BATCH_ROWS: usize = 8192;
/// The most columns a version may have.
pub const MAX_COLUMNS: usize = 2000;
const ROW_GROUP_ROWS: usize = 128 * 1024;
/// The column GeoJSON geometries are kept in, as GeoJSON text.
pub const GEOMETRY_COLUMN: &str = "geometry";

/// Convert `input` into Parquet at `parquet_out`; bad rows (quarantine) go to `rejects_out` as CSV.
/// On error the caller removes whatever was written: nothing here is published.
pub fn ingest(
    input: &Path,
    options: &IngestOptions,
    parquet_out: &Path,
    rejects_out: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<IngestReport> {
    match options.format {
        InputFormat::Parquet => ingest_parquet(input, parquet_out, progress),
        InputFormat::Csv | InputFormat::Tsv => {
            let plan = plan_csv(input, options)?;
            if parallel::suitable(input)? {
                let (data_start, first_line) = csv_data_start(input, options.format)?;
                return parallel::run(
                    &plan,
                    options,
                    input,
                    data_start,
                    first_line,
                    parquet_out,
                    rejects_out,
                    parallel::BLOCK_BYTES,
                    progress,
                );
            }
            run(&plan, options, parquet_out, rejects_out, progress, |sink| {
                csv_records(input, options.format, sink)
            })
        }
        InputFormat::Json | InputFormat::Ndjson | InputFormat::Geojson => {
            let plan = plan_json(input, options)?;
            run(&plan, options, parquet_out, rejects_out, progress, |sink| {
                json_records(input, options.format, sink)
            })
        }
    }
}

/// The columns decided before conversion.
struct Plan {
    columns: Vec<PlannedColumn>,
}

struct PlannedColumn {
    name: String,
    ty: ColumnType,
    format: Option<String>,
    geometry: bool,
}

impl Plan {
    fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns
                .iter()
                .map(|c| Field::new(&c.name, c.ty.data_type(), true))
                .collect::<Vec<_>>(),
        ))
    }

    fn infos(&self) -> Vec<ColumnInfo> {
        self.columns
            .iter()
            .map(|c| ColumnInfo {
                name: c.name.clone(),
                column_type: c.ty,
            })
            .collect()
    }
}

/// A record as read: CSV fields or a JSON object (GeoJSON features flattened).
enum Record<'a> {
    Csv(&'a csv::ByteRecord),
    Json(&'a Map<String, Json>),
}

/// Reading goes on while the sink says `true`.
type Sink<'a> = dyn FnMut(u64, u64, std::result::Result<Record<'_>, String>) -> bool + 'a;

fn declared_must_exist(options: &IngestOptions, names: &[String]) -> Result<()> {
    for declared in options.declared.keys() {
        if !names.iter().any(|n| n == declared) {
            return Err(QueryError::Unreadable(format!(
                "a type is declared for column '{declared}', which the file does not have (its columns: {})",
                names.join(", ")
            )));
        }
    }
    Ok(())
}

fn finish_plan(
    options: &IngestOptions,
    names: Vec<String>,
    inferred: Vec<Inference>,
    geometry: Option<usize>,
) -> Result<Plan> {
    declared_must_exist(options, &names)?;
    let columns = names
        .into_iter()
        .zip(inferred)
        .enumerate()
        .map(|(i, (name, inf))| {
            let is_geometry = geometry == Some(i);
            let (ty, format) = match options.declared.get(&name) {
                Some(d) => (d.column_type, d.format.clone()),
                None if is_geometry => (ColumnType::Text, None),
                None => (inf.decide(), None),
            };
            PlannedColumn {
                name,
                ty,
                format,
                geometry: is_geometry,
            }
        })
        .collect();
    Ok(Plan { columns })
}

// ---------------------------------------------------------------- CSV / TSV

fn csv_reader(input: &Path, format: InputFormat) -> Result<csv::Reader<BufReader<File>>> {
    let file = File::open(input)?;
    let mut builder = csv::ReaderBuilder::new();
    builder.has_headers(false).flexible(true);
    if format == InputFormat::Tsv {
        builder.delimiter(b'\t').quoting(false);
    }
    Ok(builder.from_reader(BufReader::with_capacity(1 << 20, file)))
}

fn csv_header(reader: &mut csv::Reader<BufReader<File>>) -> Result<Vec<String>> {
    let mut header = csv::ByteRecord::new();
    let found = reader
        .read_byte_record(&mut header)
        .map_err(|e| QueryError::Unreadable(format!("line 1: {e}")))?;
    if !found || header.is_empty() {
        return Err(QueryError::Unreadable(
            "the file is empty: a header line naming the columns is needed".into(),
        ));
    }
    if header.len() > MAX_COLUMNS {
        return Err(QueryError::Unreadable(format!(
            "line 1: the header names {} columns; a version has at most {MAX_COLUMNS}",
            header.len()
        )));
    }
    let mut names: Vec<String> = Vec::with_capacity(header.len());
    let mut taken: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (i, raw) in header.iter().enumerate() {
        let raw = if i == 0 {
            raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw)
        } else {
            raw
        };
        let name = std::str::from_utf8(raw).map_err(|_| {
            QueryError::Unreadable(format!(
                "line 1, column {}: the header is not valid UTF-8 (bad encoding)",
                i + 1
            ))
        })?;
        let mut name = name.trim().to_string();
        if name.is_empty() {
            name = format!("column_{}", i + 1);
        }
        let base = name.clone();
        let mut n = 2;
        while taken.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        taken.insert(name.clone());
        names.push(name);
    }
    Ok(names)
}

/// Where the records start: the first byte after the header line's end
/// (the whole of a CRLF, and any blank lines), and its physical line.
fn csv_data_start(input: &Path, format: InputFormat) -> Result<(u64, u64)> {
    let mut reader = csv_reader(input, format)?;
    csv_header(&mut reader)?;
    let after_header = reader.position().byte();
    let mut head = Vec::new();
    File::open(input)?
        .take(after_header + 64 * 1024)
        .read_to_end(&mut head)?;
    let mut start = (after_header as usize).min(head.len());
    while start < head.len() && matches!(head[start], b'\r' | b'\n') {
        start += 1;
    }
    let line = PhysicalLines::new(1).line_of(&head, start);
    Ok((start as u64, line))
}

fn plan_csv(input: &Path, options: &IngestOptions) -> Result<Plan> {
    let mut reader = csv_reader(input, options.format)?;
    let names = csv_header(&mut reader)?;
    let mut inferred = vec![Inference::default(); names.len()];
    let mut record = csv::ByteRecord::new();
    let mut seen = 0;
    while seen < options.sample_rows
        && reader
            .read_byte_record(&mut record)
            .map_err(|e| QueryError::Unreadable(e.to_string()))?
    {
        seen += 1;
        if record.len() != names.len() {
            continue;
        }
        for (inf, raw) in inferred.iter_mut().zip(record.iter()) {
            if let Ok(s) = std::str::from_utf8(raw) {
                inf.observe(Cell::Text(s));
            }
        }
    }
    finish_plan(options, names, inferred, None)
}

fn csv_records(input: &Path, format: InputFormat, sink: &mut Sink<'_>) -> Result<()> {
    // The csv reader counts only "\n" as a line end, and gives a record's
    // position before the "\n" of a CRLF: lines are counted here instead,
    // from the line ends read through the file.
    let ends = Rc::new(std::cell::RefCell::new(std::collections::VecDeque::new()));
    let file = LineEnds {
        inner: File::open(input)?,
        offset: 0,
        prev_cr: false,
        ends: ends.clone(),
    };
    let mut builder = csv::ReaderBuilder::new();
    builder.has_headers(false).flexible(true);
    if format == InputFormat::Tsv {
        builder.delimiter(b'\t').quoting(false);
    }
    let mut reader = builder.from_reader(BufReader::with_capacity(1 << 20, file));
    let mut header = csv::ByteRecord::new();
    reader
        .read_byte_record(&mut header)
        .map_err(|e| QueryError::Unreadable(e.to_string()))?;
    let mut before = 0u64;
    let mut record = csv::ByteRecord::new();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e) => {
                let at = e
                    .position()
                    .map(|p| line_at(&ends, &mut before, p.byte()))
                    .unwrap_or(0);
                return Err(QueryError::Unreadable(format!("line {at}: {e}")));
            }
        }
        let byte = record.position().map(|p| p.byte()).unwrap_or(0);
        let line = line_at(&ends, &mut before, byte);
        if !sink(line, byte, Ok(Record::Csv(&record))) {
            return Ok(());
        }
    }
}

/// A reader that notes where each line ends ("\r\n", a lone "\r" or a
/// lone "\n": offset and length) as bytes pass through it.
struct LineEnds<R> {
    inner: R,
    offset: u64,
    prev_cr: bool,
    ends: Rc<std::cell::RefCell<std::collections::VecDeque<(u64, u64)>>>,
}

impl<R: Read> Read for LineEnds<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut ends = self.ends.borrow_mut();
        for (i, &b) in buf[..n].iter().enumerate() {
            let at = self.offset + i as u64;
            match b {
                b'\r' => {
                    ends.push_back((at, 1));
                    self.prev_cr = true;
                }
                b'\n' if self.prev_cr => {
                    if let Some(last) = ends.back_mut() {
                        last.1 = 2;
                    }
                    self.prev_cr = false;
                }
                b'\n' => {
                    ends.push_back((at, 1));
                    self.prev_cr = false;
                }
                _ => self.prev_cr = false,
            }
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// The physical line of a record the csv reader places at byte `pos`:
/// 1 + the line ends before its first byte (line ends it starts on — the
/// "\n" of a CRLF, blank lines — skipped). Positions only increase;
/// `before` counts the line ends already passed.
fn line_at(
    ends: &std::cell::RefCell<std::collections::VecDeque<(u64, u64)>>,
    before: &mut u64,
    pos: u64,
) -> u64 {
    let mut ends = ends.borrow_mut();
    let mut pos = pos;
    while let Some(&(at, len)) = ends.front() {
        if at > pos {
            break;
        }
        // A line end before the record, or one it starts on.
        pos = pos.max(at + len);
        ends.pop_front();
        *before += 1;
    }
    *before + 1
}

/// Physical line numbers in a block held in memory (see [`line_at`]): a
/// line ends at "\r\n", a lone "\r" or a lone "\n".
pub(crate) struct PhysicalLines {
    line: u64,
    at: usize,
    prev_cr: bool,
}

impl PhysicalLines {
    /// Counting from `first_line` at the start of the bytes.
    pub(crate) fn new(first_line: u64) -> PhysicalLines {
        PhysicalLines {
            line: first_line,
            at: 0,
            prev_cr: false,
        }
    }

    /// The line of the record placed at byte `pos` of `bytes` (positions
    /// only increase); the line ends it starts on are skipped.
    pub(crate) fn line_of(&mut self, bytes: &[u8], pos: usize) -> u64 {
        let mut start = pos.min(bytes.len());
        while start < bytes.len() && matches!(bytes[start], b'\r' | b'\n') {
            start += 1;
        }
        if start > self.at {
            for &b in &bytes[self.at..start] {
                match b {
                    b'\r' => {
                        self.line += 1;
                        self.prev_cr = true;
                    }
                    b'\n' => {
                        if !self.prev_cr {
                            self.line += 1;
                        }
                        self.prev_cr = false;
                    }
                    _ => self.prev_cr = false,
                }
            }
            self.at = start;
        }
        self.line
    }
}

// ---------------------------------------------------- JSON, NDJSON, GeoJSON

/// Counts the newlines read through it, so JSON records get line numbers.
struct LineCounter<R> {
    inner: R,
    lines: Rc<StdCell<u64>>,
    bytes: Rc<StdCell<u64>>,
}

impl<R: Read> Read for LineCounter<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let newlines = buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
        self.lines.set(self.lines.get() + newlines);
        self.bytes.set(self.bytes.get() + n as u64);
        Ok(n)
    }
}

const STOP: &str = "\u{0}stop";

/// Hands each element of a JSON array to the sink.
struct Elements<'s, 'a> {
    sink: &'s mut Sink<'a>,
    lines: Rc<StdCell<u64>>,
    bytes: Rc<StdCell<u64>>,
    geojson: bool,
}

impl<'de> DeserializeSeed<'de> for Elements<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Elements<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(if self.geojson {
            "an array of GeoJSON features"
        } else {
            "a JSON array of objects"
        })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        while let Some(element) = seq.next_element::<Json>()? {
            let line = self.lines.get() + 1;
            let record = if self.geojson {
                flatten_feature(element)
            } else {
                match element {
                    Json::Object(map) => Ok(map),
                    other => Err(format!(
                        "expected a JSON object, found {}",
                        json_kind(&other)
                    )),
                }
            };
            let go_on = match &record {
                Ok(map) => (self.sink)(line, self.bytes.get(), Ok(Record::Json(map))),
                Err(e) => (self.sink)(line, self.bytes.get(), Err(e.clone())),
            };
            if !go_on {
                return Err(A::Error::custom(STOP));
            }
        }
        Ok(())
    }
}

/// Finds `features` in a FeatureCollection and streams it.
struct Collection<'s, 'a>(Elements<'s, 'a>);

impl<'de> DeserializeSeed<'de> for Collection<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Collection<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a GeoJSON FeatureCollection")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        let mut elements = Some(self.0);
        let mut kind: Option<String> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "type" => {
                    let t: String = map.next_value()?;
                    if t != "FeatureCollection" {
                        return Err(A::Error::custom(format!(
                            "expected a GeoJSON FeatureCollection, found type '{t}'"
                        )));
                    }
                    kind = Some(t);
                }
                "features" => match elements.take() {
                    Some(seed) => map.next_value_seed(seed)?,
                    None => return Err(A::Error::custom("'features' appears twice")),
                },
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if elements.is_some() {
            return Err(A::Error::custom(
                "a GeoJSON FeatureCollection needs a 'features' array",
            ));
        }
        let _ = kind;
        Ok(())
    }
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// A feature as one flat record: its properties, `id` if any, and the geometry as GeoJSON text.
fn flatten_feature(element: Json) -> std::result::Result<Map<String, Json>, String> {
    let Json::Object(mut feature) = element else {
        return Err(format!(
            "expected a GeoJSON Feature object, found {}",
            json_kind(&element)
        ));
    };
    if feature.get("type").and_then(Json::as_str) != Some("Feature") {
        return Err("expected an object with \"type\": \"Feature\"".into());
    }
    let mut record = match feature.remove("properties") {
        Some(Json::Object(p)) => p,
        Some(Json::Null) | None => Map::new(),
        Some(other) => {
            return Err(format!(
                "a feature's properties must be an object, found {}",
                json_kind(&other)
            ));
        }
    };
    if let Some(id) = feature.remove("id")
        && !record.contains_key("id")
    {
        record.insert("id".into(), id);
    }
    let geometry = feature.remove("geometry").unwrap_or(Json::Null);
    if let Some(existing) = record.remove(GEOMETRY_COLUMN) {
        record.insert("geometry_property".into(), existing);
    }
    record.insert(
        GEOMETRY_COLUMN.into(),
        Json::String(geometry_text(geometry)?),
    );
    Ok(record)
}

/// Check a GeoJSON geometry and give it back as compact text.
fn geometry_text(geometry: Json) -> std::result::Result<String, String> {
    if geometry.is_null() {
        return Ok(String::new());
    }
    validate_geometry(&geometry).map_err(|e| format!("invalid geometry: {e}"))?;
    Ok(geometry.to_string())
}

fn validate_geometry(g: &Json) -> std::result::Result<(), String> {
    let kind = g
        .get("type")
        .and_then(Json::as_str)
        .ok_or("a geometry needs a \"type\"")?;
    if kind == "GeometryCollection" {
        let parts = g
            .get("geometries")
            .and_then(Json::as_array)
            .ok_or("a GeometryCollection needs \"geometries\"")?;
        return parts.iter().try_for_each(validate_geometry);
    }
    let coords = g
        .get("coordinates")
        .ok_or_else(|| format!("a {kind} needs \"coordinates\""))?;
    let depth = match kind {
        "Point" => 0,
        "MultiPoint" | "LineString" => 1,
        "MultiLineString" | "Polygon" => 2,
        "MultiPolygon" => 3,
        other => return Err(format!("unknown geometry type '{other}'")),
    };
    check_nesting(coords, depth, kind)
}

fn check_nesting(c: &Json, depth: u32, kind: &str) -> std::result::Result<(), String> {
    let arr = c
        .as_array()
        .ok_or_else(|| format!("{kind} coordinates must be arrays"))?;
    if depth == 0 {
        if arr.len() < 2 || arr.len() > 4 {
            return Err(format!(
                "a position has 2 to 4 numbers, found {}",
                arr.len()
            ));
        }
        let lon = arr[0].as_f64().ok_or("a position must hold numbers")?;
        let lat = arr[1].as_f64().ok_or("a position must hold numbers")?;
        if !(-180.0..=180.0).contains(&lon) || !(-90.0..=90.0).contains(&lat) {
            return Err(format!(
                "position [{lon}, {lat}] is outside longitude -180..180 / latitude -90..90"
            ));
        }
        return Ok(());
    }
    // A polygon's rings (depth 1 below a Polygon, or 2 below a MultiPolygon) must close.
    let ring_level = depth == 1 && (kind == "Polygon" || kind == "MultiPolygon");
    if ring_level {
        if arr.len() < 4 {
            return Err("a polygon ring needs at least 4 positions".into());
        }
        if arr.first() != arr.last() {
            return Err("a polygon ring must end where it starts".into());
        }
    }
    if kind == "LineString" && arr.len() < 2 {
        return Err("a LineString needs at least 2 positions".into());
    }
    arr.iter()
        .try_for_each(|c| check_nesting(c, depth - 1, kind))
}

fn json_records(input: &Path, format: InputFormat, sink: &mut Sink<'_>) -> Result<()> {
    let file = File::open(input)?;
    if format == InputFormat::Ndjson {
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut line_buf = Vec::new();
        let (mut line, mut bytes) = (0u64, 0u64);
        loop {
            line_buf.clear();
            let n = reader.read_until(b'\n', &mut line_buf)?;
            if n == 0 {
                return Ok(());
            }
            line += 1;
            bytes += n as u64;
            let text = line_buf.trim_ascii();
            if text.is_empty() {
                continue;
            }
            let record = match serde_json::from_slice::<Json>(text) {
                Ok(Json::Object(map)) => Ok(map),
                Ok(other) => Err(format!(
                    "expected a JSON object, found {}",
                    json_kind(&other)
                )),
                Err(e) if std::str::from_utf8(text).is_err() => {
                    let _ = e;
                    Err("bad encoding: the line is not valid UTF-8".to_string())
                }
                Err(e) => Err(format!(
                    "malformed JSON: {}",
                    strip_position(&e.to_string())
                )),
            };
            let go_on = match &record {
                Ok(map) => sink(line, bytes, Ok(Record::Json(map))),
                Err(e) => sink(line, bytes, Err(e.clone())),
            };
            if !go_on {
                return Ok(());
            }
        }
    }
    let lines = Rc::new(StdCell::new(0));
    let bytes = Rc::new(StdCell::new(0));
    let reader = LineCounter {
        inner: BufReader::with_capacity(1 << 20, file),
        lines: lines.clone(),
        bytes: bytes.clone(),
    };
    let mut de = serde_json::Deserializer::from_reader(reader);
    let elements = Elements {
        sink,
        lines,
        bytes,
        geojson: format == InputFormat::Geojson,
    };
    let outcome = if format == InputFormat::Geojson {
        Collection(elements).deserialize(&mut de)
    } else {
        elements.deserialize(&mut de)
    };
    match outcome {
        Ok(()) => de.end().map_err(|e| {
            QueryError::Unreadable(format!("unexpected data after the JSON document: {e}"))
        }),
        Err(e) if e.to_string().starts_with(STOP) => Ok(()),
        Err(e) if e.is_io() => Err(QueryError::Unreadable(format!(
            "the file could not be read: {e}"
        ))),
        Err(e) => Err(QueryError::Unreadable(format!(
            "not valid {}: {e}",
            if format == InputFormat::Geojson {
                "GeoJSON"
            } else {
                "JSON"
            }
        ))),
    }
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

fn json_cell(v: &Json) -> (Cell<'_>, bool) {
    match v {
        Json::Null => (Cell::Null, false),
        Json::Bool(b) => (Cell::Bool(*b), false),
        Json::Number(n) => match n.as_i64() {
            Some(i) => (Cell::Int(i), false),
            None => (n.as_f64().map(Cell::Float).unwrap_or(Cell::Null), false),
        },
        Json::String(s) => (Cell::Text(s), true),
        // Nested values are kept as JSON text.
        Json::Array(_) | Json::Object(_) => (Cell::Null, true),
    }
}

fn plan_json(input: &Path, options: &IngestOptions) -> Result<Plan> {
    let mut names: Vec<String> = Vec::new();
    let mut inferred: Vec<Inference> = Vec::new();
    let mut nested: Vec<bool> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut too_many = false;
    let mut seen = 0usize;
    let limit = options.sample_rows;
    let mut sink = |_line: u64, _bytes: u64, record: std::result::Result<Record<'_>, String>| {
        seen += 1;
        if let Ok(Record::Json(map)) = record {
            for (key, value) in map {
                let i = match index.get(key) {
                    Some(&i) => i,
                    None if names.len() >= MAX_COLUMNS => {
                        too_many = true;
                        continue;
                    }
                    None => {
                        index.insert(key.clone(), names.len());
                        names.push(key.clone());
                        inferred.push(Inference::default());
                        nested.push(false);
                        names.len() - 1
                    }
                };
                match value {
                    Json::Array(_) | Json::Object(_) => nested[i] = true,
                    Json::String(s) => inferred[i].observe_json_string(s),
                    other => inferred[i].observe(json_cell(other).0),
                }
            }
        }
        seen < limit
    };
    json_records(input, options.format, &mut sink)?;
    if too_many {
        return Err(QueryError::Unreadable(format!(
            "the records name more than {MAX_COLUMNS} fields; a version has at most {MAX_COLUMNS} columns"
        )));
    }
    if names.is_empty() {
        return Err(QueryError::Unreadable(
            "the file holds no records to take columns from".into(),
        ));
    }
    let geometry = (options.format == InputFormat::Geojson)
        .then(|| names.iter().position(|n| n == GEOMETRY_COLUMN))
        .flatten();
    // Nested values are JSON text.
    for (inf, is_nested) in inferred.iter_mut().zip(&nested) {
        if *is_nested {
            *inf = Inference::default();
            inf.observe_json_string("{}");
        }
    }
    finish_plan(options, names, inferred, geometry)
}

// ------------------------------------------------------------ conversion

struct Writer {
    schema: SchemaRef,
    builders: Vec<ColumnBuilder>,
    pending: usize,
    parquet: ArrowWriter<HashingWriter>,
}

pub(crate) type HashingWriter = DigestWriter<std::io::BufWriter<File>>;

fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_created_by("CityTrust".to_string())
        .build()
}

pub(crate) fn open_parquet(path: &Path, schema: SchemaRef) -> Result<ArrowWriter<HashingWriter>> {
    let file = File::create_new(path)?;
    let sink = DigestWriter::new(std::io::BufWriter::with_capacity(1 << 20, file));
    Ok(ArrowWriter::try_new(
        sink,
        schema,
        Some(writer_properties()),
    )?)
}

pub(crate) fn close_parquet(writer: ArrowWriter<HashingWriter>) -> Result<(u64, String)> {
    let (buffered, bytes, sha256) = writer.into_inner()?.finish()?;
    let file = buffered.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok((bytes, sha256))
}

impl Writer {
    fn flush(&mut self) -> Result<()> {
        if self.pending == 0 {
            return Ok(());
        }
        let arrays = self
            .builders
            .iter_mut()
            .map(ColumnBuilder::finish)
            .collect();
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)?;
        self.parquet.write(&batch)?;
        self.pending = 0;
        Ok(())
    }
}

struct Rejects {
    writer: Option<csv::Writer<File>>,
    path: std::path::PathBuf,
}

impl Rejects {
    fn write(&mut self, error: &RowError, raw: &[String]) -> Result<()> {
        if self.writer.is_none() {
            let mut w = csv::Writer::from_writer(File::create_new(&self.path)?);
            w.write_record(["line", "column", "field", "message", "record"])
                .map_err(csv_io)?;
            self.writer = Some(w);
        }
        if let Some(w) = self.writer.as_mut() {
            w.write_record([
                error.line.to_string(),
                error.column.map(|c| c.to_string()).unwrap_or_default(),
                error.field.clone().unwrap_or_default(),
                error.message.clone(),
                raw.join(","),
            ])
            .map_err(csv_io)?;
        }
        Ok(())
    }

    fn close(self) -> Result<()> {
        if let Some(mut w) = self.writer {
            w.flush()?;
        }
        Ok(())
    }
}

fn csv_io(e: csv::Error) -> QueryError {
    QueryError::Io(std::io::Error::other(e.to_string()))
}

fn run(
    plan: &Plan,
    options: &IngestOptions,
    parquet_out: &Path,
    rejects_out: &Path,
    progress: &mut dyn FnMut(Progress),
    read: impl FnOnce(&mut Sink<'_>) -> Result<()>,
) -> Result<IngestReport> {
    let schema = plan.schema();
    let mut writer = Writer {
        schema: schema.clone(),
        builders: plan
            .columns
            .iter()
            .map(|c| ColumnBuilder::new(c.ty, BATCH_ROWS))
            .collect(),
        pending: 0,
        parquet: open_parquet(parquet_out, schema)?,
    };
    let mut rejects = Rejects {
        writer: None,
        path: rejects_out.to_path_buf(),
    };
    let mut rows = 0u64;
    let mut rejected = 0u64;
    let mut errors: Vec<RowError> = Vec::new();
    let mut failure: Option<QueryError> = None;
    let mut values: Vec<Value<'_>> = Vec::with_capacity(plan.columns.len());
    let mut index_of: std::collections::HashMap<&str, usize> = plan
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let _ = &mut index_of;
    let mut sink = |line: u64, bytes: u64, record: std::result::Result<Record<'_>, String>| {
        let outcome = match &record {
            Ok(record) => convert_record(plan, &index_of, record, line),
            Err(message) => Err(RowError {
                line,
                column: None,
                field: None,
                message: message.clone(),
            }),
        };
        match outcome {
            Ok(converted) => {
                values.clear();
                for (builder, value) in writer.builders.iter_mut().zip(converted.iter()) {
                    builder.append(value.as_value());
                }
                writer.pending += 1;
                rows += 1;
                if writer.pending >= BATCH_ROWS {
                    if let Err(e) = writer.flush() {
                        failure = Some(e);
                        return false;
                    }
                    progress(Progress { rows, bytes });
                }
                true
            }
            Err(error) => {
                rejected += 1;
                if options.on_error == OnError::Quarantine {
                    let raw = match &record {
                        Ok(r) => raw_fields(r),
                        Err(_) => Vec::new(),
                    };
                    if let Err(e) = rejects.write(&error, &raw) {
                        failure = Some(e);
                        return false;
                    }
                }
                if errors.len() < options.max_errors {
                    errors.push(error);
                }
                true
            }
        }
    };
    read(&mut sink)?;
    if let Some(e) = failure {
        return Err(e);
    }
    if rejected > 0 && options.on_error == OnError::Reject {
        return Err(QueryError::Rejected {
            errors,
            total: rejected,
        });
    }
    writer.flush()?;
    let (bytes, sha256) = close_parquet(writer.parquet)?;
    rejects.close()?;
    progress(Progress { rows, bytes: 0 });
    Ok(IngestReport {
        rows,
        rejected,
        columns: plan.infos(),
        errors,
        bytes,
        sha256,
    })
}

/// An owned converted value (so the row is checked whole before anything is appended).
enum Owned {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Date(i32),
    Timestamp(i64),
    Text(String),
}

impl Owned {
    fn as_value(&self) -> Value<'_> {
        match self {
            Owned::Null => Value::Null,
            Owned::Bool(v) => Value::Bool(*v),
            Owned::Int(v) => Value::Int(*v),
            Owned::Float(v) => Value::Float(*v),
            Owned::Date(v) => Value::Date(*v),
            Owned::Timestamp(v) => Value::Timestamp(*v),
            Owned::Text(v) => Value::Text(v),
        }
    }

    fn of(v: Value<'_>) -> Owned {
        match v {
            Value::Null => Owned::Null,
            Value::Bool(v) => Owned::Bool(v),
            Value::Int(v) => Owned::Int(v),
            Value::Float(v) => Owned::Float(v),
            Value::Date(v) => Owned::Date(v),
            Value::Timestamp(v) => Owned::Timestamp(v),
            Value::Text(v) => Owned::Text(v.to_string()),
        }
    }
}

fn field_error(line: u64, i: usize, plan: &Plan, message: String) -> RowError {
    RowError {
        line,
        column: u32::try_from(i + 1).ok(),
        field: plan.columns.get(i).map(|c| c.name.clone()),
        message,
    }
}

fn convert_record(
    plan: &Plan,
    index_of: &std::collections::HashMap<&str, usize>,
    record: &Record<'_>,
    line: u64,
) -> std::result::Result<Vec<Owned>, RowError> {
    let n = plan.columns.len();
    match record {
        Record::Csv(fields) => {
            let mut row = Vec::with_capacity(n);
            parallel::check_record(plan, fields, line, &mut row)?;
            Ok(row.into_iter().map(Owned::of).collect())
        }
        Record::Json(map) => {
            let mut out: Vec<Owned> = (0..n).map(|_| Owned::Null).collect();
            for (key, value) in map.iter() {
                let Some(&i) = index_of.get(key.as_str()) else {
                    return Err(RowError {
                        line,
                        column: None,
                        field: Some(key.clone()),
                        message: format!(
                            "unknown field '{key}': it is not among the columns taken from the first records; declare it or put it in an early record"
                        ),
                    });
                };
                let col = &plan.columns[i];
                let converted = match value {
                    Json::Array(_) | Json::Object(_) if col.ty == ColumnType::Text => {
                        Ok(Owned::Text(value.to_string()))
                    }
                    Json::String(s) if col.geometry => Ok(if s.is_empty() {
                        Owned::Null
                    } else {
                        Owned::Text(s.clone())
                    }),
                    Json::Number(num) if col.ty == ColumnType::Text => {
                        Ok(Owned::Text(num.to_string()))
                    }
                    Json::Bool(b) if col.ty == ColumnType::Text => Ok(Owned::Text(b.to_string())),
                    Json::Array(_) | Json::Object(_) => {
                        Err(format!("wrong type: a nested value is not {}", col.ty))
                    }
                    other => {
                        convert(json_cell(other).0, col.ty, col.format.as_deref()).map(Owned::of)
                    }
                };
                out[i] = converted.map_err(|m| field_error(line, i, plan, m))?;
            }
            Ok(out)
        }
    }
}

fn raw_fields(record: &Record<'_>) -> Vec<String> {
    match record {
        Record::Csv(fields) => fields
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect(),
        Record::Json(map) => vec![Json::Object((*map).clone()).to_string()],
    }
}

// ------------------------------------------------------------------ Parquet

fn ingest_parquet(
    input: &Path,
    parquet_out: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<IngestReport> {
    let file = File::open(input)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| QueryError::Unreadable(format!("not a readable Parquet file: {e}")))?;
    let source = builder.schema().clone();
    if source.fields().len() > MAX_COLUMNS {
        return Err(QueryError::Unreadable(format!(
            "the file has {} columns; a version has at most {MAX_COLUMNS}",
            source.fields().len()
        )));
    }
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (i, field) in source.fields().iter().enumerate() {
        let ty = ColumnType::of_arrow(field.data_type()).ok_or_else(|| {
            QueryError::Unreadable(format!(
                "column {} ('{}') has type {}, which CityTrust does not store; flatten nested columns first",
                i + 1,
                field.name(),
                field.data_type()
            ))
        })?;
        fields.push(Field::new(field.name(), ty.data_type(), true));
        columns.push(ColumnInfo {
            name: field.name().clone(),
            column_type: ty,
        });
    }
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let reader = builder
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| QueryError::Unreadable(format!("not a readable Parquet file: {e}")))?;
    let mut writer = open_parquet(parquet_out, schema.clone())?;
    let mut rows = 0u64;
    for batch in reader {
        let batch = batch
            .map_err(|e| QueryError::Unreadable(format!("the Parquet file is damaged: {e}")))?;
        let arrays = batch
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(a, f)| datafusion::arrow::compute::cast(a, f.data_type()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let batch = RecordBatch::try_new(schema.clone(), arrays)?;
        rows += batch.num_rows() as u64;
        writer.write(&batch)?;
        progress(Progress { rows, bytes: 0 });
    }
    let (bytes, sha256) = close_parquet(writer)?;
    Ok(IngestReport {
        rows,
        rejected: 0,
        columns,
        errors: Vec::new(),
        bytes,
        sha256,
    })
}
