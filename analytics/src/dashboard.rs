//! The sales dashboard's four views, answered from the pre-aggregated tables only (never
//! by scanning raw events or calling services), each with the freshness of its data.
//!
//! The queries are plain DataFusion SQL over the merged aggregate tables, so both back
//! ends answer them identically; the same SQL is what an analyst would type.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Decimal128Type, Int32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use chrono::{Datelike, NaiveDate};
use rust_decimal::Decimal;
use serde::Serialize;
use shoplens_contract::sales::bad;
pub use shoplens_contract::sales::{
    BadParam, DEFAULT_RANGE_DAYS, DateRange, MAX_RANGE_DAYS, MAX_TOP, parse_category, parse_limit,
};
pub use shoplens_contract::sales::{
    CustomerRow, DailyRow, Period, ProductRow, TrendRow, ZERO_MONEY,
};
use shoplens_contract::sales::{Sums, trend_rows};
use shoplens_readmodel::freshness::FreshnessReport;

use crate::AnalyticsError;
use crate::cache::Cached;
use crate::engine::{Engine, Pii};

/// Checks a trend `period` (`month`, the default, or `year`).
pub fn parse_period(period: Option<&str>) -> Result<Period, BadParam> {
    Period::parse(period).map_err(|message| bad("period", message))
}

/// A SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Every dashboard answer: the rows and how fresh they are.
#[derive(Debug, Clone, Serialize)]
pub struct Answer<T> {
    pub freshness: FreshnessReport,
    pub back_end: &'static str,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub rows: Vec<T>,
}

/// The dashboard's queries over one engine.
#[derive(Clone)]
pub struct Dashboard {
    engine: Engine,
}

impl Dashboard {
    pub fn new(engine: Engine) -> Dashboard {
        Dashboard { engine }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The day a missing `to` defaults to: the newest data's day, or today.
    pub fn default_to(freshness: &FreshnessReport) -> NaiveDate {
        freshness
            .as_of_ms
            .and_then(chrono::DateTime::from_timestamp_millis)
            .unwrap_or_else(chrono::Utc::now)
            .date_naive()
    }

    fn answer<T>(&self, freshness: FreshnessReport, range: DateRange, rows: Vec<T>) -> Answer<T> {
        Answer {
            freshness,
            back_end: self.engine.back_end(),
            from: range.from,
            to: range.to,
            rows,
        }
    }

    /// Orders, items and revenue per day of the range, every day present (zero-filled).
    pub async fn daily(
        &self,
        pii: Pii,
        freshness: FreshnessReport,
        range: DateRange,
    ) -> Result<Answer<DailyRow>, AnalyticsError> {
        let sql = format!(
            "SELECT day, orders_placed, orders_paid, items_sold, revenue FROM daily_sales \
             WHERE {} ORDER BY day",
            range.sql("day")
        );
        let answer = self.engine.collect_cached(pii, &sql, &freshness).await?;
        let mut by_day = BTreeMap::new();
        for b in &answer.batches {
            let c = Columns(b);
            for i in 0..b.num_rows() {
                let day = c.date(0, i);
                by_day.insert(
                    day,
                    DailyRow {
                        day,
                        orders_placed: c.u64(1, i),
                        orders_paid: c.u64(2, i),
                        items_sold: c.u64(3, i),
                        revenue: c.money(4, i),
                    },
                );
            }
        }
        let rows = range
            .from
            .iter_days()
            .take_while(|d| *d <= range.to)
            .map(|day| {
                by_day.remove(&day).unwrap_or(DailyRow {
                    day,
                    orders_placed: 0,
                    orders_paid: 0,
                    items_sold: 0,
                    revenue: ZERO_MONEY,
                })
            })
            .collect();
        Ok(self.answer(freshness, range, rows))
    }

    /// The `limit` products with the most revenue in the range (ties by id), optionally of
    /// one category.
    pub async fn top_products(
        &self,
        pii: Pii,
        freshness: FreshnessReport,
        range: DateRange,
        limit: usize,
        category: Option<&str>,
    ) -> Result<Answer<ProductRow>, AnalyticsError> {
        // Rank on the aggregate table alone and join the names of the top `limit` only;
        // a category filter needs the join first. (Unlike customers, products are not
        // looked up by id in a second query: the `products` view joins two scans of the
        // product events, and the second query measured slower on the embedded store.)
        let range_sql = range.sql("s.day");
        let Some(c) = category else {
            let sql = format!(
                "WITH top AS (SELECT product_id, SUM(units) AS units, SUM(revenue) AS revenue, \
                                     SUM(order_lines) AS order_lines \
                              FROM product_sales_daily s WHERE {range_sql} \
                              GROUP BY product_id ORDER BY revenue DESC, product_id LIMIT {limit}) \
                 SELECT t.product_id, p.name, p.category, t.units, t.revenue, t.order_lines \
                 FROM top t LEFT JOIN products p ON t.product_id = p.product_id \
                 ORDER BY t.revenue DESC, t.product_id"
            );
            let rows = self.product_rows(pii, &sql, &freshness).await?;
            return Ok(self.answer(freshness, range, rows));
        };
        // A category filter needs the join first.
        let sql = format!(
            "SELECT s.product_id, p.name, p.category, SUM(s.units) AS units, \
                    SUM(s.revenue) AS revenue, SUM(s.order_lines) AS order_lines \
             FROM product_sales_daily s JOIN products p ON s.product_id = p.product_id \
             WHERE {range_sql} AND p.category = {} \
             GROUP BY s.product_id, p.name, p.category \
             ORDER BY revenue DESC, s.product_id LIMIT {limit}",
            literal(c)
        );
        let rows = self.product_rows(pii, &sql, &freshness).await?;
        Ok(self.answer(freshness, range, rows))
    }

    /// The rows of a top-products query (`product_id, name, category, units, revenue,
    /// order_lines`), ranked in order.
    async fn product_rows(
        &self,
        pii: Pii,
        sql: &str,
        freshness: &FreshnessReport,
    ) -> Result<Vec<ProductRow>, AnalyticsError> {
        let answer = self.engine.collect_cached(pii, sql, freshness).await?;
        let mut rows = Vec::new();
        for b in &answer.batches {
            let c = Columns(b);
            for i in 0..b.num_rows() {
                rows.push(ProductRow {
                    rank: rows.len() + 1,
                    product_id: c.string(0, i).unwrap_or_default(),
                    name: c.string(1, i),
                    category: c.string(2, i),
                    units: c.u64(3, i),
                    revenue: c.money(4, i),
                    order_lines: c.u64(5, i),
                });
            }
        }
        Ok(rows)
    }

    /// The `limit` customers who spent the most in the range (paid orders; ties by id).
    pub async fn top_customers(
        &self,
        pii: Pii,
        freshness: FreshnessReport,
        range: DateRange,
        limit: usize,
    ) -> Result<Answer<CustomerRow>, AnalyticsError> {
        // Rank on the aggregate table alone, then look up the names of the top `limit` only.
        let sql = format!(
            "SELECT customer_id, SUM(orders_paid) AS orders_paid, SUM(revenue) AS revenue \
             FROM customer_spend_daily s WHERE {} \
             GROUP BY customer_id ORDER BY revenue DESC, customer_id LIMIT {limit}",
            range.sql("s.day")
        );
        let (top, names) = self
            .ranked(
                pii,
                &freshness,
                &sql,
                "customers",
                "customer_id, name, country",
            )
            .await?;
        let mut rows = Vec::new();
        for b in &top.batches {
            let c = Columns(b);
            for i in 0..b.num_rows() {
                let customer_id = c.string(0, i).unwrap_or_default();
                let (name, country) = names.get(&customer_id).cloned().unwrap_or_default();
                rows.push(CustomerRow {
                    rank: rows.len() + 1,
                    customer_id,
                    name,
                    country,
                    orders_paid: c.u64(1, i),
                    revenue: c.money(2, i),
                });
            }
        }
        Ok(self.answer(freshness, range, rows))
    }

    /// The answer of `sql`, a top-N whose first column is an id, and two text columns of
    /// dimension view `view` for the ids it ranked, by id (`columns` names the id column and
    /// the two). The filter on the view's key reaches the scan of its events, so only those
    /// ids' events are read.
    async fn ranked(
        &self,
        pii: Pii,
        freshness: &FreshnessReport,
        sql: &str,
        view: &str,
        columns: &str,
    ) -> Result<(Arc<Cached>, Names), AnalyticsError> {
        let top = self.engine.collect_cached(pii, sql, freshness).await?;
        let ids = ids(&top.batches);
        if ids.is_empty() {
            return Ok((top, HashMap::new()));
        }
        let key = columns.split(',').next().unwrap_or_default();
        let list: Vec<String> = ids.iter().map(|id| literal(id)).collect();
        let sql = format!(
            "SELECT {columns} FROM {view} WHERE {key} IN ({}) ORDER BY {key}",
            list.join(", ")
        );
        let answer = self.engine.collect_cached(pii, &sql, freshness).await?;
        let mut names = HashMap::new();
        for b in &answer.batches {
            let c = Columns(b);
            for i in 0..b.num_rows() {
                names.insert(
                    c.string(0, i).unwrap_or_default(),
                    (c.string(1, i), c.string(2, i)),
                );
            }
        }
        Ok((top, names))
    }

    /// Every month (or year) overlapping the range, zero-filled, each with its change
    /// against the period before (which is read too, even if outside the range).
    pub async fn trends(
        &self,
        pii: Pii,
        freshness: FreshnessReport,
        range: DateRange,
        period: Period,
    ) -> Result<Answer<TrendRow>, AnalyticsError> {
        let (first, last) = (period.start(range.from), period.start(range.to));
        let before = period.previous(first);
        let sql = match period {
            Period::Month => format!(
                "SELECT month, orders_placed, orders_paid, items_sold, revenue FROM monthly_sales \
                 WHERE month BETWEEN DATE '{before}' AND DATE '{last}' ORDER BY month"
            ),
            Period::Year => format!(
                "SELECT year, orders_placed, orders_paid, items_sold, revenue FROM yearly_sales \
                 WHERE year BETWEEN {} AND {} ORDER BY year",
                before.year(),
                last.year()
            ),
        };
        let answer = self.engine.collect_cached(pii, &sql, &freshness).await?;
        let mut sums = BTreeMap::new();
        for b in &answer.batches {
            let c = Columns(b);
            for i in 0..b.num_rows() {
                let start = match period {
                    Period::Month => c.date(0, i),
                    Period::Year => {
                        NaiveDate::from_ymd_opt(c.i32(0, i), 1, 1).unwrap_or(NaiveDate::MIN)
                    }
                };
                sums.insert(
                    start,
                    Sums {
                        orders_placed: c.u64(1, i),
                        orders_paid: c.u64(2, i),
                        items_sold: c.u64(3, i),
                        revenue: c.money(4, i),
                    },
                );
            }
        }
        let rows = trend_rows(period, range.from, range.to, &sums);
        Ok(self.answer(freshness, range, rows))
    }
}

/// Names by id: two text columns of a dimension view.
type Names = HashMap<String, (Option<String>, Option<String>)>;

/// The first column of a result, as text (the ids a top-N ranked).
fn ids(batches: &[RecordBatch]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| (0..b.num_rows()).map(move |i| Columns(b).string(0, i).unwrap_or_default()))
        .collect()
}

/// Typed access to the columns of a result the dashboard's own SQL produced.
pub(crate) struct Columns<'a>(pub(crate) &'a RecordBatch);

impl Columns<'_> {
    pub(crate) fn u64(&self, col: usize, row: usize) -> u64 {
        let a = self.0.column(col);
        if a.is_null(row) {
            return 0;
        }
        a.as_primitive_opt::<UInt64Type>()
            .map_or(0, |a| a.value(row))
    }

    pub(crate) fn i32(&self, col: usize, row: usize) -> i32 {
        self.0
            .column(col)
            .as_primitive_opt::<Int32Type>()
            .map_or(0, |a| a.value(row))
    }

    pub(crate) fn date(&self, col: usize, row: usize) -> NaiveDate {
        self.0
            .column(col)
            .as_primitive_opt::<Date32Type>()
            .and_then(|a| a.value_as_date(row))
            .unwrap_or(NaiveDate::MIN)
    }

    pub(crate) fn money(&self, col: usize, row: usize) -> Decimal {
        let a = self.0.column(col);
        if a.is_null(row) {
            return ZERO_MONEY;
        }
        match a.as_primitive_opt::<Decimal128Type>() {
            Some(d) => {
                let scale = d.scale().max(0) as u32;
                Decimal::try_from_i128_with_scale(d.value(row), scale).unwrap_or(ZERO_MONEY)
            }
            None => ZERO_MONEY,
        }
    }

    pub(crate) fn string(&self, col: usize, row: usize) -> Option<String> {
        let a = self.0.column(col);
        if a.is_null(row) {
            return None;
        }
        if let Some(s) = a.as_string_opt::<i32>() {
            return Some(s.value(row).to_owned());
        }
        if let Some(s) = a.as_string_view_opt() {
            return Some(s.value(row).to_owned());
        }
        a.as_string_opt::<i64>().map(|s| s.value(row).to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn date_ranges_are_checked_and_name_the_field() {
        let today = d("2026-11-29");
        let r = DateRange::parse(None, None, today).unwrap();
        assert_eq!((r.from, r.to), (d("2026-10-31"), today));
        assert_eq!(DateRange::parse(Some(""), Some(" "), today).unwrap(), r);
        let r = DateRange::parse(Some("2026-01-01"), Some("2026-01-31"), today).unwrap();
        assert_eq!((r.from, r.to), (d("2026-01-01"), d("2026-01-31")));
        assert_eq!(
            DateRange::parse(Some("2026-02-01"), Some("2026-01-31"), today)
                .unwrap_err()
                .field,
            "from"
        );
        assert_eq!(
            DateRange::parse(Some("yesterday"), None, today)
                .unwrap_err()
                .field,
            "from"
        );
        assert_eq!(
            DateRange::parse(None, Some("2026-13-01"), today)
                .unwrap_err()
                .field,
            "to"
        );
        assert_eq!(
            DateRange::parse(Some("1900-01-01"), Some("2026-01-01"), today)
                .unwrap_err()
                .field,
            "from"
        );
    }

    #[test]
    fn limits_categories_and_periods_are_checked() {
        assert_eq!(parse_limit(None), Ok(10));
        assert_eq!(parse_limit(Some(0)).unwrap_err().field, "limit");
        assert_eq!(parse_limit(Some(MAX_TOP + 1)).unwrap_err().field, "limit");
        assert_eq!(parse_category(Some(" ")), Ok(None));
        assert_eq!(parse_category(Some("it's")), Ok(Some("it's".into())));
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(
            parse_category(Some("a\u{0}b")).unwrap_err().field,
            "category"
        );
        assert_eq!(parse_period(None), Ok(Period::Month));
        assert_eq!(parse_period(Some("week")).unwrap_err().field, "period");
    }
}
