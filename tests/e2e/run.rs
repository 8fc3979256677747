//! The README's run command: the whole system comes up with demo data and stops cleanly.

use shoplens_bus::{EmbeddedLog, EmbeddedLogConfig};

use crate::process::{Shoplens, open_db, wait_orders_finished};

#[tokio::test]
async fn the_system_comes_up_with_demo_traffic_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let mut shop = Shoplens::spawn(
        data,
        &[],
        &[
            ("SHOPLENS_DEMO__SIMULATOR__ORDERS", "12"),
            ("SHOPLENS_DEMO__SIMULATOR__RATE_PER_SEC", "0"),
            ("SHOPLENS_DEMO__SIMULATOR__STEP_DELAY_MS", "0"),
            ("SHOPLENS_DEMO__SIMULATOR__CUSTOMERS", "20"),
            ("SHOPLENS_DEMO__SIMULATOR__PRODUCTS", "15"),
        ],
    );
    let info = shop.wait_ready();
    for url in [
        &info.customer,
        &info.product,
        &info.order,
        &info.payment,
        &info.shipping,
    ] {
        let resp = reqwest::get(format!("{url}/health")).await.unwrap();
        assert_eq!(resp.status(), 200, "{url}");
    }
    wait_orders_finished(data, 12).await;
    let db = open_db(data, "order").await;
    let orders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(orders, 12);
    db.close().await;
    assert!(shop.terminate().success(), "graceful shutdown exits 0");

    // After a clean stop the outbox is fully published to the event log.
    let log = EmbeddedLog::open(EmbeddedLogConfig {
        dir: data.join("eventlog"),
        fsync: false,
    })
    .unwrap();
    assert_eq!(log.end_offset("shop.customers"), 20);
    assert_eq!(log.end_offset("shop.products"), 15);
    assert!(
        log.end_offset("shop.orders") >= 12 * 2,
        "at least OrderCreated + Placed per order"
    );
    assert!(log.end_offset("shop.payments") > 0);
    assert!(log.end_offset("shop.shipping") > 0);
}
