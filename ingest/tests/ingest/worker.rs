//! The ingest process end to end on the embedded log and the embedded store: exactly-once
//! effect under duplicates, poison messages, crashes, sink outages, and blue/green rebuild.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use shoplens_bus::{BusRecord, EventBus, EventSource};
use shoplens_contract::tables::RawTable;
use shoplens_ingest::IngestError;
use shoplens_ingest::sink::{
    ApplyReport, DeadLetter, IngestBatch, ReadModelStore, Sink, SinkResult,
};
use shoplens_ingest::startup::{IngestConfig, IngestHandle, embedded_sources, start, start_on};
use shoplens_readmodel::freshness::Freshness;
use shoplens_readmodel::tables::AggTable;
use shoplens_test_support::events::{StreamSpec, shop_events};

use shoplens_kit::identity::Role;

use crate::support::*;

fn config() -> IngestConfig {
    let mut c = IngestConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        drop_old_generation_after_ms: 200,
        ..Default::default()
    };
    c.worker.batch_max_events = 700;
    c.worker.batch_max_delay_ms = 20;
    c.worker.retry_initial_ms = 10;
    c.worker.retry_max_ms = 50;
    c.worker.lag_interval_ms = 50;
    c
}

async fn start_embedded(
    log: &shoplens_bus::EmbeddedLog,
    store: Arc<dyn ReadModelStore>,
) -> IngestHandle {
    start_embedded_with(&config(), log, store).await
}

/// The worker with `config`, reading every topic of `log` into `store`.
async fn start_embedded_with(
    config: &IngestConfig,
    log: &shoplens_bus::EmbeddedLog,
    store: Arc<dyn ReadModelStore>,
) -> IngestHandle {
    let topics = TOPICS.iter().map(|t| t.to_string()).collect();
    start(config, store, embedded_sources(log.clone(), topics))
        .await
        .expect("start ingest")
}

fn spec(seed: u64, orders: u32) -> StreamSpec {
    StreamSpec {
        seed,
        orders,
        ..Default::default()
    }
}

#[tokio::test]
async fn every_event_counts_once_despite_duplicates_and_poison() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let events = shop_events(&spec(1, 300));
    publish(&log, &events).await;
    // A relay crash re-publishes a batch: the same events again, later in the log.
    publish(&log, &events[100..400]).await;
    // A poison message for order o00000003, then a valid later event of that order.
    let poison = BusRecord {
        topic: "shop.orders".into(),
        key: "o00000003".into(),
        payload: b"{\"event_id\": 12".to_vec().into(),
    };
    log.publish(&[poison]).await.unwrap();
    let later = events
        .iter()
        .find(|e| e.aggregate_id == "o00000003")
        .unwrap();
    log.publish(&[shoplens_test_support::events::to_record(later)])
        .await
        .unwrap();

    let store = embedded_store(dir.path());
    let topics = TOPICS.iter().map(|t| t.to_string()).collect();
    let handle = start_on(
        &config(),
        store,
        embedded_sources(log.clone(), topics),
        Some(Arc::new(log.clone())),
    )
    .await
    .unwrap();
    wait_caught_up(&handle, &log, &TOPICS).await;
    let (_, sink) = handle.ingest().live();
    // The duplicate of `later` is parked, not counted: the totals are the stream's.
    assert_read_model(&sink, &events).await;
    let dead = sink.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(dead[0].reason_kind, "malformed_json");
    assert!(
        dead[0].reason.contains("malformed JSON"),
        "{}",
        dead[0].reason
    );
    assert_eq!(dead[1].reason_kind, "parked");
    assert_eq!(dead[1].event_id, Some(later.event_id.to_string()));
    assert_eq!(
        sink.parked_keys().await.unwrap(),
        vec![("shop.orders".to_string(), "o00000003".to_string())]
    );
    // A copy of each dead letter is on the dead-letter topic, with its reason.
    let mut dlq = log.consumer("dlq-reader", &["shop.dead-letters"]).unwrap();
    let copies = dlq.poll(10, Duration::from_secs(1)).await.unwrap();
    let kinds: Vec<String> = copies
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
            assert_eq!(r.key, "o00000003");
            v["reason_kind"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(kinds, vec!["malformed_json", "parked"]);

    let status = handle.ingest().status();
    assert_eq!(status.live.duplicates_skipped, 300);
    assert_eq!(status.live.dead_letters, 2);

    // The API tells how fresh the model is: the newest event time.
    let newest = events.iter().map(|e| e.occurred_at).max().unwrap();
    let fresh: serde_json::Value = reqwest::get(format!("{}/api/v1/freshness", handle.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fresh["as_of_ms"], newest.timestamp_millis());
    let admin = client_as(Role::Admin);
    let anonymous = reqwest::get(format!("{}/api/v1/dead-letters", handle.url()))
        .await
        .unwrap();
    assert_eq!(
        anonymous.status(),
        401,
        "dead letters hold payloads: admins only"
    );
    let dl: serde_json::Value = admin
        .get(format!("{}/api/v1/dead-letters", handle.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dl["total"], 2);
    assert_eq!(dl["items"][0]["payload"], "{\"event_id\": 12");
    let bad = admin
        .get(format!("{}/api/v1/dead-letters?limit=0", handle.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let body: serde_json::Value = bad.json().await.unwrap();
    assert_eq!(body["field"], "limit");
    let metrics = client_as(Role::Monitor)
        .get(format!("{}/metrics", handle.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("shoplens_ingest_duplicates_skipped_total 300"),
        "{metrics}"
    );
    handle.stop().await;
}

/// Runs the worker in a child process (`failpoints::spawn_worker`, armed at no failpoint)
/// and kills it with SIGKILL after `delay`: a real crash, at whatever point of an apply it
/// happens to be. Returns the offsets stored by then.
async fn crash_after(dir: &std::path::Path, delay: Duration) -> u64 {
    let mut child = crate::failpoints::spawn_worker(dir, None, None);
    tokio::time::sleep(delay).await;
    child.start_kill().expect("SIGKILL the child worker");
    child.wait().await.expect("reap the child worker");
    // The kernel released the dead writer's lock: this process may open the store.
    let store = embedded_store(dir);
    let Some(live) = store.live().await.unwrap() else {
        return 0;
    };
    let sink = store.open(live).await.unwrap();
    let stored = sink.stored_positions().await.unwrap();
    stored.iter().map(|p| p.next_offset).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_again_and_again_ends_with_exact_totals() {
    let dir = tempfile::tempdir().unwrap();
    let events = shop_events(&spec(2, 20_000));
    let total: u64 = {
        // The log, like the store, has one process at a time: the children's, until the end.
        let log = open_log(dir.path());
        publish(&log, &events).await;
        TOPICS.iter().map(|t| log.end_offset(t)).sum()
    };
    // Kill it at varied times until three kills landed mid-stream (a slow machine starts the
    // child later: a kill before its first apply waits longer next time).
    let mut progress = Vec::new();
    let mut delay_ms = 300;
    for round in 0..12 {
        let applied = crash_after(dir.path(), Duration::from_millis(delay_ms)).await;
        progress.push(applied);
        let mid_stream = progress.iter().filter(|p| **p > 0 && **p < total).count();
        if applied >= total || mid_stream >= 3 {
            break;
        }
        delay_ms = if applied == 0 {
            delay_ms + 400
        } else {
            150 + 170 * (round % 4)
        };
    }
    assert!(
        progress.iter().any(|p| *p > 0 && *p < total),
        "some crash happened mid-stream: {progress:?} of {total}"
    );
    let log = open_log(dir.path());
    let handle = start_embedded(&log, embedded_store(dir.path())).await;
    wait_caught_up(&handle, &log, &TOPICS).await;
    let (_, sink) = handle.ingest().live();
    assert_read_model(&sink, &events).await;
    handle.stop().await;
}

/// A store whose sinks refuse every write while `down` is set: an outage of the read-model
/// store (the ClickHouse tests stop a real server; this one covers the embedded side).
struct Flaky {
    inner: Arc<dyn ReadModelStore>,
    down: Arc<AtomicBool>,
}

struct FlakySink {
    inner: Arc<dyn Sink>,
    down: Arc<AtomicBool>,
}

#[async_trait]
impl ReadModelStore for Flaky {
    async fn open(&self, generation: u32) -> SinkResult<Arc<dyn Sink>> {
        Ok(Arc::new(FlakySink {
            inner: self.inner.open(generation).await?,
            down: self.down.clone(),
        }))
    }
    async fn live(&self) -> SinkResult<Option<u32>> {
        self.inner.live().await
    }
    async fn set_live(&self, generation: u32) -> SinkResult<()> {
        self.inner.set_live(generation).await
    }
    async fn generations(&self) -> SinkResult<Vec<u32>> {
        self.inner.generations().await
    }
    async fn drop_generation(&self, generation: u32) -> SinkResult<()> {
        self.inner.drop_generation(generation).await
    }
}

#[async_trait]
impl Sink for FlakySink {
    async fn apply(&self, batch: &IngestBatch) -> SinkResult<ApplyReport> {
        if self.down.load(Ordering::SeqCst) {
            return Err(IngestError::Unavailable("store is down (test)".into()));
        }
        self.inner.apply(batch).await
    }
    async fn parked_keys(&self) -> SinkResult<Vec<(String, String)>> {
        self.inner.parked_keys().await
    }
    async fn freshness(&self) -> SinkResult<Freshness> {
        self.inner.freshness().await
    }
    async fn stored_positions(&self) -> SinkResult<Vec<shoplens_bus::Position>> {
        self.inner.stored_positions().await
    }
    async fn aggregate(&self, table: AggTable) -> SinkResult<arrow_array::RecordBatch> {
        self.inner.aggregate(table).await
    }
    async fn raw_row_count(&self, table: RawTable) -> SinkResult<u64> {
        self.inner.raw_row_count(table).await
    }
    async fn dead_letters(&self) -> SinkResult<Vec<DeadLetter>> {
        self.inner.dead_letters().await
    }
}

#[tokio::test]
async fn a_sink_outage_holds_the_worker_back_and_it_catches_up_after() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let down = Arc::new(AtomicBool::new(false));
    let store = Arc::new(Flaky {
        inner: embedded_store(dir.path()),
        down: down.clone(),
    });
    let handle = start_embedded(&log, store).await;
    let first = shop_events(&spec(3, 100));
    publish(&log, &first).await;
    wait_caught_up(&handle, &log, &TOPICS).await;

    down.store(true, Ordering::SeqCst);
    let second = shop_events(&spec(4, 400));
    publish(&log, &second).await;
    let start = Instant::now();
    while handle.ingest().status().live.sink_up {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "worker never saw the outage"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, sink) = handle.ingest().live();
    let before = sink.raw_row_count(RawTable::Orders).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.raw_row_count(RawTable::Orders).await.unwrap(), before);
    let status = handle.ingest().status();
    assert!(status.live.last_error.unwrap().contains("store is down"));

    down.store(false, Ordering::SeqCst);
    wait_caught_up(&handle, &log, &TOPICS).await;
    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    assert_read_model(&sink, &all).await;
    handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_fills_a_new_generation_and_switches_without_going_blank() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let first = shop_events(&spec(5, 1_500));
    publish(&log, &first).await;
    let handle = start_embedded(&log, embedded_store(dir.path())).await;
    wait_caught_up(&handle, &log, &TOPICS).await;
    let (old_generation, _) = handle.ingest().live();

    // More events keep arriving while the rebuild runs.
    let second = shop_events(&spec(6, 1_500));
    let writer = {
        let log = log.clone();
        let second = second.clone();
        tokio::spawn(async move {
            for chunk in second.chunks(300) {
                publish(&log, chunk).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let resp = client_as(Role::Admin)
        .post(format!("{}/api/v1/rebuild", handle.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let again = client_as(Role::Admin)
        .post(format!("{}/api/v1/rebuild", handle.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409, "one rebuild at a time");

    // Readers always see a complete model: never fewer orders than before the rebuild.
    let floor = first
        .iter()
        .filter(|e| e.event_type() == shoplens_contract::EventType::OrderCreated)
        .count() as u64;
    let start = Instant::now();
    loop {
        let (_, sink) = handle.ingest().live();
        let orders = sink.raw_row_count(RawTable::Orders).await.unwrap();
        assert!(
            orders >= floor,
            "the live model went back to {orders} orders"
        );
        let status = handle.ingest().status();
        if status
            .rebuild
            .as_ref()
            .is_some_and(|r| r.state == "switched")
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "rebuild did not finish: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    writer.await.unwrap();
    let (generation, sink) = handle.ingest().live();
    assert_eq!(generation, old_generation + 1);
    wait_caught_up(&handle, &log, &TOPICS).await;
    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    assert_read_model(&sink, &all).await;

    // The old generation is dropped after its grace period.
    let store = handle.ingest().store();
    let start = Instant::now();
    while store.generations().await.unwrap() != vec![generation] {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "old generation kept"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.live().await.unwrap(), Some(generation));
    handle.stop().await;
    drop((sink, store));

    // A restart keeps serving the rebuilt generation.
    let handle = start_embedded(&log, embedded_store(dir.path())).await;
    assert_eq!(handle.ingest().live().0, generation);
    handle.stop().await;
}

/// Waits until the worker has consumed events and failed to apply them.
async fn wait_until_an_apply_failed(handle: &IngestHandle) {
    let start = Instant::now();
    while handle.ingest().status().live.sink_up
        || handle.ingest().status().live.events_consumed == 0
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "worker never tried"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn stopping_while_the_sink_is_down_gives_up_in_time_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let down = Arc::new(AtomicBool::new(true));
    let store = Arc::new(Flaky {
        inner: embedded_store(dir.path()),
        down: down.clone(),
    });
    let handle = start_embedded(&log, store).await;
    let events = shop_events(&spec(8, 50));
    publish(&log, &events).await;
    wait_until_an_apply_failed(&handle).await;
    let stopping = Instant::now();
    handle.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "stop took {:?}",
        stopping.elapsed()
    );

    // Nothing was applied, nothing committed: a restart reads it all again.
    down.store(false, Ordering::SeqCst);
    let handle = start_embedded(&log, embedded_store(dir.path())).await;
    wait_caught_up(&handle, &log, &TOPICS).await;
    let (_, sink) = handle.ingest().live();
    assert_read_model(&sink, &events).await;
    handle.stop().await;
}

/// While the sink is down the worker keeps reading ahead; a stop then gives all of it up.
/// The sink coming back during the stop's last flush must not store positions past the
/// batch that was never applied (that would lose it: a restart starts after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_back_during_the_stop_stores_nothing_past_an_unapplied_batch() {
    if std::thread::available_parallelism().map_or(1, usize::from) < 2 {
        eprintln!("one CPU: the worker does not read ahead, so this case cannot arise");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let down = Arc::new(AtomicBool::new(true));
    let store = Arc::new(Flaky {
        inner: embedded_store(dir.path()),
        down: down.clone(),
    });
    let handle = start_embedded(&log, store).await;
    let first = shop_events(&spec(21, 20));
    publish(&log, &first).await;
    wait_until_an_apply_failed(&handle).await;
    let start = Instant::now();
    // Read ahead while the first batch waits for the sink.
    let second = shop_events(&spec(22, 20));
    publish(&log, &second).await;
    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    assert!(all.len() < config().worker.batch_max_events * 2);
    while handle.ingest().status().live.events_consumed < all.len() as u64 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "worker never read ahead: {:?}",
            handle.ingest().status().live
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopping = tokio::spawn(handle.stop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    down.store(false, Ordering::SeqCst);
    stopping.await.unwrap();

    let handle = start_embedded(&log, embedded_store(dir.path())).await;
    wait_caught_up(&handle, &log, &TOPICS).await;
    let (_, sink) = handle.ingest().live();
    assert_read_model(&sink, &all).await;
    handle.stop().await;
}

/// The batch policy adapts to the rate: events arriving slowly are applied once the bus has
/// nothing more and the batch is `batch_min_delay_ms` old, long before `batch_max_delay_ms`;
/// a backlog still goes in batches of `batch_max_events`.
#[tokio::test]
async fn a_quiet_bus_makes_events_visible_without_waiting_for_the_longest_delay() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let mut config = config();
    config.worker.batch_max_delay_ms = 30_000;
    config.worker.batch_min_delay_ms = 20;
    let handle = start_embedded_with(&config, &log, embedded_store(dir.path())).await;
    let events = shop_events(&spec(5, 20));
    for chunk in events.chunks(10).take(5) {
        let started = Instant::now();
        publish(&log, chunk).await;
        wait_caught_up(&handle, &log, &TOPICS).await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a trickle waited {:?} (the longest delay is 30 s)",
            started.elapsed()
        );
    }
    handle.stop().await;
}

/// `batch_max_events = 0` is read as batches of one event: the worker still polls and
/// applies everything. (Its own runtime, left running if the worker never catches up: a
/// worker spinning without polling would hold up that runtime's shutdown forever.)
#[test]
fn a_batch_size_of_zero_still_applies_every_event() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let caught_up = runtime.block_on(async {
        let mut config = config();
        config.worker.batch_max_events = 0;
        let handle = start_embedded_with(&config, &log, embedded_store(dir.path())).await;
        publish(&log, &shop_events(&spec(9, 5))).await;
        let caught_up = catch_up_within(&handle, &log, &TOPICS, Duration::from_secs(20)).await;
        if caught_up.is_ok() {
            handle.stop().await;
        }
        caught_up
    });
    if let Err(e) = caught_up {
        std::mem::forget(runtime);
        panic!("{e}");
    }
}
