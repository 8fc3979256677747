//! The analytics side of the running system: the demo's orders reach the sales dashboard
//! and the SQL endpoint, and the `export` command writes them to a file (with cron-friendly
//! exit codes) from the read model the stopped system left behind.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::{Shoplens, base_env, open_db, wait_orders_finished};

#[tokio::test]
async fn demo_orders_reach_the_dashboard_the_sql_endpoint_and_an_export() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let mut shop = Shoplens::spawn(
        data,
        &[],
        &[
            ("SHOPLENS_DEMO__SIMULATOR__ORDERS", "10"),
            ("SHOPLENS_DEMO__SIMULATOR__RATE_PER_SEC", "0"),
            ("SHOPLENS_DEMO__SIMULATOR__STEP_DELAY_MS", "0"),
            ("SHOPLENS_DEMO__SIMULATOR__CUSTOMERS", "8"),
            ("SHOPLENS_DEMO__SIMULATOR__PRODUCTS", "6"),
        ],
    );
    let info = shop.wait_ready();
    let analytics = info.analytics.clone().expect("the analytics server runs");
    let sql_url = info
        .analytics_sql
        .clone()
        .expect("the Postgres endpoint runs");
    assert!(
        sql_url.starts_with("postgres://shoplens@127.0.0.1:") && sql_url.ends_with("/shoplens"),
        "{sql_url}"
    );
    wait_orders_finished(data, 10).await;
    let db = open_db(data, "order").await;
    let paid: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM orders WHERE status NOT IN ('Placed', 'Cancelled')",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    db.close().await;

    // The dashboard catches up with the shop (eventually consistent).
    let client = reqwest::Client::new();
    let start = Instant::now();
    let daily = loop {
        let body: Value = client
            .get(format!("{analytics}/api/v1/dashboard/daily"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rows = body["rows"].as_array().unwrap();
        let sum = |k: &str| rows.iter().map(|r| r[k].as_u64().unwrap()).sum::<u64>();
        if sum("orders_placed") == 10 && sum("orders_paid") == paid as u64 {
            break body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the dashboard did not catch up: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(daily["freshness"]["as_of"].is_string(), "{daily}");
    assert!(daily["freshness"]["lag_events"].is_u64(), "{daily}");

    let sql: Value = client
        .post(format!("{analytics}/api/v1/sql"))
        .header("content-type", "text/plain")
        .body("SELECT count(*) AS n FROM orders")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sql["rows"][0]["n"], 10, "{sql}");
    let page = client
        .get(format!("{analytics}/dashboard"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(shop.terminate().success(), "graceful shutdown exits 0");

    // Export from the read model on disk, as a cron job would.
    let out = data.join("orders.csv");
    let export = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_shoplens"))
            .arg("export")
            .args(args)
            .envs(base_env(data))
            .output()
            .expect("run shoplens export")
    };
    let done = export(&["--report", "orders_detail", "-o", out.to_str().unwrap()]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&done.stdout).trim(), "10");
    let csv = std::fs::read_to_string(&out).unwrap();
    assert_eq!(csv.lines().count(), 11, "a header and one line per order");
    assert!(csv.starts_with("order_id,customer_id,placed_at"), "{csv}");
    assert!(String::from_utf8_lossy(&done.stderr).contains("10 rows"));

    let parquet = data.join("sales.parquet");
    let done = export(&["--report", "daily_sales", "-o", parquet.to_str().unwrap()]);
    assert!(done.status.success());
    assert_eq!(&std::fs::read(&parquet).unwrap()[..4], b"PAR1");

    for (args, code) in [
        (vec!["--report", "nope", "-o", "x.csv"], 2),
        (vec!["--sql", "DELETE FROM orders", "-o", "x.csv"], 2),
        (
            vec![
                "--report",
                "daily_sales",
                "--from",
                "2026-13-01",
                "-o",
                "x.csv",
            ],
            2,
        ),
        (vec!["--report", "daily_sales"], 2),
    ] {
        let done = export(&args);
        assert_eq!(done.status.code(), Some(code), "{args:?}");
        assert!(
            !String::from_utf8_lossy(&done.stderr).is_empty(),
            "{args:?}"
        );
    }
    assert!(!std::path::Path::new("x.csv").exists());
}
