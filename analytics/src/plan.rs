//! Shapes of DataFusion expressions that the plan rewrites (the month rollups,
//! `crate::rollup`; the ClickHouse pushdown, `crate::clickhouse::pushdown`) both recognise.

use datafusion::logical_expr::Expr;
use datafusion::logical_expr::expr::AggregateFunction;

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
