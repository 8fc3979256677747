//! Shared test helpers: synthetic streams on a real embedded log, the reference
//! aggregates, and waiting for a worker to catch up.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use shoplens_bus::{BusRecord, EmbeddedLog, EmbeddedLogConfig, EventBus};
use shoplens_contract::Envelope;
use shoplens_contract::tables::RawTable;
use shoplens_ingest::embedded::EmbeddedStore;
use shoplens_ingest::sink::{ReadModelStore, Sink};
use shoplens_ingest::startup::IngestHandle;
use shoplens_readmodel::aggregate::Aggregates;
use shoplens_readmodel::config::EmbeddedConfig;
use shoplens_readmodel::tables::AggTable;
use shoplens_test_support::events::to_record;

pub fn open_log(dir: &std::path::Path) -> EmbeddedLog {
    EmbeddedLog::open(EmbeddedLogConfig {
        dir: dir.join("eventlog"),
        fsync: false,
    })
    .expect("open the embedded log")
}

/// Publishes events in order, in chunks (as relays do).
pub async fn publish(bus: &dyn EventBus, events: &[Envelope]) {
    let records: Vec<BusRecord> = events.iter().map(to_record).collect();
    for chunk in records.chunks(500) {
        bus.publish(chunk).await.expect("publish");
    }
}

/// What the read model must hold for `events` (each event id counted once).
pub fn reference(events: &[Envelope]) -> Aggregates {
    Aggregates::of_events(events)
}

/// Rows per raw table `events` give (each event id once).
pub fn reference_rows(events: &[Envelope], table: RawTable) -> u64 {
    let ids: HashSet<_> = events
        .iter()
        .filter(|e| RawTable::for_event(e.event_type()) == table)
        .map(|e| e.event_id)
        .collect();
    ids.len() as u64
}

/// Asserts every aggregate table of `sink` equals the reference, and the raw row counts.
pub async fn assert_read_model(sink: &Arc<dyn Sink>, events: &[Envelope]) {
    let expected = reference(events);
    for table in AggTable::ALL {
        let got: RecordBatch = sink.aggregate(table).await.expect("read aggregate");
        let want = expected.to_record_batch(table);
        assert_eq!(got, want, "aggregate table {}", table.name());
    }
    for table in RawTable::ALL {
        assert_eq!(
            sink.raw_row_count(table).await.expect("count rows"),
            reference_rows(events, table),
            "raw table {}",
            table.name()
        );
    }
}

/// Waits until the live worker has applied everything up to the log's end.
pub async fn wait_caught_up(handle: &IngestHandle, log: &EmbeddedLog, topics: &[&str]) {
    if let Err(e) = catch_up_within(handle, log, topics, Duration::from_secs(60)).await {
        panic!("{e}");
    }
}

/// Waits up to `limit` until the live worker has applied everything up to the log's end;
/// what it had applied if it did not.
pub async fn catch_up_within(
    handle: &IngestHandle,
    log: &EmbeddedLog,
    topics: &[&str],
    limit: Duration,
) -> Result<(), String> {
    let end: u64 = topics.iter().map(|t| log.end_offset(t)).sum();
    let start = Instant::now();
    loop {
        let status = handle.ingest().status();
        let applied = status.live.applied_offsets();
        if applied >= end {
            return Ok(());
        }
        if start.elapsed() >= limit {
            return Err(format!(
                "ingest did not catch up: {applied}/{end}: {status:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub const TOPICS: [&str; 5] = [
    "shop.customers",
    "shop.products",
    "shop.orders",
    "shop.payments",
    "shop.shipping",
];

/// The embedded read model in `dir` (no fsync: tests do not survive power loss).
pub fn embedded_store(dir: &std::path::Path) -> Arc<dyn ReadModelStore> {
    Arc::new(
        EmbeddedStore::open(EmbeddedConfig {
            dir: dir.join("readmodel"),
            fsync: false,
            ..Default::default()
        })
        .expect("open the embedded store"),
    )
}

/// A client acting as `role`, with a token of the default (development) key the tests'
/// workers check.
pub fn client_as(role: shoplens_kit::identity::Role) -> reqwest::Client {
    let auth = shoplens_kit::identity::AuthConfig::default();
    let token = auth.issue(&shoplens_kit::identity::Identity::new("test", role));
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("a header value"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("a client")
}
