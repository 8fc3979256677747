//! Kafka -> ingest -> ClickHouse against the real broker and server: the right aggregates,
//! the same numbers as the embedded store, exact totals across a killed worker process and
//! across a ClickHouse outage.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoplens_bus::{BusRecord, EventBus, KafkaBus};
use shoplens_contract::Envelope;
use shoplens_contract::tables::RawTable;
use shoplens_ingest::clickhouse::ClickHouseStore;
use shoplens_ingest::sink::ReadModelStore;
use shoplens_ingest::startup::{IngestConfig, IngestHandle, kafka_sources, start};
use shoplens_readmodel::tables::AggTable;
use shoplens_test_support::events::{StreamSpec, shop_events, to_record};

use crate::servers::*;
use crate::support::*;
use shoplens_test_support::clickhouse::LocalClickHouse;

/// The five topics under a test's own prefix.
fn topics(prefix: &str) -> Vec<String> {
    TOPICS.iter().map(|t| format!("{prefix}.{t}")).collect()
}

fn records(prefix: &str, events: &[Envelope]) -> Vec<BusRecord> {
    events
        .iter()
        .map(|e| {
            let mut r = to_record(e);
            r.topic = format!("{prefix}.{}", r.topic);
            r
        })
        .collect()
}

async fn publish_all(bus: &KafkaBus, records: &[BusRecord]) {
    for chunk in records.chunks(2_000) {
        bus.publish(chunk).await.expect("publish to Kafka");
    }
}

fn ingest_config(group: &str) -> IngestConfig {
    let mut c = IngestConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        group: group.to_owned(),
        ..Default::default()
    };
    c.worker.batch_max_events = 2_000;
    c.worker.batch_max_delay_ms = 50;
    c.worker.retry_initial_ms = 20;
    c.worker.retry_max_ms = 200;
    c.worker.lag_interval_ms = 100;
    c
}

/// Waits until the live worker has applied `total` records (offsets on fresh topics).
async fn wait_applied(handle: &IngestHandle, total: u64, within: Duration) {
    let start = Instant::now();
    loop {
        let status = handle.ingest().status();
        if status.live.applied_offsets() >= total {
            return;
        }
        assert!(
            start.elapsed() < within,
            "ingest applied {}/{total}: {status:?}",
            status.live.applied_offsets()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spec(seed: u64, orders: u32) -> StreamSpec {
    StreamSpec {
        seed,
        orders,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_to_clickhouse_gives_the_embedded_stores_numbers_exactly() {
    let prefix = unique("parity");
    let topics = topics(&prefix);
    let kafka = kafka_config();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let bus = KafkaBus::connect(&kafka, &names).await.unwrap();
    let events = shop_events(&spec(11, 400));
    let mut all = records(&prefix, &events);
    // A relay re-publishing a batch, and a poison message.
    all.extend(records(&prefix, &events[50..250]));
    all.push(BusRecord {
        topic: format!("{prefix}.shop.payments"),
        key: "pay-x".into(),
        payload: br#"{"event_type":"PaymentCompleted","schema_version":99}"#
            .to_vec()
            .into(),
    });
    publish_all(&bus, &all).await;
    let total = all.len() as u64;

    let clickhouse =
        ClickHouseStore::connect(&clickhouse_config(&clickhouse_url(), &unique("parity")))
            .await
            .unwrap();
    let ch = start(
        &ingest_config(&unique("ch")),
        Arc::new(clickhouse),
        kafka_sources(kafka.clone(), topics.clone()),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let embedded = start(
        &ingest_config(&unique("emb")),
        embedded_store(dir.path()),
        kafka_sources(kafka.clone(), topics.clone()),
    )
    .await
    .unwrap();
    wait_applied(&ch, total, Duration::from_secs(60)).await;
    wait_applied(&embedded, total, Duration::from_secs(60)).await;

    let (_, ch_sink) = ch.ingest().live();
    let (_, emb_sink) = embedded.ingest().live();
    assert_read_model(&ch_sink, &events).await;
    assert_read_model(&emb_sink, &events).await;
    for table in AggTable::ALL {
        assert_eq!(
            ch_sink.aggregate(table).await.unwrap(),
            emb_sink.aggregate(table).await.unwrap(),
            "{}",
            table.name()
        );
    }
    let ch_dead = ch_sink.dead_letters().await.unwrap();
    let emb_dead = emb_sink.dead_letters().await.unwrap();
    assert_eq!(ch_dead.len(), 1);
    assert_eq!(ch_dead[0].reason_kind, emb_dead[0].reason_kind);
    assert_eq!(ch_dead[0].offset, emb_dead[0].offset);
    assert_eq!(ch.ingest().status().live.duplicates_skipped, 200);
    ch.stop().await;
    embedded.stop().await;
}

/// The `shoplens-ingest` binary against Kafka and ClickHouse.
struct IngestProcess {
    child: Child,
    url: String,
}

impl IngestProcess {
    fn spawn(config_file: &std::path::Path, port: u16) -> IngestProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_shoplens-ingest"))
            .arg("--config")
            .arg(config_file)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start shoplens-ingest");
        IngestProcess {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn status(&self) -> Option<serde_json::Value> {
        let resp = reqwest::get(format!("{}/api/v1/status", self.url))
            .await
            .ok()?;
        resp.json().await.ok()
    }

    async fn applied(&self) -> u64 {
        let Some(status) = self.status().await else {
            return 0;
        };
        status["live"]["positions"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| p["next_offset"].as_u64().unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0)
    }
}

impl Drop for IngestProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_ingest_process_resumes_with_exactly_the_same_totals() {
    let prefix = unique("crash");
    let topics = topics(&prefix);
    let kafka = kafka_config();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let bus = KafkaBus::connect(&kafka, &names).await.unwrap();
    let events = shop_events(&spec(12, 4_000));
    let all = records(&prefix, &events);
    let total = all.len() as u64;
    let database = unique("crash");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        file,
        r#"
[ingest]
listen = "127.0.0.1:{port}"
group = "{group}"
topics = {topics:?}
[ingest.worker]
batch_max_events = 1000
batch_max_delay_ms = 20
[kafka]
brokers = "{brokers}"
session_timeout_ms = 6000
[read_model]
kind = "clickhouse"
[read_model.clickhouse]
url = "{url}"
database = "{database}"
"#,
        group = unique("g"),
        brokers = kafka.brokers,
        url = clickhouse_url(),
    )
    .unwrap();

    // Kill the worker three times while it is working through the stream.
    let writer = {
        let all = all.clone();
        tokio::spawn(async move {
            for chunk in all.chunks(1_000) {
                bus.publish(chunk).await.unwrap();
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };
    let mut seen = Vec::new();
    for _ in 0..3 {
        let process = IngestProcess::spawn(file.path(), port);
        let start = Instant::now();
        // Wait for some progress beyond the last kill, then kill -9.
        let before = seen.last().copied().unwrap_or(0);
        loop {
            let applied = process.applied().await;
            if applied > before {
                seen.push(applied);
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "no progress");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(process);
    }
    writer.await.unwrap();
    let process = IngestProcess::spawn(file.path(), port);
    let start = Instant::now();
    while process.applied().await < total {
        assert!(start.elapsed() < Duration::from_secs(90), "did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(process);
    assert!(
        seen.iter().any(|s| *s < total),
        "a kill happened mid-stream: {seen:?}"
    );

    let store = ClickHouseStore::connect(&clickhouse_config(&clickhouse_url(), &database))
        .await
        .unwrap();
    let generation = store.live().await.unwrap().unwrap();
    let sink = store.open(generation).await.unwrap();
    assert_read_model(&sink, &events).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clickhouse_outage_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut server =
        LocalClickHouse::start(&dir.path().join("clickhouse")).expect("a private ClickHouse");
    let prefix = unique("outage");
    let topics = topics(&prefix);
    let kafka = kafka_config();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let bus = KafkaBus::connect(&kafka, &names).await.unwrap();
    let store = ClickHouseStore::connect(&clickhouse_config(&server.url(), "outage"))
        .await
        .unwrap();
    let handle = start(
        &ingest_config(&unique("g")),
        Arc::new(store),
        kafka_sources(kafka.clone(), topics.clone()),
    )
    .await
    .unwrap();
    let first = shop_events(&spec(13, 300));
    let first_records = records(&prefix, &first);
    publish_all(&bus, &first_records).await;
    wait_applied(&handle, first_records.len() as u64, Duration::from_secs(60)).await;

    server.kill();
    let second = shop_events(&spec(14, 600));
    let second_records = records(&prefix, &second);
    publish_all(&bus, &second_records).await;
    let start_wait = Instant::now();
    while handle.ingest().status().live.sink_up {
        assert!(
            start_wait.elapsed() < Duration::from_secs(20),
            "outage unnoticed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.restart().expect("ClickHouse restarts");
    let total = (first_records.len() + second_records.len()) as u64;
    wait_applied(&handle, total, Duration::from_secs(60)).await;
    let (_, sink) = handle.ingest().live();
    let all: Vec<Envelope> = first.iter().chain(&second).cloned().collect();
    assert_read_model(&sink, &all).await;
    assert_eq!(
        sink.raw_row_count(RawTable::Orders).await.unwrap(),
        (300 + 600) as u64
    );
    handle.stop().await;
}

/// Waits until the live generation of `handle` stored `total` records, over every
/// partition (whichever process applied them).
async fn wait_stored(handle: &IngestHandle, total: u64, within: Duration) {
    let start = Instant::now();
    loop {
        let (_, sink) = handle.ingest().live();
        let stored: u64 = sink
            .stored_positions()
            .await
            .map(|ps| ps.iter().map(|p| p.next_offset).sum())
            .unwrap_or(0);
        if stored >= total {
            return;
        }
        assert!(
            start.elapsed() < within,
            "the read model stored {stored}/{total} records"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two ingest processes in one consumer group on one ClickHouse store: one rebuilds the
/// read model; the other follows its switch to the new generation; both then write the new
/// one, each event once, and the old generation is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_in_one_of_two_ingest_processes_moves_both_to_the_new_generation() {
    let prefix = unique("follow");
    let topics = topics(&prefix);
    let kafka = kafka_config();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let bus = KafkaBus::connect(&kafka, &names).await.unwrap();
    let events = shop_events(&spec(5, 300));
    let (first, second) = events.split_at(events.len() / 2);
    publish_all(&bus, &records(&prefix, first)).await;

    let store_config = clickhouse_config(&clickhouse_url(), &unique("follow"));
    let mut config = ingest_config(&unique("follow"));
    config.drop_old_generation_after_ms = 200;
    let process = || async {
        let store = ClickHouseStore::connect(&store_config).await.unwrap();
        start(
            &config,
            Arc::new(store),
            kafka_sources(kafka.clone(), topics.clone()),
        )
        .await
        .unwrap()
    };
    let a = process().await;
    let b = process().await;
    wait_stored(&a, first.len() as u64, Duration::from_secs(60)).await;

    a.ingest().start_rebuild().await.unwrap();
    let start_wait = Instant::now();
    while b.ingest().status().live_generation != 2 {
        assert!(
            start_wait.elapsed() < Duration::from_secs(60),
            "the second process never followed: {:?}",
            b.ingest().status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(a.ingest().status().live_generation, 2);
    publish_all(&bus, &records(&prefix, second)).await;
    wait_stored(&b, events.len() as u64, Duration::from_secs(60)).await;
    let (_, sink) = b.ingest().live();
    assert_read_model(&sink, &events).await;
    assert!(b.ingest().status().live.running);
    let store = a.ingest().store();
    let start_wait = Instant::now();
    while store.generations().await.unwrap() != vec![2] {
        assert!(
            start_wait.elapsed() < Duration::from_secs(30),
            "the old generation was not dropped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.stop().await;
    b.stop().await;
}
