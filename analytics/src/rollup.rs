//! Aggregate awareness: a query that sums a daily product or customer table over a date
//! range reads the table's month rollup for the range's whole months, its week rollup for
//! the whole weeks (Monday to Sunday) left at the edges, and the daily table only for the
//! days left over ([`AggTable::rolls_up`], [`Grain`]). A year of top products then reads
//! about 12 rows per product instead of 365, and 30 days about 4 rows plus at most 12 days,
//! on both back ends, whoever wrote the SQL (the dashboard, an analyst, a BI tool).
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
//! and the bounds cover at least one whole week. It becomes the same aggregate over
//!
//! ```text
//! SubqueryAlias (the qualifier the aggregate's expressions use)
//!   Union (of those branches that have periods to read)
//!     Projection (the columns used) <- Filter (whole months, key conditions) <- month rollup
//!     Projection (the columns used) <- Filter (edge weeks, key conditions)   <- week rollup
//!     Projection (the columns used) <- Filter (edge days, key conditions)    <- daily table
//! ```
//!
//! The answer is the same: a sum over a set of days is the sum over its whole months' rows,
//! its other whole weeks' rows and its remaining days' rows, each day in exactly one of
//! them, and a key condition holds for a rollup row exactly when it holds for its day rows
//! (same key). Anything else (a filter on a sum, `count`, `min`, `avg`, a grouping by `day`)
//! is left alone. `EXPLAIN` shows the rollups' scans.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, Result as DfResult, ScalarValue};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::logical_expr::utils::{conjunction, disjunction, split_conjunction};
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, LogicalPlanBuilder, col, lit};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};
use shoplens_readmodel::tables::{AggTable, Grain};

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
            .filter(|t| t.rollup(Grain::Month).is_some() || t.rolls_up().is_some())
            .map(|t| (t, provider(t)))
            .collect();
        RollupRule { providers }
    }

    /// The daily table `plan` scans, if it is one with rollups (the session's own table, not
    /// a look-alike of the same name).
    fn daily_table(&self, plan: &LogicalPlan) -> Option<AggTable> {
        let LogicalPlan::TableScan(scan) = plan else {
            return None;
        };
        let provider = source_as_provider(&scan.source).ok()?;
        self.providers.iter().find_map(|(table, p)| {
            table.rollup(Grain::Month)?;
            Arc::ptr_eq(p, &provider).then_some(*table)
        })
    }

    fn rewrite_aggregate(&self, agg: &Aggregate) -> DfResult<Option<LogicalPlan>> {
        // Down to the scan, collecting the filters on the way.
        let mut conjuncts: Vec<Expr> = Vec::new();
        let mut node = agg.input.as_ref();
        let daily = loop {
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
        let (Some(by_month), Some(by_week)) =
            (daily.rollup(Grain::Month), daily.rollup(Grain::Week))
        else {
            return Ok(None);
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

        // The whole months inside [lo, hi]; the days outside them, as spans.
        let months = whole_periods(Grain::Month, lo, hi);
        let rest = match months {
            Some((first, last)) => outside(Grain::Month, (lo, hi), (first, last)),
            // No whole month: both bounds are set (an open range holds months).
            None => vec![(lo.unwrap_or(i32::MIN), hi.unwrap_or(i32::MAX))],
        };
        // The whole weeks inside each span, and the days left over.
        let (mut weeks, mut days) = (Vec::new(), Vec::new());
        for (a, b) in rest {
            match whole_periods(Grain::Week, Some(a), Some(b)) {
                Some((Some(first), Some(last))) => {
                    weeks.push((first, last));
                    days.extend(outside(
                        Grain::Week,
                        (Some(a), Some(b)),
                        (Some(first), Some(last)),
                    ));
                }
                _ => days.push((a, b)),
            }
        }
        if months.is_none() && weeks.is_empty() {
            return Ok(None);
        }
        let date = |d: i32| lit(ScalarValue::Date32(Some(d)));
        let within = |column: &str, spans: &[(i32, i32)]| {
            disjunction(
                spans
                    .iter()
                    .map(|&(a, b)| col(column).between(date(a), date(b))),
            )
        };

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
        let mut branches = Vec::new();
        if let Some((first, last)) = months {
            let month = by_month.schema().field(0).name().clone();
            let mut predicate = on_keys.clone();
            predicate.extend(first.map(|f| col(&month).gt_eq(date(f))));
            predicate.extend(last.map(|l| col(&month).lt_eq(date(l))));
            branches.push(branch(by_month, conjunction(predicate))?);
        }
        let week = by_week.schema().field(0).name().clone();
        if let Some(weeks) = within(&week, &weeks) {
            let predicate = conjunction(on_keys.iter().cloned().chain([weeks]));
            branches.push(branch(by_week, predicate)?);
        }
        if let Some(days) = within(period, &days) {
            let predicate = conjunction(on_keys.into_iter().chain([days]));
            branches.push(branch(daily, predicate)?);
        }
        let mut branches = branches.into_iter();
        let Some(first) = branches.next() else {
            return Ok(None);
        };
        let mut input = LogicalPlanBuilder::from(first);
        for b in branches {
            input = input.union(b)?;
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

/// The first and last of the whole periods (weeks or months, by their first days) inside
/// `[lo, hi]` (`None`: unbounded on that side); `None` if no period is whole inside it.
fn whole_periods(
    grain: Grain,
    lo: Option<i32>,
    hi: Option<i32>,
) -> Option<(Option<i32>, Option<i32>)> {
    let first = lo.map(|d| {
        if grain.start(d) == d {
            d
        } else {
            grain.next(d)
        }
    });
    let last = hi.map(|d| {
        if grain.next(d) == d.saturating_add(1) {
            grain.start(d)
        } else {
            grain.start(grain.start(d).saturating_sub(1))
        }
    });
    match (first, last) {
        (Some(f), Some(l)) if f > l => None,
        bounds => Some(bounds),
    }
}

/// The days of `[lo, hi]` before and after its whole periods from `first` to `last` (first
/// days, as [`whole_periods`] gives them), as spans; an unbounded side has none.
fn outside(
    grain: Grain,
    (lo, hi): (Option<i32>, Option<i32>),
    (first, last): (Option<i32>, Option<i32>),
) -> Vec<(i32, i32)> {
    let mut spans = Vec::new();
    if let (Some(l), Some(f)) = (lo, first)
        && l < f
    {
        spans.push((l, f.saturating_sub(1)));
    }
    if let (Some(l), Some(h)) = (last, hi) {
        let after = grain.next(l);
        if after <= h {
            spans.push((after, h));
        }
    }
    spans
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
