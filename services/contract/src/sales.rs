//! The sales report shapes both read paths answer in: the CQRS dashboard (analytics server,
//! from the read model) and the live composition (composer, from the services' own data).
//! Sharing them keeps the two answers comparable field by field, and the trend arithmetic
//! (average order value, change against the period before) identical.
//!
//! The definitions follow the read model's: an order is *placed* on the day of its
//! `OrderCreated`; it is *paid*, and its lines are sold (units, revenue, one order line
//! each), on the day it became Paid. Days are UTC calendar days.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Zero with two decimals, so it prints as money (`0.00`).
pub const ZERO_MONEY: Decimal = Decimal::from_parts(0, 0, 0, false, 2);

/// The longest date range one request may ask for.
pub const MAX_RANGE_DAYS: i64 = 3_660;
/// The largest "top N".
pub const MAX_TOP: usize = 1_000;
/// Days shown when no range is given (ending on the newest data's day, or today).
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

/// A [`BadParam`] naming `field`.
pub fn bad(field: &'static str, message: impl Into<String>) -> BadParam {
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
        DateRange::parse_latest(from, to, None, default_to)
    }

    /// Like [`DateRange::parse`], and a missing `from` is `days` days before `to` (the range
    /// holds `days` days) when `days` is given: "the latest year" is `days=365`.
    pub fn parse_latest(
        from: Option<&str>,
        to: Option<&str>,
        days: Option<u32>,
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
        if from.is_some() && days.is_some() {
            return Err(bad("days", "give either `from` or `days`, not both"));
        }
        let to = match to {
            Some(s) => date("to", s)?,
            None => default_to,
        };
        let from = match from {
            Some(s) => date("from", s)?,
            None => {
                let days = match days {
                    None => DEFAULT_RANGE_DAYS,
                    Some(d) if (1..=MAX_RANGE_DAYS).contains(&i64::from(d)) => i64::from(d),
                    Some(d) => {
                        return Err(bad(
                            "days",
                            format!("must be between 1 and {MAX_RANGE_DAYS}, not {d}"),
                        ));
                    }
                };
                to - chrono::Duration::days(days - 1)
            }
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

/// One day of sales. Money is a decimal string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DailyRow {
    pub day: NaiveDate,
    pub orders_placed: u64,
    pub orders_paid: u64,
    pub items_sold: u64,
    pub revenue: Decimal,
}

/// One product's sales in a range, ranked by revenue (ties by id).
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

/// One customer's paid orders in a range, ranked by revenue (ties by id).
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
    /// `month` (also when absent or empty) or `year`; the error says what was given.
    pub fn parse(s: Option<&str>) -> Result<Period, String> {
        match s
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or("month")
        {
            "month" => Ok(Period::Month),
            "year" => Ok(Period::Year),
            other => Err(format!(
                "must be `month` or `year`, got `{}`",
                other.chars().take(20).collect::<String>()
            )),
        }
    }

    /// The first day of the period `day` lies in.
    pub fn start(self, day: NaiveDate) -> NaiveDate {
        match self {
            Period::Month => day.with_day(1).unwrap_or(day),
            Period::Year => NaiveDate::from_ymd_opt(day.year(), 1, 1).unwrap_or(day),
        }
    }

    /// The first day of the period before the one starting on `start`.
    pub fn previous(self, start: NaiveDate) -> NaiveDate {
        start
            .checked_sub_months(Months::new(self.months()))
            .unwrap_or(start)
    }

    /// The first day of the period after the one starting on `start`.
    pub fn next(self, start: NaiveDate) -> NaiveDate {
        start
            .checked_add_months(Months::new(self.months()))
            .unwrap_or(NaiveDate::MAX)
    }

    fn months(self) -> u32 {
        match self {
            Period::Month => 1,
            Period::Year => 12,
        }
    }

    /// `2026-01` for a month, `2026` for a year.
    pub fn label(self, start: NaiveDate) -> String {
        match self {
            Period::Month => start.format("%Y-%m").to_string(),
            Period::Year => start.format("%Y").to_string(),
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

/// One product's sales in a range (the ledger's per-product figures).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProductSums {
    pub units: u64,
    pub revenue: Decimal,
    pub order_lines: u64,
}

/// One customer's paid orders in a range (the ledger's per-customer figures).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomerSums {
    pub orders_paid: u64,
    pub revenue: Decimal,
}

/// The services' own per-key figures of a range (the composer's `/api/v1/sales/ledger`),
/// the source of truth a reconciliation compares the read model with: every day with
/// sales, every product sold and every customer who paid.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LedgerReport {
    pub computed_at: DateTime<Utc>,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub orders_scanned: u64,
    pub daily: Vec<DailyRow>,
    pub products: BTreeMap<String, ProductSums>,
    pub customers: BTreeMap<String, CustomerSums>,
    /// The other services' records (payments, shipments, customers, products) per day and
    /// state, for the raw tables' side of a reconciliation.
    #[serde(default)]
    pub records: Vec<RecordCount>,
}

/// How many of one service's records are in one state, by the UTC day of their latest
/// event (the moment of their last change that published one), and the sum of their amounts
/// where they have one. What a service's `/api/v1/ledger` answers, and what a
/// reconciliation compares the raw event tables with.
///
/// `entity` and `kind`: `payments` by status (`Success`, `Failed`, `Refunded`; a `Pending`
/// payment has published nothing), with amounts; `shipments` by status (`Created`,
/// `InTransit`, `Delivered`); `customers` (`registered`, by the day they registered);
/// `products` (`created`, by the day they were created).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordCount {
    pub entity: String,
    pub day: NaiveDate,
    pub kind: String,
    pub count: u64,
    pub amount: Option<Decimal>,
}

/// Adds `count` records with `amount` in all to a (count, amount) total; the amount stays
/// `None` while no record had one.
pub fn add_records(total: &mut (u64, Option<Decimal>), count: u64, amount: Option<Decimal>) {
    total.0 += count;
    if let Some(a) = amount {
        total.1 = Some(total.1.unwrap_or_default() + a);
    }
}

/// Counts records given as (kind, time, amount) into [`RecordCount`]s of `entity` for the
/// days of `range`, sorted.
pub fn count_records(
    entity: &str,
    range: &DateRange,
    records: impl IntoIterator<Item = (String, DateTime<Utc>, Option<Decimal>)>,
) -> Vec<RecordCount> {
    let mut counts: BTreeMap<(NaiveDate, String), (u64, Option<Decimal>)> = BTreeMap::new();
    for (kind, at, amount) in records {
        let day = at.date_naive();
        if day < range.from || day > range.to {
            continue;
        }
        add_records(counts.entry((day, kind)).or_default(), 1, amount);
    }
    counts
        .into_iter()
        .map(|((day, kind), (count, amount))| RecordCount {
            entity: entity.to_owned(),
            day,
            kind,
            count,
            amount,
        })
        .collect()
}

/// The sums of one day, month or year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sums {
    pub orders_placed: u64,
    pub orders_paid: u64,
    pub items_sold: u64,
    pub revenue: Decimal,
}

impl Default for Sums {
    fn default() -> Self {
        Sums {
            orders_placed: 0,
            orders_paid: 0,
            items_sold: 0,
            revenue: ZERO_MONEY,
        }
    }
}

/// Every period from the one holding `from` to the one holding `to`, zero-filled, each with
/// its change against the period before (read from `sums` too, even if before `from`).
/// `sums` is keyed by each period's first day.
pub fn trend_rows(
    period: Period,
    from: NaiveDate,
    to: NaiveDate,
    sums: &BTreeMap<NaiveDate, Sums>,
) -> Vec<TrendRow> {
    let (first, last) = (period.start(from), period.start(to));
    let get = |start: NaiveDate| sums.get(&start).copied().unwrap_or_default();
    let mut prev = get(period.previous(first));
    let mut rows = Vec::new();
    let mut start = first;
    while start <= last {
        let now = get(start);
        let aov = average(now.revenue, now.orders_paid);
        let prev_aov = average(prev.revenue, prev.orders_paid);
        rows.push(TrendRow {
            period: period.label(start),
            orders_placed: now.orders_placed,
            orders_paid: now.orders_paid,
            items_sold: now.items_sold,
            revenue: now.revenue,
            average_order_value: aov,
            orders_paid_change_pct: change(
                Decimal::from(now.orders_paid),
                Decimal::from(prev.orders_paid),
            ),
            revenue_change_pct: change(now.revenue, prev.revenue),
            average_order_value_change_pct: change(aov, prev_aov),
        });
        prev = now;
        start = period.next(start);
    }
    rows
}

/// Revenue per order, rounded to cents; zero without orders.
pub fn average(revenue: Decimal, orders: u64) -> Decimal {
    if orders == 0 {
        return ZERO_MONEY;
    }
    let mut avg = (revenue / Decimal::from(orders)).round_dp(2);
    avg.rescale(2);
    avg
}

/// Percent change from `before` to `now`, one decimal; `None` when `before` is zero.
pub fn change(now: Decimal, before: Decimal) -> Option<f64> {
    if before.is_zero() {
        return None;
    }
    let pct = ((now - before) / before * Decimal::from(100)).round_dp(1);
    pct.to_string().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn days_picks_the_length_of_the_latest_range() {
        let today = d("2026-12-05");
        let year = DateRange::parse_latest(None, None, Some(365), today).unwrap();
        assert_eq!((year.from, year.to), (d("2025-12-06"), today));
        let one = DateRange::parse_latest(None, Some("2026-03-01"), Some(1), today).unwrap();
        assert_eq!((one.from, one.to), (d("2026-03-01"), d("2026-03-01")));
        for bad_days in [0, 3_661] {
            let e = DateRange::parse_latest(None, None, Some(bad_days), today).unwrap_err();
            assert_eq!(e.field, "days", "{e}");
        }
        let both = DateRange::parse_latest(Some("2026-01-01"), None, Some(7), today).unwrap_err();
        assert_eq!(both.field, "days");
        // An empty `from` is an absent one.
        assert!(DateRange::parse_latest(Some(" "), None, Some(7), today).is_ok());
    }

    #[test]
    fn trends_are_zero_filled_and_compare_with_the_period_before() {
        let mut sums = BTreeMap::new();
        let s = |paid: u64, revenue: &str| Sums {
            orders_placed: paid + 1,
            orders_paid: paid,
            items_sold: paid * 2,
            revenue: revenue.parse().unwrap(),
        };
        sums.insert(d("2025-12-01"), s(2, "20.00"));
        sums.insert(d("2026-02-01"), s(3, "45.00"));
        let rows = trend_rows(Period::Month, d("2026-01-15"), d("2026-02-03"), &sums);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].period, "2026-01");
        assert_eq!(rows[0].orders_paid, 0);
        assert_eq!(rows[0].revenue.to_string(), "0.00");
        assert_eq!(rows[0].revenue_change_pct, Some(-100.0));
        assert_eq!(rows[1].average_order_value.to_string(), "15.00");
        assert_eq!(rows[1].revenue_change_pct, None, "nothing in January");
        let years = trend_rows(Period::Year, d("2026-01-15"), d("2026-02-03"), &sums);
        assert_eq!(years.len(), 1);
        assert_eq!(years[0].period, "2026");
    }

    #[test]
    fn averages_round_to_cents_and_changes_to_one_decimal() {
        assert_eq!(average("10".parse().unwrap(), 3).to_string(), "3.33");
        assert_eq!(average("10".parse().unwrap(), 0).to_string(), "0.00");
        assert_eq!(change(Decimal::from(3), Decimal::from(2)), Some(50.0));
        assert_eq!(change(Decimal::from(1), Decimal::from(3)), Some(-66.7));
        assert_eq!(change(Decimal::from(1), Decimal::ZERO), None);
        assert_eq!(Period::parse(Some(" year ")), Ok(Period::Year));
        assert!(Period::parse(Some("week")).unwrap_err().contains("week"));
    }
}
