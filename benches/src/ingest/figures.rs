//! What the ingest scenario measured: the types `results/ingest.json` holds, and the notes
//! on how each figure is taken.

use serde::Serialize;

use super::IngestOptions;
use crate::backend::Backend;
use crate::machine::{Machine, Versions};
use crate::results::Aim;

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
    /// Freshness through the festival burst.
    pub burst: FreshnessResult,
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

/// How each figure is taken, written with the results.
pub const NOTES: &[&str] = &[
    "Events: shoplens_test_support::events::shop_events, generated in chunks of 2,000 orders \
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
     store's file writes run on tokio's blocking pool, and the worker reads the next batch \
     meanwhile), with the whole bench process pinned to one CPU for the drain, so one core \
     does it all; CPU time is that of the whole bench process during the drain (the rest of \
     it sleeps), and events per CPU-second is the one-core figure.",
    "Kafka -> ClickHouse: the broker (tansu, sqlite storage) and ClickHouse run on the same \
     2 cores as the worker (a multi-thread runtime, as in the shoplens-ingest binary). The \
     broker's produce rate is measured while filling the topics (KafkaBus::publish, \
     idempotent producer, acks=all); its consume rate with a bare KafkaSource (a new group) \
     polling the same records without decoding or applying them.",
    "Apply share: the worker's ingest_apply_duration_seconds sum (read from its /metrics \
     right after the drain) over the drain time. While an apply runs, the worker polls, \
     decodes and takes the next batch, so the two overlap.",
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
