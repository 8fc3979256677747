//! A relay killed between "published" and "marked published" loses nothing.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde_json::json;
use shoplens_bus::{EmbeddedLog, EmbeddedLogConfig, EventSource};
use shoplens_contract::Envelope;

use crate::process::{Shoplens, open_db};

#[tokio::test]
async fn a_relay_crash_between_publish_and_mark_loses_no_event() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();

    // 1. Write five customers with the relay off: five events wait in the outbox.
    let mut shop = Shoplens::spawn(
        data,
        &["run", "--no-demo"],
        &[("SHOPLENS_CUSTOMER__RELAY__ENABLED", "false")],
    );
    let info = shop.wait_ready();
    let http = reqwest::Client::new();
    for i in 0..5 {
        let resp = http
            .post(format!("{}/api/v1/customers", info.customer))
            .bearer_auth(crate::process::service_token())
            .json(&json!({"name": format!("C{i}"), "email": format!("c{i}@example.com"), "country": "NL"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
    }
    assert!(shop.terminate().success());

    // 2. The relay publishes a batch of two, and the process dies before marking them.
    let mut shop = Shoplens::spawn(
        data,
        &["run", "--no-demo"],
        &[
            ("SHOPLENS_CUSTOMER__RELAY__BATCH_SIZE", "2"),
            ("SHOPLENS_CUSTOMER__RELAY__CRASH_AFTER_BATCHES", "1"),
        ],
    );
    let status = shop.wait_exit(Duration::from_secs(30));
    assert!(
        !status.success(),
        "the fault should have aborted the process"
    );
    let db = open_db(data, "customer").await;
    let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(pending, 5, "nothing was marked published before the crash");
    db.close().await;

    // 3. Restart normally: the relay publishes everything, the first two a second time.
    let mut shop = Shoplens::spawn(data, &["run", "--no-demo"], &[]);
    shop.wait_ready();
    let db = open_db(data, "customer").await;
    let start = Instant::now();
    loop {
        let pending: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(&db)
                .await
                .unwrap();
        if pending == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "relay did not drain the outbox"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let outbox: Vec<String> = sqlx::query_scalar("SELECT event_id FROM outbox ORDER BY seq")
        .fetch_all(&db)
        .await
        .unwrap();
    db.close().await;
    assert!(shop.terminate().success());

    // 4. Every outbox event is on the bus; the only duplicates are the crashed batch.
    let log = EmbeddedLog::open(EmbeddedLogConfig {
        dir: data.join("eventlog"),
        fsync: false,
    })
    .unwrap();
    let mut consumer = log.consumer("check", &["shop.customers"]).unwrap();
    let mut seen: Vec<String> = Vec::new();
    loop {
        let batch = consumer.poll(1000, Duration::ZERO).await.unwrap();
        if batch.is_empty() {
            break;
        }
        for r in batch {
            seen.push(Envelope::decode(&r.payload).unwrap().event_id.to_string());
        }
    }
    let distinct: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(distinct, outbox.iter().cloned().collect::<BTreeSet<_>>());
    assert_eq!(seen.len(), 7, "five events plus the two published twice");
    let mut counts: HashMap<&String, usize> = HashMap::new();
    for id in &seen {
        *counts.entry(id).or_default() += 1;
    }
    let twice: BTreeSet<_> = counts
        .iter()
        .filter(|(_, n)| **n == 2)
        .map(|(id, _)| (*id).clone())
        .collect();
    assert_eq!(twice, outbox[..2].iter().cloned().collect::<BTreeSet<_>>());
    // Order per aggregate is kept: the log's first copies come in outbox order.
    let mut first_copies = Vec::new();
    for id in &seen {
        if !first_copies.contains(id) {
            first_copies.push(id.clone());
        }
    }
    assert_eq!(first_copies, outbox);
}

/// The order service's relay dies between publishing a batch and marking it, in the middle
/// of a shop's worth of orders: the batch goes out twice, the read model drops the copies,
/// and reconciliation finds every total exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_crash_mid_sales_leaves_the_read_model_exact() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();

    // 1. Orders placed, paid and shipped with the order relay off: their events wait.
    let mut shop = Shoplens::spawn(
        data,
        &[],
        &[
            ("SHOPLENS_ORDER__RELAY__ENABLED", "false"),
            ("SHOPLENS_DEMO__SIMULATOR__ORDERS", "15"),
            ("SHOPLENS_DEMO__SIMULATOR__RATE_PER_SEC", "0"),
            ("SHOPLENS_DEMO__SIMULATOR__STEP_DELAY_MS", "0"),
            ("SHOPLENS_DEMO__SIMULATOR__CUSTOMERS", "6"),
            ("SHOPLENS_DEMO__SIMULATOR__PRODUCTS", "5"),
        ],
    );
    shop.wait_ready();
    crate::process::wait_orders_finished(data, 15).await;
    assert!(shop.terminate().success());

    // 2. The relay publishes two batches of seven and dies before marking the second.
    let mut shop = Shoplens::spawn(
        data,
        &["run", "--no-demo"],
        &[
            ("SHOPLENS_ORDER__RELAY__BATCH_SIZE", "7"),
            ("SHOPLENS_ORDER__RELAY__CRASH_AFTER_BATCHES", "2"),
        ],
    );
    let status = shop.wait_exit(Duration::from_secs(30));
    assert!(
        !status.success(),
        "the fault should have aborted the process"
    );

    // 3. Restarted, it publishes the rest (the crashed batch again); the read model settles
    //    on exactly the services' figures.
    let mut shop = Shoplens::spawn(data, &["run", "--no-demo"], &[]);
    shop.wait_ready();
    let (code, report) = crate::reconcile::reconcile_json(data, 30);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["source_of_truth"]["orders_scanned"], 15);
    assert!(
        report["checked"]["products"].as_u64().unwrap() >= 1,
        "{report:#}"
    );
    assert!(shop.terminate().success());

    // The bus really holds duplicates: the crashed batch was published twice.
    let log = EmbeddedLog::open(EmbeddedLogConfig {
        dir: data.join("eventlog"),
        fsync: false,
    })
    .unwrap();
    let mut consumer = log.consumer("check", &["shop.orders"]).unwrap();
    let (mut all, mut distinct) = (0, BTreeSet::new());
    loop {
        let batch = consumer.poll(1000, Duration::ZERO).await.unwrap();
        if batch.is_empty() {
            break;
        }
        for r in batch {
            all += 1;
            distinct.insert(Envelope::decode(&r.payload).unwrap().event_id);
        }
    }
    assert!(
        all > distinct.len(),
        "{all} records, {} distinct",
        distinct.len()
    );
}
