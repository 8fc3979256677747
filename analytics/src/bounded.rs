//! Bounds on the scalar functions whose output size is set by an argument's *value* rather
//! than by their input: `repeat('x', 2000000000)` builds a 2 GB string, `array_repeat(1,
//! 1e9)` an 8 GB list. DataFusion's memory pool only sees operators (joins, sorts,
//! aggregates), not what a function allocates, so one such query could take the whole
//! server down. Each listed function is wrapped: before it runs on a batch, the size it
//! would build is estimated from its arguments and the call fails with a resources error
//! (a `memory_limit` answer) when that exceeds [`MAX_FUNCTION_OUTPUT`].

use arrow_array::{Array, ArrayRef, Int64Array};
use arrow_schema::{DataType, FieldRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::{ExprSchema, Result};
use datafusion::error::DataFusionError;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ExpressionPlacement, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;

/// The most bytes (strings) or elements (lists) one call of a bounded function may build
/// for one batch.
pub const MAX_FUNCTION_OUTPUT: u128 = 64 * 1024 * 1024;

/// How a function's output size follows from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Bound {
    /// `repeat(s, n)`: `len(s) * n` bytes.
    Repeat,
    /// The value of argument `arg` is the output's length (`lpad(s, n)`, `array_repeat(v,
    /// n)`, `array_resize(a, n)`).
    CountArg(usize),
    /// `range`/`generate_series(start, stop[, step])` over integers: `(stop - start) / step`
    /// elements.
    Series,
    /// `replace(s, from, to)` and `regexp_replace(s, pattern, to)`: at most one `to` per
    /// position of `s` when `to` is longer than what it replaces.
    Replace,
}

const BOUNDED: &[(&str, Bound)] = &[
    ("repeat", Bound::Repeat),
    ("lpad", Bound::CountArg(1)),
    ("rpad", Bound::CountArg(1)),
    ("array_repeat", Bound::CountArg(1)),
    ("array_resize", Bound::CountArg(1)),
    ("range", Bound::Series),
    ("generate_series", Bound::Series),
    ("replace", Bound::Replace),
    ("regexp_replace", Bound::Replace),
];

/// Replaces the listed functions of `ctx` by their bounded versions (same names, aliases,
/// signatures and results).
pub fn bound_functions(ctx: &SessionContext) {
    for (name, bound) in BOUNDED {
        if let Ok(inner) = ctx.udf(name) {
            ctx.register_udf(ScalarUDF::new_from_impl(Bounded {
                inner: (*inner).clone(),
                bound: *bound,
            }));
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: ScalarUDF,
    bound: Bound,
}

/// One argument, as integers per row (a scalar applies to every row; null counts as 0).
struct Ints(Int64Array);

impl Ints {
    fn of(arg: &ColumnarValue) -> Result<Ints> {
        let array = to_array(arg)?;
        let ints = match array.data_type() {
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64 => datafusion::arrow::compute::cast(&array, &DataType::Int64)?,
            // Not a count this bound understands (a date series): no estimate.
            _ => std::sync::Arc::new(Int64Array::new_null(array.len())) as ArrayRef,
        };
        Ok(Ints(
            ints.as_any()
                .downcast_ref::<Int64Array>()
                .cloned()
                .unwrap_or_else(|| Int64Array::new_null(0)),
        ))
    }

    /// Byte lengths of a string or binary argument.
    fn lengths(arg: &ColumnarValue) -> Result<Ints> {
        let array = to_array(arg)?;
        match datafusion::arrow::compute::kernels::length::length(&array) {
            Ok(lengths) => Ints::of(&ColumnarValue::Array(lengths)),
            Err(_) => Ok(Ints(Int64Array::new_null(array.len()))),
        }
    }

    fn get(&self, row: usize) -> i128 {
        let a = &self.0;
        let i = if a.len() == 1 { 0 } else { row };
        if i >= a.len() || a.is_null(i) {
            0
        } else {
            i128::from(a.value(i))
        }
    }
}

fn to_array(arg: &ColumnarValue) -> Result<ArrayRef> {
    match arg {
        ColumnarValue::Array(a) => Ok(a.clone()),
        ColumnarValue::Scalar(s) => s.to_array_of_size(1),
    }
}

/// What `bound` says the call builds, summed over the batch's rows.
fn estimate(bound: Bound, args: &[ColumnarValue], rows: usize) -> Result<u128> {
    // All scalar arguments: the function runs once and returns one value.
    let rows = if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
        1
    } else {
        rows
    };
    let arg = |i: usize| args.get(i);
    let mut total: i128 = 0;
    match bound {
        Bound::Repeat => {
            let (Some(s), Some(n)) = (arg(0), arg(1)) else {
                return Ok(0);
            };
            let (s, n) = (Ints::lengths(s)?, Ints::of(n)?);
            for row in 0..rows {
                total = total.saturating_add(s.get(row).saturating_mul(n.get(row).max(0)));
            }
        }
        Bound::CountArg(i) => {
            let Some(n) = arg(i) else { return Ok(0) };
            let n = Ints::of(n)?;
            for row in 0..rows {
                total = total.saturating_add(n.get(row).max(0));
            }
        }
        Bound::Series => {
            let ints: Vec<Ints> = args.iter().map(Ints::of).collect::<Result<_>>()?;
            for row in 0..rows {
                let (start, stop, step) = match ints.as_slice() {
                    [stop] => (0, stop.get(row), 1),
                    [start, stop] => (start.get(row), stop.get(row), 1),
                    [start, stop, step, ..] => (start.get(row), stop.get(row), step.get(row)),
                    [] => (0, 0, 1),
                };
                let step = step.abs().max(1);
                total = total.saturating_add((stop - start).abs() / step + 1);
            }
        }
        Bound::Replace => {
            let (Some(s), Some(from), Some(to)) = (arg(0), arg(1), arg(2)) else {
                return Ok(0);
            };
            let (s, from, to) = (Ints::lengths(s)?, Ints::lengths(from)?, Ints::lengths(to)?);
            for row in 0..rows {
                let (s, from, to) = (s.get(row), from.get(row), to.get(row));
                let grows = if to > from {
                    (s / from.max(1) + 1).saturating_mul(to)
                } else {
                    0
                };
                total = total.saturating_add(s.saturating_add(grows));
            }
        }
    }
    Ok(total.max(0) as u128)
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.inner().schema_name(args)
    }

    fn is_strict(&self) -> bool {
        self.inner.inner().is_strict()
    }

    /// The inner function's updated version, bounded too.
    fn with_updated_config(&self, config: &ConfigOptions) -> Option<ScalarUDF> {
        let inner = self.inner.inner().with_updated_config(config)?;
        Some(ScalarUDF::new_from_impl(Bounded {
            inner,
            bound: self.bound,
        }))
    }

    fn evaluate_bounds(&self, input: &[&Interval]) -> Result<Interval> {
        self.inner.inner().evaluate_bounds(input)
    }

    fn strictly_order_preserving(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.inner().strictly_order_preserving(inputs)
    }

    fn placement(&self, args: &[ExpressionPlacement]) -> ExpressionPlacement {
        self.inner.inner().placement(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.inner().return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.inner().return_field_from_args(args)
    }

    #[allow(deprecated)]
    fn is_nullable(&self, args: &[Expr], schema: &dyn ExprSchema) -> bool {
        self.inner.inner().is_nullable(args, schema)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let size = estimate(self.bound, &args.args, args.number_rows)?;
        if size > MAX_FUNCTION_OUTPUT {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{}() would build {size} bytes or elements for one batch, more than the \
                 {MAX_FUNCTION_OUTPUT} a function may",
                self.name()
            )));
        }
        self.inner.invoke_with_args(args)
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.inner().simplify(args, info)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.inner().output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.inner().preserves_lex_ordering(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.inner().coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

#[cfg(test)]
mod tests {
    use datafusion::common::ScalarValue;

    use super::*;

    fn scalar(v: i64) -> ColumnarValue {
        ColumnarValue::Scalar(ScalarValue::Int64(Some(v)))
    }

    fn text(s: &str) -> ColumnarValue {
        ColumnarValue::Scalar(ScalarValue::Utf8(Some(s.into())))
    }

    #[test]
    fn estimates_follow_the_arguments() {
        assert_eq!(
            estimate(Bound::Repeat, &[text("ab"), scalar(10)], 100).unwrap(),
            20
        );
        let names: ArrayRef =
            std::sync::Arc::new(arrow_array::StringArray::from(vec!["a", "bcd", ""]));
        assert_eq!(
            estimate(Bound::Repeat, &[ColumnarValue::Array(names), scalar(5)], 3).unwrap(),
            20
        );
        assert_eq!(
            estimate(Bound::Series, &[scalar(1), scalar(100), scalar(10)], 1).unwrap(),
            10
        );
        assert_eq!(estimate(Bound::Series, &[scalar(-5)], 1).unwrap(), 6);
        assert_eq!(
            estimate(Bound::CountArg(1), &[scalar(1), scalar(-3)], 1).unwrap(),
            0
        );
        assert_eq!(
            estimate(Bound::Replace, &[text("aaaa"), text("a"), text("bbb")], 1).unwrap(),
            4 + 5 * 3
        );
        assert_eq!(
            estimate(Bound::Replace, &[text("aaaa"), text("aa"), text("b")], 1).unwrap(),
            4
        );
        assert!(
            estimate(Bound::Repeat, &[text("x"), scalar(i64::MAX)], 1).unwrap()
                > MAX_FUNCTION_OUTPUT
        );
    }
}
