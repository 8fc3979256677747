//! The demo's past: `shoplens run` creates weeks of history through the services (their
//! clock pinned to each order's moment), the dashboard shows it with its festival spike,
//! `shoplens reconcile` matches over the whole range, and a restart on the same day adds
//! no second history.

use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use serde_json::Value;
use shoplens_kit::identity::Role;

use crate::process::{Shoplens, open_db, token};
use crate::reconcile::reconcile;

const DAYS: i64 = 40;

/// The shop's orders per creation day (UTC), from the order service's own database.
async fn orders_per_day(data: &std::path::Path) -> Vec<(NaiveDate, i64)> {
    let db = open_db(data, "order").await;
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT substr(created_at, 1, 10) AS day, COUNT(*) FROM orders GROUP BY day ORDER BY day",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    db.close().await;
    rows.into_iter()
        .map(|(day, n)| (day.parse().unwrap(), n))
        .collect()
}

/// Waits until every order of the order service is delivered or cancelled and their number
/// stopped growing; returns it.
async fn wait_settled(data: &std::path::Path) -> i64 {
    let db = open_db(data, "order").await;
    let start = Instant::now();
    let mut last = -1;
    loop {
        let (all, open): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE status NOT IN ('Delivered', 'Cancelled')) FROM orders",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        if open == 0 && all > 0 && all == last {
            db.close().await;
            return all;
        }
        last = all;
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "the demo history did not finish: {all} orders, {open} open"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_creates_a_past_that_the_dashboard_shows_and_reconcile_matches() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let days = DAYS.to_string();
    let env = [
        ("SHOPLENS_DEMO__HISTORY__DAYS", days.as_str()),
        ("SHOPLENS_DEMO__HISTORY__ORDERS_PER_DAY", "2"),
        ("SHOPLENS_DEMO__HISTORY__FESTIVAL_MULTIPLIER", "6"),
        // No live orders: everything in the shop is history.
        ("SHOPLENS_DEMO__SIMULATOR__ORDERS", "0"),
        ("SHOPLENS_DEMO__SIMULATOR__CUSTOMERS", "8"),
        ("SHOPLENS_DEMO__SIMULATOR__PRODUCTS", "6"),
    ];
    let mut shop = Shoplens::spawn(data, &[], &env);
    let info = shop.wait_ready();
    let orders = wait_settled(data).await;
    let marker: Value =
        serde_json::from_slice(&std::fs::read(data.join("demo-history.json")).unwrap()).unwrap();
    let today = Utc::now().date_naive();
    let yesterday = today.pred_opt().unwrap();
    assert_eq!(marker["through"], yesterday.to_string(), "{marker}");

    // The history lives in the order service's database, every day of the range, none today.
    let per_day = orders_per_day(data).await;
    let first = today - chrono::Duration::days(DAYS);
    assert!(
        per_day.iter().all(|(d, _)| (first..today).contains(d)),
        "orders outside {first}..{today}: {per_day:?}"
    );
    assert!(
        per_day.len() as i64 >= DAYS - 3,
        "only {} of {DAYS} days have orders: {per_day:?}",
        per_day.len()
    );

    // The dashboard shows it: the days of the range, and the festival's days above the rest.
    let analytics = info.analytics.clone().expect("the analytics server runs");
    let viewer = token(Role::Viewer);
    let http = reqwest::Client::new();
    let start = Instant::now();
    let daily = loop {
        let body: Value = http
            .get(format!("{analytics}/api/v1/dashboard/daily"))
            .query(&[("days", "60")])
            .bearer_auth(&viewer)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rows = body["rows"].as_array().cloned().unwrap_or_default();
        let placed: i64 = rows
            .iter()
            .map(|r| r["orders_placed"].as_i64().unwrap())
            .sum();
        if placed == orders {
            break rows;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the dashboard shows {placed} of {orders} orders: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(daily.len(), 60, "a row per day of the range");
    let placed_on = |pick: &dyn Fn(NaiveDate) -> bool| -> Vec<i64> {
        daily
            .iter()
            .filter(|r| pick(r["day"].as_str().unwrap().parse().unwrap()))
            .map(|r| r["orders_placed"].as_i64().unwrap())
            .collect()
    };
    let festival = placed_on(&|d| shop_simulator::is_festival(d) && d < today && d >= first);
    let others = placed_on(&|d| !shop_simulator::is_festival(d) && d < today && d >= first);
    if !festival.is_empty() {
        let mean = |v: &[i64]| v.iter().sum::<i64>() as f64 / v.len() as f64;
        assert!(
            mean(&festival) > 2.0 * mean(&others),
            "festival {festival:?} vs other days {others:?}"
        );
    }

    // Reconciliation over the whole range: the read model matches the services exactly.
    let from = first.to_string();
    let out = reconcile(
        data,
        &[
            "--json",
            "--settle-secs",
            "30",
            "--from",
            &from,
            "--to",
            &today.to_string(),
        ],
    );
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no report ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["matches"], true);
    assert_eq!(report["source_of_truth"]["orders_scanned"], orders);
    assert!(
        report["checked"]["days"].as_i64().unwrap() >= DAYS - 3,
        "{report}"
    );
    assert!(shop.terminate().success());

    // A restart on the same day adds no second history.
    let mut shop = Shoplens::spawn(data, &[], &env);
    shop.wait_ready();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(wait_settled(data).await, orders);
    assert!(shop.terminate().success());
}
