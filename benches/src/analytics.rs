//! The analytics scenario: how fast the sales dashboard answers from the pre-aggregated
//! tables as the data grows, next to the same questions answered by scanning the raw
//! events, and how fast and lean a big report export is — per read-model back end.
//!
//! For each data size (simulated shop events) and back end (the embedded Parquet store,
//! ClickHouse):
//! 1. data: synthetic shop events (`shoplens_ingest::synthetic`) spread over about two
//!    years, generated chunk by chunk and applied straight to the store's sink in large
//!    batches (no bus, no worker: this scenario is about reading), then made live;
//! 2. dashboard latency: the real analytics server (`shoplens_analytics::start`, port 0) and
//!    one client in a closed loop timing each of the four dashboard views over HTTP, over a
//!    30-day and a one-year range; then the same questions as SQL over the *raw* event tables
//!    through `POST /api/v1/sql` (fewer repetitions: they are slow). Per run p50/p99, medians
//!    over runs; the growth of p99 from the smallest to the largest size;
//! 3. export: a big report (`product_sales_detail` over the whole span) as CSV and Parquet
//!    by `shoplens_analytics::cli::export` in a child process (this binary's hidden
//!    `analytics-export` command), so its peak memory (`VmHWM`) is its own.
//!
//! Every figure is measured in the run that reports it.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use shoplens_analytics::QueryConfig;
use shoplens_analytics::cli::ExportArgs;
use shoplens_analytics::config::AnalyticsConfig;
use shoplens_contract::{Envelope, EventType, Service};
use shoplens_ingest::clickhouse::{ClickHouseConfig, ClickHouseStore};
use shoplens_ingest::embedded::{EmbeddedConfig, EmbeddedStore};
use shoplens_ingest::rows::to_batches;
use shoplens_ingest::sink::{IngestBatch, ReadModelStore, Sink};
use shoplens_ingest::startup::{ReadModelConfig, ReadModelKind};
use shoplens_ingest::synthetic::{StreamSpec, shop_events};
use tokio::time::Instant;

use crate::histogram::Histogram;
pub use crate::ingest::Backend;
use crate::machine::{Machine, crate_versions, proc_status_mib};
use crate::results::median;
use crate::servers::Servers;

/// What to run.
#[derive(Clone, Debug, Serialize)]
pub struct AnalyticsOptions {
    pub backends: Vec<Backend>,
    /// Simulated events per data size; growth is reported between consecutive sizes.
    pub sizes: Vec<u64>,
    /// Timed requests per dashboard view and run (after `warmup`)...
    pub queries: usize,
    /// ...or fewer once a view has taken `query_budget` in a run (at least `min_queries`).
    pub query_budget: Duration,
    pub min_queries: usize,
    /// Untimed requests per view and run before the timed ones.
    pub warmup: usize,
    /// Timed raw-scan queries per question and run (after one untimed one)...
    pub raw_queries: usize,
    /// ...or fewer once a question has taken `raw_budget` in a run (at least
    /// `raw_min_queries`).
    pub raw_budget: Duration,
    pub raw_min_queries: usize,
    /// Measurement rounds over every question; medians over runs are reported.
    pub runs: usize,
    /// Customers and products registered once, at the start of the span.
    pub customers: u32,
    pub products: u32,
    /// First day of the data, and how long it spans.
    pub start: NaiveDate,
    pub span_days: i64,
    /// ClickHouse is measured only at sizes up to this many events (`None`: all sizes).
    pub clickhouse_max_events: Option<u64>,
    /// Events per `Sink::apply` when loading.
    pub load_batch: usize,
    /// The named report exported, over the whole span.
    pub export_report: String,
    /// Exports per format and size (each in a new child process); medians reported.
    pub export_runs: usize,
    /// The analytics server's interactive query deadline and HTTP request timeout (ms): raw
    /// scans of the larger sizes need more than the product's 10 s default.
    pub query_timeout_ms: u64,
    pub smoke: bool,
    /// Directory for `analytics.json` and `RESULTS.md`.
    pub out: PathBuf,
    /// The executable whose hidden `analytics-export` command runs an export in a child
    /// process (this benchmark's binary).
    pub exe: PathBuf,
}

impl Default for AnalyticsOptions {
    fn default() -> Self {
        AnalyticsOptions {
            backends: vec![Backend::Embedded, Backend::Clickhouse],
            sizes: vec![1_000_000, 10_000_000],
            queries: 200,
            query_budget: Duration::from_secs(30),
            min_queries: 20,
            warmup: 20,
            raw_queries: 20,
            raw_budget: Duration::from_secs(20),
            raw_min_queries: 3,
            runs: 3,
            customers: 10_000,
            products: 1_000,
            start: NaiveDate::from_ymd_opt(2024, 1, 1).unwrap_or_default(),
            span_days: 730,
            clickhouse_max_events: None,
            load_batch: 100_000,
            export_report: "product_sales_detail".into(),
            export_runs: 3,
            query_timeout_ms: 120_000,
            smoke: false,
            out: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            exe: std::env::current_exe().unwrap_or_else(|_| "shoplens-bench".into()),
        }
    }
}

impl AnalyticsOptions {
    /// Tiny sizes that show the harness works, in seconds; not for figures.
    pub fn smoke(out: PathBuf, exe: PathBuf) -> Self {
        AnalyticsOptions {
            backends: vec![Backend::Embedded],
            sizes: vec![5_000, 20_000],
            queries: 5,
            min_queries: 5,
            warmup: 2,
            raw_queries: 2,
            raw_min_queries: 2,
            runs: 1,
            customers: 200,
            products: 50,
            load_batch: 4_000,
            export_runs: 1,
            smoke: true,
            out,
            exe,
            ..Default::default()
        }
    }
}

/// The four dashboard views.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum View {
    Daily,
    TopProducts,
    TopCustomers,
    Trends,
}

impl View {
    pub const ALL: [View; 4] = [
        View::Daily,
        View::TopProducts,
        View::TopCustomers,
        View::Trends,
    ];

    pub fn name(self) -> &'static str {
        match self {
            View::Daily => "daily",
            View::TopProducts => "top-products",
            View::TopCustomers => "top-customers",
            View::Trends => "trends",
        }
    }
}

/// One question the dashboard answers, asked both ways.
#[derive(Clone, Debug, Serialize)]
pub struct Question {
    /// `daily 30d`, `top-products 1y`, ...
    pub name: String,
    pub view: View,
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// The dashboard request (path and query).
    pub dashboard: String,
    /// The same question over the raw event tables (`POST /api/v1/sql`).
    pub raw_sql: String,
}

/// The synthetic data of one size.
#[derive(Clone, Debug, Serialize)]
pub struct DataInfo {
    pub events: u64,
    pub orders: u64,
    pub customers: u32,
    pub products: u32,
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
    pub days: i64,
    /// Generating the events and turning them into Arrow batches (once for all back ends).
    pub prepare_secs: f64,
}

/// One measurement round of one question, one way.
#[derive(Clone, Debug, Serialize)]
pub struct RunLatency {
    pub run: usize,
    /// Timed requests that succeeded.
    pub requests: u64,
    /// Timed requests that failed (not in the quantiles).
    pub errors: u64,
    /// Warm-up requests that failed (all of them failing skips the timed requests).
    pub warmup_errors: u64,
    /// Time the timed requests took together.
    pub secs: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// Latency of one question, one way, over all runs.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub runs: Vec<RunLatency>,
    /// Medians over runs of the per-run quantiles.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// All runs' samples together.
    pub pooled_p50_ms: f64,
    pub pooled_p99_ms: f64,
    pub max_ms: f64,
    pub requests: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// One question at one size on one back end.
#[derive(Clone, Debug, Serialize)]
pub struct QuestionResult {
    pub question: Question,
    pub dashboard: Latency,
    pub raw: Latency,
    /// Whether the dashboard and the raw scan gave the same answer (checked once, on a
    /// summary of it: totals for daily, the ranked ids for the tops, the last period for
    /// trends); `None` if either failed.
    pub answers_agree: Option<bool>,
    pub dashboard_answer: Option<String>,
    pub raw_answer: Option<String>,
    /// raw p50 / dashboard p50.
    pub raw_over_dashboard_p50: f64,
}

/// One export run (one child process).
#[derive(Clone, Debug, Serialize)]
pub struct ExportRun {
    pub run: usize,
    pub rows: u64,
    /// The `cli::export` call: planning, reading, encoding and writing the file.
    pub export_secs: f64,
    /// The child process from spawn to exit (start-up and opening the read model included).
    pub wall_secs: f64,
    pub rows_per_sec: f64,
    /// The child's `VmHWM` when the export finished.
    pub peak_rss_mib: f64,
    /// Highest `VmRSS` the parent saw while sampling every 10 ms.
    pub max_sampled_rss_mib: f64,
    pub file_bytes: u64,
}

/// Exports of one format.
#[derive(Clone, Debug, Serialize)]
pub struct ExportResult {
    pub report: String,
    pub format: &'static str,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub runs: Vec<ExportRun>,
    pub rows: u64,
    pub median_rows_per_sec: f64,
    pub median_export_secs: f64,
    pub median_wall_secs: f64,
    /// The largest `VmHWM` of all runs.
    pub peak_rss_mib: f64,
    pub file_mib: f64,
}

/// Everything measured at one size on one back end.
#[derive(Clone, Debug, Serialize)]
pub struct SizeResult {
    pub backend: Backend,
    pub events: u64,
    /// Time the sink's applies took for the whole load, and the resulting rate.
    pub load_secs: f64,
    pub load_events_per_sec: f64,
    /// Size of the read model (embedded: its directory; ClickHouse: active parts).
    pub store_bytes: Option<u64>,
    /// `count(*)` of the main tables, through the server's SQL.
    pub table_rows: BTreeMap<String, u64>,
    pub questions: Vec<QuestionResult>,
    pub exports: Vec<ExportResult>,
    /// This benchmark process's `VmHWM` after the questions (loading and reading the sizes
    /// so far included): whether the size fits in memory.
    pub bench_peak_rss_mib: Option<f64>,
}

/// How one question's latency grew from one size to the next larger one.
#[derive(Clone, Debug, Serialize)]
pub struct Growth {
    pub backend: Backend,
    pub question: String,
    pub from_events: u64,
    pub to_events: u64,
    pub dashboard_p99_from_ms: f64,
    pub dashboard_p99_to_ms: f64,
    /// p99 at `to_events` / p99 at `from_events`.
    pub dashboard_p99_ratio: f64,
    pub dashboard_p50_ratio: f64,
    pub raw_p99_ratio: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Aim {
    pub aim: String,
    pub measured: String,
    pub met: bool,
}

/// Versions of what ran, besides the machine's.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Versions {
    pub clickhouse_server: Option<String>,
    /// Crate versions from the workspace's Cargo.lock.
    pub crates: Vec<(String, String)>,
}

/// Everything `analytics.json` holds.
#[derive(Clone, Debug, Serialize)]
pub struct AnalyticsResults {
    pub scenario: &'static str,
    pub command: String,
    pub machine: Machine,
    pub versions: Versions,
    pub options: AnalyticsOptions,
    pub data: Vec<DataInfo>,
    pub results: Vec<SizeResult>,
    pub growth: Vec<Growth>,
    /// Sizes and back ends not measured, and why (too large, or failed: "as large as
    /// fits").
    pub skipped: Vec<String>,
    pub aims: Vec<Aim>,
    pub notes: Vec<&'static str>,
    pub total_secs: f64,
    /// `/proc/loadavg` (1, 5, 15 min) when the run started and ended.
    pub load_average_start: Option<String>,
    pub load_average_end: Option<String>,
}

pub const NOTES: &[&str] = &[
    "Data: shoplens_ingest::synthetic::shop_events in chunks of at most 20,000 orders, each \
     chunk spread over its share of the span (about 7.5 events per order: created, placed, \
     then paid with 1-3 purchases, a payment, a shipment and 'shipped', or 10% cancelled); \
     customers and products registered once at the start; truncated to the exact event \
     count. Applied straight to the store's sink (Sink::apply of \
     shoplens_ingest::rows::to_batches, load_batch events per apply; embedded store fsync \
     off), then made live. The same events go to every back end.",
    "Dashboard: the real analytics server (shoplens_analytics::start on 127.0.0.1 port 0, \
     the product's query engine and limits except a longer query deadline and HTTP timeout \
     for the raw scans); one reqwest client in a closed loop, latency = send to last body \
     byte of GET /api/v1/dashboard/{daily, top-products, top-customers, trends} over a \
     30-day and a one-year range ending on the data's last day (limit=10, period=month). \
     Per run and question: warm-up requests, then `queries` timed ones (fewer once \
     `query_budget` is spent, at least `min_queries`).",
    "Raw scan: the same questions as one SQL text each over the raw event tables (orders, \
     order_status_changes, product_purchases, and the products/customers views for names) \
     via POST /api/v1/sql (text/plain, JSON answer), aggregated first and joined after, as a \
     careful analyst would write them; one untimed query, then `raw_queries` timed ones \
     (fewer once `raw_budget` is spent, at least `raw_min_queries`): with so few samples \
     their p99 is close to their maximum. Each question's two answers are compared once.",
    "Runs: every run asks every question (dashboard first, then raw) on the same loaded \
     data and server; per-run p50/p99 from a log-linear histogram (about 1.6% precision); \
     the medians over runs are reported. Growth ratios compare those medians between \
     consecutive sizes, measured in the same invocation.",
    "ClickHouse: the analytics server reads it over HTTP (shoplens_analytics::clickhouse), \
     on the same 2 cores as the benchmark. Background merges of the parts the load wrote \
     may still run during the first questions.",
    "Export: the bench binary's hidden analytics-export command in a child process: \
     shoplens_analytics::startup::engine with the default QueryConfig (export memory pool \
     128 MiB, spilling) and shoplens_analytics::cli::export of the named report over the \
     whole span into a file in a temp dir. rows/s = rows / duration of the cli::export call \
     (the child measures it); wall time includes process start and opening the read model. \
     Peak memory = the child's VmHWM (from /proc/self/status when the export finished); the \
     parent also samples its VmRSS every 10 ms.",
    "Aims use 10 ms = 10.0 ms of measured p99, 1M rows/s, and 200 MB = 200,000,000 bytes \
     (peak MiB x 1,048,576).",
];

/// The events of one data size, generated lazily in chunks (the largest size never has to
/// be in memory at once).
struct DataGen {
    seed: u64,
    customers: u32,
    products: u32,
    start: DateTime<Utc>,
    chunk_orders: u32,
    chunk_span: chrono::Duration,
    chunk: u64,
    buf: VecDeque<Envelope>,
}

/// At most this many orders are generated at once.
const MAX_CHUNK_ORDERS: u64 = 20_000;
/// Expected events per order of the synthetic stream (see `NOTES`).
const EVENTS_PER_ORDER: f64 = 7.5;

impl DataGen {
    fn new(opts: &AnalyticsOptions, events: u64) -> DataGen {
        let registrations = u64::from(opts.customers) + u64::from(opts.products);
        let orders = (events.saturating_sub(registrations) as f64 / EVENTS_PER_ORDER)
            .ceil()
            .max(1.0) as u64;
        let chunks = orders.div_ceil(MAX_CHUNK_ORDERS).max(1);
        let span_ms = opts.span_days * 86_400_000;
        DataGen {
            seed: 42,
            customers: opts.customers,
            products: opts.products,
            start: opts.start.and_time(chrono::NaiveTime::MIN).and_utc(),
            chunk_orders: orders.div_ceil(chunks) as u32,
            chunk_span: chrono::Duration::milliseconds(span_ms / chunks as i64),
            chunk: 0,
            buf: VecDeque::new(),
        }
    }

    /// The next `n` events.
    fn take(&mut self, n: usize) -> Vec<Envelope> {
        while self.buf.len() < n {
            let spec = StreamSpec {
                seed: self.seed.wrapping_mul(1_000_003).wrapping_add(self.chunk),
                customers: self.customers,
                products: self.products,
                orders: self.chunk_orders,
                start: self.start + self.chunk_span * self.chunk as i32,
                span: self.chunk_span,
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

/// A store being loaded.
struct Target {
    backend: Backend,
    store: Arc<dyn ReadModelStore>,
    sink: Arc<dyn Sink>,
    apply_secs: f64,
    read_model: ReadModelConfig,
}

/// A loaded read model, ready to be read.
struct Loaded {
    backend: Backend,
    read_model: ReadModelConfig,
    load_secs: f64,
    store_bytes: Option<u64>,
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        Utc::now().timestamp_micros()
    )
}

fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let parts: Vec<&str> = text.split_whitespace().take(3).collect();
    Some(parts.join(" "))
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Sends one statement to ClickHouse's HTTP interface; its answer text.
async fn clickhouse(url: &str, sql: &str) -> anyhow::Result<String> {
    let resp = reqwest::Client::new()
        .post(url)
        .body(sql.to_owned())
        .send()
        .await
        .context("ClickHouse does not answer")?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        bail!("ClickHouse refused `{sql}`: {}", text.trim());
    }
    Ok(text)
}

/// Fills a new read model per back end with `events` events.
async fn load(
    opts: &AnalyticsOptions,
    backends: &[Backend],
    events: u64,
    servers: Option<&Servers>,
    dir: &Path,
) -> anyhow::Result<(DataInfo, Vec<Loaded>, Vec<(Backend, String)>)> {
    let mut targets = Vec::new();
    for &backend in backends {
        let (store, read_model): (Arc<dyn ReadModelStore>, ReadModelConfig) = match backend {
            Backend::Embedded => {
                let embedded = EmbeddedConfig {
                    dir: dir.join(format!("readmodel-{events}")),
                    fsync: false,
                    ..EmbeddedConfig::default()
                };
                let store = EmbeddedStore::open(embedded.clone())
                    .context("failed to open the embedded store")?;
                let read_model = ReadModelConfig {
                    kind: ReadModelKind::Embedded,
                    embedded: EmbeddedConfig {
                        dir: store.dir().to_owned(),
                        ..embedded
                    },
                    ..ReadModelConfig::default()
                };
                (Arc::new(store), read_model)
            }
            Backend::Clickhouse => {
                let servers = servers.context("no ClickHouse server")?;
                let config = ClickHouseConfig {
                    url: servers.clickhouse_url.clone(),
                    database: unique("bench_analytics"),
                    request_timeout_ms: 300_000,
                    ..ClickHouseConfig::default()
                };
                let store = ClickHouseStore::connect(&config)
                    .await
                    .context("failed to connect to ClickHouse")?;
                let read_model = ReadModelConfig {
                    kind: ReadModelKind::Clickhouse,
                    clickhouse: config,
                    ..ReadModelConfig::default()
                };
                (Arc::new(store), read_model)
            }
        };
        let sink = store.open(1).await.context("failed to open generation 1")?;
        targets.push(Target {
            backend,
            store,
            sink,
            apply_secs: 0.0,
            read_model,
        });
    }

    let mut failed = Vec::new();
    let filled = fill(opts, events, &mut targets, &mut failed).await;
    let (prepare_secs, orders, first, last) = match filled {
        Ok(x) => x,
        Err(e) => {
            let stores: Vec<(Backend, ReadModelConfig)> = targets
                .into_iter()
                .map(|t| (t.backend, t.read_model))
                .collect();
            for (backend, read_model) in &stores {
                drop_read_model(*backend, read_model).await;
            }
            return Err(e);
        }
    };
    let mut loaded = Vec::new();
    for target in targets {
        target
            .store
            .set_live(1)
            .await
            .context("failed to make generation 1 live")?;
        let Target {
            backend,
            store,
            sink,
            apply_secs,
            read_model,
        } = target;
        // The writer's in-memory state is not the reader's: drop it before measuring.
        drop(sink);
        drop(store);
        let store_bytes = match backend {
            Backend::Embedded => Some(dir_bytes(&read_model.embedded.dir)),
            Backend::Clickhouse => clickhouse_bytes(&read_model.clickhouse).await,
        };
        tracing::info!(
            backend = backend.name(),
            events,
            secs = apply_secs,
            "loaded"
        );
        loaded.push(Loaded {
            backend,
            read_model,
            load_secs: apply_secs,
            store_bytes,
        });
    }
    let data = DataInfo {
        events,
        orders,
        customers: opts.customers,
        products: opts.products,
        first_day: first,
        last_day: last,
        days: (last - first).num_days() + 1,
        prepare_secs,
    };
    Ok((data, loaded, failed))
}

/// Generates `events` events and applies them to every target; a target whose apply fails
/// is dropped (its data removed) and named in `failed`. Returns (prepare secs, orders, first
/// day, last day); fails only when every target failed.
async fn fill(
    opts: &AnalyticsOptions,
    events: u64,
    targets: &mut Vec<Target>,
    failed: &mut Vec<(Backend, String)>,
) -> anyhow::Result<(f64, u64, NaiveDate, NaiveDate)> {
    let mut generator = DataGen::new(opts, events);
    let mut left = events;
    let mut prepare_secs = 0.0;
    let mut orders = 0u64;
    let mut first: Option<DateTime<Utc>> = None;
    let mut last: Option<DateTime<Utc>> = None;
    let mut progress = Instant::now();
    while left > 0 {
        let t = Instant::now();
        let chunk = generator.take(left.min(opts.load_batch as u64) as usize);
        for e in &chunk {
            if e.event_type() == EventType::OrderCreated {
                orders += 1;
            }
            first = Some(first.map_or(e.occurred_at, |f| f.min(e.occurred_at)));
            last = Some(last.map_or(e.occurred_at, |l| l.max(e.occurred_at)));
        }
        let tables = to_batches(&chunk);
        prepare_secs += t.elapsed().as_secs_f64();
        left -= chunk.len() as u64;
        drop(chunk);
        let mut i = 0;
        while i < targets.len() {
            let target = &mut targets[i];
            let t = Instant::now();
            let applied = target
                .sink
                .apply(&IngestBatch {
                    tables: tables.clone(),
                    ..IngestBatch::default()
                })
                .await;
            target.apply_secs += t.elapsed().as_secs_f64();
            match applied {
                Ok(_) => i += 1,
                // One back end failing does not stop the others.
                Err(e) => {
                    let target = targets.remove(i);
                    let error = format!("apply failed: {e}");
                    tracing::warn!(backend = target.backend.name(), events, error, "loading");
                    failed.push((target.backend, error));
                    let (backend, read_model) = (target.backend, target.read_model.clone());
                    drop(target);
                    drop_read_model(backend, &read_model).await;
                }
            }
        }
        if targets.is_empty() {
            bail!(
                "every back end failed: {}",
                failed
                    .iter()
                    .map(|(b, e)| format!("{}: {e}", b.name()))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        if progress.elapsed() > Duration::from_secs(15) {
            progress = Instant::now();
            tracing::info!(events, loaded = events - left, "loading");
        }
    }
    Ok((
        prepare_secs,
        orders,
        first.unwrap_or_default().date_naive(),
        last.unwrap_or_default().date_naive(),
    ))
}

/// Bytes of the active parts of the live generation's database.
async fn clickhouse_bytes(config: &ClickHouseConfig) -> Option<u64> {
    let db = format!("{}_g1", config.database);
    for column in ["bytes_on_disk", "bytes"] {
        let sql =
            format!("SELECT sum({column}) FROM system.parts WHERE active AND database = '{db}'");
        if let Ok(text) = clickhouse(&config.url, &sql).await
            && let Ok(v) = text.trim().parse()
        {
            return Some(v);
        }
    }
    None
}

/// Drops a read model the benchmark stored (the data of the larger sizes is gigabytes).
async fn drop_read_model(backend: Backend, read_model: &ReadModelConfig) {
    match backend {
        Backend::Embedded => {
            let _ = std::fs::remove_dir_all(&read_model.embedded.dir);
        }
        Backend::Clickhouse => {
            let c = &read_model.clickhouse;
            for db in [format!("{}_g1", c.database), format!("{}_meta", c.database)] {
                if let Err(e) = clickhouse(&c.url, &format!("DROP DATABASE IF EXISTS {db}")).await {
                    tracing::warn!(error = %e, "could not drop a benchmark database");
                }
            }
        }
    }
}

fn times(column: &str, from: NaiveDate, until: NaiveDate) -> String {
    format!("{column} >= TIMESTAMP '{from}T00:00:00Z' AND {column} < TIMESTAMP '{until}T00:00:00Z'")
}

/// Orders placed, orders paid, items and revenue per `unit` (`day` or `month`) of
/// [`from`, `until`), from the raw tables.
fn raw_sales_sql(unit: &str, from: NaiveDate, until: NaiveDate) -> String {
    let t = times("occurred_at", from, until);
    format!(
        "SELECT period, CAST(sum(placed) AS BIGINT) AS orders_placed, \
                CAST(sum(paid) AS BIGINT) AS orders_paid, \
                CAST(sum(items) AS BIGINT) AS items_sold, sum(revenue) AS revenue \
         FROM ( \
           SELECT date_trunc('{unit}', occurred_at) AS period, count(*) AS placed, \
                  CAST(0 AS BIGINT) AS paid, CAST(0 AS BIGINT) AS items, \
                  CAST(0 AS DECIMAL(38, 2)) AS revenue \
           FROM orders WHERE {t} GROUP BY date_trunc('{unit}', occurred_at) \
           UNION ALL \
           SELECT date_trunc('{unit}', occurred_at), CAST(0 AS BIGINT), count(*), \
                  CAST(0 AS BIGINT), CAST(0 AS DECIMAL(38, 2)) \
           FROM order_status_changes WHERE to_status = 'Paid' AND {t} \
           GROUP BY date_trunc('{unit}', occurred_at) \
           UNION ALL \
           SELECT date_trunc('{unit}', occurred_at), CAST(0 AS BIGINT), CAST(0 AS BIGINT), \
                  CAST(sum(quantity) AS BIGINT), CAST(sum(revenue) AS DECIMAL(38, 2)) \
           FROM product_purchases WHERE {t} GROUP BY date_trunc('{unit}', occurred_at) \
         ) s GROUP BY period ORDER BY period"
    )
}

fn month_start(d: NaiveDate) -> NaiveDate {
    d.with_day(1).unwrap_or(d)
}

/// The dashboard's questions over the 30 days and the year ending on `last_day`.
pub fn questions(last_day: NaiveDate) -> Vec<Question> {
    let mut out = Vec::new();
    for (label, days) in [("30d", 30), ("1y", 365)] {
        let to = last_day;
        let from = to - chrono::Duration::days(days - 1);
        let until = to + chrono::Duration::days(1);
        let range = format!("from={from}&to={to}");
        for view in View::ALL {
            let (dashboard, raw_sql) = match view {
                View::Daily => (
                    format!("/api/v1/dashboard/daily?{range}"),
                    raw_sales_sql("day", from, until),
                ),
                View::TopProducts => (
                    format!("/api/v1/dashboard/top-products?{range}&limit=10"),
                    format!(
                        "WITH s AS (SELECT product_id, sum(quantity) AS units, \
                                    sum(revenue) AS revenue, count(*) AS order_lines \
                                    FROM product_purchases WHERE {} GROUP BY product_id) \
                         SELECT s.product_id, p.name, p.category, s.units, s.revenue, \
                                s.order_lines \
                         FROM s LEFT JOIN products p ON s.product_id = p.product_id \
                         ORDER BY s.revenue DESC, s.product_id LIMIT 10",
                        times("occurred_at", from, until)
                    ),
                ),
                View::TopCustomers => (
                    format!("/api/v1/dashboard/top-customers?{range}&limit=10"),
                    format!(
                        "WITH r AS (SELECT customer_id, sum(revenue) AS revenue \
                                    FROM product_purchases WHERE {t} GROUP BY customer_id), \
                              o AS (SELECT customer_id, count(*) AS orders_paid \
                                    FROM order_status_changes \
                                    WHERE to_status = 'Paid' AND {t} GROUP BY customer_id) \
                         SELECT r.customer_id, c.name, c.country, o.orders_paid, r.revenue \
                         FROM r LEFT JOIN o ON r.customer_id = o.customer_id \
                                LEFT JOIN customers c ON r.customer_id = c.customer_id \
                         ORDER BY r.revenue DESC, r.customer_id LIMIT 10",
                        t = times("occurred_at", from, until)
                    ),
                ),
                View::Trends => {
                    // The dashboard reads the month before the range too (for the change).
                    let before = month_start(from)
                        .checked_sub_months(Months::new(1))
                        .unwrap_or(from);
                    let after = month_start(to)
                        .checked_add_months(Months::new(1))
                        .unwrap_or(until);
                    (
                        format!("/api/v1/dashboard/trends?period=month&{range}"),
                        raw_sales_sql("month", before, after),
                    )
                }
            };
            out.push(Question {
                name: format!("{} {label}", view.name()),
                view,
                from,
                to,
                dashboard,
                raw_sql,
            });
        }
    }
    out
}

/// One request of the benchmark's client.
enum Call<'a> {
    Get(String),
    Sql(&'a str),
}

/// Sends `call` and reads the whole answer; an error names the status and the body.
async fn send(client: &reqwest::Client, base: &str, call: &Call<'_>) -> Result<Vec<u8>, String> {
    let request = match call {
        Call::Get(path) => client.get(format!("{base}{path}")),
        Call::Sql(sql) => client
            .post(format!("{base}/api/v1/sql"))
            .header(reqwest::header::CONTENT_TYPE, "text/plain")
            .body(sql.to_string()),
    };
    let resp = request.send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(500)])
        ));
    }
    Ok(body.to_vec())
}

/// How many requests one measurement makes.
struct Plan {
    warmup: usize,
    max: usize,
    min: usize,
    budget: Duration,
}

/// Times `plan.max` calls (fewer once the budget is spent) after `plan.warmup` untimed
/// ones; if every warm-up call failed, or the first three timed ones, the question is not
/// asked further in this run.
async fn measure(
    client: &reqwest::Client,
    base: &str,
    call: &Call<'_>,
    plan: &Plan,
    run: usize,
    first_error: &mut Option<String>,
) -> (RunLatency, Histogram) {
    let mut hist = Histogram::default();
    let mut warmup_errors = 0u64;
    for _ in 0..plan.warmup {
        if let Err(e) = send(client, base, call).await {
            first_error.get_or_insert(e);
            warmup_errors += 1;
        }
    }
    // A question that fails every time (a time limit) is not asked again and again; one
    // that fails now and then is measured, its failures counted.
    let hopeless = plan.warmup > 0 && warmup_errors == plan.warmup as u64;
    let mut errors = 0u64;
    let started = Instant::now();
    let mut done = 0usize;
    loop {
        let spent = done >= plan.min && started.elapsed() >= plan.budget;
        let failing = errors >= 3 && hist.count() == 0;
        if hopeless || done >= plan.max || spent || failing {
            break;
        }
        let t = Instant::now();
        match send(client, base, call).await {
            Ok(_) => hist.record(t.elapsed()),
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
        done += 1;
    }
    let ok = hist.count() > 0;
    let q = |v: f64| if ok { v } else { f64::NAN };
    let run = RunLatency {
        run,
        requests: hist.count(),
        errors,
        warmup_errors,
        secs: started.elapsed().as_secs_f64(),
        p50_ms: q(hist.quantile_ms(0.5)),
        p99_ms: q(hist.quantile_ms(0.99)),
        max_ms: q(hist.max_ms()),
        mean_ms: q(hist.mean_ms()),
    };
    (run, hist)
}

fn latency(runs: Vec<RunLatency>, pooled: &Histogram, first_error: Option<String>) -> Latency {
    let ok = pooled.count() > 0;
    Latency {
        p50_ms: median(runs.iter().map(|r| r.p50_ms).collect()),
        p99_ms: median(runs.iter().map(|r| r.p99_ms).collect()),
        pooled_p50_ms: if ok {
            pooled.quantile_ms(0.5)
        } else {
            f64::NAN
        },
        pooled_p99_ms: if ok {
            pooled.quantile_ms(0.99)
        } else {
            f64::NAN
        },
        max_ms: if ok { pooled.max_ms() } else { f64::NAN },
        requests: runs.iter().map(|r| r.requests).sum(),
        errors: runs.iter().map(|r| r.errors).sum(),
        first_error,
        runs,
    }
}

fn number(v: &serde_json::Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_f64().map(|f| f as u64))
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// A summary of an answer that both ways must agree on (`rows` of either JSON shape).
fn summary(view: View, body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let rows = v["rows"].as_array()?;
    let sum = |key: &str| -> Option<u64> { rows.iter().map(|r| number(&r[key])).sum() };
    let ids = |key: &str| -> Option<String> {
        let ids: Option<Vec<&str>> = rows.iter().map(|r| r[key].as_str()).collect();
        Some(ids?.join(","))
    };
    match view {
        View::Daily => Some(format!(
            "placed {} paid {} items {}",
            sum("orders_placed")?,
            sum("orders_paid")?,
            sum("items_sold")?
        )),
        View::TopProducts => ids("product_id"),
        View::TopCustomers => ids("customer_id"),
        View::Trends => {
            let last = rows.last()?;
            Some(format!(
                "last period placed {} paid {} items {}",
                number(&last["orders_placed"])?,
                number(&last["orders_paid"])?,
                number(&last["items_sold"])?
            ))
        }
    }
}

/// `count(*)` of `table` through the server's SQL.
async fn count_rows(client: &reqwest::Client, base: &str, table: &str) -> Option<u64> {
    let sql = format!("SELECT count(*) AS n FROM {table}");
    let body = send(client, base, &Call::Sql(&sql)).await.ok()?;
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    number(&v["rows"][0]["n"])
}

const COUNTED_TABLES: &[&str] = &[
    "orders",
    "order_status_changes",
    "product_purchases",
    "daily_sales",
    "product_sales_daily",
    "customer_spend_daily",
    "monthly_sales",
];

/// Starts the analytics server over `loaded` and asks every question.
async fn measure_size(
    opts: &AnalyticsOptions,
    data: &DataInfo,
    loaded: &Loaded,
    scratch: &Path,
) -> anyhow::Result<SizeResult> {
    let backend = loaded.backend;
    let mut query = QueryConfig {
        timeout_ms: opts.query_timeout_ms,
        ..QueryConfig::default()
    };
    query.workers.program = crate::worker_program();
    let mut config = AnalyticsConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        query: query.clone(),
        ..AnalyticsConfig::default()
    };
    config.http.request_timeout_ms = opts.query_timeout_ms;
    config.sql.listen = ([127, 0, 0, 1], 0).into();
    let engine = shoplens_analytics::startup::engine(&loaded.read_model, &query)
        .await
        .with_context(|| format!("{}: failed to open the read model", backend.name()))?;
    let handle = shoplens_analytics::start(&config, engine)
        .await
        .context("failed to start the analytics server")?;
    let base = handle.url();
    let client = crate::admin_client(
        reqwest::Client::builder().timeout(Duration::from_millis(opts.query_timeout_ms + 30_000)),
    )?;

    let mut table_rows = BTreeMap::new();
    for table in COUNTED_TABLES {
        if let Some(n) = count_rows(&client, &base, table).await {
            table_rows.insert((*table).to_owned(), n);
        }
    }

    let questions = questions(data.last_day);
    let dashboard_plan = Plan {
        warmup: opts.warmup,
        max: opts.queries,
        min: opts.min_queries.min(opts.queries),
        budget: opts.query_budget,
    };
    let raw_plan = Plan {
        warmup: 1,
        max: opts.raw_queries,
        min: opts.raw_min_queries.min(opts.raw_queries),
        budget: opts.raw_budget,
    };
    struct Acc {
        runs: Vec<RunLatency>,
        hist: Histogram,
        first_error: Option<String>,
    }
    let new_acc = || Acc {
        runs: Vec::new(),
        hist: Histogram::default(),
        first_error: None,
    };
    let mut dash: Vec<Acc> = questions.iter().map(|_| new_acc()).collect();
    let mut raw: Vec<Acc> = questions.iter().map(|_| new_acc()).collect();

    // The two ways must answer the same question.
    let mut answers = Vec::new();
    for q in &questions {
        let d = send(&client, &base, &Call::Get(q.dashboard.clone())).await;
        let r = send(&client, &base, &Call::Sql(&q.raw_sql)).await;
        let d = d.ok().and_then(|b| summary(q.view, &b));
        let r = r.ok().and_then(|b| summary(q.view, &b));
        answers.push((d, r));
    }

    for run in 1..=opts.runs {
        for (q, acc) in questions.iter().zip(&mut dash) {
            let call = Call::Get(q.dashboard.clone());
            let (r, h) = measure(
                &client,
                &base,
                &call,
                &dashboard_plan,
                run,
                &mut acc.first_error,
            )
            .await;
            acc.hist.merge(&h);
            acc.runs.push(r);
        }
        for (q, acc) in questions.iter().zip(&mut raw) {
            let call = Call::Sql(&q.raw_sql);
            let (r, h) = measure(&client, &base, &call, &raw_plan, run, &mut acc.first_error).await;
            acc.hist.merge(&h);
            acc.runs.push(r);
        }
        tracing::info!(
            backend = backend.name(),
            events = data.events,
            run,
            "questions asked"
        );
    }
    handle.stop().await;
    let bench_peak_rss_mib = proc_status_mib("self", "VmHWM:");

    let results: Vec<QuestionResult> = questions
        .into_iter()
        .zip(dash)
        .zip(raw)
        .zip(answers)
        .map(|(((question, d), r), (da, ra))| {
            let dashboard = latency(d.runs, &d.hist, d.first_error);
            let raw = latency(r.runs, &r.hist, r.first_error);
            QuestionResult {
                raw_over_dashboard_p50: raw.p50_ms / dashboard.p50_ms,
                answers_agree: match (&da, &ra) {
                    (Some(a), Some(b)) => Some(a == b),
                    _ => None,
                },
                dashboard_answer: da,
                raw_answer: ra,
                question,
                dashboard,
                raw,
            }
        })
        .collect();

    let mut exports = Vec::new();
    for format in ["csv", "parquet"] {
        exports.push(export(opts, data, &loaded.read_model, format, scratch).await?);
    }

    Ok(SizeResult {
        backend,
        events: data.events,
        load_secs: loaded.load_secs,
        load_events_per_sec: data.events as f64 / loaded.load_secs,
        store_bytes: loaded.store_bytes,
        table_rows,
        questions: results,
        exports,
        bench_peak_rss_mib,
    })
}

/// What the parent hands the `analytics-export` child (a JSON file).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportSpec {
    pub read_model: ReadModelConfig,
    pub report: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub format: String,
    pub output: PathBuf,
    /// Where the child writes its [`ExportReport`].
    pub report_path: PathBuf,
}

/// What the child measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportReport {
    pub rows: u64,
    pub engine_secs: f64,
    pub export_secs: f64,
    pub vm_hwm_mib: f64,
}

/// The hidden `analytics-export` command: one export as the `export` command runs it.
pub async fn run_export_child(spec: &Path) -> anyhow::Result<()> {
    let spec: ExportSpec = serde_json::from_slice(
        &std::fs::read(spec).with_context(|| format!("failed to read {}", spec.display()))?,
    )?;
    let started = Instant::now();
    let engine = shoplens_analytics::startup::engine(&spec.read_model, &QueryConfig::default())
        .await
        .context("failed to open the read model")?;
    let engine_secs = started.elapsed().as_secs_f64();
    let args = ExportArgs {
        report: Some(spec.report.clone()),
        sql: None,
        from: Some(spec.from.to_string()),
        to: Some(spec.to.to_string()),
        format: Some(spec.format.clone()),
        output: Some(spec.output.clone()),
        list: false,
    };
    let started = Instant::now();
    let rows = shoplens_analytics::cli::export(&engine, &args, &mut std::io::stderr())
        .await
        .context("the export failed")?;
    let export_secs = started.elapsed().as_secs_f64();
    let report = ExportReport {
        rows,
        engine_secs,
        export_secs,
        vm_hwm_mib: proc_status_mib("self", "VmHWM:").unwrap_or(f64::NAN),
    };
    std::fs::write(&spec.report_path, serde_json::to_vec(&report)?)
        .with_context(|| format!("failed to write {}", spec.report_path.display()))?;
    Ok(())
}

/// Exports the report over the whole span in `format`, `export_runs` times, each in a child
/// process.
async fn export(
    opts: &AnalyticsOptions,
    data: &DataInfo,
    read_model: &ReadModelConfig,
    format: &'static str,
    scratch: &Path,
) -> anyhow::Result<ExportResult> {
    let dir = scratch.join("export");
    std::fs::create_dir_all(&dir)?;
    let mut runs = Vec::new();
    for run in 1..=opts.export_runs {
        let spec = ExportSpec {
            read_model: read_model.clone(),
            report: opts.export_report.clone(),
            from: data.first_day,
            to: data.last_day,
            format: format.to_owned(),
            output: dir.join(format!("report.{format}")),
            report_path: dir.join("report.json"),
        };
        let _ = std::fs::remove_file(&spec.report_path);
        let spec_path = dir.join("spec.json");
        std::fs::write(&spec_path, serde_json::to_vec_pretty(&spec)?)?;
        let log_path = dir.join("child.log");
        let log = std::fs::File::create(&log_path)?;
        let started = Instant::now();
        let mut child = std::process::Command::new(&opts.exe)
            .arg("analytics-export")
            .arg("--spec")
            .arg(&spec_path)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("failed to start {}", opts.exe.display()))?;
        let pid = child.id().to_string();
        let mut max_rss = 0.0f64;
        let timeout = Duration::from_secs(1800);
        let status = loop {
            if let Some(rss) = proc_status_mib(&pid, "VmRSS:") {
                max_rss = max_rss.max(rss);
            }
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the export child did not finish within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let wall_secs = started.elapsed().as_secs_f64();
        if !status.success() {
            bail!(
                "the export child failed ({status}): {}",
                std::fs::read_to_string(&log_path)
                    .unwrap_or_default()
                    .trim()
            );
        }
        let report: ExportReport = serde_json::from_slice(
            &std::fs::read(&spec.report_path).context("the export child wrote no report")?,
        )?;
        let file_bytes = std::fs::metadata(&spec.output).map_or(0, |m| m.len());
        let _ = std::fs::remove_file(&spec.output);
        tracing::info!(
            format,
            rows = report.rows,
            secs = report.export_secs,
            peak_mib = report.vm_hwm_mib,
            "exported"
        );
        runs.push(ExportRun {
            run,
            rows: report.rows,
            export_secs: report.export_secs,
            wall_secs,
            rows_per_sec: report.rows as f64 / report.export_secs,
            peak_rss_mib: report.vm_hwm_mib,
            max_sampled_rss_mib: max_rss,
            file_bytes,
        });
    }
    let med = |f: fn(&ExportRun) -> f64| median(runs.iter().map(f).collect());
    Ok(ExportResult {
        report: opts.export_report.clone(),
        format,
        from: data.first_day,
        to: data.last_day,
        rows: runs.first().map_or(0, |r| r.rows),
        median_rows_per_sec: med(|r| r.rows_per_sec),
        median_export_secs: med(|r| r.export_secs),
        median_wall_secs: med(|r| r.wall_secs),
        peak_rss_mib: runs.iter().map(|r| r.peak_rss_mib).fold(f64::NAN, f64::max),
        file_mib: runs
            .first()
            .map_or(0.0, |r| r.file_bytes as f64 / 1_048_576.0),
        runs,
    })
}

fn growth(results: &[SizeResult], backends: &[Backend]) -> Vec<Growth> {
    let mut out = Vec::new();
    for &backend in backends {
        let mut mine: Vec<&SizeResult> = results.iter().filter(|r| r.backend == backend).collect();
        mine.sort_by_key(|r| r.events);
        for pair in mine.windows(2) {
            let (small, large) = (pair[0], pair[1]);
            for (a, b) in small.questions.iter().zip(&large.questions) {
                out.push(Growth {
                    backend,
                    question: a.question.name.clone(),
                    from_events: small.events,
                    to_events: large.events,
                    dashboard_p99_from_ms: a.dashboard.p99_ms,
                    dashboard_p99_to_ms: b.dashboard.p99_ms,
                    dashboard_p99_ratio: b.dashboard.p99_ms / a.dashboard.p99_ms,
                    dashboard_p50_ratio: b.dashboard.p50_ms / a.dashboard.p50_ms,
                    raw_p99_ratio: b.raw.p99_ms / a.raw.p99_ms,
                });
            }
        }
    }
    out
}

/// `1000000` as `1M`, `20000` as `20k`.
pub fn events_label(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(100_000) {
        let m = n as f64 / 1e6;
        if n.is_multiple_of(1_000_000) {
            format!("{m:.0}M")
        } else {
            format!("{m:.1}M")
        }
    } else if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

fn aims(results: &[SizeResult], growth: &[Growth], backends: &[Backend]) -> Vec<Aim> {
    let mut aims = Vec::new();
    for &backend in backends {
        let mine: Vec<&SizeResult> = results.iter().filter(|r| r.backend == backend).collect();
        if mine.is_empty() {
            continue;
        }
        let name = backend.name();
        // Worst dashboard p99 per size; a failed request counts as not met.
        let mut per_size = Vec::new();
        let mut met = true;
        for r in &mine {
            let worst = r
                .questions
                .iter()
                .filter(|q| q.dashboard.p99_ms.is_finite())
                .max_by(|a, b| a.dashboard.p99_ms.total_cmp(&b.dashboard.p99_ms));
            let failed: u64 = r
                .questions
                .iter()
                .map(|q| {
                    q.dashboard.errors
                        + q.dashboard
                            .runs
                            .iter()
                            .map(|x| x.warmup_errors)
                            .sum::<u64>()
                })
                .sum();
            let unmeasured: Vec<&str> = r
                .questions
                .iter()
                .filter(|q| !q.dashboard.p99_ms.is_finite())
                .map(|q| q.question.name.as_str())
                .collect();
            let mut line = match worst {
                Some(q) => format!(
                    "{}: {:.2} ms ({})",
                    events_label(r.events),
                    q.dashboard.p99_ms,
                    q.question.name
                ),
                None => format!("{}: nothing measured", events_label(r.events)),
            };
            if failed > 0 {
                line.push_str(&format!(", {failed} dashboard requests failed"));
            }
            if !unmeasured.is_empty() {
                line.push_str(&format!(", no figure for {}", unmeasured.join(", ")));
            }
            per_size.push(line);
            met &= worst.is_some_and(|q| q.dashboard.p99_ms < 10.0)
                && failed == 0
                && unmeasured.is_empty();
        }
        aims.push(Aim {
            aim: format!("{name}: dashboard p99 under 10 ms (every view, every size)"),
            measured: format!("worst view p99 per size — {}", per_size.join("; ")),
            met,
        });
        let g: Vec<&Growth> = growth.iter().filter(|g| g.backend == backend).collect();
        match g
            .iter()
            .max_by(|a, b| a.dashboard_p99_ratio.total_cmp(&b.dashboard_p99_ratio))
        {
            Some(worst) => {
                let smallest = g.iter().map(|x| x.from_events).min().unwrap_or(1).max(1);
                let largest = g.iter().map(|x| x.to_events).max().unwrap_or(1);
                let factor = largest as f64 / smallest as f64;
                let pairs = g
                    .iter()
                    .map(|x| (x.from_events, x.to_events))
                    .any(|p| p != (worst.from_events, worst.to_events));
                aims.push(Aim {
                    aim: format!(
                        "{name}: dashboard latency flat as data grows (10x the events -> p99 \
                         under 1.5x)"
                    ),
                    measured: format!(
                        "{} -> {} events ({factor:.0}x): worst p99 ratio {:.2}x ({}, {} -> {}: \
                         {:.2} -> {:.2} ms); per view: {}",
                        events_label(smallest),
                        events_label(largest),
                        worst.dashboard_p99_ratio,
                        worst.question,
                        events_label(worst.from_events),
                        events_label(worst.to_events),
                        worst.dashboard_p99_from_ms,
                        worst.dashboard_p99_to_ms,
                        g.iter()
                            .map(|x| {
                                let pair = if pairs {
                                    format!(
                                        " ({} -> {})",
                                        events_label(x.from_events),
                                        events_label(x.to_events)
                                    )
                                } else {
                                    String::new()
                                };
                                format!("{}{pair} {:.2}x", x.question, x.dashboard_p99_ratio)
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    met: factor >= 10.0 && g.iter().all(|x| x.dashboard_p99_ratio < 1.5),
                });
            }
            None => aims.push(Aim {
                aim: format!("{name}: dashboard latency flat as data grows"),
                measured: "needs two sizes".into(),
                met: false,
            }),
        }
        let Some(largest) = mine.iter().max_by_key(|r| r.events) else {
            continue;
        };
        let label = events_label(largest.events);
        let rates: Vec<String> = largest
            .exports
            .iter()
            .map(|e| {
                format!(
                    "{} {:.0} rows/s ({} rows in {:.2} s)",
                    e.format, e.median_rows_per_sec, e.rows, e.median_export_secs
                )
            })
            .collect();
        aims.push(Aim {
            aim: format!("{name}: export at least 1M rows/s"),
            measured: format!(
                "{} at {label} events: {}",
                largest
                    .exports
                    .first()
                    .map_or("no export".into(), |e| e.report.clone()),
                rates.join("; ")
            ),
            met: !largest.exports.is_empty()
                && largest
                    .exports
                    .iter()
                    .all(|e| e.median_rows_per_sec >= 1_000_000.0),
        });
        let peaks: Vec<String> = largest
            .exports
            .iter()
            .map(|e| format!("{} {:.1} MiB", e.format, e.peak_rss_mib))
            .collect();
        aims.push(Aim {
            aim: format!("{name}: export memory under 200 MB"),
            measured: format!(
                "peak RSS (VmHWM) of the export process at {label} events: {}",
                peaks.join("; ")
            ),
            met: !largest.exports.is_empty()
                && largest
                    .exports
                    .iter()
                    .all(|e| e.peak_rss_mib * 1_048_576.0 < 200_000_000.0),
        });
    }
    aims
}

fn command_line(opts: &AnalyticsOptions) -> String {
    let backend = Backend::flag(&opts.backends);
    if opts.smoke {
        return format!(
            "cargo run --release -p shoplens-benches -- analytics --backend {backend} --smoke"
        );
    }
    format!(
        "cargo run --release -p shoplens-benches -- analytics --backend {backend} --sizes {} \
         --queries {} --raw-queries {} --runs {}",
        opts.sizes
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(","),
        opts.queries,
        opts.raw_queries,
        opts.runs
    ) + &opts
        .clickhouse_max_events
        .map(|m| format!(" --clickhouse-max-events {m}"))
        .unwrap_or_default()
}

/// Runs the analytics scenario and writes `analytics.json` and the "Analytics" section of
/// `RESULTS.md` into `opts.out`.
pub async fn run(opts: &AnalyticsOptions) -> anyhow::Result<AnalyticsResults> {
    let started = Instant::now();
    let load_average_start = load_average();
    let machine = Machine::detect();
    let mut versions = Versions {
        crates: crate_versions(&[
            "datafusion",
            "arrow-array",
            "parquet",
            "axum",
            "reqwest",
            "tokio",
        ]),
        ..Default::default()
    };
    let mut servers = None;
    if opts.backends.contains(&Backend::Clickhouse) {
        let s = Servers::clickhouse_from_env_or_start().await?;
        versions.clickhouse_server = Some(s.clickhouse_version.clone());
        servers = Some(s);
    }
    let scratch = tempfile::Builder::new()
        .prefix("shoplens-bench-analytics")
        .tempdir()?;
    let mut sizes = opts.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    let mut data = Vec::new();
    let mut results = Vec::new();
    let mut skipped = Vec::new();
    // A back end that fails at one size is not tried at larger ones ("as large as fits").
    let mut active = opts.backends.clone();
    for &events in &sizes {
        let mut backends = Vec::new();
        for &b in &active {
            match (b, opts.clickhouse_max_events) {
                (Backend::Clickhouse, Some(max)) if events > max => skipped.push(format!(
                    "clickhouse at {}: above --clickhouse-max-events {max}",
                    events_label(events)
                )),
                _ => backends.push(b),
            }
        }
        if backends.is_empty() {
            continue;
        }
        tracing::info!(events, "analytics: loading");
        let (info, loaded, failed) =
            match load(opts, &backends, events, servers.as_ref(), scratch.path()).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(
                        events,
                        error = format!("{e:#}"),
                        "analytics: loading failed"
                    );
                    skipped.push(format!(
                        "{} at {}: loading failed: {e:#}",
                        backends
                            .iter()
                            .map(|b| b.name())
                            .collect::<Vec<_>>()
                            .join(" and "),
                        events_label(events)
                    ));
                    active.retain(|b| !backends.contains(b));
                    continue;
                }
            };
        for (backend, error) in failed {
            skipped.push(format!(
                "{} at {}: loading failed: {error}",
                backend.name(),
                events_label(events)
            ));
            active.retain(|b| *b != backend);
        }
        for l in &loaded {
            tracing::info!(backend = l.backend.name(), events, "analytics: measuring");
            let r = measure_size(opts, &info, l, scratch.path()).await;
            drop_read_model(l.backend, &l.read_model).await;
            match r {
                Ok(r) => results.push(r),
                Err(e) => {
                    tracing::warn!(events, error = format!("{e:#}"), "analytics: failed");
                    skipped.push(format!(
                        "{} at {}: failed: {e:#}",
                        l.backend.name(),
                        events_label(events)
                    ));
                    active.retain(|b| *b != l.backend);
                }
            }
        }
        data.push(info);
        // What is measured so far is on disk, whatever happens at the larger sizes.
        let partial = assemble(
            opts,
            &machine,
            &versions,
            &data,
            &results,
            &skipped,
            started,
            &load_average_start,
        );
        crate::results::write_analytics(&opts.out, &partial)?;
    }
    if let Some(mut s) = servers {
        s.stop();
    }
    let results = assemble(
        opts,
        &machine,
        &versions,
        &data,
        &results,
        &skipped,
        started,
        &load_average_start,
    );
    crate::results::write_analytics(&opts.out, &results)?;
    for &b in &opts.backends {
        if !results.results.iter().any(|r| r.backend == b) {
            bail!(
                "{}: nothing was measured: {}",
                b.name(),
                results.skipped.join("; ")
            );
        }
    }
    Ok(results)
}

#[allow(clippy::too_many_arguments)]
fn assemble(
    opts: &AnalyticsOptions,
    machine: &Machine,
    versions: &Versions,
    data: &[DataInfo],
    results: &[SizeResult],
    skipped: &[String],
    started: Instant,
    load_average_start: &Option<String>,
) -> AnalyticsResults {
    let growth = growth(results, &opts.backends);
    AnalyticsResults {
        scenario: "analytics",
        command: command_line(opts),
        machine: machine.clone(),
        versions: versions.clone(),
        options: opts.clone(),
        aims: aims(results, &growth, &opts.backends),
        data: data.to_vec(),
        results: results.to_vec(),
        growth,
        skipped: skipped.to_vec(),
        notes: NOTES.to_vec(),
        total_secs: started.elapsed().as_secs_f64(),
        load_average_start: load_average_start.clone(),
        load_average_end: load_average(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_events_are_exact_in_number_and_span_the_period() {
        let opts = AnalyticsOptions {
            customers: 20,
            products: 5,
            ..AnalyticsOptions::default()
        };
        let mut g = DataGen::new(&opts, 30_000);
        let a = g.take(10_000);
        let b = g.take(20_000);
        assert_eq!(a.len() + b.len(), 30_000);
        let registrations = a
            .iter()
            .chain(&b)
            .filter(|e| e.producer == Service::Customer)
            .count();
        assert_eq!(registrations, 20);
        let first = a.iter().map(|e| e.occurred_at).min().unwrap();
        let last = b.iter().map(|e| e.occurred_at).max().unwrap();
        assert!((last - first).num_days() >= 700, "{first} .. {last}");
    }

    #[test]
    fn questions_cover_every_view_over_both_ranges() {
        let last = NaiveDate::from_ymd_opt(2025, 12, 30).unwrap();
        let qs = questions(last);
        assert_eq!(qs.len(), 8);
        let trends = qs.iter().find(|q| q.name == "trends 30d").unwrap();
        assert_eq!(trends.from, NaiveDate::from_ymd_opt(2025, 12, 1).unwrap());
        assert!(
            trends.raw_sql.contains("2025-11-01T00:00:00Z"),
            "{}",
            trends.raw_sql
        );
        assert!(
            trends.raw_sql.contains("2026-01-01T00:00:00Z"),
            "{}",
            trends.raw_sql
        );
        let daily = qs.iter().find(|q| q.name == "daily 1y").unwrap();
        assert_eq!(
            daily.dashboard,
            "/api/v1/dashboard/daily?from=2024-12-31&to=2025-12-30"
        );
        assert_eq!(events_label(10_000_000), "10M");
        assert_eq!(events_label(20_000), "20k");
        assert_eq!(events_label(2_500_000), "2.5M");
    }

    #[test]
    fn answers_are_summarised_alike_from_both_shapes() {
        let dashboard = br#"{"rows":[{"day":"2025-01-01","orders_placed":3,"orders_paid":2,
            "items_sold":5,"revenue":"1.00"},{"day":"2025-01-02","orders_placed":0,
            "orders_paid":0,"items_sold":0,"revenue":"0"}]}"#;
        let raw = br#"{"columns":[],"row_count":1,"rows":[{"period":"2025-01-01T00:00:00Z",
            "orders_placed":3,"orders_paid":2,"items_sold":5,"revenue":"1.00"}]}"#;
        assert_eq!(summary(View::Daily, dashboard), summary(View::Daily, raw),);
        let tops = br#"{"rows":[{"product_id":"p1"},{"product_id":"p2"}]}"#;
        assert_eq!(summary(View::TopProducts, tops).unwrap(), "p1,p2");
    }
}
