//! CSV and TSV converted on every core.
//!
//! One thread cuts the file into blocks of whole records (tracking quotes as
//! the `csv` crate does, so a newline inside a quoted field never splits a
//! record) and counts their lines; a worker per core parses a block,
//! converts its values and encodes them as one Parquet row group; the calling
//! thread appends the row groups in file order, writes quarantined rows and
//! reports progress. Memory is bounded by the blocks in flight (a few times
//! `BLOCK_BYTES` per core), whatever the file's size.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use datafusion::arrow::array::ArrayRef;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves,
};

use super::{
    BATCH_ROWS, IngestOptions, IngestReport, OnError, Plan, Progress, Rejects, RowError,
    field_error, writer_properties,
};
use crate::values::{Cell, ColumnBuilder, Value, convert};
use crate::{DigestWriter, InputFormat, QueryError, Result};

/// A block's size: about 100,000 rows of a typical civic CSV (one row group).
pub(super) const BLOCK_BYTES: usize = 16 << 20;
/// A record longer than this is refused rather than buffered.
const MAX_RECORD_BYTES: usize = 256 << 20;

struct Block {
    seq: usize,
    /// The 1-based line the block's first record starts on.
    first_line: u64,
    /// Input bytes consumed once this block is done (for progress).
    end_byte: u64,
    bytes: Vec<u8>,
}

struct Encoded {
    seq: usize,
    end_byte: u64,
    rows: u64,
    chunks: Vec<ArrowColumnChunk>,
    rejected: u64,
    /// Errors in this block, in line order (at most `max_errors` kept).
    errors: Vec<RowError>,
    /// Quarantined rows as read, with their error.
    quarantined: Vec<(RowError, Vec<String>)>,
}

/// Where a CSV scanner is, as far as record boundaries go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scan {
    FieldStart,
    Unquoted,
    Quoted,
    QuoteInQuoted,
}

/// The end (exclusive) of the last whole record in `bytes`, which starts at a
/// record boundary; `None` if no record ends in it.
fn last_boundary(bytes: &[u8], delimiter: u8, quoting: bool) -> Option<usize> {
    if !quoting || memchr_absent(bytes, b'"') {
        return bytes.iter().rposition(|&b| b == b'\n').map(|i| i + 1);
    }
    let mut state = Scan::FieldStart;
    let mut last = None;
    for (i, &b) in bytes.iter().enumerate() {
        state = match (state, b) {
            (Scan::Quoted, b'"') => Scan::QuoteInQuoted,
            (Scan::Quoted, _) => Scan::Quoted,
            (Scan::QuoteInQuoted, b'"') => Scan::Quoted,
            (Scan::FieldStart, b'"') => Scan::Quoted,
            (_, b'\n') => {
                last = Some(i + 1);
                Scan::FieldStart
            }
            (_, b'\r') => Scan::FieldStart,
            (_, d) if d == delimiter => Scan::FieldStart,
            _ => Scan::Unquoted,
        };
    }
    last
}

fn memchr_absent(bytes: &[u8], needle: u8) -> bool {
    !bytes.contains(&needle)
}

/// Whether the parallel path can read this file: records end with `\n`
/// (a file with old Mac `\r` endings goes the sequential way).
pub(super) fn suitable(input: &Path) -> Result<bool> {
    let mut head = vec![0u8; 1 << 16];
    let mut file = File::open(input)?;
    let mut filled = 0;
    while filled < head.len() {
        let n = file.read(&mut head[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    let head = &head[..filled];
    Ok(head.contains(&b'\n') || !head.contains(&b'\r'))
}

/// Convert a CSV/TSV file whose header ends at `data_start` (on line
/// `first_line`) following `plan`.
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    plan: &Plan,
    options: &IngestOptions,
    input: &Path,
    data_start: u64,
    first_line: u64,
    parquet_out: &Path,
    rejects_out: &Path,
    block_bytes: usize,
    progress: &mut dyn FnMut(Progress),
) -> Result<IngestReport> {
    let schema = plan.schema();
    let file = File::create_new(parquet_out)?;
    let sink = DigestWriter::new(BufWriter::with_capacity(1 << 20, file));
    let arrow = ArrowWriter::try_new(sink, schema.clone(), Some(writer_properties()))?;
    let (mut out, factory) = arrow.into_serialized_writer()?;
    let factory = Arc::new(factory);
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8);
    let rejecting = AtomicBool::new(false);
    let (block_tx, block_rx) = mpsc::sync_channel::<Block>(workers);
    // Only the workers hold the receiver: when they stop, the splitter's next send fails and it stops too.
    let block_rx = Arc::new(Mutex::new(block_rx));
    let (done_tx, done_rx) = mpsc::channel::<Result<Encoded>>();

    let mut rejects = Rejects {
        writer: None,
        path: rejects_out.to_path_buf(),
    };
    let mut rows = 0u64;
    let mut rejected = 0u64;
    let mut errors: Vec<RowError> = Vec::new();

    let outcome = std::thread::scope(|scope| -> Result<()> {
        // The splitter.
        let split = scope.spawn(move || {
            split(
                input,
                options.format,
                data_start,
                first_line,
                block_bytes,
                block_tx,
            )
        });
        for _ in 0..workers {
            let done_tx = done_tx.clone();
            let block_rx = block_rx.clone();
            let factory = factory.clone();
            let rejecting = &rejecting;
            scope.spawn(move || {
                loop {
                    let next = match block_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(block) = next else { return };
                    let encoded = convert_block(plan, options, &factory, rejecting, block);
                    if done_tx.send(encoded).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        drop(block_rx);

        // Row groups in file order.
        let mut pending: BTreeMap<usize, Encoded> = BTreeMap::new();
        let mut next = 0usize;
        let result = (|| -> Result<()> {
            for encoded in done_rx.iter() {
                let encoded = encoded?;
                pending.insert(encoded.seq, encoded);
                while let Some(block) = pending.remove(&next) {
                    next += 1;
                    rejected += block.rejected;
                    for (error, raw) in &block.quarantined {
                        rejects.write(error, raw)?;
                    }
                    for error in block.errors {
                        if errors.len() < options.max_errors {
                            errors.push(error);
                        }
                    }
                    if block.rows > 0 && !rejecting.load(Ordering::Relaxed) {
                        let mut group = out.next_row_group()?;
                        for chunk in block.chunks {
                            chunk.append_to_row_group(&mut group)?;
                        }
                        group.close()?;
                    }
                    rows += block.rows;
                    progress(Progress {
                        rows,
                        bytes: block.end_byte,
                    });
                }
            }
            Ok(())
        })();
        // Whatever happened, stop the others (a closed channel ends them) before joining.
        drop(done_rx);
        let split_result = split
            .join()
            .map_err(|_| QueryError::Io(std::io::Error::other("the CSV splitter panicked")))?;
        result?;
        split_result
    });
    outcome?;
    if rejected > 0 && options.on_error == OnError::Reject {
        return Err(QueryError::Rejected {
            errors,
            total: rejected,
        });
    }
    let (buffered, bytes, sha256) = out.into_inner()?.finish()?;
    let file = buffered.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
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

/// Cut the input after its header into blocks of whole records.
fn split(
    input: &Path,
    format: InputFormat,
    data_start: u64,
    first_line: u64,
    block_bytes: usize,
    blocks: mpsc::SyncSender<Block>,
) -> Result<()> {
    let (delimiter, quoting) = match format {
        InputFormat::Tsv => (b'\t', false),
        _ => (b',', true),
    };
    let mut file = File::open(input)?;
    file.seek(SeekFrom::Start(data_start))?;
    let mut carry: Vec<u8> = Vec::new();
    let mut line = first_line;
    let mut consumed = data_start;
    let mut seq = 0usize;
    let mut eof = false;
    while !eof {
        let mut buf = std::mem::take(&mut carry);
        let want = buf.len() + block_bytes;
        buf.reserve(block_bytes);
        while buf.len() < want {
            let start = buf.len();
            buf.resize(want, 0);
            let n = file.read(&mut buf[start..])?;
            buf.truncate(start + n);
            if n == 0 {
                eof = true;
                break;
            }
        }
        let cut = if eof {
            buf.len()
        } else {
            match last_boundary(&buf, delimiter, quoting) {
                Some(cut) => cut,
                None if buf.len() > MAX_RECORD_BYTES => {
                    return Err(QueryError::Unreadable(format!(
                        "line {line}: a record longer than {} MiB (an unclosed quote?)",
                        MAX_RECORD_BYTES >> 20
                    )));
                }
                None => {
                    carry = buf;
                    continue;
                }
            }
        };
        carry = buf.split_off(cut);
        if buf.is_empty() {
            continue;
        }
        // Cut just after a "\n": the next block starts on a new line.
        let next_line = {
            let mut lines = super::PhysicalLines::new(line);
            lines.line_of(&buf, buf.len());
            lines.line
        };
        consumed += buf.len() as u64;
        let block = Block {
            seq,
            first_line: line,
            end_byte: consumed,
            bytes: buf,
        };
        seq += 1;
        line = next_line;
        if blocks.send(block).is_err() {
            // The writer stopped (an error there): nothing more to do.
            return Ok(());
        }
    }
    Ok(())
}

/// Parse, convert and encode one block.
fn convert_block(
    plan: &Plan,
    options: &IngestOptions,
    factory: &ArrowRowGroupWriterFactory,
    rejecting: &AtomicBool,
    block: Block,
) -> Result<Encoded> {
    let schema = plan.schema();
    let n = plan.columns.len();
    let mut builder = csv::ReaderBuilder::new();
    builder.has_headers(false).flexible(true);
    if options.format == InputFormat::Tsv {
        builder.delimiter(b'\t').quoting(false);
    }
    let mut reader = builder.from_reader(&block.bytes[..]);
    let mut writers: Vec<ArrowColumnWriter> = factory.create_column_writers(block.seq)?;
    let mut builders: Vec<ColumnBuilder> = plan
        .columns
        .iter()
        .map(|c| ColumnBuilder::new(c.ty, BATCH_ROWS))
        .collect();
    let mut pending = 0usize;
    let mut encoded = Encoded {
        seq: block.seq,
        end_byte: block.end_byte,
        rows: 0,
        chunks: Vec::new(),
        rejected: 0,
        errors: Vec::new(),
        quarantined: Vec::new(),
    };
    let quarantine = options.on_error == OnError::Quarantine;
    let mut record = csv::ByteRecord::new();
    let mut values: Vec<Value<'static>> = Vec::with_capacity(n);
    // Physical lines whatever the line ending (the csv reader counts "\n" only).
    let mut lines = super::PhysicalLines::new(block.first_line);
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let at = e
                    .position()
                    .map(|p| lines.line_of(&block.bytes, p.byte() as usize))
                    .unwrap_or(block.first_line);
                return Err(QueryError::Unreadable(format!("line {at}: {e}")));
            }
        }
        let line = lines.line_of(
            &block.bytes,
            record.position().map(|p| p.byte() as usize).unwrap_or(0),
        );
        // One vector for every row (emptied before the record it borrows from is overwritten).
        let mut row: Vec<Value<'_>> = std::mem::take(&mut values)
            .into_iter()
            .map(|_| Value::Null)
            .collect();
        row.clear();
        let checked = check_record(plan, &record, line, &mut row);
        match checked {
            Ok(()) => {
                if !rejecting.load(Ordering::Relaxed) {
                    for (builder, value) in builders.iter_mut().zip(row.drain(..)) {
                        builder.append(value);
                    }
                    pending += 1;
                    if pending >= BATCH_ROWS {
                        write_batch(&schema, &mut builders, &mut writers)?;
                        pending = 0;
                    }
                }
                encoded.rows += 1;
            }
            Err(error) => {
                encoded.rejected += 1;
                if !quarantine {
                    rejecting.store(true, Ordering::Relaxed);
                } else {
                    let raw = record
                        .iter()
                        .map(|f| String::from_utf8_lossy(f).into_owned())
                        .collect();
                    encoded.quarantined.push((error.clone(), raw));
                }
                if encoded.errors.len() < options.max_errors {
                    encoded.errors.push(error);
                }
            }
        }
        row.clear();
        values = row.into_iter().map(|_| Value::Null).collect();
    }
    if rejecting.load(Ordering::Relaxed) {
        return Ok(encoded);
    }
    if pending > 0 {
        write_batch(&schema, &mut builders, &mut writers)?;
    }
    encoded.chunks = writers
        .into_iter()
        .map(ArrowColumnWriter::close)
        .collect::<std::result::Result<_, _>>()?;
    Ok(encoded)
}

fn write_batch(
    schema: &datafusion::arrow::datatypes::SchemaRef,
    builders: &mut [ColumnBuilder],
    writers: &mut [ArrowColumnWriter],
) -> Result<()> {
    for ((builder, writer), field) in builders.iter_mut().zip(writers).zip(schema.fields()) {
        let array: ArrayRef = builder.finish();
        for leaf in compute_leaves(field, &array)? {
            writer.write(&leaf)?;
        }
    }
    Ok(())
}

/// Convert every field of a record into `row`, or say what is wrong with it.
pub(super) fn check_record<'r>(
    plan: &Plan,
    record: &'r csv::ByteRecord,
    line: u64,
    row: &mut Vec<Value<'r>>,
) -> std::result::Result<(), RowError> {
    let n = plan.columns.len();
    if record.len() != n {
        return Err(RowError {
            line,
            column: None,
            field: None,
            message: format!(
                "wrong number of fields: expected {n}, found {}",
                record.len()
            ),
        });
    }
    for (i, (raw, col)) in record.iter().zip(&plan.columns).enumerate() {
        let text = std::str::from_utf8(raw).map_err(|e| {
            field_error(
                line,
                i,
                plan,
                format!(
                    "bad encoding: not valid UTF-8 (byte {} of the field)",
                    e.valid_up_to() + 1
                ),
            )
        })?;
        let value = convert(Cell::Text(text), col.ty, col.format.as_deref())
            .map_err(|m| field_error(line, i, plan, m))?;
        row.push(value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::util::display::array_value_to_string;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    /// Every cell of a Parquet file, as text, row by row.
    fn cells(path: &Path) -> Vec<Vec<String>> {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let mut rows = Vec::new();
        for batch in reader {
            let batch = batch.unwrap();
            for r in 0..batch.num_rows() {
                rows.push(
                    batch
                        .columns()
                        .iter()
                        .map(|c| array_value_to_string(c, r).unwrap())
                        .collect(),
                );
            }
        }
        rows
    }

    /// A row's line is its physical line whatever the line ending (the
    /// CRLF of Windows exports and of the real Citi Bike files, or a lone
    /// CR), by the one-thread reader and by blocks alike.
    #[test]
    fn line_numbers_are_physical_lines_whatever_the_line_ending() {
        for ending in ["\n", "\r\n", "\r"] {
            let dir = tempfile::tempdir().unwrap();
            let input = dir.path().join("in.csv");
            let text = ["a,b", "1,2", "3,4", "5,6,7", "8,9", "x,y,z", ""].join(ending);
            std::fs::write(&input, text).unwrap();
            let mut options = IngestOptions::new(InputFormat::Csv);
            options.on_error = OnError::Quarantine;
            let plan = super::super::plan_csv(&input, &options).unwrap();
            let (start, first_line) =
                super::super::csv_data_start(&input, InputFormat::Csv).unwrap();
            let one = super::super::run(
                &plan,
                &options,
                &dir.path().join("one.parquet"),
                &dir.path().join("one.rejects.csv"),
                &mut |_| {},
                |sink| super::super::csv_records(&input, InputFormat::Csv, sink),
            )
            .unwrap();
            let many = run(
                &plan,
                &options,
                &input,
                start,
                first_line,
                &dir.path().join("many.parquet"),
                &dir.path().join("many.rejects.csv"),
                8,
                &mut |_| {},
            )
            .unwrap();
            for report in [&one, &many] {
                let lines: Vec<u64> = report.errors.iter().map(|e| e.line).collect();
                assert_eq!(lines, [4, 6], "ending {ending:?}: {:?}", report.errors);
                assert_eq!(report.rows, 3, "ending {ending:?}");
            }
        }
    }

    /// Cut into many small blocks, a file converts exactly as the one-thread
    /// reader converts it: same rows in the same order, same errors on the
    /// same lines, same rejects file.
    #[test]
    fn many_blocks_give_what_one_reader_gives() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.csv");
        let mut csv = String::from("id,name,when,amount\n");
        for i in 0..5000 {
            match i % 997 {
                500 => csv.push_str(&format!("{i},bad,2026-01-01,not a number\n")),
                502 => csv.push_str(&format!("{i},\"short\"\n")),
                _ if i % 13 == 0 => csv.push_str(&format!(
                    "{i},\"two\nlines, \"\"quoted\"\"\",2026-03-{:02}T10:00:00Z,{}.5\n",
                    i % 28 + 1,
                    i
                )),
                _ => csv.push_str(&format!("{i},plain {i},2026-02-{:02},{i}\n", i % 28 + 1)),
            }
        }
        std::fs::write(&input, csv).unwrap();
        let mut options = IngestOptions::new(InputFormat::Csv);
        options.on_error = OnError::Quarantine;
        options.sample_rows = 100;
        let plan = super::super::plan_csv(&input, &options).unwrap();
        let (start, first_line) = super::super::csv_data_start(&input, InputFormat::Csv).unwrap();

        let one = super::super::run(
            &plan,
            &options,
            &dir.path().join("one.parquet"),
            &dir.path().join("one.rejects.csv"),
            &mut |_| {},
            |sink| super::super::csv_records(&input, InputFormat::Csv, sink),
        )
        .unwrap();
        let mut seen = Vec::new();
        let many = run(
            &plan,
            &options,
            &input,
            start,
            first_line,
            &dir.path().join("many.parquet"),
            &dir.path().join("many.rejects.csv"),
            4096,
            &mut |p| seen.push(p.rows),
        )
        .unwrap();
        assert_eq!(many.rows, one.rows);
        assert_eq!(many.rows, 5000 - 10);
        assert_eq!(many.rejected, 10);
        assert_eq!(many.errors, one.errors);
        // Row 500 follows 39 rows that take two lines each.
        assert_eq!(many.errors[0].line, 2 + 500 + 39, "{:?}", many.errors[0]);
        assert_eq!(many.errors[0].field.as_deref(), Some("amount"));
        assert!(seen.len() > 10, "progress as blocks finish: {seen:?}");
        assert!(seen.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(
            cells(&dir.path().join("many.parquet")),
            cells(&dir.path().join("one.parquet"))
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("many.rejects.csv")).unwrap(),
            std::fs::read_to_string(dir.path().join("one.rejects.csv")).unwrap()
        );

        // Rejecting stops encoding but still names the first bad line.
        options.on_error = OnError::Reject;
        let refused = run(
            &plan,
            &options,
            &input,
            start,
            first_line,
            &dir.path().join("refused.parquet"),
            &dir.path().join("refused.rejects.csv"),
            4096,
            &mut |_| {},
        );
        match refused {
            Err(QueryError::Rejected { errors, total }) => {
                assert_eq!(total, 10);
                assert_eq!(errors, one.errors);
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn blocks_end_only_where_records_end() {
        let csv = b"a,b\n\"x\ny\",1\n\"q\"\"\n\",2\nab\"c,3\n\"open";
        // The newlines inside quotes (and after an escaped quote) are not boundaries;
        // a quote inside an unquoted field is a plain character.
        assert_eq!(last_boundary(csv, b',', true), Some(csv.len() - 5));
        assert_eq!(last_boundary(b"\"never closed\n", b',', true), None);
        assert_eq!(last_boundary(b"a\tb\nc\"\td\n", b'\t', false), Some(9));
        assert_eq!(last_boundary(b"no newline", b',', true), None);
    }
}
