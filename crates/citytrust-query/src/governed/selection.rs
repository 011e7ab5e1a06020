//! The admitted rows of a stored file as a Parquet row selection, computed
//! once per (subject filter, file) and handed to the Parquet reader, so a
//! consent-filtered read decodes no subject key and looks up no key: it
//! reads what an unfiltered read does, less the rows it skips (R-CIT-2).
//!
//! Why this is safe to cache:
//! * a [`SubjectFilter`] never changes once built (the service builds a new
//!   one, with a new [`SubjectFilter::id`], when any consent, objection or
//!   erasure changes the subjects' revision), so its admitted rows in a file
//!   are fixed for as long as the file is;
//! * a file is known by its location *and* its object metadata (size, ETag,
//!   modification time), so an erasure that rewrites a version in place, or
//!   a dataset deleted and made again under the same id, is a different
//!   file and gets its own selection;
//! * the Parquet reader refuses a selection that does not cover exactly the
//!   file's rows (an erasure always removes rows), so a file replaced between
//!   listing and reading fails the read instead of serving misplaced rows.
//!
//! The cache is bounded by the selections' size (each selector is 16 bytes);
//! a selection too fragmented to keep is not cached, and the scan falls back
//! to looking each row's key up ([`super::GovernedScanExec`]'s probe).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use datafusion::arrow::array::BooleanArray;
use datafusion::catalog::Session;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::{
    DefaultParquetFileReaderFactory, ParquetRowSelection,
};
use datafusion::datasource::physical_plan::{
    FileGroup, FileScanConfig, ParquetFileReaderFactory, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
use datafusion::parquet::arrow::arrow_reader::RowSelection;
use datafusion::parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use datafusion::parquet::file::metadata::ParquetMetaData;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::StreamExt;
use futures::future::BoxFuture;
use object_store::{ObjectMeta, ObjectStore};

use crate::subjects::SubjectFilter;

/// Selectors all cached selections may hold together (16 bytes each: 128 MiB).
const BUDGET_SELECTORS: usize = 8 << 20;
/// Selectors one selection may hold and still be cached (32 MiB).
const MAX_SELECTORS: usize = BUDGET_SELECTORS / 4;

/// One file as the object store described it when the scan was planned.
#[derive(Clone, PartialEq, Eq, Hash)]
struct FileId {
    location: String,
    size: u64,
    e_tag: Option<String>,
    modified: i64,
}

impl FileId {
    fn of(meta: &ObjectMeta) -> FileId {
        FileId {
            location: meta.location.to_string(),
            size: meta.size,
            e_tag: meta.e_tag.clone(),
            modified: meta.last_modified.timestamp_nanos_opt().unwrap_or(i64::MAX),
        }
    }
}

#[derive(Default)]
struct Cache {
    entries: HashMap<(u64, FileId), Arc<RowSelection>>,
    selectors: usize,
}

static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(Mutex::default);

fn cached(key: &(u64, FileId)) -> Option<Arc<RowSelection>> {
    CACHE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entries
        .get(key)
        .cloned()
}

fn keep(key: (u64, FileId), selection: Arc<RowSelection>) {
    let n = selection.iter().count();
    if n > MAX_SELECTORS {
        return;
    }
    let mut cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    if cache.selectors + n > BUDGET_SELECTORS {
        // Selections of filters the service has replaced are never asked
        // for again; starting over is simpler than tracking which.
        cache.entries.clear();
        cache.selectors = 0;
    }
    if cache.entries.insert(key, selection).is_none() {
        cache.selectors += n;
    }
}

/// `plan` (the Parquet scan of a version's file, as the listing table
/// planned it) with each file's admitted rows handed to the reader as a row
/// selection. `None` when the plan is not a plain Parquet file scan or a
/// selection is too fragmented to keep: the caller then filters row by row.
pub(super) async fn select_admitted(
    state: &dyn Session,
    plan: &Arc<dyn ExecutionPlan>,
    filter: &SubjectFilter,
) -> datafusion::error::Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(exec) = plan.downcast_ref::<DataSourceExec>() else {
        return Ok(None);
    };
    let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>() else {
        return Ok(None);
    };
    if config
        .file_source()
        .downcast_ref::<ParquetSource>()
        .is_none()
    {
        return Ok(None);
    }
    let store = state.runtime_env().object_store(&config.object_store_url)?;
    let mut config = config.clone();
    let mut groups = Vec::with_capacity(config.file_groups.len());
    for group in std::mem::take(&mut config.file_groups) {
        let mut files = group.into_inner();
        for file in &mut files {
            if file.extensions.contains::<ParquetRowSelection>() {
                return Ok(None);
            }
            let Some(selection) = admitted(&store, file, filter).await? else {
                return Ok(None);
            };
            file.extensions
                .insert(ParquetRowSelection::new(RowSelection::clone(&selection)));
        }
        groups.push(FileGroup::new(files));
    }
    config.file_groups = groups;
    Ok(Some(DataSourceExec::from_data_source(config)))
}

/// The rows of one file `filter` admits, from the cache or read once.
async fn admitted(
    store: &Arc<dyn ObjectStore>,
    file: &PartitionedFile,
    filter: &SubjectFilter,
) -> datafusion::error::Result<Option<Arc<RowSelection>>> {
    let key = (filter.id, FileId::of(&file.object_meta));
    if let Some(selection) = cached(&key) {
        return Ok(Some(selection));
    }
    // The whole file, whatever part of it this scan was given.
    let mut whole = file.clone();
    whole.range = None;
    let reader = DefaultParquetFileReaderFactory::new(store.clone()).create_reader(
        0,
        whole,
        None,
        &ExecutionPlanMetricsSet::new(),
    )?;
    let builder = ParquetRecordBatchStreamBuilder::new(SendReader(reader)).await?;
    let Some(column) = builder
        .schema()
        .fields()
        .iter()
        .position(|f| f.name() == &filter.column)
    else {
        // The governed table checked the column is there; a file that has
        // changed since is read row by row (and refused there).
        return Ok(None);
    };
    let mask = ProjectionMask::roots(builder.parquet_schema(), [column]);
    let mut batches = builder
        .with_projection(mask)
        .with_batch_size(64 * 1024)
        .build()?;
    let mut admitted: Vec<BooleanArray> = Vec::new();
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        admitted.push(super::admitted_rows(batch.column(0).as_ref(), filter)?);
    }
    let selection = Arc::new(RowSelection::from_filters(&admitted));
    if selection.iter().count() > MAX_SELECTORS {
        return Ok(None);
    }
    keep(key, selection.clone());
    Ok(Some(selection))
}

/// DataFusion's reader of a Parquet file in an object store, as the Parquet
/// stream builder takes it (which knows `Box<dyn AsyncFileReader>`, not the
/// `Send` one the scan's future needs).
struct SendReader(Box<dyn AsyncFileReader + Send>);

impl AsyncFileReader for SendReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, datafusion::parquet::errors::Result<bytes::Bytes>> {
        self.0.get_bytes(range)
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, datafusion::parquet::errors::Result<Vec<bytes::Bytes>>> {
        self.0.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, datafusion::parquet::errors::Result<Arc<ParquetMetaData>>> {
        self.0.get_metadata(options)
    }
}
