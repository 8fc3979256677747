//! The sales dashboard's four views, answered from the pre-aggregated tables only (never
//! by scanning raw events or calling services), each with the freshness of its data.
//!
//! The queries are plain DataFusion SQL over the merged aggregate tables, so both back
//! ends answer them identically; the same SQL is what an analyst would type.

use std::collections::BTreeMap;

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Decimal128Type, Int32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use chrono::{Datelike, Months, NaiveDate};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use shoplens_ingest::api::FreshnessReport;

use crate::engine::{Engine, QueryError};

/// The longest date range one request may ask for.
pub const MAX_RANGE_DAYS: i64 = 3_660;
/// The largest "top N".
pub const MAX_TOP: usize = 1_000;
/// Days shown when no range is given (ending on the newest data's day).
pub const DEFAULT_RANGE_DAYS: i64 = 30;

/// A checked, inclusive date range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DateRange {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

/// A bad request parameter, naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{field}`: {message}")]
pub struct BadParam {
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> BadParam {
    BadParam {
        field,
        message: message.into(),
    }
}

impl DateRange {
    /// Parses `from`/`to` (`YYYY-MM-DD`, inclusive). A missing `to` is the newest data's
    /// day (`default_to`), a missing `from` [`DEFAULT_RANGE_DAYS`] before `to`.
    pub fn parse(
        from: Option<&str>,
        to: Option<&str>,
        default_to: NaiveDate,
    ) -> Result<DateRange, BadParam> {
        let date = |field: &'static str, s: &str| {
            NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(|_| {
                bad(
                    field,
                    format!(
                        "must be a date like 2026-01-31, got `{}`",
                        s.chars().take(40).collect::<String>()
                    ),
                )
            })
        };
        // An empty parameter (`?from=&to=`) is an absent one.
        let (from, to) = (
            from.filter(|s| !s.trim().is_empty()),
            to.filter(|s| !s.trim().is_empty()),
        );
        let to = match to {
            Some(s) => date("to", s)?,
            None => default_to,
        };
        let from = match from {
            Some(s) => date("from", s)?,
            None => to - chrono::Duration::days(DEFAULT_RANGE_DAYS - 1),
        };
        if from > to {
            return Err(bad("from", format!("must not be after `to` ({to})")));
        }
        if (to - from).num_days() >= MAX_RANGE_DAYS {
            return Err(bad(
                "from",
                format!("the range may span at most {MAX_RANGE_DAYS} days"),
            ));
        }
        if from.year() < 1970 || to.year() > 9999 {
            return Err(bad("from", "dates must lie between 1970 and 9999"));
        }
        Ok(DateRange { from, to })
    }

    /// `column BETWEEN DATE 'from' AND DATE 'to'`, for a `DATE` column.
    pub fn sql(&self, column: &str) -> String {
        format!(
            "{column} BETWEEN DATE '{}' AND DATE '{}'",
            self.from.format("%Y-%m-%d"),
            self.to.format("%Y-%m-%d")
        )
    }
}

/// Checks a top-N `limit` (default 10).
pub fn parse_limit(limit: Option<usize>) -> Result<usize, BadParam> {
    let limit = limit.unwrap_or(10);
    if !(1..=MAX_TOP).contains(&limit) {
        return Err(bad("limit", format!("must be between 1 and {MAX_TOP}")));
    }
    Ok(limit)
}

/// Checks a category filter: printable, at most 100 characters.
pub fn parse_category(category: Option<&str>) -> Result<Option<String>, BadParam> {
    match category.map(str::trim) {
        None | Some("") => Ok(None),
        Some(c) if c.chars().count() > 100 || c.chars().any(char::is_control) => {
            Err(bad("category", "must be at most 100 printable characters"))
        }
        Some(c) => Ok(Some(c.to_owned())),
    }
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

/// One day of sales. Money is a decimal string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DailyRow {
    pub day: NaiveDate,
    pub orders_placed: u64,
    pub orders_paid: u64,
    pub items_sold: u64,
    pub revenue: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductRow {
    pub rank: usize,
    pub product_id: String,
    pub name: Option<String>,
    pub category: Option<String>,
    pub units: u64,
    pub revenue: Decimal,
    pub order_lines: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerRow {
    pub rank: usize,
    pub customer_id: String,
    pub name: Option<String>,
    pub country: Option<String>,
    pub orders_paid: u64,
    pub revenue: Decimal,
}

/// Monthly or yearly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Month,
    Year,
}

impl Period {
    pub fn parse(s: Option<&str>) -> Result<Period, BadParam> {
        match s
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or("month")
        {
            "month" => Ok(Period::Month),
            "year" => Ok(Period::Year),
            other => Err(bad(
                "period",
                format!(
                    "must be `month` or `year`, got `{}`",
                    other.chars().take(20).collect::<String>()
                ),
            )),
        }
    }
}

/// One month or year, with the change against the period before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrendRow {
    /// `2026-01` for a month, `2026` for a year.
    pub period: String,
    pub orders_placed: u64,
    pub orders_paid: u64,
    pub items_sold: u64,
    pub revenue: Decimal,
    /// Revenue per paid order (0 without paid orders), rounded to cents.
    pub average_order_value: Decimal,
    /// Percent change against the previous period; `null` where that had nothing.
    pub orders_paid_change_pct: Option<f64>,
    pub revenue_change_pct: Option<f64>,
    pub average_order_value_change_pct: Option<f64>,
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
        freshness: FreshnessReport,
        range: DateRange,
    ) -> Result<Answer<DailyRow>, QueryError> {
        let sql = format!(
            "SELECT day, orders_placed, orders_paid, items_sold, revenue FROM daily_sales \
             WHERE {} ORDER BY day",
            range.sql("day")
        );
        let batches = self.engine.collect(&sql).await?;
        let mut by_day = BTreeMap::new();
        for b in &batches {
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
        freshness: FreshnessReport,
        range: DateRange,
        limit: usize,
        category: Option<&str>,
    ) -> Result<Answer<ProductRow>, QueryError> {
        // Rank on the aggregate table alone and join the names of the top `limit` only
        // (the dimension join is the expensive part); a category filter needs the join
        // first.
        let range_sql = range.sql("s.day");
        let sql = match category {
            None => format!(
                "WITH top AS (SELECT product_id, SUM(units) AS units, SUM(revenue) AS revenue, \
                                     SUM(order_lines) AS order_lines \
                              FROM product_sales_daily s WHERE {range_sql} \
                              GROUP BY product_id ORDER BY revenue DESC, product_id LIMIT {limit}) \
                 SELECT t.product_id, p.name, p.category, t.units, t.revenue, t.order_lines \
                 FROM top t LEFT JOIN products p ON t.product_id = p.product_id \
                 ORDER BY t.revenue DESC, t.product_id"
            ),
            Some(c) => format!(
                "SELECT s.product_id, p.name, p.category, SUM(s.units) AS units, \
                        SUM(s.revenue) AS revenue, SUM(s.order_lines) AS order_lines \
                 FROM product_sales_daily s JOIN products p ON s.product_id = p.product_id \
                 WHERE {range_sql} AND p.category = {} \
                 GROUP BY s.product_id, p.name, p.category \
                 ORDER BY revenue DESC, s.product_id LIMIT {limit}",
                literal(c)
            ),
        };
        let batches = self.engine.collect(&sql).await?;
        let mut rows = Vec::new();
        for b in &batches {
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
        Ok(self.answer(freshness, range, rows))
    }

    /// The `limit` customers who spent the most in the range (paid orders; ties by id).
    pub async fn top_customers(
        &self,
        freshness: FreshnessReport,
        range: DateRange,
        limit: usize,
    ) -> Result<Answer<CustomerRow>, QueryError> {
        // Rank on the aggregate table alone, then join the names of the top `limit` only.
        let sql = format!(
            "WITH top AS (SELECT customer_id, SUM(orders_paid) AS orders_paid, \
                                 SUM(revenue) AS revenue \
                          FROM customer_spend_daily s WHERE {} \
                          GROUP BY customer_id ORDER BY revenue DESC, customer_id LIMIT {limit}) \
             SELECT t.customer_id, c.name, c.country, t.orders_paid, t.revenue \
             FROM top t LEFT JOIN customers c ON t.customer_id = c.customer_id \
             ORDER BY t.revenue DESC, t.customer_id",
            range.sql("s.day")
        );
        let batches = self.engine.collect(&sql).await?;
        let mut rows = Vec::new();
        for b in &batches {
            let c = Columns(b);
            for i in 0..b.num_rows() {
                rows.push(CustomerRow {
                    rank: rows.len() + 1,
                    customer_id: c.string(0, i).unwrap_or_default(),
                    name: c.string(1, i),
                    country: c.string(2, i),
                    orders_paid: c.u64(3, i),
                    revenue: c.money(4, i),
                });
            }
        }
        Ok(self.answer(freshness, range, rows))
    }

    /// Every month (or year) overlapping the range, zero-filled, each with its change
    /// against the period before (which is read too, even if outside the range).
    pub async fn trends(
        &self,
        freshness: FreshnessReport,
        range: DateRange,
        period: Period,
    ) -> Result<Answer<TrendRow>, QueryError> {
        let (first, last) = match period {
            Period::Month => (month_start(range.from), month_start(range.to)),
            Period::Year => (year_start(range.from), year_start(range.to)),
        };
        let before = previous(period, first);
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
        let batches = self.engine.collect(&sql).await?;
        let mut sums: BTreeMap<NaiveDate, (u64, u64, u64, Decimal)> = BTreeMap::new();
        for b in &batches {
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
                    (c.u64(1, i), c.u64(2, i), c.u64(3, i), c.money(4, i)),
                );
            }
        }
        let zero = (0, 0, 0, ZERO_MONEY);
        let mut rows = Vec::new();
        let mut prev = *sums.get(&before).unwrap_or(&zero);
        let mut start = first;
        while start <= last {
            let (placed, paid, items, revenue) = *sums.get(&start).unwrap_or(&zero);
            let aov = average(revenue, paid);
            let prev_aov = average(prev.3, prev.1);
            rows.push(TrendRow {
                period: match period {
                    Period::Month => start.format("%Y-%m").to_string(),
                    Period::Year => start.format("%Y").to_string(),
                },
                orders_placed: placed,
                orders_paid: paid,
                items_sold: items,
                revenue,
                average_order_value: aov,
                orders_paid_change_pct: change(Decimal::from(paid), Decimal::from(prev.1)),
                revenue_change_pct: change(revenue, prev.3),
                average_order_value_change_pct: change(aov, prev_aov),
            });
            prev = (placed, paid, items, revenue);
            start = next(period, start);
        }
        Ok(self.answer(freshness, range, rows))
    }
}

fn month_start(d: NaiveDate) -> NaiveDate {
    d.with_day(1).unwrap_or(d)
}

fn year_start(d: NaiveDate) -> NaiveDate {
    NaiveDate::from_ymd_opt(d.year(), 1, 1).unwrap_or(d)
}

fn previous(period: Period, start: NaiveDate) -> NaiveDate {
    match period {
        Period::Month => start.checked_sub_months(Months::new(1)).unwrap_or(start),
        Period::Year => start.checked_sub_months(Months::new(12)).unwrap_or(start),
    }
}

fn next(period: Period, start: NaiveDate) -> NaiveDate {
    match period {
        Period::Month => start.checked_add_months(Months::new(1)),
        Period::Year => start.checked_add_months(Months::new(12)),
    }
    .unwrap_or(NaiveDate::MAX)
}

/// Zero with two decimals, so it prints as money (`0.00`).
const ZERO_MONEY: Decimal = Decimal::from_parts(0, 0, 0, false, 2);

fn average(revenue: Decimal, orders: u64) -> Decimal {
    if orders == 0 {
        return ZERO_MONEY;
    }
    let mut avg = (revenue / Decimal::from(orders)).round_dp(2);
    avg.rescale(2);
    avg
}

/// Percent change from `before` to `now`, one decimal; `None` when `before` is zero.
fn change(now: Decimal, before: Decimal) -> Option<f64> {
    if before.is_zero() {
        return None;
    }
    let pct = ((now - before) / before * Decimal::from(100)).round_dp(1);
    pct.to_string().parse().ok()
}

/// Typed access to the columns of a result the dashboard's own SQL produced.
struct Columns<'a>(&'a RecordBatch);

impl Columns<'_> {
    fn u64(&self, col: usize, row: usize) -> u64 {
        let a = self.0.column(col);
        if a.is_null(row) {
            return 0;
        }
        a.as_primitive_opt::<UInt64Type>()
            .map_or(0, |a| a.value(row))
    }

    fn i32(&self, col: usize, row: usize) -> i32 {
        self.0
            .column(col)
            .as_primitive_opt::<Int32Type>()
            .map_or(0, |a| a.value(row))
    }

    fn date(&self, col: usize, row: usize) -> NaiveDate {
        self.0
            .column(col)
            .as_primitive_opt::<Date32Type>()
            .and_then(|a| a.value_as_date(row))
            .unwrap_or(NaiveDate::MIN)
    }

    fn money(&self, col: usize, row: usize) -> Decimal {
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

    fn string(&self, col: usize, row: usize) -> Option<String> {
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
        assert_eq!(Period::parse(None), Ok(Period::Month));
        assert_eq!(Period::parse(Some("week")).unwrap_err().field, "period");
    }

    #[test]
    fn changes_and_averages() {
        assert_eq!(change(Decimal::from(150), Decimal::from(100)), Some(50.0));
        assert_eq!(change(Decimal::from(1), Decimal::ZERO), None);
        assert_eq!(average(Decimal::new(1000, 2), 3), Decimal::new(333, 2));
        assert_eq!(average(Decimal::ONE, 0).to_string(), "0.00");
        assert_eq!(average(Decimal::from(10), 5).to_string(), "2.00");
        assert_eq!(previous(Period::Month, d("2026-01-01")), d("2025-12-01"));
        assert_eq!(next(Period::Year, d("2025-01-01")), d("2026-01-01"));
    }
}
