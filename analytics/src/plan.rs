//! Shapes of DataFusion expressions that the plan rewrites (the month rollups,
//! `crate::rollup`; the ClickHouse pushdown, `crate::clickhouse::pushdown`) and the embedded
//! store's period pruning (`crate::embedded`) recognise.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::expr::{AggregateFunction, Between, BinaryExpr};
use datafusion::logical_expr::{Expr, Operator};

/// `e` without its alias.
pub fn unalias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => &a.expr,
        e => e,
    }
}

/// An aggregate of one argument with nothing that changes which rows it reads (no
/// `DISTINCT`, `FILTER`, `ORDER BY` or null treatment), alias or not: its function's name
/// and its argument.
pub fn plain_aggregate(e: &Expr) -> Option<(&str, &Expr)> {
    let Expr::AggregateFunction(AggregateFunction { func, params }) = unalias(e) else {
        return None;
    };
    if params.distinct
        || params.filter.is_some()
        || !params.order_by.is_empty()
        || params.null_treatment.is_some()
    {
        return None;
    }
    match params.args.as_slice() {
        [arg] => Some((func.name(), arg)),
        _ => None,
    }
}

/// The inclusive bounds that `e` puts on column `column` (a day, month or year as an `i32`)
/// if it compares that column with a `Date32` or `Int32` literal (`<`, `<=`, `=`, `>=`, `>`,
/// either way round, or `BETWEEN`); `None` as a bound leaves that end open.
pub fn column_bounds(e: &Expr, column: &str) -> Option<(Option<i32>, Option<i32>)> {
    let is_column = |e: &Expr| matches!(e, Expr::Column(c) if c.name == column);
    let value = |e: &Expr| match e {
        Expr::Literal(ScalarValue::Date32(Some(v)) | ScalarValue::Int32(Some(v)), _) => Some(*v),
        _ => None,
    };
    match e {
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) if is_column(expr) => Some((Some(value(low)?), Some(value(high)?))),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (op, v) = if is_column(left) {
                (*op, value(right)?)
            } else if is_column(right) {
                (op.swap()?, value(left)?)
            } else {
                return None;
            };
            match op {
                Operator::Eq => Some((Some(v), Some(v))),
                Operator::GtEq => Some((Some(v), None)),
                Operator::Gt => Some((Some(v.checked_add(1)?), None)),
                Operator::LtEq => Some((None, Some(v))),
                Operator::Lt => Some((None, Some(v.checked_sub(1)?))),
                _ => None,
            }
        }
        _ => None,
    }
}
