//! The result cache through the real server: repeated reads between two applied batches are
//! look-ups on every surface (dashboard, HTTP SQL, Postgres), a new batch is seen at once,
//! what depends on the moment or the reader is never served from it, and an administrator's
//! unmasked answer never reaches anyone else. Below the result cache, the dashboard's kept
//! query plans and the customer events kept decoded never hide a new batch either.

use std::sync::Arc;

use datafusion::arrow::util::pretty::pretty_format_batches;
use shoplens_analytics::engine::Pii;
use shoplens_contract::{CustomerRegistered, CustomerUpdated, Envelope};
use shoplens_ingest::sink::Sink;
use shoplens_kit::identity::Role;

use crate::support::{
    ANALYST, PG_USER, TestApp, apply, client_as, embedded_engine_at, embedded_store_and_sink,
    events, query_config, spawn_app,
};

/// `shoplens_analytics_result_cache_lookups` with `outcome`.
async fn lookups(app: &TestApp, outcome: &str) -> u64 {
    let text = app
        .client
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    let prefix = format!("shoplens_analytics_result_cache_lookups_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or(0)
}

/// A server over an embedded store holding the first half of the test stream, and the
/// sink that can add the rest.
async fn half_filled() -> (tempfile::TempDir, Arc<dyn Sink>, Vec<Envelope>, TestApp) {
    let all = events();
    let (first, rest) = all.split_at(all.len() / 2);
    let (dir, sink) = embedded_store_and_sink(first).await;
    let engine = embedded_engine_at(&dir, &query_config()).await;
    let app = spawn_app(engine).await;
    (dir, sink, rest.to_vec(), app)
}

fn total_orders(answer: &serde_json::Value) -> u64 {
    answer["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["orders_placed"].as_u64().expect("orders_placed"))
        .sum()
}

#[tokio::test]
async fn repeated_dashboard_reads_are_look_ups_until_the_next_batch() {
    let (_dir, sink, rest, app) = half_filled().await;
    let path = "/api/v1/dashboard/daily?from=2025-11-01&to=2026-02-28";
    let (status, first) = app.get_json(path).await;
    assert_eq!(status, 200, "{first}");
    let hits = lookups(&app, "hit").await;
    let (_, again) = app.get_json(path).await;
    assert_eq!(again["rows"], first["rows"]);
    assert_eq!(
        again["freshness"]["data_version"], first["freshness"]["data_version"],
        "no batch in between"
    );
    assert_eq!(
        lookups(&app, "hit").await,
        hits + 1,
        "the second read is a look-up"
    );

    // A new batch: a new data version, and the new orders at once.
    apply(&sink, &rest, 10_000).await;
    let misses = lookups(&app, "miss").await;
    let (_, after) = app.get_json(path).await;
    assert_ne!(
        after["freshness"]["data_version"],
        first["freshness"]["data_version"]
    );
    assert!(
        total_orders(&after) > total_orders(&first),
        "the new batch's orders are counted: {} then {}",
        total_orders(&first),
        total_orders(&after)
    );
    assert_eq!(lookups(&app, "miss").await, misses + 1);
}

#[tokio::test]
async fn http_sql_and_postgres_share_the_cache_and_skip_what_depends_on_the_moment() {
    let (_dir, _sink, _rest, app) = half_filled().await;
    let count = |resp: serde_json::Value| resp["rows"][0]["n"].as_i64().expect("a count");
    let first = app
        .sql("SELECT count(*) AS n FROM orders", "json")
        .await
        .json::<serde_json::Value>()
        .await
        .expect("JSON");
    let hits = lookups(&app, "hit").await;
    // The same statement spaced and cased differently (keywords) is the same entry.
    let again = app
        .sql("select   count(*) AS n\n  from orders", "json")
        .await
        .json::<serde_json::Value>()
        .await
        .expect("JSON");
    assert_eq!(count(again.clone()), count(first));
    assert_eq!(lookups(&app, "hit").await, hits + 1);
    assert!(again["freshness"]["data_version"].is_u64(), "{again}");

    // The Postgres endpoint reads the same entries (same reader kind: an administrator).
    let pg = app.pg_client_as(PG_USER, "").await;
    let hits = lookups(&app, "hit").await;
    let row = pg
        .query_one("SELECT count(*) AS n FROM orders", &[])
        .await
        .expect("count over Postgres");
    assert_eq!(row.get::<_, i64>(0), count(again));
    assert_eq!(lookups(&app, "hit").await, hits + 1);

    // The moment and the session are never cached: each asks again.
    let uncacheable = lookups(&app, "uncacheable").await;
    for sql in [
        "SELECT now() AS t",
        "SELECT random() AS r FROM orders LIMIT 1",
        "SELECT current_date AS d",
        "SELECT count(*) AS n FROM pg_catalog.pg_class",
    ] {
        let resp = app.sql(sql, "json").await;
        assert_eq!(resp.status(), 200, "{sql}: {}", resp.text().await.unwrap());
    }
    assert_eq!(lookups(&app, "uncacheable").await, uncacheable + 4);
}

#[tokio::test]
async fn an_administrators_answer_is_never_served_to_anyone_else() {
    let (_dir, _sink, _rest, app) = half_filled().await;
    let sql = "SELECT name FROM customers ORDER BY customer_id LIMIT 1";
    let admin = app
        .sql(sql, "json")
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_ne!(admin["rows"][0]["name"], "(redacted)", "{admin}");
    let analyst = client_as(Role::Analyst)
        .post(format!("{}/api/v1/sql?format=json", app.url))
        .json(&serde_json::json!({ "sql": sql }))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(analyst["rows"][0]["name"], "(redacted)", "{analyst}");
    let pg = app.pg_client_as(ANALYST, "").await;
    let row = pg.query_one(sql, &[]).await.expect("an analyst's query");
    assert_eq!(row.get::<_, String>(0), "(redacted)");
}

/// The rows of `sql` as the dashboard reads them (no result cache: this engine has none),
/// as text.
async fn dashboard_read(engine: &shoplens_analytics::Engine, sql: &str) -> String {
    let seen = engine.freshness().await.expect("freshness");
    let answer = engine
        .collect_cached(Pii::Visible, sql, &seen)
        .await
        .expect("the query runs");
    pretty_format_batches(&answer.batches)
        .expect("printable")
        .to_string()
}

#[tokio::test]
async fn kept_plans_and_resident_customer_events_see_every_new_batch() {
    let all = events();
    let (first, rest) = all.split_at(all.len() / 2);
    let (dir, sink) = embedded_store_and_sink(first).await;
    let engine = embedded_engine_at(&dir, &query_config()).await;
    let names = "SELECT customer_id, name FROM customers WHERE customer_id IN ('c00001', 'c-new') \
                 ORDER BY customer_id";
    let orders = "SELECT count(*) AS n FROM orders";
    let (names_before, orders_before) = (
        dashboard_read(&engine, names).await,
        dashboard_read(&engine, orders).await,
    );
    // Asked again: the kept plan and the decoded customer events give the same answer.
    assert_eq!(dashboard_read(&engine, names).await, names_before);
    assert_eq!(dashboard_read(&engine, orders).await, orders_before);
    assert!(!names_before.contains("c-new"), "{names_before}");

    // A batch appends files: the rest of the orders, a new customer and a renamed one.
    let mut more = rest.to_vec();
    let at = chrono::DateTime::from_timestamp(1_767_000_000, 0).expect("a time");
    more.push(Envelope::at(
        CustomerRegistered {
            customer_id: "c-new".into(),
            name: "Newly Registered".into(),
            email: "new@example.com".into(),
            country: "PT".into(),
        },
        at,
    ));
    more.push(Envelope::at(
        CustomerUpdated {
            customer_id: "c00001".into(),
            name: "Renamed Since".into(),
            email: "renamed@example.com".into(),
            country: "PT".into(),
        },
        at,
    ));
    apply(&sink, &more, 10_000).await;
    let names_after = dashboard_read(&engine, names).await;
    assert!(
        names_after.contains("Newly Registered") && names_after.contains("Renamed Since"),
        "{names_after}"
    );
    assert_ne!(dashboard_read(&engine, orders).await, orders_before);
}
