//! The week and month rollups are chosen per query (`shoplens_analytics::rollup`): shown by
//! the plans of the embedded store (ClickHouse's:
//! `clickhouse::whole_sub_plans_run_in_clickhouse`); that the answers are the same with and
//! without them: `tests/slt/rollups.slt` and `any_range_sums_alike_with_and_without_the_rollups`
//! below.

use arrow_array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use shoplens_analytics::engine::{Engine, Pii};

use crate::support;

const TOP_PRODUCTS: &str = "SELECT product_id, sum(revenue) AS revenue FROM product_sales_daily";

#[tokio::test]
async fn whole_months_and_weeks_are_read_from_the_rollups() {
    let (_dir, engine) = support::embedded_engine(&support::events()).await;
    let plan = |sql: String| {
        let engine = engine.clone();
        async move { text(&engine, &format!("EXPLAIN {sql}")).await }
    };
    let rolled_up = [
        format!(
            "{TOP_PRODUCTS} WHERE day BETWEEN DATE '2025-11-25' AND DATE '2026-01-10' GROUP BY product_id"
        ),
        format!("{TOP_PRODUCTS} WHERE day >= DATE '2025-12-01' GROUP BY product_id"),
        format!("{TOP_PRODUCTS} GROUP BY product_id"),
        // A bound computed when the query is planned is a plain date by then.
        format!("{TOP_PRODUCTS} WHERE day >= current_date() - 400 GROUP BY product_id"),
        format!(
            "{TOP_PRODUCTS} s WHERE s.day < DATE '2026-01-01' AND s.product_id <> 'p00001' GROUP BY s.product_id"
        ),
        "SELECT customer_id, sum(orders_paid), sum(revenue) FROM customer_spend_daily \
         WHERE day BETWEEN DATE '2025-12-01' AND DATE '2025-12-31' GROUP BY customer_id"
            .to_owned(),
    ];
    for sql in rolled_up {
        let shown = plan(sql.clone()).await;
        assert!(shown.contains("_monthly"), "{sql}\n{shown}");
    }
    // Whole weeks (Monday to Sunday) outside the whole months: 1 December 2025 and
    // 5 January 2026 were Mondays.
    let weeks = [
        // No whole month: the weeks of 8, 15 and 22 December, and days at both ends.
        (
            format!(
                "{TOP_PRODUCTS} WHERE day BETWEEN DATE '2025-12-05' AND DATE '2026-01-03' GROUP BY product_id"
            ),
            false,
        ),
        // December, then the week of 5 January and two days.
        (
            format!(
                "{TOP_PRODUCTS} WHERE day >= DATE '2025-12-01' AND day <= DATE '2026-01-13' GROUP BY product_id"
            ),
            true,
        ),
        // Exactly one week.
        (
            "SELECT customer_id, sum(revenue) FROM customer_spend_daily \
             WHERE day BETWEEN DATE '2025-12-15' AND DATE '2025-12-21' GROUP BY customer_id"
                .to_owned(),
            false,
        ),
    ];
    for (sql, months) in weeks {
        let shown = plan(sql.clone()).await;
        assert!(shown.contains("_weekly"), "{sql}\n{shown}");
        assert_eq!(shown.contains("_monthly"), months, "{sql}\n{shown}");
    }
    // December alone reads no week.
    let december = format!(
        "{TOP_PRODUCTS} WHERE day BETWEEN DATE '2025-12-01' AND DATE '2025-12-31' GROUP BY product_id"
    );
    assert!(
        !plan(december.clone()).await.contains("_weekly"),
        "{december}"
    );
    let left_alone = [
        // No whole week inside the range (Tuesday to Sunday).
        format!(
            "{TOP_PRODUCTS} WHERE day BETWEEN DATE '2025-12-09' AND DATE '2025-12-14' GROUP BY product_id"
        ),
        // A condition on a daily sum.
        format!("{TOP_PRODUCTS} WHERE units > 1 GROUP BY product_id"),
        // Grouped by day, or not a sum.
        "SELECT day, sum(revenue) FROM product_sales_daily GROUP BY day".to_owned(),
        "SELECT product_id, max(revenue) FROM product_sales_daily GROUP BY product_id".to_owned(),
        "SELECT product_id, count(*) FROM product_sales_daily GROUP BY product_id".to_owned(),
        // A bound that is not on the plain date.
        format!("{TOP_PRODUCTS} WHERE CAST(day AS VARCHAR) >= '2025-12-01' GROUP BY product_id"),
    ];
    for sql in left_alone {
        let shown = plan(sql.clone()).await;
        assert!(
            !shown.contains("_monthly") && !shown.contains("_weekly"),
            "{sql}\n{shown}"
        );
    }
}

/// Ranges starting on every day of the week, of every length from none to three months,
/// over the events (20 November 2025 to 23 January 2026) and past both their ends: the
/// rewritten sums (months, weeks and days) are the daily table's.
#[tokio::test]
async fn any_range_sums_alike_with_and_without_the_rollups() {
    let (_dir, engine) = support::embedded_engine(&support::events()).await;
    let answer = |sql: String| {
        let engine = engine.clone();
        async move { text(&engine, &sql).await }
    };
    // 2025-11-10 is day 20402, a Monday.
    let mut rolled = 0;
    for start in (20_402..20_482).step_by(5) {
        for length in [0, 5, 6, 7, 8, 13, 20, 27, 30, 31, 45, 62, 93] {
            let (from, to) = (date(start), date(start + length));
            for (table, sums) in [
                (
                    "product_sales_daily",
                    "sum(units), sum(revenue), sum(order_lines)",
                ),
                ("customer_spend_daily", "sum(orders_paid), sum(revenue)"),
            ] {
                let key = if table.starts_with("product") {
                    "product_id"
                } else {
                    "customer_id"
                };
                let sql = |extra: &str| {
                    format!(
                        "SELECT {key}, {sums} FROM {table} \
                         WHERE day BETWEEN DATE '{from}' AND DATE '{to}'{extra} \
                         GROUP BY {key} ORDER BY {key}"
                    )
                };
                // A condition on a sum that every row meets: the rule leaves it alone.
                let plain = answer(sql(" AND revenue >= 0")).await;
                let rewritten = answer(sql("")).await;
                assert_eq!(rewritten, plain, "{}", sql(""));
                let shown = answer(format!("EXPLAIN {}", sql(""))).await;
                rolled += usize::from(shown.contains("_weekly"));
            }
        }
    }
    assert!(rolled > 100, "only {rolled} ranges read a week rollup");
}

/// The answer to `sql`, as a text table.
async fn text(engine: &Engine, sql: &str) -> String {
    let batches: Vec<RecordBatch> = engine
        .collect(Pii::Visible, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    pretty_format_batches(&batches).expect("format").to_string()
}

/// `Date32` day `d` as `YYYY-MM-DD`.
fn date(d: i32) -> String {
    (chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch") + chrono::Days::new(d as u64))
        .to_string()
}
