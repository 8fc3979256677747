//! The HTTP API over the embedded back end: dashboard views against the Rust reference
//! aggregates, the SQL endpoint in every format, exports, and bad input.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde_json::Value;
use shoplens_analytics::QueryConfig;
use shoplens_contract::{DomainEvent, Envelope};
use shoplens_readmodel::aggregate::Aggregates;

use crate::support::{self, TestApp};

const FROM: &str = "2025-11-24";
const TO: &str = "2026-01-23";

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn day_number(d: NaiveDate) -> i32 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days() as i32
}

fn cents(c: i128) -> Decimal {
    Decimal::from_i128_with_scale(c, 2)
}

fn money(v: &Value) -> Decimal {
    v.as_str()
        .unwrap_or_else(|| panic!("money is a string: {v}"))
        .parse()
        .unwrap()
}

async fn app() -> (tempfile::TempDir, TestApp, Vec<Envelope>) {
    let events = support::events();
    let (dir, engine) = support::embedded_engine(&events).await;
    (dir, support::spawn_app(engine).await, events)
}

#[tokio::test]
async fn daily_view_equals_the_reference_for_every_day_of_the_range() {
    let (_dir, app, events) = app().await;
    let reference = Aggregates::of_events(&events);
    let (from, to) = ("2025-12-20", "2026-01-05");
    let (status, body) = app
        .get_json(&format!("/api/v1/dashboard/daily?from={from}&to={to}"))
        .await;
    assert_eq!(status, 200, "{body}");
    let rows = body["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 17, "every day of the range, zero-filled");
    let mut total = 0;
    for row in rows {
        let day = date(row["day"].as_str().unwrap());
        let want = reference
            .daily_sales
            .get(&day_number(day))
            .copied()
            .unwrap_or_default();
        assert_eq!(row["orders_placed"], want.orders_placed, "{day}");
        assert_eq!(row["orders_paid"], want.orders_paid, "{day}");
        assert_eq!(row["items_sold"], want.items_sold, "{day}");
        assert_eq!(money(&row["revenue"]), cents(want.revenue), "{day}");
        total += want.orders_placed;
    }
    assert!(total > 0, "the range holds orders");
    assert_eq!(body["from"], from);
    assert_eq!(body["to"], to);
    assert_eq!(body["back_end"], "embedded");
    // Freshness: the newest event the read model holds.
    let newest = events.iter().map(|e| e.occurred_at).max().unwrap();
    assert_eq!(
        body["freshness"]["as_of_ms"],
        newest.timestamp_millis(),
        "{}",
        body["freshness"]
    );
    assert!(body["freshness"]["lag_ms"].as_i64().is_some());
}

/// Product names and categories as the events created them.
fn product_names(events: &[Envelope]) -> BTreeMap<String, (String, String)> {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            DomainEvent::ProductCreated(p) => {
                Some((p.product_id.clone(), (p.name.clone(), p.category.clone())))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn top_products_and_customers_rank_by_revenue_in_the_range() {
    let (_dir, app, events) = app().await;
    let reference = Aggregates::of_events(&events);
    let (lo, hi) = (day_number(date(FROM)), day_number(date("2025-12-31")));
    let mut products: BTreeMap<String, (u64, i128)> = BTreeMap::new();
    for ((day, id), s) in &reference.product_sales_daily {
        if (lo..=hi).contains(day) {
            let e = products.entry(id.to_string()).or_default();
            e.0 += s.units;
            e.1 += s.revenue;
        }
    }
    let mut ranked: Vec<_> = products.into_iter().collect();
    ranked.sort_by(|a, b| b.1.1.cmp(&a.1.1).then(a.0.cmp(&b.0)));
    let names = product_names(&events);

    let (status, body) = app
        .get_json(&format!(
            "/api/v1/dashboard/top-products?from={FROM}&to=2025-12-31&limit=5"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let rows = body["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 5);
    for (i, row) in rows.iter().enumerate() {
        let (id, (units, revenue)) = &ranked[i];
        assert_eq!(row["rank"], i + 1);
        assert_eq!(row["product_id"], id.as_str());
        assert_eq!(row["units"], *units);
        assert_eq!(money(&row["revenue"]), cents(*revenue));
        assert_eq!(row["name"], names[id].0.as_str());
        assert_eq!(row["category"], names[id].1.as_str());
    }

    // One category only.
    let (_, body) = app
        .get_json(&format!(
            "/api/v1/dashboard/top-products?from={FROM}&to=2025-12-31&limit=100&category=Games"
        ))
        .await;
    let rows = body["rows"].as_array().unwrap();
    let games: Vec<_> = ranked
        .iter()
        .filter(|(id, _)| names[id].1 == "Games")
        .map(|(id, _)| id.as_str())
        .collect();
    let got: Vec<_> = rows
        .iter()
        .map(|r| r["product_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, games);

    // Customers.
    let mut customers: BTreeMap<String, (u64, i128)> = BTreeMap::new();
    for ((day, id), s) in &reference.customer_spend_daily {
        if (lo..=hi).contains(day) {
            let e = customers.entry(id.to_string()).or_default();
            e.0 += s.orders_paid;
            e.1 += s.revenue;
        }
    }
    let mut ranked: Vec<_> = customers.into_iter().collect();
    ranked.sort_by(|a, b| b.1.1.cmp(&a.1.1).then(a.0.cmp(&b.0)));
    let (status, body) = app
        .get_json(&format!(
            "/api/v1/dashboard/top-customers?from={FROM}&to=2025-12-31&limit=3"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let rows = body["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["customer_id"], ranked[i].0.as_str());
        assert_eq!(row["orders_paid"], ranked[i].1.0);
        assert_eq!(money(&row["revenue"]), cents(ranked[i].1.1));
        assert!(row["name"].as_str().unwrap().starts_with("Customer "));
    }
}

#[tokio::test]
async fn monthly_and_yearly_trends_with_change_against_the_period_before() {
    let (_dir, app, events) = app().await;
    let reference = Aggregates::of_events(&events);
    let (status, body) = app
        .get_json(&format!(
            "/api/v1/dashboard/trends?period=month&from={FROM}&to={TO}"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let rows = body["rows"].as_array().unwrap();
    let periods: Vec<_> = rows.iter().map(|r| r["period"].as_str().unwrap()).collect();
    assert_eq!(periods, ["2025-11", "2025-12", "2026-01"]);
    for row in rows {
        let month = date(&format!("{}-01", row["period"].as_str().unwrap()));
        let want = reference.monthly_sales[&day_number(month)];
        assert_eq!(row["orders_paid"], want.orders_paid);
        assert_eq!(money(&row["revenue"]), cents(want.revenue));
        let aov = (cents(want.revenue) / Decimal::from(want.orders_paid)).round_dp(2);
        assert_eq!(money(&row["average_order_value"]), aov);
    }
    // November has no month before it; December's change is against November.
    assert!(rows[0]["revenue_change_pct"].is_null());
    let nov = cents(reference.monthly_sales[&day_number(date("2025-11-01"))].revenue);
    let dec = cents(reference.monthly_sales[&day_number(date("2025-12-01"))].revenue);
    let want = ((dec - nov) / nov * Decimal::from(100)).round_dp(1);
    assert_eq!(
        rows[1]["revenue_change_pct"].as_f64().unwrap(),
        want.to_string().parse::<f64>().unwrap()
    );

    let (_, body) = app
        .get_json(&format!(
            "/api/v1/dashboard/trends?period=year&from={FROM}&to={TO}"
        ))
        .await;
    let rows = body["rows"].as_array().unwrap();
    let years: Vec<_> = rows.iter().map(|r| r["period"].as_str().unwrap()).collect();
    assert_eq!(years, ["2025", "2026"]);
    assert_eq!(
        rows[1]["orders_placed"],
        reference.yearly_sales[&2026].orders_placed
    );
}

#[tokio::test]
async fn bad_dashboard_parameters_get_a_4xx_naming_the_field() {
    let (_dir, app, _) = app().await;
    for (query, field) in [
        ("daily?from=2026-02-01&to=2026-01-01", "from"),
        ("daily?from=yesterday", "from"),
        ("daily?to=2026-02-30", "to"),
        ("daily?from=1990-01-01&to=2026-01-01", "from"),
        ("top-products?limit=0", "limit"),
        ("top-products?limit=100000", "limit"),
        ("top-customers?limit=-1", "limit"),
        ("trends?period=week", "period"),
        ("daily?frm=2026-01-01", "frm"),
    ] {
        let (status, body) = app.get_json(&format!("/api/v1/dashboard/{query}")).await;
        assert!((400..500).contains(&status), "{query}: {status} {body}");
        assert_eq!(body["field"], field, "{query}: {body}");
        assert!(body["error"].as_str().is_some(), "{query}: {body}");
    }
    // The server keeps serving; empty parameters are absent ones.
    let (status, _) = app.get_json("/api/v1/dashboard/daily").await;
    assert_eq!(status, 200);
    let (status, body) = app
        .get_json("/api/v1/dashboard/trends?from=&to=&period=")
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn sql_endpoint_answers_in_json_csv_arrow_and_parquet_with_freshness() {
    let (_dir, app, events) = app().await;
    let orders = events
        .iter()
        .filter(|e| matches!(e.payload, DomainEvent::OrderCreated(_)))
        .count() as u64;
    let sql = "SELECT count(*) AS n, sum(orders_placed) AS placed FROM daily_sales";

    let resp = app.sql(sql, "json").await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-shoplens-as-of"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["rows"][0]["placed"], orders, "{body}");
    assert_eq!(body["row_count"], 1);
    assert_eq!(body["columns"][1]["name"], "placed");
    assert!(body["freshness"]["as_of"].is_string());

    let csv = app
        .sql("SELECT count(*) AS n FROM orders", "csv")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(csv, format!("n\n{orders}\n"));

    // Content negotiation by Accept.
    let resp = app
        .client
        .post(format!("{}/api/v1/sql", app.url))
        .header("accept", "application/vnd.apache.arrow.stream")
        .header("content-type", "text/plain")
        .body("SELECT order_id, total FROM orders ORDER BY order_id LIMIT 7")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let bytes = resp.bytes().await.unwrap();
    let reader =
        datafusion::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 7);

    let bytes = app
        .sql("SELECT * FROM product_purchases", "parquet")
        .await
        .bytes()
        .await
        .unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    let purchases = events
        .iter()
        .filter(|e| matches!(e.payload, DomainEvent::ProductPurchased(_)))
        .count();
    assert_eq!(rows, purchases);
}

#[tokio::test]
async fn bad_and_forbidden_sql_get_clear_errors_and_the_server_keeps_serving() {
    let (_dir, app, _) = app().await;
    for (sql, code) in [
        ("SELEC 1", "invalid_sql"),
        ("SELECT nope FROM orders", "invalid_sql"),
        ("SELECT * FROM no_such_table", "invalid_sql"),
        ("SELECT 1; SELECT 2", "invalid_sql"),
        (
            "INSERT INTO orders (order_id) VALUES ('x')",
            "forbidden_statement",
        ),
        ("DELETE FROM orders", "forbidden_statement"),
        ("DROP TABLE orders", "forbidden_statement"),
        ("CREATE TABLE t AS SELECT 1", "forbidden_statement"),
        (
            "CREATE EXTERNAL TABLE p STORED AS CSV LOCATION '/etc/passwd'",
            "forbidden_statement",
        ),
        ("COPY orders TO '/tmp/orders.csv'", "forbidden_statement"),
        // A query whose plan creates a table.
        ("SELECT 1 AS a INTO t", "forbidden_statement"),
        ("SELECT * FROM '/etc/passwd'", "invalid_sql"),
        ("SELECT * FROM read_csv('/etc/passwd')", "invalid_sql"),
        (
            "SET datafusion.execution.batch_size = 1",
            "forbidden_statement",
        ),
        ("SELECT * FROM generate_series(1, 1000000)", "too_many_rows"),
    ] {
        let resp = app.sql(sql, "json").await;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        assert!((400..500).contains(&status), "{sql}: {status} {body}");
        assert_eq!(body["code"], code, "{sql}: {body}");
        assert_eq!(body["field"], "sql", "{sql}: {body}");
    }
    let resp = app.sql("SELECT 1 AS one", "xml").await;
    assert_eq!(resp.status(), 422);
    let resp = app.sql("SELECT 1 AS one", "json").await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_query_past_its_deadline_or_memory_is_stopped_and_others_still_answer() {
    let events = support::events();
    let dir = support::embedded_store(&events).await;
    let engine = support::embedded_engine_at(
        &dir,
        &QueryConfig {
            timeout_ms: 300,
            max_rows: 100,
            memory_limit_mb: 4,
            ..support::query_config()
        },
    )
    .await;
    let app = support::spawn_app(engine).await;
    let slow = "SELECT count(*) FROM generate_series(1, 2000000000) a";
    let resp = app.sql(slow, "json").await;
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "query_timeout", "{body}");

    let resp = app.sql("SELECT count(*) AS n FROM orders", "json").await;
    assert_eq!(resp.status(), 200);

    // A hash aggregate with millions of groups (in no order, so they cannot be emitted
    // early) needs far more than a 4 MiB pool.
    let engine = support::embedded_engine_at(
        &dir,
        &QueryConfig {
            memory_limit_mb: 4,
            timeout_ms: 60_000,
            ..support::query_config()
        },
    )
    .await;
    let app = support::spawn_app(engine).await;
    let hungry = "SELECT max(c) FROM (SELECT (v * 7919) % 4999999 AS k, count(*) AS c \
                  FROM generate_series(1, 5000000) t(v) GROUP BY k)";
    let resp = app.sql(hungry, "json").await;
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "memory_limit", "{status} {body}");
    let resp = app.sql("SELECT count(*) AS n FROM orders", "json").await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn named_reports_export_as_csv_and_parquet_and_unknown_ones_are_404() {
    let (_dir, app, events) = app().await;
    let in_range: Vec<_> = events
        .iter()
        .filter(|e| {
            matches!(e.payload, DomainEvent::OrderCreated(_))
                && e.occurred_at.date_naive() >= date("2025-12-01")
                && e.occurred_at.date_naive() <= date("2025-12-31")
        })
        .collect();
    let resp = app
        .client
        .get(format!(
            "{}/api/v1/reports/orders_detail.csv?from=2025-12-01&to=2025-12-31",
            app.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/csv; charset=utf-8");
    let text = resp.text().await.unwrap();
    let mut lines = text.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("order_id,customer_id,placed_at")
    );
    assert_eq!(lines.count(), in_range.len());

    for name in [
        "daily_sales",
        "top_products",
        "top_customers",
        "monthly_sales",
        "yearly_sales",
        "orders_detail",
        "product_sales_detail",
    ] {
        let resp = app
            .client
            .get(format!(
                "{}/api/v1/reports/{name}.parquet?from={FROM}&to={TO}",
                app.url
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{name}");
        let bytes = resp.bytes().await.unwrap();
        let rows: usize =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
                .unwrap()
                .build()
                .unwrap()
                .map(|b| b.unwrap().num_rows())
                .sum();
        assert!(rows > 0, "{name} is empty");
    }

    let (status, body) = app.get_json("/api/v1/reports/nope.csv").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = app.get_json("/api/v1/reports/daily_sales.xlsx").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "format");
    let (status, body) = app
        .get_json("/api/v1/reports/daily_sales.csv?from=2026-01-02&to=2026-01-01")
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "from");
}

#[tokio::test]
async fn ad_hoc_exports_have_no_row_limit() {
    let (_dir, app, _) = app().await;
    // support::query_config() limits interactive queries to 10_000 rows.
    let resp = app
        .client
        .post(format!("{}/api/v1/export?format=csv", app.url))
        .header("content-type", "text/plain")
        .body("SELECT value FROM generate_series(1, 50000)")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert_eq!(text.lines().count(), 50_001);
    assert_eq!(text.lines().last(), Some("50000"));
}

#[tokio::test]
async fn tables_lists_every_table_with_its_columns() {
    let (_dir, app, _) = app().await;
    let (status, body) = app.get_json("/api/v1/tables").await;
    assert_eq!(status, 200);
    let names: Vec<_> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for want in [
        "orders",
        "daily_sales",
        "product_sales_daily",
        "products",
        "customers",
    ] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
}

#[tokio::test]
async fn an_empty_read_model_answers_with_zeros_and_no_freshness() {
    let dir = tempfile::tempdir().unwrap();
    let model = std::sync::Arc::new(shoplens_analytics::embedded::EmbeddedReadModel::new(
        dir.path().join("readmodel"),
    ));
    let engine = shoplens_analytics::Engine::new(model, &support::query_config())
        .await
        .unwrap();
    let app = support::spawn_app(engine).await;
    let (status, body) = app
        .get_json("/api/v1/dashboard/daily?from=2026-01-01&to=2026-01-03")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"].as_array().unwrap().len(), 3);
    assert_eq!(body["rows"][0]["orders_placed"], 0);
    assert!(body["freshness"]["as_of"].is_null());
    let resp = app.sql("SELECT count(*) AS n FROM orders", "json").await;
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["rows"][0]["n"], 0, "{body}");
}

/// Reconciliation needs a composer; without one it says so (503), bad dates name the field
/// (422), and an unreachable composer is a 503 naming the source of truth.
#[tokio::test]
async fn reconcile_errors_are_clear_json() {
    let (_dir, app, _) = app().await;
    let (status, body) = app.get_json("/api/v1/reconcile").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "reconcile_not_configured", "{body}");

    let events = support::events();
    let (_dir2, engine) = support::embedded_engine(&events).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut config = support::app_config();
    config.reconcile.composer_url = format!("http://127.0.0.1:{port}");
    let app = support::spawn_app_with(engine, &config).await;
    for (query, field) in [
        ("?from=2026-02-01&to=2026-01-01", "from"),
        ("?to=2026-02-30", "to"),
        ("?form=2026-01-01", "form"),
    ] {
        let (status, body) = app.get_json(&format!("/api/v1/reconcile{query}")).await;
        assert!((400..500).contains(&status), "{query}: {status} {body}");
        assert_eq!(body["field"], field, "{query}: {body}");
    }
    let (status, body) = app
        .get_json("/api/v1/reconcile?from=2026-01-01&to=2026-01-31")
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "source_of_truth_unavailable", "{body}");
}
