//! The governed scan: a stored version as a table that yields only the rows
//! and the columns its reader may see (R-ACC-7, R-CIT-2).
//!
//! Whose rows a reader may see (the subject filter) and which columns (an
//! agreement's column limit) are applied *inside the scan*, by an operator
//! of our own ([`GovernedScanExec`]) that sits directly on the Parquet
//! reader. Nothing above it — the reader's `WHERE`, `SELECT`, `GROUP BY`,
//! `JOIN … ON`, a CASE, a cast that fails — ever sees a hidden row, because
//! no hidden row leaves the scan:
//!
//! * the table refuses every filter pushdown (so the planner cannot move a
//!   reader's predicate into the Parquet reader, under the subject filter),
//!   and ignores the limit it is offered (a limit applied before the filter
//!   would make an answer depend on hidden rows);
//! * the operator refuses the physical optimiser's filter pushdown (dynamic
//!   filters from joins and TopK included), limit pushdown and projection
//!   swaps — the defaults of [`ExecutionPlan`], kept on purpose;
//! * it reports no statistics, so no `COUNT(*)`, `MIN` or `MAX` is answered
//!   from the file's footer (which counts hidden rows);
//! * hidden columns are not in the table's schema at all: they cannot be
//!   named, and an error about a column lists only visible ones.
//!
//! The rows are left out in one of two ways, with the same result: the
//! admitted rows of the file, cached per (filter, file) as a Parquet row
//! selection, are handed to the reader ([`selection`]: no key decoded, no
//! key looked up, hidden rows not decoded at all); or, where that cannot be
//! done, the operator looks every row's subject key up ([`admitted_rows`]).
//!
//! Every read path (downloads, SQL, tables, DP inputs, look-ups, the row
//! levels) opens a version through [`governed_table`], so the guarantee is
//! one piece of code, not one per path.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Statistics, project_schema};
use datafusion::datasource::source_as_provider;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::StreamExt;

use crate::subjects::SubjectFilter;
use crate::{QueryError, Result};

mod selection;

/// What one governed read opens: a version's file in the store, and the
/// columns and rows its reader may see. Every read path hands one of these
/// to the functions that read content ([`crate::export::export_version`],
/// [`crate::levels`]), which open it as a [`GovernedTable`].
#[derive(Clone, Copy)]
pub struct Source<'a> {
    pub versions: &'a crate::VersionStore,
    pub location: &'a str,
    /// The columns the reader may see (`None`: all).
    pub columns: Option<&'a [String]>,
    /// Whose rows the reader may see (`None`: every row).
    pub subjects: Option<&'a SubjectFilter>,
}

/// A stored version as a table of only what the reader may see: `columns`
/// (`None`: all) of the rows `subjects` admits (`None`: every row).
pub async fn governed_table(
    ctx: &SessionContext,
    location: &str,
    columns: Option<&[String]>,
    subjects: Option<&SubjectFilter>,
) -> Result<Arc<dyn TableProvider>> {
    open_governed(ctx, location, columns, subjects, Strategy::Select).await
}

/// How a governed scan leaves out hidden rows: by a row selection handed to
/// the Parquet reader where it can ([`selection`]), or always by looking up
/// every row's key (kept for the tests that hold both to the same answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    Select,
    #[cfg_attr(not(test), allow(dead_code))]
    Probe,
}

async fn open_governed(
    ctx: &SessionContext,
    location: &str,
    columns: Option<&[String]>,
    subjects: Option<&SubjectFilter>,
    strategy: Strategy,
) -> Result<Arc<dyn TableProvider>> {
    let df = ctx
        .read_parquet(location, ParquetReadOptions::default())
        .await?;
    let inner = match df.logical_plan() {
        LogicalPlan::TableScan(scan) => source_as_provider(&scan.source)?,
        _ => {
            return Err(QueryError::Engine(
                "a stored version did not open as a table scan".into(),
            ));
        }
    };
    let file_schema = inner.schema();
    let visible: Vec<usize> = file_schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| columns.is_none_or(|c| c.iter().any(|c| c == f.name())))
        .map(|(i, _)| i)
        .collect();
    if visible.is_empty() {
        return Err(QueryError::Sql(
            "none of the columns you may read is in this version".into(),
        ));
    }
    let subjects = match subjects {
        Some(filter) if filter.keep || !filter.keys.is_empty() => {
            let key = file_schema
                .fields()
                .iter()
                .position(|f| f.name() == &filter.column)
                .ok_or_else(|| {
                    QueryError::Sql(format!(
                        "the subject-key column '{}' is not in this version, so whose rows \
                         they are cannot be told; nothing is served",
                        filter.column
                    ))
                })?;
            Some((key, filter.clone()))
        }
        // Nobody to leave out (an objection filter with no objectors).
        Some(_) | None => None,
    };
    let schema = Arc::new(file_schema.project(&visible)?);
    Ok(Arc::new(GovernedTable {
        inner,
        schema,
        visible,
        subjects,
        strategy,
    }))
}

/// A version as the reader may see it (see the module's header).
struct GovernedTable {
    inner: Arc<dyn TableProvider>,
    /// The visible columns, in the file's order.
    schema: SchemaRef,
    /// Each visible column's index in the file.
    visible: Vec<usize>,
    /// The subject-key column's index in the file, and whose rows pass.
    subjects: Option<(usize, SubjectFilter)>,
    strategy: Strategy,
}

impl fmt::Debug for GovernedTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the keys: a plan may be logged.
        f.debug_struct("GovernedTable")
            .field("columns", &self.schema.fields().len())
            .field("subject_filter", &self.subjects.is_some())
            .finish()
    }
}

#[async_trait::async_trait]
impl TableProvider for GovernedTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        // Never applied here: every reader's filter is evaluated above the
        // scan, on admitted rows only (see supports_filters_pushdown).
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let wanted: Vec<usize> = match projection {
            Some(p) => p.iter().map(|&i| self.visible[i]).collect(),
            None => self.visible.clone(),
        };
        let Some((key, filter)) = &self.subjects else {
            // No hidden rows: only hidden columns, which the projection leaves out.
            return self.inner.scan(state, Some(&wanted), &[], limit).await;
        };
        let schema = project_schema(&self.inner.schema(), Some(&wanted))?;
        let output: Vec<usize> = (0..wanted.len()).collect();
        // No limit: a limit taken before the filter would count hidden rows.
        let plain = self.inner.scan(state, Some(&wanted), &[], None).await?;
        let selected = match self.strategy {
            Strategy::Select => selection::select_admitted(state, &plain, filter).await?,
            Strategy::Probe => None,
        };
        if let Some(input) = selected {
            // The reader yields only admitted rows; the operator stays on top
            // of it so that nothing is pushed into the reader.
            return Ok(Arc::new(GovernedScanExec::new(
                input,
                Rows::Selected,
                output,
                schema,
            )));
        }
        let mut read = wanted.clone();
        let key_at = match read.iter().position(|i| i == key) {
            Some(p) => p,
            None => {
                read.push(*key);
                read.len() - 1
            }
        };
        let input = self.inner.scan(state, Some(&read), &[], None).await?;
        Ok(Arc::new(GovernedScanExec::new(
            input,
            Rows::Probed {
                key: key_at,
                filter: filter.clone(),
            },
            output,
            schema,
        )))
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![
            TableProviderFilterPushDown::Unsupported;
            filters.len()
        ])
    }

    fn statistics(&self) -> Option<Statistics> {
        None
    }
}

/// How the scan leaves out the rows whose subjects the reader may not see.
#[derive(Debug, Clone)]
enum Rows {
    /// The Parquet reader was handed the admitted rows as a row selection
    /// ([`selection`]): every row it yields is admitted.
    Selected,
    /// Every row's subject key (the input's column `key`) is looked up.
    Probed { key: usize, filter: SubjectFilter },
}

/// The scan's own operator: the Parquet reader's batches with only the
/// admitted rows, projected to the columns asked for.
#[derive(Debug, Clone)]
pub struct GovernedScanExec {
    input: Arc<dyn ExecutionPlan>,
    rows: Rows,
    /// The input's columns to output, in order.
    output: Vec<usize>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl GovernedScanExec {
    fn new(
        input: Arc<dyn ExecutionPlan>,
        rows: Rows,
        output: Vec<usize>,
        schema: SchemaRef,
    ) -> GovernedScanExec {
        // No ordering, no constants, no statistics are claimed: nothing the
        // file's metadata says about hidden rows reaches the planner.
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        GovernedScanExec {
            input,
            rows,
            output,
            schema,
            properties,
        }
    }
}

impl DisplayAs for GovernedScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rows {
            Rows::Selected => write!(f, "GovernedScanExec: subject filter as a row selection"),
            Rows::Probed { key, filter } => write!(
                f,
                "GovernedScanExec: {} subject filter on input column {key}",
                if filter.keep { "only" } else { "all but" },
            ),
        }
    }
}

impl ExecutionPlan for GovernedScanExec {
    fn name(&self) -> &str {
        "GovernedScanExec"
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> datafusion::error::Result<TreeNodeRecursion>,
    ) -> datafusion::error::Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(datafusion::error::DataFusionError::Internal(
                "GovernedScanExec has one input".into(),
            ));
        }
        Ok(Arc::new(GovernedScanExec::new(
            children.swap_remove(0),
            self.rows.clone(),
            self.output.clone(),
            self.schema.clone(),
        )))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(
                datafusion::physical_plan::execution_plan::ChildrenPropertiesMode::Recompute,
            ),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> datafusion::error::Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let (rows, output) = (self.rows.clone(), self.output.clone());
        let schema = self.schema.clone();
        let out_schema = schema.clone();
        let admitted = input.map(move |batch| {
            let batch = batch?;
            let projected = project_batch(&batch, &output, &out_schema)?;
            match &rows {
                Rows::Selected => Ok(projected),
                Rows::Probed { key, filter } => {
                    let mask = admitted_rows(batch.column(*key).as_ref(), filter)?;
                    Ok(filter_record_batch(&projected, &mask)?)
                }
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, admitted)))
    }

    #[allow(deprecated)]
    fn partition_statistics(
        &self,
        _partition: Option<usize>,
    ) -> datafusion::error::Result<Arc<Statistics>> {
        Ok(Arc::new(Statistics::new_unknown(&self.schema)))
    }
}

/// `batch`'s columns `output`, keeping the row count when none is kept
/// (a `COUNT(*)` reads no column but must count admitted rows).
fn project_batch(
    batch: &RecordBatch,
    output: &[usize],
    schema: &SchemaRef,
) -> datafusion::error::Result<RecordBatch> {
    let columns = output.iter().map(|&i| batch.column(i).clone()).collect();
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

/// Which rows of a batch the filter admits, by their subject key (compared
/// as text). A row that names no one is admitted only by an "all but" filter:
/// no one consented for it, and no one objected.
pub(crate) fn admitted_rows(
    keys: &dyn Array,
    filter: &SubjectFilter,
) -> datafusion::error::Result<BooleanArray> {
    let text = match keys.data_type() {
        DataType::Utf8 => keys.slice(0, keys.len()),
        _ => cast(keys, &DataType::Utf8)?,
    };
    let text = text.as_string::<i32>();
    let keep = filter.keep;
    let bits = if text.null_count() == 0 {
        BooleanBuffer::collect_bool(text.len(), |i| filter.keys.contains(text.value(i)) == keep)
    } else {
        BooleanBuffer::collect_bool(text.len(), |i| {
            if text.is_null(i) {
                !keep
            } else {
                filter.keys.contains(text.value(i)) == keep
            }
        })
    };
    Ok(BooleanArray::new(bits, None))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::file::properties::WriterProperties;

    use super::*;

    /// `rows` rows of (household, n) in row groups of 97, every 7th row
    /// without a household; n is the row's position.
    fn write(path: &std::path::Path, rows: i64, households: i64) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("household", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let keys: StringArray = (0..rows)
            .map(|i| (i % 7 != 3).then(|| format!("H-{}", (i * 31 + 5) % households)))
            .collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(keys),
                Arc::new(Int64Array::from_iter_values(0..rows)),
            ],
        )
        .unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(97))
            .build();
        let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, Some(props))
            .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    /// A session that splits even a small file over both partitions.
    fn session() -> SessionContext {
        let mut config = crate::export::config();
        config.options_mut().optimizer.repartition_file_min_size = 1;
        SessionContext::new_with_config(config)
    }

    /// (n → household) of the rows a governed read returns, and its plan.
    async fn read(
        path: &std::path::Path,
        filter: &SubjectFilter,
        strategy: Strategy,
        sql: &str,
    ) -> (Vec<Vec<String>>, String) {
        let ctx = session();
        let table = open_governed(&ctx, &path.to_string_lossy(), None, Some(filter), strategy)
            .await
            .unwrap();
        ctx.register_table("t", table).unwrap();
        let df = ctx.sql(sql).await.unwrap();
        let plan = format!(
            "{}",
            datafusion::physical_plan::displayable(
                df.clone().create_physical_plan().await.unwrap().as_ref()
            )
            .indent(true)
        );
        let mut rows = Vec::new();
        for batch in df.collect().await.unwrap() {
            for i in 0..batch.num_rows() {
                rows.push(
                    batch
                        .columns()
                        .iter()
                        .map(|c| {
                            datafusion::arrow::util::display::array_value_to_string(c, i).unwrap()
                        })
                        .collect(),
                );
            }
        }
        rows.sort();
        (rows, plan)
    }

    /// What the filter must return, worked out without the engine.
    fn expected(rows: i64, households: i64, filter: &SubjectFilter) -> BTreeMap<i64, String> {
        (0..rows)
            .filter_map(|i| {
                let key = (i % 7 != 3).then(|| format!("H-{}", (i * 31 + 5) % households));
                let admitted = match &key {
                    None => !filter.keep,
                    Some(k) => filter.keys.contains(k) == filter.keep,
                };
                admitted.then(|| (i, key.unwrap_or_default()))
            })
            .collect()
    }

    #[tokio::test]
    async fn a_row_selection_admits_exactly_the_rows_a_key_lookup_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.parquet");
        let (rows, households) = (5_000, 60);
        write(&path, rows, households);
        let some = |step: i64| {
            (0..households)
                .step_by(step as usize)
                .map(|h| format!("H-{h}"))
        };
        let filters = [
            SubjectFilter::only("household", some(3)),
            SubjectFilter::all_but("household", some(4)),
            SubjectFilter::only("household", ["H-7".to_string()]),
            SubjectFilter::only("household", ["nobody".to_string()]),
            SubjectFilter::all_but("household", some(1)),
        ];
        for filter in &filters {
            let want = expected(rows, households, filter);
            let all: Vec<Vec<String>> = {
                let mut v: Vec<Vec<String>> = want
                    .iter()
                    .map(|(n, k)| vec![k.clone(), n.to_string()])
                    .collect();
                v.sort();
                v
            };
            let mut ns: Vec<Vec<String>> = want.keys().map(|n| vec![n.to_string()]).collect();
            ns.sort();
            for strategy in [Strategy::Select, Strategy::Probe] {
                let (got, plan) = read(&path, filter, strategy, "SELECT household, n FROM t").await;
                assert_eq!(got, all, "{strategy:?} keep={}", filter.keep);
                assert_eq!(
                    plan.contains("as a row selection"),
                    strategy == Strategy::Select,
                    "{plan}"
                );
                // Without the key column, and counted.
                let (got, _) = read(&path, filter, strategy, "SELECT n FROM t").await;
                assert_eq!(got, ns, "{strategy:?}");
                let (got, _) = read(&path, filter, strategy, "SELECT count(*) FROM t").await;
                assert_eq!(got, vec![vec![want.len().to_string()]], "{strategy:?}");
                let (got, _) = read(
                    &path,
                    filter,
                    strategy,
                    "SELECT n FROM t WHERE n % 2 = 0 LIMIT 100000",
                )
                .await;
                assert_eq!(
                    got.len(),
                    want.keys().filter(|n| *n % 2 == 0).count(),
                    "{strategy:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_file_rewritten_in_place_is_not_read_with_the_old_files_selection() {
        // An erasure rewrites a version at the same location; the same
        // filter (same id) must not reuse the selection cached for the old file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.parquet");
        let filter = SubjectFilter::only("household", (0..20).map(|h| format!("H-{h}")));
        write(&path, 3_000, 40);
        let (before, plan) = read(&path, &filter, Strategy::Select, "SELECT n FROM t").await;
        assert!(plan.contains("as a row selection"), "{plan}");
        assert_eq!(before.len(), expected(3_000, 40, &filter).len());
        for (rows, households) in [(2_999, 40), (3_000, 41)] {
            write(&path, rows, households);
            let (after, _) = read(
                &path,
                &filter,
                Strategy::Select,
                "SELECT household, n FROM t",
            )
            .await;
            let want: Vec<Vec<String>> = {
                let mut v: Vec<Vec<String>> = expected(rows, households, &filter)
                    .into_iter()
                    .map(|(n, k)| vec![k, n.to_string()])
                    .collect();
                v.sort();
                v
            };
            assert_eq!(after, want, "{rows} rows of {households} households");
        }
    }
}
