//! The analytics scenario: how fast the sales dashboard answers from the pre-aggregated
//! tables as the data grows, next to the same questions answered by scanning the raw
//! events, and how fast and lean a big report export is — per read-model back end.
//!
//! For each data size (simulated shop events) and back end (the embedded Parquet store,
//! ClickHouse):
//! 1. data: synthetic shop events (`shoplens_test_support::events`) spread over about two
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
//!
//! Files: `figures` (what `analytics.json` holds), `data` (generating and loading the
//! events), `questions` (the dashboard's questions, both ways), `measure` (asking them),
//! `export` (the export child process), `aims`, `render` (the section of `RESULTS.md`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use chrono::NaiveDate;
use serde::Serialize;
use tokio::time::Instant;

use crate::backend::Backend;
use crate::machine::{Machine, Versions, crate_versions, load_average};
use crate::servers::Servers;

mod aims;
mod data;
mod export;
mod figures;
mod measure;
mod questions;
mod render;

pub use export::run_export_child;
pub use figures::{
    AnalyticsResults, DataInfo, ExportResult, ExportRun, Growth, Latency, NOTES, QuestionResult,
    RunLatency, SizeResult,
};
pub use questions::{Question, View};

use aims::{aims, growth};
use data::{drop_read_model, load};
use measure::measure_size;
use render::events_label;

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
    /// The server's result cache (MiB; 0: off, so every request computes its answer).
    pub result_cache_mb: usize,
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
            // Mid-month, so the data (and every question's range) ends mid-month, as a
            // window ending today usually does: a year then reads its whole months from the
            // month rollups and its edge days from the daily tables, not months alone.
            start: NaiveDate::from_ymd_opt(2024, 1, 15).unwrap_or_default(),
            span_days: 730,
            clickhouse_max_events: None,
            load_batch: 100_000,
            export_report: "product_sales_detail".into(),
            export_runs: 3,
            query_timeout_ms: 120_000,
            result_cache_mb: 0,
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
        + &if opts.result_cache_mb > 0 {
            format!(" --result-cache-mb {}", opts.result_cache_mb)
        } else {
            String::new()
        }
}

/// Runs the analytics scenario and writes `analytics.json` and the "Analytics" section of
/// `RESULTS.md` into `opts.out`.
pub async fn run(opts: &AnalyticsOptions) -> anyhow::Result<AnalyticsResults> {
    let started = Instant::now();
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
    let mut report = AnalyticsResults {
        scenario: "analytics",
        command: command_line(opts),
        machine: Machine::detect(),
        versions,
        options: opts.clone(),
        data: Vec::new(),
        results: Vec::new(),
        growth: Vec::new(),
        skipped: Vec::new(),
        aims: Vec::new(),
        notes: NOTES.to_vec(),
        total_secs: 0.0,
        load_average_start: load_average(),
        load_average_end: None,
    };
    // A back end that fails at one size is not tried at larger ones ("as large as fits").
    let mut active = opts.backends.clone();
    for &events in &sizes {
        let mut backends = Vec::new();
        for &b in &active {
            match (b, opts.clickhouse_max_events) {
                (Backend::Clickhouse, Some(max)) if events > max => report.skipped.push(format!(
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
                    report.skipped.push(format!(
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
            report.skipped.push(format!(
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
                Ok(r) => report.results.push(r),
                Err(e) => {
                    tracing::warn!(events, error = format!("{e:#}"), "analytics: failed");
                    report.skipped.push(format!(
                        "{} at {}: failed: {e:#}",
                        l.backend.name(),
                        events_label(events)
                    ));
                    active.retain(|b| *b != l.backend);
                }
            }
        }
        report.data.push(info);
        // What is measured so far is on disk, whatever happens at the larger sizes.
        report.update(started);
        crate::report::write(&opts.out, &report)?;
    }
    if let Some(mut s) = servers {
        s.stop();
    }
    report.update(started);
    crate::report::write(&opts.out, &report)?;
    for &b in &opts.backends {
        if !report.results.iter().any(|r| r.backend == b) {
            bail!(
                "{}: nothing was measured: {}",
                b.name(),
                report.skipped.join("; ")
            );
        }
    }
    Ok(report)
}

impl AnalyticsResults {
    /// Brings what derives from the sizes measured so far up to date (growth, aims, time
    /// taken), so that the results written after every size are whole.
    fn update(&mut self, started: Instant) {
        self.growth = growth(&self.results, &self.options.backends);
        self.aims = aims(&self.results, &self.growth, &self.options.backends);
        self.total_secs = started.elapsed().as_secs_f64();
        self.load_average_end = load_average();
    }
}
