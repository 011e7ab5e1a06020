//! What no read may exceed, whatever it asks (the query's share of the
//! server): the size of a value a function computes, the memory and the
//! temporary disk of every read together.
//!
//! * **Function results.** A function whose result can be far larger than
//!   its arguments (`repeat('x', 500000000)`, `lpad`, `rpad`, `replace`,
//!   `concat`, `concat_ws`, `overlay`, and the `||` operator, which is
//!   rewritten into [`CONCAT_OPERATOR`]) is checked *before* it allocates:
//!   its result, worked out from the sizes of its arguments, may be at most
//!   [`MAX_VALUE_BYTES`] a value and [`MAX_BATCH_BYTES`] a batch of rows.
//!   Every other function's result is no larger than its arguments, which
//!   were checked in turn, so nesting or chaining through subqueries grows
//!   a value at most to those bounds.
//! * **Memory and disk.** Every read session of a node shares one memory
//!   pool and one temporary-disk allowance ([`ReadResources`]): sorts, joins
//!   and aggregations that need more either spill within the allowance or
//!   fail with "resources exhausted" — the node itself never runs out.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::FunctionRegistry;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, MemoryPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::FunctionRewrite;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ExprSchemable, Operator, ReturnFieldArgs,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

use crate::LimitExceeded;

/// The largest value a function may compute (bytes).
pub const MAX_VALUE_BYTES: u64 = 1024 * 1024;
/// The most a function may compute for one batch of rows (bytes).
pub const MAX_BATCH_BYTES: u64 = 64 * 1024 * 1024;
/// The name `a || b` is planned as (text), so it is checked like `concat`.
pub const CONCAT_OPERATOR: &str = "citytrust_concat_operator";

/// The memory and temporary disk all reads of one node share.
#[derive(Debug, Clone)]
pub struct ReadResources {
    /// Memory every read session together may hold for sorts, joins,
    /// aggregations and buffers (bytes).
    pub memory_bytes: usize,
    /// Where spill files go (a node-local directory), and how much they may
    /// take together (bytes).
    pub spill_dir: Option<std::path::PathBuf>,
    pub spill_bytes: u64,
}

impl Default for ReadResources {
    fn default() -> Self {
        ReadResources {
            memory_bytes: 1024 * 1024 * 1024,
            spill_dir: None,
            spill_bytes: 2 * 1024 * 1024 * 1024,
        }
    }
}

impl ReadResources {
    /// The runtime every read session of the node is built on.
    pub fn runtime(&self) -> crate::Result<Arc<RuntimeEnv>> {
        let pool: Arc<dyn MemoryPool> = Arc::new(FairSpillPool::new(self.memory_bytes));
        let mode = match &self.spill_dir {
            Some(dir) => DiskManagerMode::Directories(vec![dir.clone()]),
            None => DiskManagerMode::OsTmpDirectory,
        };
        Ok(RuntimeEnvBuilder::new()
            .with_memory_pool(pool)
            .with_disk_manager_builder(
                DiskManagerBuilder::default()
                    .with_mode(mode)
                    .with_max_temp_directory_size(self.spill_bytes),
            )
            .build_arc()?)
    }
}

/// Replace, in `ctx`, every function whose result can outgrow its
/// arguments by a checked one, and plan `||` on text as [`CONCAT_OPERATOR`].
pub fn bound_functions(ctx: &mut SessionContext) -> crate::Result<()> {
    for (name, rule) in [
        ("repeat", Rule::Repeat),
        ("lpad", Rule::Pad),
        ("rpad", Rule::Pad),
        ("replace", Rule::Replace),
        ("concat", Rule::Sum),
        ("concat_ws", Rule::ConcatWs),
        ("overlay", Rule::Sum),
    ] {
        if let Ok(inner) = ctx.udf(name) {
            ctx.register_udf(Arc::new(ScalarUDF::new_from_impl(Bounded {
                inner: inner.inner().clone(),
                rule,
            })))?;
        }
    }
    ctx.register_udf(Arc::new(ScalarUDF::new_from_impl(ConcatOperator::new())))?;
    ctx.register_function_rewrite(Arc::new(ConcatRewrite))?;
    Ok(())
}

/// How big a function's result can be, from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Rule {
    /// `repeat(text, n)`: text × n.
    Repeat,
    /// `lpad(text, n [, fill])`: n characters of up to 4 bytes.
    Pad,
    /// `replace(text, from, to)`: every match (or, with an empty `from`,
    /// every gap) replaced.
    Replace,
    /// The arguments put together.
    Sum,
    /// `concat_ws(separator, …)`: the arguments and a separator between each.
    ConcatWs,
}

/// Each argument's size per row: a text's length in bytes, an integer's
/// value (a count), anything else 0.
fn sizes(arg: &ColumnarValue, rows: usize) -> DfResult<Vec<u64>> {
    fn of_array(a: &ArrayRef) -> DfResult<Vec<u64>> {
        Ok(match a.data_type() {
            DataType::Utf8 => {
                let s = a.as_string::<i32>();
                (0..s.len())
                    .map(|i| {
                        if s.is_null(i) {
                            0
                        } else {
                            s.value(i).len() as u64
                        }
                    })
                    .collect()
            }
            DataType::LargeUtf8 => {
                let s = a.as_string::<i64>();
                (0..s.len())
                    .map(|i| {
                        if s.is_null(i) {
                            0
                        } else {
                            s.value(i).len() as u64
                        }
                    })
                    .collect()
            }
            DataType::Utf8View => {
                let s = a.as_string_view();
                (0..s.len())
                    .map(|i| {
                        if s.is_null(i) {
                            0
                        } else {
                            s.value(i).len() as u64
                        }
                    })
                    .collect()
            }
            t if t.is_integer() => {
                let n = cast(a, &DataType::Int64)?;
                let n = n.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
                (0..n.len())
                    .map(|i| {
                        if n.is_null(i) {
                            0
                        } else {
                            n.value(i).max(0) as u64
                        }
                    })
                    .collect()
            }
            _ => vec![0; a.len()],
        })
    }
    match arg {
        ColumnarValue::Array(a) => of_array(a),
        ColumnarValue::Scalar(s) => {
            let one = of_array(&s.to_array_of_size(1)?)?;
            Ok(vec![one.first().copied().unwrap_or(0); rows])
        }
    }
}

fn too_large(function: &str) -> DataFusionError {
    DataFusionError::External(Box::new(LimitExceeded(format!(
        "a value computed by {function}() would be larger than the trust allows ({} MiB a \
         value, {} MiB a batch of rows)",
        MAX_VALUE_BYTES >> 20,
        MAX_BATCH_BYTES >> 20
    ))))
}

/// Check the result `rule` bounds before `function` computes it.
fn check(function: &str, rule: Rule, args: &[ColumnarValue], rows: usize) -> DfResult<()> {
    let sizes: Vec<Vec<u64>> = args
        .iter()
        .map(|a| sizes(a, rows))
        .collect::<DfResult<_>>()?;
    let at = |arg: usize, row: usize| {
        sizes
            .get(arg)
            .and_then(|s| s.get(row))
            .copied()
            .unwrap_or(0)
    };
    let mut total: u64 = 0;
    for row in 0..rows {
        let bound = match rule {
            Rule::Repeat => at(0, row).saturating_mul(at(1, row)),
            Rule::Pad => at(1, row).saturating_mul(4),
            Rule::Replace => {
                let (text, from, to) = (at(0, row), at(1, row), at(2, row));
                let places = text / from.max(1) + 1;
                text.saturating_add(places.saturating_mul(to))
            }
            Rule::Sum => (0..args.len())
                .map(|a| at(a, row))
                .fold(0u64, u64::saturating_add),
            Rule::ConcatWs => {
                let parts = (1..args.len())
                    .map(|a| at(a, row))
                    .fold(0u64, u64::saturating_add);
                parts.saturating_add(at(0, row).saturating_mul(args.len() as u64))
            }
        };
        if bound > MAX_VALUE_BYTES {
            return Err(too_large(function));
        }
        total = total.saturating_add(bound);
        if total > MAX_BATCH_BYTES {
            return Err(too_large(function));
        }
    }
    Ok(())
}

/// A function of DataFusion's, checked by `rule` before it runs. Its
/// simplifications are not forwarded: they would put the unchecked function
/// back into the plan.
#[derive(Debug)]
struct Bounded {
    inner: Arc<dyn ScalarUDFImpl>,
    rule: Rule,
}

impl PartialEq for Bounded {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner) && self.rule == other.rule
    }
}
impl Eq for Bounded {}
impl std::hash::Hash for Bounded {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inner.name().hash(state);
        self.rule.hash(state);
    }
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }
    fn schema_name(&self, args: &[Expr]) -> DfResult<String> {
        self.inner.schema_name(args)
    }
    fn signature(&self) -> &Signature {
        self.inner.signature()
    }
    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        self.inner.return_type(arg_types)
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        self.inner.return_field_from_args(args)
    }
    fn is_strict(&self) -> bool {
        self.inner.is_strict()
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }
    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        check(self.inner.name(), self.rule, &args.args, args.number_rows)?;
        self.inner.invoke_with_args(args)
    }
}

/// `a || b` on text: NULL when either is NULL, else the two put together —
/// checked like `concat` first.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ConcatOperator {
    signature: Signature,
}

impl ConcatOperator {
    fn new() -> ConcatOperator {
        ConcatOperator {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for ConcatOperator {
    fn name(&self) -> &str {
        CONCAT_OPERATOR
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        Ok(vec![DataType::Utf8; arg_types.len()])
    }
    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        check("||", Rule::Sum, &args.args, rows)?;
        let all_scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let texts: Vec<StringArray> = args
            .args
            .iter()
            .map(|a| {
                let a = a.to_array(if all_scalar { 1 } else { rows })?;
                let a = cast(&a, &DataType::Utf8)?;
                Ok(a.as_string::<i32>().clone())
            })
            .collect::<DfResult<_>>()?;
        let len = texts.first().map(|t| t.len()).unwrap_or(0);
        let out: StringArray = (0..len)
            .map(|i| {
                let mut s = String::new();
                for t in &texts {
                    if t.is_null(i) {
                        return None;
                    }
                    s.push_str(t.value(i));
                }
                Some(s)
            })
            .collect();
        if all_scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
        } else {
            Ok(ColumnarValue::Array(Arc::new(out)))
        }
    }
}

/// Plans `a || b` on text as [`CONCAT_OPERATOR`] (the column keeps its name).
#[derive(Debug)]
struct ConcatRewrite;

impl FunctionRewrite for ConcatRewrite {
    fn name(&self) -> &str {
        "citytrust_bounded_concat"
    }
    fn rewrite(
        &self,
        expr: Expr,
        schema: &DFSchema,
        _config: &ConfigOptions,
    ) -> DfResult<Transformed<Expr>> {
        let Expr::BinaryExpr(b) = &expr else {
            return Ok(Transformed::no(expr));
        };
        if b.op != Operator::StringConcat {
            return Ok(Transformed::no(expr));
        }
        let is_text = |e: &Expr| {
            e.get_type(schema).is_ok_and(|t| {
                matches!(
                    t,
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
                )
            })
        };
        if !(is_text(&b.left) || is_text(&b.right)) {
            return Ok(Transformed::no(expr));
        }
        let Expr::BinaryExpr(b) = expr else {
            return Ok(Transformed::no(expr));
        };
        Ok(Transformed::yes(Expr::ScalarFunction(
            ScalarFunction::new_udf(
                Arc::new(ScalarUDF::new_from_impl(ConcatOperator::new())),
                vec![*b.left, *b.right],
            ),
        )))
    }
}
