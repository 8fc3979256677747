//! What the analytics scenario measured: the types `results/analytics.json` holds, and the
//! notes on how each figure is taken.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::Serialize;

use super::{AnalyticsOptions, Question};
use crate::backend::Backend;
use crate::machine::{Machine, Versions};
use crate::results::Aim;

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

/// How each figure is taken, written with the results.
pub const NOTES: &[&str] = &[
    "Data: shoplens_test_support::events::shop_events in chunks of at most 20,000 orders, each \
     chunk spread over its share of the span (about 7.5 events per order: created, placed, \
     then paid with 1-3 purchases, a payment, a shipment and 'shipped', or 10% cancelled); \
     customers and products registered once at the start; truncated to the exact event \
     count. Applied straight to the store's sink (Sink::apply of \
     shoplens_contract::tables::to_batches, load_batch events per apply; embedded store fsync \
     off), then made live. The same events go to every back end.",
    "Dashboard: the real analytics server (shoplens_analytics::start on 127.0.0.1 port 0, \
     the product's query engine and limits except a longer query deadline and HTTP timeout \
     for the raw scans, and the result cache off unless `--result-cache-mb` says otherwise: \
     with it on, every repeated request is a look-up, so the default measures what an answer \
     costs to compute, as the first read after each applied batch pays it); one reqwest client in a closed loop, latency = send to last body \
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
