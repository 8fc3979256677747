//! The analytics side of the running system: the demo's orders reach the sales dashboard
//! and the SQL endpoint, and the `export` command writes them to a file (with cron-friendly
//! exit codes) from the read model the stopped system left behind.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use shoplens_kit::identity::Role;

use crate::process::{Shoplens, base_env, open_db, token, wait_orders_finished};

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
    let viewer = token(Role::Viewer);
    let analyst = token(Role::Analyst);
    let start = Instant::now();
    let daily = loop {
        let body: Value = client
            .get(format!("{analytics}/api/v1/dashboard/daily"))
            .bearer_auth(&viewer)
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
        .bearer_auth(&analyst)
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

/// The read model's dashboard (CQRS) and the composer's live computation from the services
/// (API composition) are two answers to one question: once the read model has caught up,
/// every figure of every view is the same.
#[tokio::test]
async fn the_read_model_and_the_live_composition_give_the_same_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let mut shop = Shoplens::spawn(
        data,
        &[],
        &[
            ("SHOPLENS_DEMO__SIMULATOR__ORDERS", "40"),
            ("SHOPLENS_DEMO__SIMULATOR__RATE_PER_SEC", "0"),
            ("SHOPLENS_DEMO__SIMULATOR__STEP_DELAY_MS", "0"),
            ("SHOPLENS_DEMO__SIMULATOR__CUSTOMERS", "12"),
            ("SHOPLENS_DEMO__SIMULATOR__PRODUCTS", "9"),
        ],
    );
    let info = shop.wait_ready();
    let analytics = info.analytics.clone().expect("the analytics server runs");
    wait_orders_finished(data, 40).await;
    let token = Command::new(env!("CARGO_BIN_EXE_shoplens"))
        .args(["token", "--admin"])
        .envs(base_env(data))
        .output()
        .expect("run shoplens token");
    let token = String::from_utf8(token.stdout).unwrap().trim().to_owned();

    let client = reqwest::Client::new();
    let get = |url: String, auth: bool| {
        let mut req = client.get(url);
        if auth {
            req = req.bearer_auth(&token);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let body: Value = resp.json().await.unwrap();
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    // A range around today (the demo's orders are placed and paid now), a top-N larger than
    // the shop, and both trend periods.
    let today = chrono::Utc::now().date_naive();
    let range = format!(
        "from={}&to={}",
        today - chrono::Duration::days(40),
        today + chrono::Duration::days(1)
    );
    let live_url = |period: &str, extra: &str| {
        format!(
            "{}/api/v1/sales/dashboard?{range}&limit=50&period={period}{extra}",
            info.composer
        )
    };
    let live = get(live_url("month", ""), true).await;
    assert_eq!(live["orders_scanned"], 40, "{live}");
    assert_eq!(live["names_complete"], true);
    let placed: u64 = live["daily"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["orders_placed"].as_u64().unwrap())
        .sum();
    assert_eq!(placed, 40);

    let views = [
        ("daily", "daily", ""),
        ("top-products", "top_products", "&limit=50"),
        ("top-customers", "top_customers", "&limit=50"),
        ("trends", "trends", "&period=month"),
    ];
    let start = Instant::now();
    loop {
        let mut differ = Vec::new();
        for (path, key, extra) in views {
            let cqrs = get(
                format!("{analytics}/api/v1/dashboard/{path}?{range}{extra}"),
                true,
            )
            .await;
            if cqrs["rows"] != live[key] {
                differ.push(format!("{key}: cqrs {} live {}", cqrs["rows"], live[key]));
            }
        }
        if differ.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the read model did not come to the live figures: {differ:#?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Yearly trends and a category filter agree too.
    let category = live["top_products"][0]["category"]
        .as_str()
        .unwrap()
        .to_owned();
    let live = get(live_url("year", &format!("&category={category}")), true).await;
    for (path, key, extra) in [
        ("trends", "trends", "&period=year".to_owned()),
        (
            "top-products",
            "top_products",
            format!("&limit=50&category={category}"),
        ),
    ] {
        let cqrs = get(
            format!("{analytics}/api/v1/dashboard/{path}?{range}{extra}"),
            true,
        )
        .await;
        assert_eq!(cqrs["rows"], live[key], "{key}");
    }
    assert!(
        live["top_products"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["category"] == category.as_str())
    );

    // Business figures need an admin; bad parameters name the field.
    let resp = client.get(live_url("month", "")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = client
        .get(live_url("week", ""))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["field"], "period", "{body}");

    // The ledger (per day, product and customer) sums to the same totals.
    let ledger = get(
        format!("{}/api/v1/sales/ledger?{range}", info.composer),
        true,
    )
    .await;
    assert_eq!(ledger["orders_scanned"], 40);
    let units: u64 = ledger["products"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p["units"].as_u64().unwrap())
        .sum();
    let items: u64 = ledger["daily"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["items_sold"].as_u64().unwrap())
        .sum();
    assert_eq!(units, items);
    assert!(shop.terminate().success());
}
