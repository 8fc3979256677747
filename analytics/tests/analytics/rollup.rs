//! The month rollups are chosen per query (`shoplens_analytics::rollup`): shown by the plans
//! of the embedded store (ClickHouse's: `clickhouse::whole_sub_plans_run_in_clickhouse`);
//! that the answers are the same with and without them: `tests/slt/rollups.slt`.

use arrow_array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use shoplens_analytics::engine::Pii;

use crate::support;

const TOP_PRODUCTS: &str = "SELECT product_id, sum(revenue) AS revenue FROM product_sales_daily";

#[tokio::test]
async fn whole_months_are_read_from_the_month_rollups() {
    let (_dir, engine) = support::embedded_engine(&support::events()).await;
    let plan = |sql: String| {
        let engine = engine.clone();
        async move {
            let batches: Vec<RecordBatch> = engine
                .collect(Pii::Visible, &format!("EXPLAIN {sql}"))
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            pretty_format_batches(&batches).expect("format").to_string()
        }
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
    let left_alone = [
        // No whole month inside the range.
        format!(
            "{TOP_PRODUCTS} WHERE day BETWEEN DATE '2025-12-05' AND DATE '2026-01-03' GROUP BY product_id"
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
        assert!(!shown.contains("_monthly"), "{sql}\n{shown}");
    }
}
