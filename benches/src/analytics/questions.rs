//! The dashboard's questions, each asked two ways: the dashboard request (pre-aggregated
//! tables) and the same question as SQL over the raw event tables; and the summary of an
//! answer both ways must agree on.

use chrono::{Datelike, Months, NaiveDate};
use serde::Serialize;

/// The four dashboard views.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum View {
    Daily,
    TopProducts,
    TopCustomers,
    Trends,
}

impl View {
    pub const ALL: [View; 4] = [
        View::Daily,
        View::TopProducts,
        View::TopCustomers,
        View::Trends,
    ];

    pub fn name(self) -> &'static str {
        match self {
            View::Daily => "daily",
            View::TopProducts => "top-products",
            View::TopCustomers => "top-customers",
            View::Trends => "trends",
        }
    }
}

/// One question the dashboard answers, asked both ways.
#[derive(Clone, Debug, Serialize)]
pub struct Question {
    /// `daily 30d`, `top-products 1y`, ...
    pub name: String,
    pub view: View,
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// The dashboard request (path and query).
    pub dashboard: String,
    /// The same question over the raw event tables (`POST /api/v1/sql`).
    pub raw_sql: String,
}

fn times(column: &str, from: NaiveDate, until: NaiveDate) -> String {
    format!("{column} >= TIMESTAMP '{from}T00:00:00Z' AND {column} < TIMESTAMP '{until}T00:00:00Z'")
}

/// Orders placed, orders paid, items and revenue per `unit` (`day` or `month`) of
/// [`from`, `until`), from the raw tables.
fn raw_sales_sql(unit: &str, from: NaiveDate, until: NaiveDate) -> String {
    let t = times("occurred_at", from, until);
    format!(
        "SELECT period, CAST(sum(placed) AS BIGINT) AS orders_placed, \
                CAST(sum(paid) AS BIGINT) AS orders_paid, \
                CAST(sum(items) AS BIGINT) AS items_sold, sum(revenue) AS revenue \
         FROM ( \
           SELECT date_trunc('{unit}', occurred_at) AS period, count(*) AS placed, \
                  CAST(0 AS BIGINT) AS paid, CAST(0 AS BIGINT) AS items, \
                  CAST(0 AS DECIMAL(38, 2)) AS revenue \
           FROM orders WHERE {t} GROUP BY date_trunc('{unit}', occurred_at) \
           UNION ALL \
           SELECT date_trunc('{unit}', occurred_at), CAST(0 AS BIGINT), count(*), \
                  CAST(0 AS BIGINT), CAST(0 AS DECIMAL(38, 2)) \
           FROM order_status_changes WHERE to_status = 'Paid' AND {t} \
           GROUP BY date_trunc('{unit}', occurred_at) \
           UNION ALL \
           SELECT date_trunc('{unit}', occurred_at), CAST(0 AS BIGINT), CAST(0 AS BIGINT), \
                  CAST(sum(quantity) AS BIGINT), CAST(sum(revenue) AS DECIMAL(38, 2)) \
           FROM product_purchases WHERE {t} GROUP BY date_trunc('{unit}', occurred_at) \
         ) s GROUP BY period ORDER BY period"
    )
}

fn month_start(d: NaiveDate) -> NaiveDate {
    d.with_day(1).unwrap_or(d)
}

/// The dashboard's questions over the 30 days and the year ending on `last_day`.
pub(super) fn questions(last_day: NaiveDate) -> Vec<Question> {
    let mut out = Vec::new();
    for (label, days) in [("30d", 30), ("1y", 365)] {
        let to = last_day;
        let from = to - chrono::Duration::days(days - 1);
        let until = to + chrono::Duration::days(1);
        let range = format!("from={from}&to={to}");
        for view in View::ALL {
            let (dashboard, raw_sql) = match view {
                View::Daily => (
                    format!("/api/v1/dashboard/daily?{range}"),
                    raw_sales_sql("day", from, until),
                ),
                View::TopProducts => (
                    format!("/api/v1/dashboard/top-products?{range}&limit=10"),
                    format!(
                        "WITH s AS (SELECT product_id, sum(quantity) AS units, \
                                    sum(revenue) AS revenue, count(*) AS order_lines \
                                    FROM product_purchases WHERE {} GROUP BY product_id) \
                         SELECT s.product_id, p.name, p.category, s.units, s.revenue, \
                                s.order_lines \
                         FROM s LEFT JOIN products p ON s.product_id = p.product_id \
                         ORDER BY s.revenue DESC, s.product_id LIMIT 10",
                        times("occurred_at", from, until)
                    ),
                ),
                View::TopCustomers => (
                    format!("/api/v1/dashboard/top-customers?{range}&limit=10"),
                    format!(
                        "WITH r AS (SELECT customer_id, sum(revenue) AS revenue \
                                    FROM product_purchases WHERE {t} GROUP BY customer_id), \
                              o AS (SELECT customer_id, count(*) AS orders_paid \
                                    FROM order_status_changes \
                                    WHERE to_status = 'Paid' AND {t} GROUP BY customer_id) \
                         SELECT r.customer_id, c.name, c.country, o.orders_paid, r.revenue \
                         FROM r LEFT JOIN o ON r.customer_id = o.customer_id \
                                LEFT JOIN customers c ON r.customer_id = c.customer_id \
                         ORDER BY r.revenue DESC, r.customer_id LIMIT 10",
                        t = times("occurred_at", from, until)
                    ),
                ),
                View::Trends => {
                    // The dashboard reads the month before the range too (for the change).
                    let before = month_start(from)
                        .checked_sub_months(Months::new(1))
                        .unwrap_or(from);
                    let after = month_start(to)
                        .checked_add_months(Months::new(1))
                        .unwrap_or(until);
                    (
                        format!("/api/v1/dashboard/trends?period=month&{range}"),
                        raw_sales_sql("month", before, after),
                    )
                }
            };
            out.push(Question {
                name: format!("{} {label}", view.name()),
                view,
                from,
                to,
                dashboard,
                raw_sql,
            });
        }
    }
    out
}

/// A count in either JSON shape: a number, or a string holding one.
pub(super) fn number(v: &serde_json::Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_f64().map(|f| f as u64))
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// A summary of an answer that both ways must agree on (`rows` of either JSON shape).
pub(super) fn summary(view: View, body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let rows = v["rows"].as_array()?;
    let sum = |key: &str| -> Option<u64> { rows.iter().map(|r| number(&r[key])).sum() };
    let ids = |key: &str| -> Option<String> {
        let ids: Option<Vec<&str>> = rows.iter().map(|r| r[key].as_str()).collect();
        Some(ids?.join(","))
    };
    match view {
        View::Daily => Some(format!(
            "placed {} paid {} items {}",
            sum("orders_placed")?,
            sum("orders_paid")?,
            sum("items_sold")?
        )),
        View::TopProducts => ids("product_id"),
        View::TopCustomers => ids("customer_id"),
        View::Trends => {
            let last = rows.last()?;
            Some(format!(
                "last period placed {} paid {} items {}",
                number(&last["orders_placed"])?,
                number(&last["orders_paid"])?,
                number(&last["items_sold"])?
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_cover_every_view_over_both_ranges() {
        let last = NaiveDate::from_ymd_opt(2025, 12, 30).unwrap();
        let qs = questions(last);
        assert_eq!(qs.len(), 8);
        let trends = qs.iter().find(|q| q.name == "trends 30d").unwrap();
        assert_eq!(trends.from, NaiveDate::from_ymd_opt(2025, 12, 1).unwrap());
        assert!(
            trends.raw_sql.contains("2025-11-01T00:00:00Z"),
            "{}",
            trends.raw_sql
        );
        assert!(
            trends.raw_sql.contains("2026-01-01T00:00:00Z"),
            "{}",
            trends.raw_sql
        );
        let daily = qs.iter().find(|q| q.name == "daily 1y").unwrap();
        assert_eq!(
            daily.dashboard,
            "/api/v1/dashboard/daily?from=2024-12-31&to=2025-12-30"
        );
    }

    #[test]
    fn answers_are_summarised_alike_from_both_shapes() {
        let dashboard = br#"{"rows":[{"day":"2025-01-01","orders_placed":3,"orders_paid":2,
            "items_sold":5,"revenue":"1.00"},{"day":"2025-01-02","orders_placed":0,
            "orders_paid":0,"items_sold":0,"revenue":"0"}]}"#;
        let raw = br#"{"columns":[],"row_count":1,"rows":[{"period":"2025-01-01T00:00:00Z",
            "orders_placed":3,"orders_paid":2,"items_sold":5,"revenue":"1.00"}]}"#;
        assert_eq!(summary(View::Daily, dashboard), summary(View::Daily, raw),);
        let tops = br#"{"rows":[{"product_id":"p1"},{"product_id":"p2"}]}"#;
        assert_eq!(summary(View::TopProducts, tops).unwrap(), "p1,p2");
    }
}
