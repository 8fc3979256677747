//! `shoplens reconcile` on the embedded system: the read model matches the services after
//! the demo's orders, and a read model corrupted behind the worker's back (an event counted
//! twice under a new id) is reported with the day, product and customer it affects.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use shoplens_bus::{EmbeddedLog, EmbeddedLogConfig, EventSource};
use shoplens_contract::{DomainEvent, Envelope};
use shoplens_ingest::sink::IngestBatch;
use shoplens_readmodel::config::{ReadModelConfig, ReadModelKind};

use crate::process::{Shoplens, base_env, wait_orders_finished};

/// Runs `shoplens reconcile ARGS` against the system in `data`.
pub fn reconcile(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shoplens"))
        .arg("reconcile")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .envs(base_env(data))
        .output()
        .expect("run shoplens reconcile")
}

/// `shoplens reconcile --json` with `settle_secs`: the exit code and the report.
pub fn reconcile_json(data: &Path, settle_secs: u64) -> (i32, Value) {
    let out = reconcile(data, &["--json", "--settle-secs", &settle_secs.to_string()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); stdout {stdout}; stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

/// Every event of `topic` in the embedded log under `data`.
fn events_of(data: &Path, topic: &str) -> Vec<Envelope> {
    let log = EmbeddedLog::open(EmbeddedLogConfig {
        dir: data.join("eventlog"),
        fsync: false,
    })
    .unwrap();
    let rt = tokio::runtime::Handle::current();
    let mut consumer = log.consumer("reconcile-test", &[topic]).unwrap();
    let mut out = Vec::new();
    tokio::task::block_in_place(|| {
        rt.block_on(async {
            loop {
                let batch = consumer.poll(1000, Duration::ZERO).await.unwrap();
                if batch.is_empty() {
                    break;
                }
                out.extend(batch.iter().map(|r| Envelope::decode(&r.payload).unwrap()));
            }
        })
    });
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_matches_then_names_the_keys_of_a_corrupted_read_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let mut shop = Shoplens::spawn(
        data,
        &[],
        &[
            ("SHOPLENS_DEMO__SIMULATOR__ORDERS", "20"),
            ("SHOPLENS_DEMO__SIMULATOR__RATE_PER_SEC", "0"),
            ("SHOPLENS_DEMO__SIMULATOR__STEP_DELAY_MS", "0"),
            ("SHOPLENS_DEMO__SIMULATOR__CUSTOMERS", "8"),
            ("SHOPLENS_DEMO__SIMULATOR__PRODUCTS", "6"),
        ],
    );
    shop.wait_ready();
    wait_orders_finished(data, 20).await;

    // 1. Once the read model has caught up, it matches the services exactly.
    let (code, report) = reconcile_json(data, 30);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["matches"], true);
    assert_eq!(report["source_of_truth"]["orders_scanned"], 20);
    assert_eq!(report["back_end"], "embedded");
    assert!(report["checked"]["days"].as_u64().unwrap() >= 1, "{report}");
    assert!(report["checked"]["products"].as_u64().unwrap() >= 1);
    assert!(report["checked"]["customers"].as_u64().unwrap() >= 1);
    // Payments, shipments, customers and products counted by each service, each state.
    assert!(
        report["checked"]["records"].as_u64().unwrap() >= 4,
        "{report}"
    );
    assert_eq!(report["differences"], serde_json::json!([]));
    assert!(report["read_model"]["as_of"].is_string(), "{report}");
    let human = reconcile(data, &[]);
    assert_eq!(human.status.code(), Some(0));
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.starts_with("MATCH"), "{text}");
    // A bad date is the caller's error: exit code 2, the field named.
    let bad = reconcile(data, &["--from", "2026-13-01"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("from"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(shop.terminate().success());

    // 2. Corrupt the read model: one line of a paid order counted a second time, under a new
    //    event id (what a store without deduplication would do with a replay).
    let mut purchase = events_of(data, "shop.orders")
        .into_iter()
        .find(|e| matches!(e.payload, DomainEvent::ProductPurchased(_)))
        .expect("a paid order line");
    purchase.event_id = uuid::Uuid::now_v7();
    let DomainEvent::ProductPurchased(line) = &purchase.payload else {
        unreachable!()
    };
    let (product, customer) = (line.product_id.clone(), line.customer_id.clone());
    let day = purchase.occurred_at.date_naive().to_string();
    // And a payment the payment service never took (a stray event in the raw table).
    let mut payment = events_of(data, "shop.payments")
        .into_iter()
        .find(|e| matches!(e.payload, DomainEvent::PaymentCompleted(_)))
        .expect("a completed payment");
    payment.event_id = uuid::Uuid::now_v7();
    if let DomainEvent::PaymentCompleted(p) = &mut payment.payload {
        p.payment_id = uuid::Uuid::now_v7().to_string();
    }
    let payments_key = format!("payments {} Success", payment.occurred_at.date_naive());
    {
        let mut config = ReadModelConfig {
            kind: ReadModelKind::Embedded,
            ..ReadModelConfig::default()
        };
        config.embedded.dir = data.join("readmodel");
        let store = shoplens_ingest::startup::open_store(&config).await.unwrap();
        let generation = store.live().await.unwrap().expect("a live generation");
        let sink = store.open(generation).await.unwrap();
        let report = sink
            .apply(&IngestBatch {
                tables: shoplens_contract::tables::to_batches([&purchase, &payment]),
                ..IngestBatch::default()
            })
            .await
            .unwrap();
        assert_eq!(report.rows_written, 2);
    }

    // 3. Reconcile names the affected keys: that day, that product, that customer.
    let mut shop = Shoplens::spawn(data, &["run", "--no-demo"], &[]);
    shop.wait_ready();
    let (code, report) = reconcile_json(data, 0);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["matches"], false);
    let diffs = report["differences"].as_array().unwrap();
    let has = |scope: &str, key: &str, field: &str| {
        diffs
            .iter()
            .any(|d| d["scope"] == scope && d["key"] == key && d["field"] == field)
    };
    assert!(has("day", &day, "items_sold"), "{report:#}");
    assert!(has("day", &day, "revenue"), "{report:#}");
    assert!(has("product", &product, "units"), "{report:#}");
    assert!(has("product", &product, "order_lines"), "{report:#}");
    assert!(has("customer", &customer, "revenue"), "{report:#}");
    assert!(has("records", &payments_key, "count"), "{report:#}");
    assert!(has("records", &payments_key, "amount"), "{report:#}");
    // Only those keys: the rest of the shop still matches.
    assert!(
        diffs.iter().all(|d| d["key"] == day.as_str()
            || d["key"] == product.as_str()
            || d["key"] == customer.as_str()
            || d["key"] == payments_key.as_str()),
        "{report:#}"
    );
    assert_eq!(report["difference_count"], diffs.len());
    let human = reconcile(data, &[]);
    assert_eq!(human.status.code(), Some(1));
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.starts_with("DIFFERENCES") && text.contains(&product),
        "{text}"
    );
    assert!(shop.terminate().success());
}
