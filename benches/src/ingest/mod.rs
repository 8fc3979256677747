//! The ingest scenario: how fast, how fresh and how lean the event pipeline is, per read-model
//! back end.
//!
//! For each back end (embedded: embedded log -> worker -> Parquet store; clickhouse: tansu
//! Kafka broker -> worker -> ClickHouse):
//! 1. throughput: a backlog of `events` synthetic shop events on the bus, drained by the real
//!    ingest worker (`shoplens_ingest::startup::start`) into a fresh read model; time from
//!    start until every event is applied (and so visible). Embedded: the worker's runtime has
//!    one thread (a current-thread runtime), and the process CPU time is measured too. Kafka:
//!    the broker's own produce and consume rates are measured on the same events, so the
//!    worker is compared with what the broker can deliver;
//! 2. freshness: events published at a steady rate with `occurred_at` = now; for each applied
//!    batch, lag = the time it became visible - `occurred_at` of its newest event;
//! 3. memory: a child process (this binary's hidden `ingest-worker` command, which starts the
//!    worker exactly as the `shoplens-ingest` binary does) drains a backlog of `backlog`
//!    events; its peak RSS (`VmHWM` of `/proc/PID/status`) is the figure.
//!
//! Every figure is measured in the run that reports it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use shoplens_bus::{
    BusRecord, EmbeddedLog, EmbeddedLogConfig, EventBus, EventSource, KafkaBus, KafkaConfig,
    KafkaSource,
};
use shoplens_contract::{Envelope, Service};
use shoplens_ingest::clickhouse::{ClickHouseConfig, ClickHouseStore};
use shoplens_ingest::embedded::{EmbeddedConfig, EmbeddedStore};
use shoplens_ingest::sink::ReadModelStore;
use shoplens_ingest::startup::{
    IngestConfig, IngestHandle, ReadModelConfig, ReadModelKind, embedded_sources, kafka_sources,
    open_store, start,
};
use shoplens_ingest::synthetic::{StreamSpec, shop_events, to_record};
use shoplens_ingest::worker::{WorkerConfig, WorkerStatus};
use tokio::time::Instant;

use crate::backend::Backend;
use crate::machine::{
    Machine, Versions, crate_versions, dir_bytes, load_average, proc_status_mib, process_cpu_secs,
};
use crate::results::{Aim, median, quantile};
use crate::servers::{Servers, unique_name};

mod render;

/// What to run.
#[derive(Clone, Debug, Serialize)]
pub struct IngestOptions {
    pub backends: Vec<Backend>,
    /// Events in the throughput backlog.
    pub events: u64,
    /// Events in the backlog the memory measurement drains.
    pub backlog: u64,
    /// Drains of the throughput backlog (each into a fresh read model); medians reported.
    pub runs: usize,
    /// Steady publishing rate of the freshness measurement.
    pub freshness_rate: f64,
    /// How long the freshness measurement publishes (after its warm-up).
    pub freshness_duration: Duration,
    /// Published but not sampled at the start of the freshness measurement.
    pub freshness_warmup: Duration,
    /// The embedded store's `fsync` (the product default is on).
    pub store_fsync: bool,
    /// Worker batching on the embedded path.
    pub embedded_worker: WorkerConfig,
    /// Worker batching on the ClickHouse path (large batches: each apply has a fixed cost).
    pub clickhouse_worker: WorkerConfig,
    /// Records per `publish` call when filling the bus.
    pub publish_chunk: usize,
    /// Consumer-group session timeout (a Kafka member's first join takes about half).
    pub kafka_session_timeout_ms: u32,
    /// Extra librdkafka properties for every Kafka client (`KafkaConfig::properties`).
    pub kafka_properties: std::collections::BTreeMap<String, String>,
    pub smoke: bool,
    /// Directory for `ingest.json` and `RESULTS.md`.
    pub out: PathBuf,
    /// The executable whose hidden `ingest-worker` command runs the worker in a child
    /// process for the memory measurement (this benchmark's binary).
    pub worker_exe: PathBuf,
}

impl Default for IngestOptions {
    fn default() -> Self {
        let clickhouse_worker = WorkerConfig {
            batch_max_events: 20_000,
            ..WorkerConfig::default()
        };
        IngestOptions {
            backends: vec![Backend::Embedded, Backend::Clickhouse],
            events: 1_000_000,
            backlog: 2_000_000,
            runs: 3,
            freshness_rate: 10_000.0,
            freshness_duration: Duration::from_secs(20),
            freshness_warmup: Duration::from_secs(2),
            store_fsync: true,
            embedded_worker: WorkerConfig::default(),
            clickhouse_worker,
            publish_chunk: 5_000,
            kafka_session_timeout_ms: 6_000,
            kafka_properties: Default::default(),
            smoke: false,
            out: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            worker_exe: std::env::current_exe().unwrap_or_else(|_| "shoplens-bench".into()),
        }
    }
}

impl IngestOptions {
    /// Tiny sizes that show the harness works, in seconds; not for figures.
    pub fn smoke(out: PathBuf, worker_exe: PathBuf) -> Self {
        IngestOptions {
            backends: vec![Backend::Embedded],
            events: 20_000,
            backlog: 20_000,
            runs: 1,
            freshness_rate: 2_000.0,
            freshness_duration: Duration::from_secs(2),
            freshness_warmup: Duration::from_millis(500),
            smoke: true,
            out,
            worker_exe,
            ..Default::default()
        }
    }

    fn worker(&self, backend: Backend) -> &WorkerConfig {
        match backend {
            Backend::Embedded => &self.embedded_worker,
            Backend::Clickhouse => &self.clickhouse_worker,
        }
    }
}

/// One drain of the throughput backlog.
#[derive(Clone, Debug, Serialize)]
pub struct DrainRun {
    pub run: usize,
    pub events: u64,
    /// From `start` (opening the read model, joining the group) to all applied.
    pub secs: f64,
    pub events_per_sec: f64,
    /// When the first batch was visible (group join and first apply included).
    pub first_batch_secs: f64,
    /// Rate after the first batch was visible (excludes start-up and the group join).
    pub steady_events_per_sec: f64,
    /// CPU time (user + system) of this whole process during the drain.
    pub cpu_secs: f64,
    /// `events / cpu_secs`: the rate one fully busy core would give.
    pub events_per_cpu_sec: f64,
    pub batches: u64,
    pub rows_written: u64,
    pub dead_letters: u64,
    /// Size of the read model on disk after the drain (embedded only).
    pub store_bytes: Option<u64>,
    /// Time the sink spent in successful applies (the worker's
    /// `ingest_apply_duration_seconds` sum); the rest of the drain is polling, decoding and
    /// batching (and waiting for the bus).
    pub apply_secs: f64,
    /// `apply_secs / secs`.
    pub apply_share: f64,
}

/// The ClickHouse sink fed from the embedded log instead of the broker: what the worker and
/// sink reach when the bus is not the bottleneck.
#[derive(Clone, Debug, Serialize)]
pub struct SinkCeiling {
    pub setup: &'static str,
    pub events: u64,
    pub secs: f64,
    pub events_per_sec: f64,
    pub apply_secs: f64,
    pub batches: u64,
}

/// The throughput measurement of one back end.
#[derive(Clone, Debug, Serialize)]
pub struct Throughput {
    pub events: u64,
    /// Sum of the events' JSON payload sizes.
    pub payload_bytes: u64,
    /// How the worker was run.
    pub runtime: String,
    pub batch_max_events: usize,
    pub batch_max_delay_ms: u64,
    pub runs: Vec<DrainRun>,
    pub median_events_per_sec: f64,
    pub median_steady_events_per_sec: f64,
    pub median_events_per_cpu_sec: f64,
    pub median_cpu_secs: f64,
    pub median_apply_share: f64,
}

/// What the bus itself does with the same events.
#[derive(Clone, Debug, Serialize)]
pub struct BusRates {
    /// Records per second through `publish` (chunks of `publish_chunk`), until acknowledged.
    pub produce_events_per_sec: f64,
    pub produce_secs: f64,
    /// Records per second a bare consumer (`KafkaSource::poll`, no decoding, no sink) reads,
    /// counted from its first record (after the group join). `None` for the embedded log.
    pub consume_events_per_sec: Option<f64>,
    pub consume_secs: Option<f64>,
}

/// Freshness at a steady load.
#[derive(Clone, Debug, Serialize)]
pub struct FreshnessResult {
    pub target_rate: f64,
    /// Events published / publishing time.
    pub achieved_rate: f64,
    pub events_published: u64,
    pub measured_secs: f64,
    pub batch_max_events: usize,
    pub batch_max_delay_ms: u64,
    /// Applied batches sampled (one lag each).
    pub samples: usize,
    /// visible_at - occurred_at of the newest event of each batch.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// visible_at - the previous batch's newest occurred_at: a bound on the lag of the
    /// batch's oldest event.
    pub oldest_event_p50_ms: f64,
    pub oldest_event_p99_ms: f64,
}

/// Memory of the worker process under a backlog.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryResult {
    pub backlog_events: u64,
    pub process: String,
    pub batch_max_events: usize,
    pub drain_secs: f64,
    pub events_per_sec: f64,
    /// `VmHWM` of the worker process after the drain.
    pub peak_rss_mib: f64,
    /// Highest `VmRSS` seen while sampling every 50 ms.
    pub max_sampled_rss_mib: f64,
    pub rss_after_drain_mib: f64,
}

/// Everything measured on one back end.
#[derive(Clone, Debug, Serialize)]
pub struct BackendResult {
    pub backend: Backend,
    /// The bus and store, with their durability settings.
    pub setup: String,
    pub bus: BusRates,
    pub throughput: Throughput,
    /// ClickHouse only: the same drain from the embedded log (one run).
    pub sink_ceiling: Option<SinkCeiling>,
    pub freshness: FreshnessResult,
    pub memory: MemoryResult,
}

/// Everything `ingest.json` holds.
#[derive(Clone, Debug, Serialize)]
pub struct IngestResults {
    pub scenario: &'static str,
    pub command: String,
    pub machine: Machine,
    pub versions: Versions,
    pub options: IngestOptions,
    pub backends: Vec<BackendResult>,
    pub aims: Vec<Aim>,
    pub notes: Vec<&'static str>,
    pub total_secs: f64,
    /// `/proc/loadavg` (1, 5, 15 min) when the run started and ended: other work on the
    /// machine shares its cores.
    pub load_average_start: Option<String>,
    pub load_average_end: Option<String>,
}

pub const NOTES: &[&str] = &[
    "Events: shoplens_ingest::synthetic::shop_events, generated in chunks of 2,000 orders \
     (seeded; 1,000 customers and 200 products registered once; order numbering restarts \
     per chunk, every event id is new), about 7.7 events per order; truncated to the exact \
     count.",
    "Throughput: the bus holds the whole backlog before the worker starts; each run drains it \
     with a new consumer group into a new read model (new directory / new ClickHouse \
     database). Time runs from start() (opening the store, joining the group) until the \
     worker's stored positions cover every record; apply returns only once a batch is \
     durable and visible, so that is also when the last event is visible. 'steady' excludes \
     everything before the first visible batch (start-up, the Kafka group join).",
    "Embedded: the worker runs on a tokio current-thread runtime (one worker thread; the \
     store's file writes run on tokio's blocking pool while the worker awaits them, so at \
     most one core is busy at a time); CPU time is that of the whole bench process during \
     the drain (the rest of it sleeps), and events per CPU-second is the one-core figure.",
    "Kafka -> ClickHouse: the broker (tansu, sqlite storage) and ClickHouse run on the same \
     2 cores as the worker (a multi-thread runtime, as in the shoplens-ingest binary). The \
     broker's produce rate is measured while filling the topics (KafkaBus::publish, \
     idempotent producer, acks=all); its consume rate with a bare KafkaSource (a new group) \
     polling the same records without decoding or applying them.",
    "Apply share: the worker's ingest_apply_duration_seconds sum (read from its /metrics \
     right after the drain) over the drain time. The worker does not poll or decode while an \
     apply runs, so the rest is its own polling, decoding and batching (and waiting for the \
     bus).",
    "Sink ceiling (ClickHouse): the same number of events fed from an embedded log instead \
     of the broker, drained once into a new ClickHouse database: what worker and sink reach \
     when the broker is not the bottleneck.",
    "Freshness: a publisher task sends events every 10 ms to keep the target rate, each with \
     occurred_at = now (ms); the worker is already running and owns its partitions. Every \
     change of the worker's freshness watermark (one per applied batch) is a sample: \
     visible_at_ms - as_of_ms (the newest event of the batch). The oldest-event figure uses \
     the previous batch's as_of instead. The first freshness_warmup seconds are not sampled.",
    "Memory: the worker runs alone in a child process (this binary's hidden ingest-worker \
     command: open_store + embedded_sources/kafka_sources + start, as shoplens-ingest's main \
     does, on a default multi-thread runtime) draining the backlog from a new group; VmHWM \
     is read from /proc/PID/status once everything is applied, VmRSS sampled every 50 ms.",
];

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Shop-shaped events without end: chunks of the synthetic stream, customers and products
/// registered once.
pub struct EventGen {
    seed: u64,
    chunk: u64,
    buf: VecDeque<Envelope>,
}

const ORDERS_PER_CHUNK: u32 = 2_000;

impl EventGen {
    pub fn new(seed: u64) -> EventGen {
        EventGen {
            seed,
            chunk: 0,
            buf: VecDeque::new(),
        }
    }

    /// The next `n` events.
    pub fn take(&mut self, n: usize) -> Vec<Envelope> {
        while self.buf.len() < n {
            let base = StreamSpec::default();
            let spec = StreamSpec {
                seed: self.seed.wrapping_mul(1_000_003).wrapping_add(self.chunk),
                customers: 1_000,
                products: 200,
                orders: ORDERS_PER_CHUNK,
                start: base.start + chrono::Duration::days(self.chunk as i64),
                span: chrono::Duration::days(1),
            };
            let first = self.chunk == 0;
            self.buf.extend(
                shop_events(&spec).into_iter().filter(|e| {
                    first || !matches!(e.producer, Service::Customer | Service::Product)
                }),
            );
            self.chunk += 1;
        }
        self.buf.drain(..n).collect()
    }
}

/// The five service topics, under `prefix` when there is one.
fn topics(prefix: &str) -> Vec<String> {
    Service::ALL
        .iter()
        .map(|s| {
            if prefix.is_empty() {
                s.default_topic().to_owned()
            } else {
                format!("{prefix}.{}", s.default_topic())
            }
        })
        .collect()
}

fn record(prefix: &str, e: &Envelope) -> BusRecord {
    let mut r = to_record(e);
    if !prefix.is_empty() {
        r.topic = format!("{prefix}.{}", r.topic);
    }
    r
}

/// Publishes `n` more generated events; returns (payload bytes, seconds).
async fn fill(
    bus: &dyn EventBus,
    generator: &mut EventGen,
    prefix: &str,
    n: u64,
    chunk: usize,
) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    let mut bytes = 0u64;
    let mut left = n;
    let mut publish_secs = 0.0;
    while left > 0 {
        let take = left.min(chunk as u64) as usize;
        let records: Vec<BusRecord> = generator
            .take(take)
            .iter()
            .map(|e| record(prefix, e))
            .collect();
        bytes += records.iter().map(|r| r.payload.len() as u64).sum::<u64>();
        let t = Instant::now();
        bus.publish(&records).await.context("publish the backlog")?;
        publish_secs += t.elapsed().as_secs_f64();
        left -= take as u64;
    }
    tracing::debug!(
        total_secs = started.elapsed().as_secs_f64(),
        publish_secs,
        "filled"
    );
    Ok((bytes, publish_secs))
}

fn ingest_config(group: &str, topics: &[String], worker: &WorkerConfig) -> IngestConfig {
    IngestConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        group: group.to_owned(),
        topics: topics.to_vec(),
        worker: worker.clone(),
        ..Default::default()
    }
}

fn live(handle: &IngestHandle) -> WorkerStatus {
    handle.ingest().status().live
}

/// Waits until `handle` has applied `target` records; returns (secs, first batch secs,
/// applied at first batch, status at the end), all from `started`.
async fn wait_drained(
    handle: &IngestHandle,
    started: Instant,
    target: u64,
    timeout: Duration,
) -> anyhow::Result<(f64, f64, u64, WorkerStatus)> {
    let mut first: Option<(f64, u64)> = None;
    loop {
        let s = live(handle);
        let applied = s.applied_offsets();
        if applied > 0 && first.is_none() {
            first = Some((started.elapsed().as_secs_f64(), applied));
        }
        if applied >= target {
            let secs = started.elapsed().as_secs_f64();
            let (fs, fa) = first.unwrap_or((secs, applied));
            return Ok((secs, fs, fa, s));
        }
        if !s.running && started.elapsed() > Duration::from_secs(5) {
            bail!("the ingest worker stopped: {:?}", s.last_error);
        }
        if started.elapsed() > timeout {
            bail!(
                "the worker applied {applied} of {target} records within {timeout:?}: {:?}",
                s.last_error
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Seconds the worker of `handle` has spent in successful applies, from its `/metrics`.
async fn apply_secs(handle: &IngestHandle) -> f64 {
    let text = async {
        reqwest::get(format!("{}/metrics", handle.url()))
            .await?
            .text()
            .await
    }
    .await;
    match text {
        Ok(t) => crate::metrics::sum_metric(&t, "shoplens_ingest_apply_duration_seconds_sum"),
        Err(_) => f64::NAN,
    }
}

fn drain_timeout(events: u64) -> Duration {
    Duration::from_secs(120 + events / 5_000)
}

fn drain_run(
    run: usize,
    events: u64,
    (secs, first_secs, first_applied, status): (f64, f64, u64, WorkerStatus),
    cpu_secs: f64,
    store_bytes: Option<u64>,
    apply_secs: f64,
) -> DrainRun {
    let steady_secs = secs - first_secs;
    DrainRun {
        run,
        events,
        secs,
        events_per_sec: events as f64 / secs,
        first_batch_secs: first_secs,
        steady_events_per_sec: if steady_secs > 0.0 {
            (events - first_applied.min(events)) as f64 / steady_secs
        } else {
            f64::NAN
        },
        cpu_secs,
        events_per_cpu_sec: events as f64 / cpu_secs,
        batches: status.batches,
        rows_written: status.rows_written,
        dead_letters: status.dead_letters,
        store_bytes,
        apply_secs,
        apply_share: apply_secs / secs,
    }
}

fn throughput(
    opts: &IngestOptions,
    backend: Backend,
    payload_bytes: u64,
    runtime: &str,
    runs: Vec<DrainRun>,
) -> Throughput {
    let w = opts.worker(backend);
    let med = |f: fn(&DrainRun) -> f64| median(runs.iter().map(f).collect());
    Throughput {
        events: opts.events,
        payload_bytes,
        runtime: runtime.to_owned(),
        batch_max_events: w.batch_max_events,
        batch_max_delay_ms: w.batch_max_delay_ms,
        median_events_per_sec: med(|r| r.events_per_sec),
        median_steady_events_per_sec: med(|r| r.steady_events_per_sec),
        median_events_per_cpu_sec: med(|r| r.events_per_cpu_sec),
        median_cpu_secs: med(|r| r.cpu_secs),
        median_apply_share: med(|r| r.apply_share),
        runs,
    }
}

/// Publishes at `rate` with occurred_at = now and samples the worker's freshness per batch.
async fn measure_freshness(
    opts: &IngestOptions,
    backend: Backend,
    handle: &IngestHandle,
    bus: Arc<dyn EventBus>,
    prefix: &str,
) -> anyhow::Result<FreshnessResult> {
    // The worker must own its partitions first (a Kafka member's group join takes seconds):
    // the lag figure is known only then.
    let joined = Instant::now();
    while live(handle).lag_events.is_none() {
        if joined.elapsed() > Duration::from_secs(60) {
            bail!("the freshness worker did not join its group within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = opts.freshness_rate;
    let total = opts.freshness_warmup + opts.freshness_duration;
    let prefix_owned = prefix.to_owned();
    let publisher = tokio::spawn(async move {
        let mut generator = EventGen::new(99);
        let started = Instant::now();
        let mut sent = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while started.elapsed() < total {
            tick.tick().await;
            let due = (started.elapsed().as_secs_f64() * rate) as u64;
            if due <= sent {
                continue;
            }
            // Milliseconds, as the contract stores them.
            let now = chrono::DateTime::from_timestamp_millis(now_ms()).unwrap_or_default();
            let records: Vec<BusRecord> = generator
                .take((due - sent) as usize)
                .into_iter()
                .map(|mut e| {
                    e.occurred_at = now;
                    record(&prefix_owned, &e)
                })
                .collect();
            bus.publish(&records).await?;
            sent = due;
        }
        Ok::<_, shoplens_bus::BusError>((sent, started.elapsed().as_secs_f64()))
    });
    let started = Instant::now();
    let sample_from = now_ms() + opts.freshness_warmup.as_millis() as i64;
    let mut newest = Vec::new();
    let mut oldest = Vec::new();
    let mut last = live(handle).freshness;
    while !publisher.is_finished() || started.elapsed() < total + Duration::from_secs(2) {
        if started.elapsed() > total + Duration::from_secs(30) {
            break;
        }
        let f = live(handle).freshness;
        if f.visible_at_ms != last.visible_at_ms
            && let (Some(visible), Some(as_of)) = (f.visible_at_ms, f.as_of_ms)
        {
            if as_of >= sample_from {
                newest.push((visible - as_of) as f64);
                if let Some(prev) = last.as_of_ms {
                    oldest.push((visible - prev) as f64);
                }
            }
            last = f;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (sent, secs) = publisher.await??;
    let w = opts.worker(backend);
    let samples = newest.len();
    if samples == 0 {
        bail!("no applied batch was sampled during the freshness measurement");
    }
    Ok(FreshnessResult {
        target_rate: rate,
        achieved_rate: sent as f64 / secs,
        events_published: sent,
        measured_secs: opts.freshness_duration.as_secs_f64(),
        batch_max_events: w.batch_max_events,
        batch_max_delay_ms: w.batch_max_delay_ms,
        samples,
        p50_ms: quantile(&newest, 0.5),
        p99_ms: quantile(&newest, 0.99),
        max_ms: quantile(&newest, 1.0),
        oldest_event_p50_ms: quantile(&oldest, 0.5),
        oldest_event_p99_ms: quantile(&oldest, 0.99),
    })
}

/// Where the child worker reads from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildSource {
    EmbeddedLog { dir: PathBuf },
    Kafka(KafkaConfig),
}

/// The child worker's configuration (a JSON file passed to `ingest-worker --spec`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildSpec {
    pub ingest: IngestConfig,
    pub read_model: ReadModelConfig,
    pub source: ChildSource,
}

/// The hidden `ingest-worker` command: the worker alone, as `shoplens-ingest` starts it,
/// until the process is killed.
pub async fn run_child(spec: &Path) -> anyhow::Result<()> {
    let spec: ChildSpec = serde_json::from_slice(
        &std::fs::read(spec).with_context(|| format!("failed to read {}", spec.display()))?,
    )?;
    let store = open_store(&spec.read_model)
        .await
        .context("failed to open the read model")?;
    let sources = match &spec.source {
        ChildSource::EmbeddedLog { dir } => embedded_sources(
            EmbeddedLog::open(EmbeddedLogConfig {
                dir: dir.clone(),
                fsync: false,
            })?,
            spec.ingest.topics(),
        ),
        ChildSource::Kafka(k) => kafka_sources(k.clone(), spec.ingest.topics()),
    };
    let handle = start(&spec.ingest, store, sources)
        .await
        .context("failed to start the ingest worker")?;
    tokio::signal::ctrl_c().await?;
    handle.stop().await;
    Ok(())
}

/// Runs the child worker on `spec` until it has applied `target` records; its memory.
async fn measure_child(
    opts: &IngestOptions,
    spec: ChildSpec,
    target: u64,
    dir: &Path,
) -> anyhow::Result<MemoryResult> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut spec = spec;
    spec.ingest.listen = ([127, 0, 0, 1], port).into();
    let spec_path = dir.join("worker.json");
    std::fs::write(&spec_path, serde_json::to_vec_pretty(&spec)?)?;
    let started = Instant::now();
    let mut child = std::process::Command::new(&opts.worker_exe)
        .arg("ingest-worker")
        .arg("--spec")
        .arg(&spec_path)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .with_context(|| format!("failed to start {}", opts.worker_exe.display()))?;
    let pid = child.id();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/api/v1/status");
    let mut max_rss = 0.0f64;
    let timeout = drain_timeout(target);
    let result = loop {
        if let Some(rss) = proc_status_mib(&pid.to_string(), "VmRSS:") {
            max_rss = max_rss.max(rss);
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(anyhow::anyhow!("the worker process exited: {status}"));
        }
        if started.elapsed() > timeout {
            break Err(anyhow::anyhow!(
                "the worker process did not drain {target} records within {timeout:?}"
            ));
        }
        let applied = match client.get(&url).send().await {
            Ok(r) => r
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|v| {
                    v["live"]["positions"].as_array().map(|ps| {
                        ps.iter()
                            .map(|p| p["next_offset"].as_u64().unwrap_or(0))
                            .sum::<u64>()
                    })
                })
                .unwrap_or(0),
            Err(_) => 0,
        };
        if applied >= target {
            let secs = started.elapsed().as_secs_f64();
            let hwm = proc_status_mib(&pid.to_string(), "VmHWM:");
            let rss = proc_status_mib(&pid.to_string(), "VmRSS:");
            break match (hwm, rss) {
                (Some(hwm), Some(rss)) => Ok((secs, hwm, rss)),
                _ => Err(anyhow::anyhow!("cannot read /proc/{pid}/status")),
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    let (secs, hwm, rss) = result?;
    Ok(MemoryResult {
        backlog_events: target,
        process: format!(
            "{} ingest-worker (child process, multi-thread runtime)",
            opts.worker_exe
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ),
        batch_max_events: spec.ingest.worker.batch_max_events,
        drain_secs: secs,
        events_per_sec: target as f64 / secs,
        peak_rss_mib: hwm,
        max_sampled_rss_mib: max_rss.max(rss),
        rss_after_drain_mib: rss,
    })
}

fn embedded_store_config(dir: &Path, fsync: bool) -> EmbeddedConfig {
    EmbeddedConfig {
        dir: dir.to_owned(),
        fsync,
        ..Default::default()
    }
}

async fn run_embedded(opts: &IngestOptions) -> anyhow::Result<BackendResult> {
    let scratch = tempfile::Builder::new()
        .prefix("shoplens-bench-ingest")
        .tempdir()?;
    let log_dir = scratch.path().join("eventlog");
    let topics = topics("");
    let log = EmbeddedLog::open(EmbeddedLogConfig {
        dir: log_dir.clone(),
        fsync: false,
    })?;
    let mut generator = EventGen::new(1);
    tracing::info!(
        events = opts.events,
        "embedded: writing the backlog to the log"
    );
    let (payload_bytes, produce_secs) =
        fill(&log, &mut generator, "", opts.events, opts.publish_chunk).await?;
    let bus = BusRates {
        produce_events_per_sec: opts.events as f64 / produce_secs,
        produce_secs,
        consume_events_per_sec: None,
        consume_secs: None,
    };

    let mut runs = Vec::new();
    for run in 1..=opts.runs {
        let store_dir = scratch.path().join(format!("readmodel-{run}"));
        let config = ingest_config(&format!("bench{run}"), &topics, &opts.embedded_worker);
        let log = log.clone();
        let fsync = opts.store_fsync;
        let target = opts.events;
        let store_dir2 = store_dir.clone();
        // The worker on a runtime of one thread, driven from a thread of its own.
        type Drained = ((f64, f64, u64, WorkerStatus), f64, f64);
        let (drained, cpu, apply) =
            tokio::task::spawn_blocking(move || -> anyhow::Result<Drained> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let cpu0 = process_cpu_secs();
                    let started = Instant::now();
                    let store: Arc<dyn ReadModelStore> = Arc::new(EmbeddedStore::open(
                        embedded_store_config(&store_dir2, fsync),
                    )?);
                    let handle =
                        start(&config, store, embedded_sources(log, config.topics())).await?;
                    let drained =
                        wait_drained(&handle, started, target, drain_timeout(target)).await;
                    let cpu = process_cpu_secs() - cpu0;
                    let apply = apply_secs(&handle).await;
                    handle.stop().await;
                    Ok::<_, anyhow::Error>((drained?, cpu, apply))
                })
            })
            .await??;
        let r = drain_run(
            run,
            opts.events,
            drained,
            cpu,
            Some(dir_bytes(&store_dir)),
            apply,
        );
        tracing::info!(
            run,
            events_per_sec = r.events_per_sec as u64,
            cpu_secs = r.cpu_secs,
            "embedded: drained"
        );
        runs.push(r);
        let _ = std::fs::remove_dir_all(&store_dir);
    }
    let throughput = throughput(
        opts,
        Backend::Embedded,
        payload_bytes,
        "tokio current-thread runtime (one worker thread)",
        runs,
    );

    // Freshness: a fresh log, the worker running on the main runtime.
    tracing::info!("embedded: freshness at a steady load");
    let fresh_log = EmbeddedLog::open(EmbeddedLogConfig {
        dir: scratch.path().join("eventlog-fresh"),
        fsync: false,
    })?;
    let store: Arc<dyn ReadModelStore> = Arc::new(EmbeddedStore::open(embedded_store_config(
        &scratch.path().join("readmodel-fresh"),
        opts.store_fsync,
    ))?);
    let config = ingest_config("fresh", &topics, &opts.embedded_worker);
    let handle = start(
        &config,
        store,
        embedded_sources(fresh_log.clone(), config.topics()),
    )
    .await?;
    let freshness = measure_freshness(
        opts,
        Backend::Embedded,
        &handle,
        Arc::new(fresh_log.clone()),
        "",
    )
    .await;
    handle.stop().await;
    drop(fresh_log);
    let freshness = freshness?;

    // Memory: the backlog log, handed to a child process (one process owns a log).
    tracing::info!(
        backlog = opts.backlog,
        "embedded: worker memory under a backlog"
    );
    if opts.backlog > opts.events {
        fill(
            &log,
            &mut generator,
            "",
            opts.backlog - opts.events,
            opts.publish_chunk,
        )
        .await?;
    }
    let target: u64 = topics.iter().map(|t| log.end_offset(t)).sum();
    drop(log);
    let spec = ChildSpec {
        ingest: ingest_config("memory", &topics, &opts.embedded_worker),
        read_model: ReadModelConfig {
            kind: ReadModelKind::Embedded,
            embedded: embedded_store_config(
                &scratch.path().join("readmodel-memory"),
                opts.store_fsync,
            ),
            ..Default::default()
        },
        source: ChildSource::EmbeddedLog { dir: log_dir },
    };
    let memory = measure_child(opts, spec, target, scratch.path()).await?;
    Ok(BackendResult {
        backend: Backend::Embedded,
        setup: format!(
            "embedded log (fsync off) -> worker -> embedded Parquet store (fsync {})",
            if opts.store_fsync { "on" } else { "off" }
        ),
        bus,
        throughput,
        sink_ceiling: None,
        freshness,
        memory,
    })
}

async fn run_clickhouse(opts: &IngestOptions, servers: &Servers) -> anyhow::Result<BackendResult> {
    let scratch = tempfile::Builder::new()
        .prefix("shoplens-bench-ingest")
        .tempdir()?;
    let kafka = KafkaConfig {
        brokers: servers.kafka_brokers.clone(),
        session_timeout_ms: opts.kafka_session_timeout_ms,
        properties: opts.kafka_properties.clone(),
        ..Default::default()
    };
    let prefix = unique_name("bench");
    let topics = topics(&prefix);
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let bus = KafkaBus::connect(&kafka, &names)
        .await
        .context("connect to the Kafka broker")?;
    let mut generator = EventGen::new(1);
    tracing::info!(events = opts.events, "kafka: publishing the backlog");
    let (payload_bytes, produce_secs) = fill(
        &bus,
        &mut generator,
        &prefix,
        opts.events,
        opts.publish_chunk,
    )
    .await?;

    // The broker's own delivery rate: a bare consumer.
    tracing::info!("kafka: bare consumer");
    let mut source = KafkaSource::subscribe(&kafka, &unique_name("bare"), &names).await?;
    let mut got = 0u64;
    let mut first: Option<Instant> = None;
    let joined = Instant::now();
    while got < opts.events {
        if joined.elapsed() > drain_timeout(opts.events) {
            bail!("a bare consumer read {got} of {} records", opts.events);
        }
        let records = source.poll(20_000, Duration::from_millis(500)).await?;
        if !records.is_empty() && first.is_none() {
            first = Some(Instant::now());
        }
        got += records.len() as u64;
    }
    let consume_secs = first.map_or(f64::NAN, |f| f.elapsed().as_secs_f64());
    source.close().await;
    let bus_rates = BusRates {
        produce_events_per_sec: opts.events as f64 / produce_secs,
        produce_secs,
        consume_events_per_sec: Some(opts.events as f64 / consume_secs),
        consume_secs: Some(consume_secs),
    };

    let ch_config = |database: &str| ClickHouseConfig {
        url: servers.clickhouse_url.clone(),
        database: database.to_owned(),
        ..Default::default()
    };
    let mut runs = Vec::new();
    for run in 1..=opts.runs {
        let config = ingest_config(&unique_name("drain"), &topics, &opts.clickhouse_worker);
        let cpu0 = process_cpu_secs();
        let started = Instant::now();
        let store: Arc<dyn ReadModelStore> =
            Arc::new(ClickHouseStore::connect(&ch_config(&unique_name("bench"))).await?);
        let handle = start(&config, store, kafka_sources(kafka.clone(), topics.clone())).await?;
        let drained = wait_drained(&handle, started, opts.events, drain_timeout(opts.events)).await;
        let cpu = process_cpu_secs() - cpu0;
        let apply = apply_secs(&handle).await;
        handle.stop().await;
        let r = drain_run(run, opts.events, drained?, cpu, None, apply);
        tracing::info!(
            run,
            events_per_sec = r.events_per_sec as u64,
            steady = r.steady_events_per_sec as u64,
            "kafka -> clickhouse: drained"
        );
        runs.push(r);
    }
    let throughput = throughput(
        opts,
        Backend::Clickhouse,
        payload_bytes,
        "tokio multi-thread runtime (2 worker threads), as in shoplens-ingest",
        runs,
    );

    tracing::info!("embedded log -> clickhouse: the sink without the broker");
    let ceiling_log = EmbeddedLog::open(EmbeddedLogConfig {
        dir: scratch.path().join("eventlog"),
        fsync: false,
    })?;
    fill(
        &ceiling_log,
        &mut EventGen::new(1),
        "",
        opts.events,
        opts.publish_chunk,
    )
    .await?;
    let sink_ceiling = {
        let config = ingest_config("ceiling", &self::topics(""), &opts.clickhouse_worker);
        let started = Instant::now();
        let store: Arc<dyn ReadModelStore> =
            Arc::new(ClickHouseStore::connect(&ch_config(&unique_name("ceiling"))).await?);
        let handle = start(
            &config,
            store,
            embedded_sources(ceiling_log.clone(), config.topics()),
        )
        .await?;
        let drained = wait_drained(&handle, started, opts.events, drain_timeout(opts.events)).await;
        let apply = apply_secs(&handle).await;
        handle.stop().await;
        let (secs, _, _, status) = drained?;
        SinkCeiling {
            setup: "embedded log (fsync off) -> worker (multi-thread runtime) -> ClickHouse",
            events: opts.events,
            secs,
            events_per_sec: opts.events as f64 / secs,
            apply_secs: apply,
            batches: status.batches,
        }
    };
    drop(ceiling_log);
    tracing::info!(
        events_per_sec = sink_ceiling.events_per_sec as u64,
        "embedded log -> clickhouse: drained"
    );

    tracing::info!("kafka -> clickhouse: freshness at a steady load");
    let fresh_prefix = unique_name("fresh");
    let fresh_topics = self::topics(&fresh_prefix);
    let fresh_names: Vec<&str> = fresh_topics.iter().map(String::as_str).collect();
    let fresh_bus = KafkaBus::connect(&kafka, &fresh_names).await?;
    let config = ingest_config(
        &unique_name("fresh"),
        &fresh_topics,
        &opts.clickhouse_worker,
    );
    let store: Arc<dyn ReadModelStore> =
        Arc::new(ClickHouseStore::connect(&ch_config(&unique_name("fresh"))).await?);
    let handle = start(
        &config,
        store,
        kafka_sources(kafka.clone(), fresh_topics.clone()),
    )
    .await?;
    let freshness = measure_freshness(
        opts,
        Backend::Clickhouse,
        &handle,
        Arc::new(fresh_bus),
        &fresh_prefix,
    )
    .await;
    handle.stop().await;
    let freshness = freshness?;

    tracing::info!(
        backlog = opts.backlog,
        "kafka -> clickhouse: worker memory under a backlog"
    );
    let mut target = opts.events;
    if opts.backlog > opts.events {
        fill(
            &bus,
            &mut generator,
            &prefix,
            opts.backlog - opts.events,
            opts.publish_chunk,
        )
        .await?;
        target = opts.backlog;
    }
    let spec = ChildSpec {
        ingest: ingest_config(&unique_name("memory"), &topics, &opts.clickhouse_worker),
        read_model: ReadModelConfig {
            kind: ReadModelKind::Clickhouse,
            clickhouse: ch_config(&unique_name("memory")),
            ..Default::default()
        },
        source: ChildSource::Kafka(kafka.clone()),
    };
    let memory = measure_child(opts, spec, target, scratch.path()).await?;
    Ok(BackendResult {
        backend: Backend::Clickhouse,
        setup: format!(
            "tansu Kafka broker ({}) -> worker -> ClickHouse {} (MergeTree tables and \
             materialized views)",
            servers.broker_version, servers.clickhouse_version
        ),
        bus: bus_rates,
        throughput,
        sink_ceiling: Some(sink_ceiling),
        freshness,
        memory,
    })
}

fn command_line(opts: &IngestOptions) -> String {
    let backend = Backend::flag(&opts.backends);
    if opts.smoke {
        return format!(
            "cargo run --release -p shoplens-benches -- ingest --backend {backend} --smoke"
        );
    }
    format!(
        "cargo run --release -p shoplens-benches -- ingest --backend {backend} --events {} \
         --backlog {} --runs {} --freshness-secs {} --store-fsync {} --embedded-batch {} \
         --clickhouse-batch {}",
        opts.events,
        opts.backlog,
        opts.runs,
        opts.freshness_duration.as_secs_f64(),
        opts.store_fsync,
        opts.embedded_worker.batch_max_events,
        opts.clickhouse_worker.batch_max_events
    ) + &opts
        .kafka_properties
        .iter()
        .map(|(k, v)| format!(" --kafka-property {k}={v}"))
        .collect::<String>()
}

fn aims(backends: &[BackendResult]) -> Vec<Aim> {
    let mut aims = Vec::new();
    for b in backends {
        let t = &b.throughput;
        match b.backend {
            Backend::Embedded => aims.push(Aim {
                name: "embedded path at least 500,000 events/s on one core".into(),
                measured: format!(
                    "{:.0} events/s (median of {} drain(s) of {} events, worker on one thread; \
                     {:.0} events per CPU-second)",
                    t.median_events_per_sec,
                    t.runs.len(),
                    t.events,
                    t.median_events_per_cpu_sec
                ),
                met: t.median_events_per_sec >= 500_000.0,
                target: None,
            }),
            Backend::Clickhouse => aims.push(Aim {
                name: "Kafka -> ClickHouse at least 100,000 events/s on this machine, broker and \
                      ClickHouse on it"
                    .into(),
                measured: format!(
                    "{:.0} events/s end to end (median of {} drain(s) of {} events; {:.0}/s after \
                     the first batch; the broker alone delivers {:.0}/s to a bare consumer and \
                     accepts {:.0}/s from the producer)",
                    t.median_events_per_sec,
                    t.runs.len(),
                    t.events,
                    t.median_steady_events_per_sec,
                    b.bus.consume_events_per_sec.unwrap_or(f64::NAN),
                    b.bus.produce_events_per_sec
                ),
                met: t.median_events_per_sec >= 100_000.0,
                target: None,
            }),
        }
        let f = &b.freshness;
        aims.push(Aim {
            name: format!(
                "{}: freshness lag p99 under 1 s at {:.0} events/s",
                b.backend.name(),
                f.target_rate
            ),
            measured: format!(
                "p50 {:.0} ms, p99 {:.0} ms over {} batches at {:.0} events/s achieved",
                f.p50_ms, f.p99_ms, f.samples, f.achieved_rate
            ),
            met: f.p99_ms < 1_000.0 && f.achieved_rate >= 0.95 * f.target_rate,
            target: None,
        });
        let m = &b.memory;
        aims.push(Aim {
            name: format!(
                "{}: worker memory under 256 MB whatever the backlog",
                b.backend.name()
            ),
            measured: format!(
                "peak RSS {:.0} MiB draining a backlog of {} events",
                m.peak_rss_mib, m.backlog_events
            ),
            met: m.peak_rss_mib * 1_048_576.0 < 256_000_000.0,
            target: None,
        });
    }
    aims
}

/// Runs the ingest scenario and writes `ingest.json` and the "Ingest" section of
/// `RESULTS.md` into `opts.out`.
pub async fn run(opts: &IngestOptions) -> anyhow::Result<IngestResults> {
    let started = Instant::now();
    let load_average_start = load_average();
    let machine = Machine::detect();
    let mut versions = Versions {
        crates: crate_versions(&[
            "rdkafka",
            "rdkafka-sys",
            "clickhouse",
            "parquet",
            "arrow-array",
            "tokio",
        ]),
        ..Default::default()
    };
    let mut backends = Vec::new();
    for backend in &opts.backends {
        match backend {
            Backend::Embedded => backends.push(run_embedded(opts).await?),
            Backend::Clickhouse => {
                let mut servers = Servers::from_env_or_start().await?;
                versions.clickhouse_server = Some(servers.clickhouse_version.clone());
                versions.broker = Some(servers.broker_version.clone());
                let result = run_clickhouse(opts, &servers).await;
                servers.stop();
                backends.push(result?);
            }
        }
    }
    let results = IngestResults {
        scenario: "ingest",
        command: command_line(opts),
        machine,
        versions,
        options: opts.clone(),
        aims: aims(&backends),
        backends,
        notes: NOTES.to_vec(),
        total_secs: started.elapsed().as_secs_f64(),
        load_average_start,
        load_average_end: load_average(),
    };
    crate::report::write(&opts.out, &results)?;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_events_are_exact_in_number_and_distinct() {
        let mut g = EventGen::new(3);
        let a = g.take(10_000);
        let b = g.take(25_000);
        assert_eq!(a.len(), 10_000);
        assert_eq!(b.len(), 25_000);
        let ids: std::collections::HashSet<_> = a.iter().chain(&b).map(|e| e.event_id).collect();
        assert_eq!(ids.len(), 35_000);
        let registrations = a
            .iter()
            .chain(&b)
            .filter(|e| e.producer == Service::Customer)
            .count();
        assert_eq!(registrations, 1_000);
    }
}
