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
//!
//! Files: `figures` (what `ingest.json` holds), `events` (the synthetic backlog and
//! publishing it), `drain` (a worker draining a backlog), `freshness`, `memory` (the worker in
//! a child process), `embedded` and `clickhouse` (each back end's measurements), `aims`,
//! `render` (the section of `RESULTS.md`); `scale` is the scale-out scenario (several worker
//! processes in one consumer group).

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use shoplens_ingest::worker::WorkerConfig;
use tokio::time::Instant;

use crate::backend::Backend;
use crate::machine::{Machine, Versions, crate_versions, load_average};
use crate::servers::Servers;

mod aims;
mod clickhouse;
mod drain;
mod embedded;
mod events;
mod figures;
mod freshness;
mod memory;
mod render;
pub mod scale;

pub use figures::{
    BackendResult, BusRates, DrainRun, FreshnessResult, IngestResults, MemoryResult, NOTES,
    SinkCeiling, Throughput,
};
pub use memory::{ChildSource, ChildSpec, run_child};

use aims::aims;
use clickhouse::run_clickhouse;
use embedded::run_embedded;

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
    /// The festival burst's publishing rate (on ClickHouse at most 90% of what the broker
    /// sustains when it both takes each event from the producer and serves it to the worker,
    /// from the rates measured in this run).
    pub burst_rate: f64,
    /// How long the burst publishes (after the same warm-up).
    pub burst_duration: Duration,
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
            burst_rate: 50_000.0,
            burst_duration: Duration::from_secs(30),
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
            burst_rate: 5_000.0,
            burst_duration: Duration::from_secs(2),
            // Several batches even at these sizes.
            embedded_worker: WorkerConfig {
                batch_max_events: 5_000,
                ..WorkerConfig::default()
            },
            smoke: true,
            out,
            worker_exe,
            ..Default::default()
        }
    }

    /// The worker configuration of `backend`.
    fn worker(&self, backend: Backend) -> &WorkerConfig {
        match backend {
            Backend::Embedded => &self.embedded_worker,
            Backend::Clickhouse => &self.clickhouse_worker,
        }
    }
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
         --backlog {} --runs {} --freshness-secs {} --burst-rate {} --burst-secs {} \
         --store-fsync {} --embedded-batch {} --clickhouse-batch {}",
        opts.events,
        opts.backlog,
        opts.runs,
        opts.freshness_duration.as_secs_f64(),
        opts.burst_rate,
        opts.burst_duration.as_secs_f64(),
        opts.store_fsync,
        opts.embedded_worker.batch_max_events,
        opts.clickhouse_worker.batch_max_events
    ) + &opts
        .kafka_properties
        .iter()
        .map(|(k, v)| format!(" --kafka-property {k}={v}"))
        .collect::<String>()
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
