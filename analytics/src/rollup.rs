//! Aggregate awareness: a query that sums a daily product or customer table over a date
//! range reads the table's month rollup ([`AggTable::rolls_up`]) for the range's whole months
//! and the daily table only for the partial months at its edges. A year of top products then
//! reads 12 rows per product instead of 365, on both back ends, whoever wrote the SQL (the
//! dashboard, an analyst, a BI tool).
//!
//! [`RollupRule`] is a DataFusion optimizer rule. It rewrites an aggregate of this shape:
//!
//! ```text
//! Aggregate: group by plain key columns (not `day`), only sum(measure column) calls
//!   [Projection of plain columns | SubqueryAlias | Filter]*
//!     TableScan: product_sales_daily or customer_spend_daily (no fetch)
//! ```
//!
//! where every filter conjunct is either a bound on `day` against a date literal (`<`, `<=`,
//! `=`, `>=`, `>`, `BETWEEN`) or a deterministic condition on the other key columns only
//! (no subquery),
//! and the bounds cover at least one whole month. It becomes the same aggregate over
//!
//! ```text
//! SubqueryAlias (the qualifier the aggregate's expressions use)
//!   Union
//!     Projection (the columns used) <- Filter (whole months, key conditions) <- the rollup
//!     Projection (the columns used) <- Filter (edge days, key conditions)   <- the daily table
//! ```
//!
//! The answer is the same: a sum over a set of days is the sum over its whole months' rows
//! plus its other days' rows, each day in exactly one of them, and a key condition holds for
//! a month row exactly when it holds for its day rows (same key). Anything else (a filter on
//! a sum, `count`, `min`, `avg`, a grouping by `day`) is left alone. `EXPLAIN` shows the
//! rollup's scan.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, Result as DfResult, ScalarValue};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::logical_expr::utils::{conjunction, disjunction, split_conjunction};
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, LogicalPlanBuilder, col, lit};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};
use shoplens_readmodel::aggregate::month_of;
use shoplens_readmodel::tables::AggTable;

use crate::plan::{column_bounds, plain_aggregate};

/// The optimizer rule; holds the providers of the daily tables and their rollups as the
/// session registered them.
#[derive(Debug)]
pub struct RollupRule {
    providers: HashMap<AggTable, Arc<dyn TableProvider>>,
}

impl RollupRule {
    /// `provider` gives each aggregate table's provider as the session registers it.
    pub fn new(provider: impl Fn(AggTable) -> Arc<dyn TableProvider>) -> RollupRule {
        let providers = AggTable::ALL
            .into_iter()
            .filter(|t| t.rollup().is_some() || t.rolls_up().is_some())
            .map(|t| (t, provider(t)))
            .collect();
        RollupRule { providers }
    }

    /// The daily table `plan` scans and its rollup, if it is one with a rollup (the
    /// session's own table, not a look-alike of the same name).
    fn daily_table(&self, plan: &LogicalPlan) -> Option<(AggTable, AggTable)> {
        let LogicalPlan::TableScan(scan) = plan else {
            return None;
        };
        let provider = source_as_provider(&scan.source).ok()?;
        self.providers.iter().find_map(|(table, p)| {
            let rollup = table.rollup()?;
            Arc::ptr_eq(p, &provider).then_some((*table, rollup))
        })
    }

    fn rewrite_aggregate(&self, agg: &Aggregate) -> DfResult<Option<LogicalPlan>> {
        // Down to the scan, collecting the filters on the way.
        let mut conjuncts: Vec<Expr> = Vec::new();
        let mut node = agg.input.as_ref();
        let (daily, rollup) = loop {
            match node {
                LogicalPlan::Projection(p)
                    if p.expr.iter().all(|e| matches!(e, Expr::Column(_))) =>
                {
                    node = &p.input
                }
                LogicalPlan::SubqueryAlias(a) => node = &a.input,
                LogicalPlan::Filter(f) => {
                    conjuncts.extend(split_conjunction(&f.predicate).into_iter().cloned());
                    node = &f.input;
                }
                LogicalPlan::TableScan(scan) => match self.daily_table(node) {
                    Some(t) if scan.fetch.is_none() => {
                        for f in &scan.filters {
                            conjuncts.extend(split_conjunction(f).into_iter().cloned());
                        }
                        break t;
                    }
                    _ => return Ok(None),
                },
                _ => return Ok(None),
            }
        };
        let schema = daily.schema();
        let period = schema.field(0).name().as_str();
        let keys: Vec<&str> = schema.fields()[1..daily.key_columns()]
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let measures: Vec<&str> = schema.fields()[daily.key_columns()..]
            .iter()
            .map(|f| f.name().as_str())
            .collect();

        // Grouped by keys, summing measures; every column it uses has one qualifier.
        let mut used: Vec<&Column> = Vec::new();
        for e in &agg.group_expr {
            match e {
                Expr::Column(c) if keys.contains(&c.name.as_str()) => used.push(c),
                _ => return Ok(None),
            }
        }
        for e in &agg.aggr_expr {
            match summed_column(e) {
                Some(c) if measures.contains(&c.name.as_str()) => used.push(c),
                _ => return Ok(None),
            }
        }
        let Some(qualifier) = used.first().and_then(|c| c.relation.clone()) else {
            return Ok(None);
        };
        if used.iter().any(|c| c.relation.as_ref() != Some(&qualifier)) {
            return Ok(None);
        }

        // The filters: bounds on the day, and conditions on the other keys.
        let (mut lo, mut hi) = (None::<i32>, None::<i32>);
        let mut on_keys = Vec::new();
        for c in conjuncts {
            if let Some((l, h)) = column_bounds(&c, period) {
                lo = max_bound(lo, l);
                hi = min_bound(hi, h);
                continue;
            }
            let refs = c.column_refs();
            let subquery = c
                .exists(|e| {
                    Ok(matches!(
                        e,
                        Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_)
                    ))
                })
                .unwrap_or(true);
            if subquery || c.is_volatile() || refs.iter().any(|r| !keys.contains(&r.name.as_str()))
            {
                return Ok(None);
            }
            on_keys.push(unqualified(c)?);
        }

        // The whole months inside [lo, hi]: from `first` to `last` (first days).
        let first = lo.map(|d| if month_of(d) == d { d } else { next_month(d) });
        let last = hi.map(|d| {
            if next_month(d) == d + 1 {
                month_of(d)
            } else {
                month_of(month_of(d) - 1)
            }
        });
        if let (Some(f), Some(l)) = (first, last)
            && f > l
        {
            return Ok(None);
        }
        let month = rollup.schema().field(0).name().clone();
        let mut months = on_keys.clone();
        months.extend(first.map(|f| col(&month).gt_eq(lit(ScalarValue::Date32(Some(f))))));
        months.extend(last.map(|l| col(&month).lt_eq(lit(ScalarValue::Date32(Some(l))))));
        let mut edges = Vec::new();
        let day = |d: i32| lit(ScalarValue::Date32(Some(d)));
        if let (Some(l), Some(f)) = (lo, first)
            && l < f
        {
            edges.push(col(period).between(day(l), day(f - 1)));
        }
        if let (Some(l), Some(h)) = (last, hi) {
            let after = next_month(l);
            if after <= h {
                edges.push(col(period).between(day(after), day(h)));
            }
        }

        // The columns used, each once.
        let mut names: Vec<&str> = Vec::new();
        for c in &used {
            if !names.contains(&c.name.as_str()) {
                names.push(&c.name);
            }
        }
        let columns: Vec<Expr> = names.into_iter().map(col).collect();
        let branch = |table: AggTable, predicate: Option<Expr>| -> DfResult<LogicalPlan> {
            let source = provider_as_source(self.providers[&table].clone());
            let mut b = LogicalPlanBuilder::scan(table.name(), source, None)?;
            if let Some(p) = predicate {
                b = b.filter(p)?;
            }
            b.project(columns.clone())?.build()
        };
        let mut input = LogicalPlanBuilder::from(branch(rollup, conjunction(months))?);
        if let Some(edge_days) = disjunction(edges) {
            let days = conjunction(on_keys.into_iter().chain([edge_days]));
            input = input.union(branch(daily, days)?)?;
        }
        let input = input.alias(qualifier)?.build()?;
        let rewritten = Aggregate::try_new(
            Arc::new(input),
            agg.group_expr.clone(),
            agg.aggr_expr.clone(),
        )?;
        Ok(Some(LogicalPlan::Aggregate(rewritten)))
    }
}

impl OptimizerRule for RollupRule {
    fn name(&self) -> &str {
        "month_rollup"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> DfResult<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(agg) = &plan else {
            return Ok(Transformed::no(plan));
        };
        Ok(match self.rewrite_aggregate(agg)? {
            Some(rewritten) => Transformed::yes(rewritten),
            None => Transformed::no(plan),
        })
    }
}

/// The column of `sum(column)` (possibly aliased), if `e` is exactly that.
fn summed_column(e: &Expr) -> Option<&Column> {
    match plain_aggregate(e)? {
        ("sum", Expr::Column(c)) => Some(c),
        _ => None,
    }
}

fn max_bound(a: Option<i32>, b: Option<i32>) -> Option<i32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn min_bound(a: Option<i32>, b: Option<i32>) -> Option<i32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The first day of the month after the month of `day`.
fn next_month(day: i32) -> i32 {
    month_of(month_of(day) + 31)
}

/// `e` with its columns unqualified, to apply to either branch's scan.
fn unqualified(e: Expr) -> DfResult<Expr> {
    Ok(e.transform(|e| {
        Ok(match e {
            Expr::Column(c) => Transformed::yes(Expr::Column(Column::new_unqualified(c.name))),
            e => Transformed::no(e),
        })
    })?
    .data)
}
