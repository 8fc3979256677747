//! The CQRS read side of the real binary: what the five services publish reaches the
//! embedded read model with exactly the right aggregates, also across a `kill -9`.

use std::time::{Duration, Instant};

use shoplens_bus::{EmbeddedLog, EmbeddedLogConfig, EventSource};
use shoplens_contract::Envelope;
use shoplens_contract::tables::RawTable;
use shoplens_ingest::startup::open_store;
use shoplens_readmodel::aggregate::Aggregates;
use shoplens_readmodel::config::ReadModelConfig;
use shoplens_readmodel::tables::AggTable;

use crate::process::{Shoplens, open_db, wait_orders_finished};

const TOPICS: [&str; 5] = [
    "shop.customers",
    "shop.products",
    "shop.orders",
    "shop.payments",
    "shop.shipping",
];

fn demo_env(orders: &str, rate: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SHOPLENS_DEMO__SIMULATOR__ORDERS", orders.to_owned()),
        ("SHOPLENS_DEMO__SIMULATOR__RATE_PER_SEC", rate.to_owned()),
        ("SHOPLENS_DEMO__SIMULATOR__STEP_DELAY_MS", "0".to_owned()),
        ("SHOPLENS_DEMO__SIMULATOR__CUSTOMERS", "20".to_owned()),
        ("SHOPLENS_DEMO__SIMULATOR__PRODUCTS", "15".to_owned()),
        (
            "SHOPLENS_INGEST__WORKER__BATCH_MAX_DELAY_MS",
            "20".to_owned(),
        ),
    ]
}

/// Every event on the (stopped) system's log.
async fn events_on_log(data: &std::path::Path) -> Vec<Envelope> {
    let log = EmbeddedLog::open(EmbeddedLogConfig {
        dir: data.join("eventlog"),
        fsync: false,
    })
    .unwrap();
    let end: u64 = TOPICS.iter().map(|t| log.end_offset(t)).sum();
    let mut consumer = log.consumer("e2e-verify", &TOPICS).unwrap();
    let mut out = Vec::new();
    let mut read = 0;
    while read < end {
        let records = consumer
            .poll(10_000, Duration::from_millis(100))
            .await
            .unwrap();
        assert!(!records.is_empty(), "log ended early at {read}/{end}");
        read += records.len() as u64;
        out.extend(
            records
                .iter()
                .map(|r| Envelope::decode(&r.payload).expect("services publish valid events")),
        );
    }
    out
}

/// Opens the stopped system's embedded read model and checks it against its log.
async fn assert_read_model_matches_log(data: &std::path::Path) -> Aggregates {
    let events = events_on_log(data).await;
    let expected = Aggregates::of_events(&events);
    let mut config = ReadModelConfig::default();
    config.embedded.dir = data.join("readmodel");
    let store = open_store(&config).await.unwrap();
    let generation = store.live().await.unwrap().expect("a live generation");
    let sink = store.open(generation).await.unwrap();
    for table in AggTable::ALL {
        assert_eq!(
            sink.aggregate(table).await.unwrap(),
            expected.to_record_batch(table),
            "{}",
            table.name()
        );
    }
    // A relay killed between publishing and marking publishes some events twice.
    let orders = events
        .iter()
        .filter(|e| RawTable::for_event(e.event_type()) == RawTable::Orders)
        .map(|e| e.event_id)
        .collect::<std::collections::HashSet<_>>()
        .len() as u64;
    assert_eq!(sink.raw_row_count(RawTable::Orders).await.unwrap(), orders);
    assert!(sink.dead_letters().await.unwrap().is_empty());
    expected
}

/// The running system's ingest status (`GET /api/v1/status`).
async fn ingest_status(info: &shoplens::RunInfo) -> serde_json::Value {
    let url = info
        .ingest
        .as_deref()
        .expect("the ingest worker runs in-process");
    reqwest::get(format!("{url}/api/v1/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn services_events_reach_the_embedded_read_model_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let env = demo_env("15", "0");
    let mut shop = Shoplens::spawn(data, &[], &env_refs(&env));
    let info = shop.wait_ready();
    wait_orders_finished(data, 15).await;

    // The ingest API answers while the system runs.
    let status = ingest_status(&info).await;
    assert_eq!(status["live_generation"], 1);

    // The operator rebuilds the read model from the log, blue/green, with progress.
    let rebuild = std::process::Command::new(env!("CARGO_BIN_EXE_shoplens"))
        .args(["rebuild", "--data-dir"])
        .arg(data)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let progress = String::from_utf8_lossy(&rebuild.stderr);
    assert!(rebuild.status.success(), "{progress}");
    assert!(progress.contains("100%"), "{progress}");
    assert!(
        progress.contains("generation 2 is live (replaced generation 1)"),
        "{progress}"
    );
    assert!(shop.terminate().success(), "graceful shutdown exits 0");

    let expected = assert_read_model_matches_log(data).await;
    // ... and the read model agrees with the order service's own database.
    let db = open_db(data, "order").await;
    let orders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
        .fetch_one(&db)
        .await
        .unwrap();
    let placed: u64 = expected
        .to_record_batch(AggTable::DailySales)
        .column(1)
        .as_any()
        .downcast_ref::<arrow_array::UInt64Array>()
        .unwrap()
        .iter()
        .map(|v| v.unwrap_or(0))
        .sum();
    assert_eq!(placed, orders as u64);
}

#[tokio::test]
async fn a_killed_system_resumes_with_exact_totals() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let env = demo_env("60", "40");
    let mut shop = Shoplens::spawn(data, &[], &env_refs(&env));
    shop.wait_ready();
    // Let orders and ingestion get going, then kill -9 mid-stream.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    shop.child.kill().unwrap();
    shop.child.wait().unwrap();

    // Restart without new traffic: the relays publish what the outbox still holds and the
    // worker resumes from what its read model stored.
    let mut shop = Shoplens::spawn(data, &["run", "--no-demo"], &env_refs(&env));
    shop.wait_ready();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(shop.terminate().success());
    assert_read_model_matches_log(data).await;
}

/// Every event on Kafka topics `topics` (read by a new consumer group from the start).
async fn events_on_kafka(kafka: &shoplens_bus::KafkaConfig, topics: &[String]) -> Vec<Envelope> {
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let group = format!("e2e-verify-{}", uuid::Uuid::now_v7().simple());
    let mut source = shoplens_bus::KafkaSource::subscribe(kafka, &group, &names)
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut quiet_since = Instant::now();
    let start = Instant::now();
    // The group join takes a few seconds; after that, 3 s without records means the end.
    while out.is_empty() || quiet_since.elapsed() < Duration::from_secs(3) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "Kafka read stalled"
        );
        let records = source
            .poll(10_000, Duration::from_millis(200))
            .await
            .unwrap();
        if !records.is_empty() {
            quiet_since = Instant::now();
        }
        out.extend(
            records
                .iter()
                .map(|r| Envelope::decode(&r.payload).expect("valid event")),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_events_reach_clickhouse_through_kafka() {
    let brokers = shoplens_test_support::kafka::test_brokers();
    let clickhouse_url = std::env::var("SHOPLENS_TEST_CLICKHOUSE_URL")
        .expect("SHOPLENS_TEST_CLICKHOUSE_URL is set by scripts/test.sh");
    let run = uuid::Uuid::now_v7().simple().to_string();
    let database = format!("e2e_{run}");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let mut env = demo_env("10", "0");
    let topic = |service: &str| format!("e2e{run}.shop.{service}");
    let topics: Vec<String> = ["customers", "products", "orders", "payments", "shipping"]
        .iter()
        .map(|s| topic(s))
        .collect();
    for (svc, t) in ["CUSTOMER", "PRODUCT", "ORDER", "PAYMENT", "SHIPPING"]
        .iter()
        .zip(&topics)
    {
        env.push((
            Box::leak(format!("SHOPLENS_{svc}__TOPIC").into_boxed_str()),
            t.clone(),
        ));
    }
    env.extend([
        ("SHOPLENS_BUS__KIND", "kafka".to_owned()),
        ("SHOPLENS_BUS__KAFKA__BROKERS", brokers.clone()),
        ("SHOPLENS_BUS__KAFKA__SESSION_TIMEOUT_MS", "6000".to_owned()),
        ("SHOPLENS_READ_MODEL__KIND", "clickhouse".to_owned()),
        (
            "SHOPLENS_READ_MODEL__CLICKHOUSE__URL",
            clickhouse_url.clone(),
        ),
        (
            "SHOPLENS_READ_MODEL__CLICKHOUSE__DATABASE",
            database.clone(),
        ),
    ]);
    let mut shop = Shoplens::spawn(data, &[], &env_refs(&env));
    let info = shop.wait_ready();
    wait_orders_finished(data, 10).await;
    // Wait until the worker has applied what the relays published (no lag in two samples
    // taken more than a lag interval apart), then stop cleanly.
    let start = Instant::now();
    let mut caught_up_since: Option<Instant> = None;
    loop {
        let status = ingest_status(&info).await;
        if status["live"]["lag_events"] == 0 {
            let since = *caught_up_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_millis(1_500) {
                break;
            }
        } else {
            caught_up_since = None;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "ingest lags: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(shop.terminate().success());

    let kafka = shoplens_bus::KafkaConfig {
        brokers,
        session_timeout_ms: 6_000,
        ..Default::default()
    };
    let events = events_on_kafka(&kafka, &topics).await;
    let expected = Aggregates::of_events(&events);
    let store = open_store(&ReadModelConfig {
        kind: shoplens_readmodel::config::ReadModelKind::Clickhouse,
        clickhouse: shoplens_readmodel::config::ClickHouseConfig {
            url: clickhouse_url,
            database,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let sink = store
        .open(store.live().await.unwrap().unwrap())
        .await
        .unwrap();
    let db = open_db(data, "order").await;
    let orders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(
        sink.raw_row_count(RawTable::Orders).await.unwrap(),
        orders as u64
    );
    for table in AggTable::ALL {
        assert_eq!(
            sink.aggregate(table).await.unwrap(),
            expected.to_record_batch(table),
            "{}",
            table.name()
        );
    }
}
