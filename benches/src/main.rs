//! `shoplens-bench`: runs the benchmark scenarios and writes their results files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use shoplens_benches::analytics::{self, AnalyticsOptions};
use shoplens_benches::backend::Backend;
use shoplens_benches::compare::{self, CompareOptions};
use shoplens_benches::components::{self, ComponentsOptions};
use shoplens_benches::composer::{self, ComposerOptions};
use shoplens_benches::ingest::{self, IngestOptions};
use shoplens_benches::isolation::{self, Bombs, IsolationOptions};
use shoplens_benches::report::Report;
use shoplens_benches::results::data_dir;
use shoplens_benches::writes::{self, WritesOptions};

#[derive(Parser)]
#[command(
    name = "shoplens-bench",
    about = "ShopLens benchmarks (write benches/RESULTS.md and benches/results/)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The comparison: API Composer vs CQRS on order tracking and the sales dashboard
    /// (latency, throughput, CPU, staleness, load curves, growth with the shop).
    Compare(CompareArgs),
    /// Component micro-benchmarks: event decoding and encoding, Arrow batch building, the
    /// composer's cache hit path, a dashboard query, CSV export.
    Components {
        /// Tiny sample times: checks the harness, not for figures.
        #[arg(long)]
        smoke: bool,
        /// Directory for RESULTS.md (results/ under it gets the JSON).
        #[arg(long, env = "SHOPLENS_BENCH_OUT")]
        out: Option<PathBuf>,
    },
    /// Order Summary API: no cache / cache / cache + invalidation, and the fan-out check.
    Composer(ComposerArgs),
    /// The event pipeline: events/s, freshness lag and worker memory, per read model.
    Ingest(IngestArgs),
    /// Several ingest worker processes in one consumer group (Kafka -> ClickHouse): events/s
    /// and CPU per million events with 1, 2 and 3 workers, and the rebalance pause.
    ScaleOut(ScaleArgs),
    /// The analytics server: dashboard latency against raw scans as the data grows, export
    /// throughput and memory, per read model.
    Analytics(AnalyticsArgs),
    /// Query isolation: the shop's latency while hostile queries run, and what running
    /// ad-hoc queries in worker processes costs a normal query.
    Isolation {
        /// Measured seconds per phase.
        #[arg(long)]
        duration_secs: Option<f64>,
        /// The CPUs the query workers may run on (`analytics.query.workers.cpus`), e.g.
        /// `--worker-cpus 1`; default: any.
        #[arg(long, value_delimiter = ',')]
        worker_cpus: Vec<usize>,
        /// Which hostile queries run: CPU and memory bombs in turn, or one kind.
        #[arg(long, value_enum, default_value_t = Bombs::All)]
        bombs: Bombs,
        /// `analytics.query.workers.cool_down_ms` (0: none); default: the product's.
        #[arg(long)]
        cool_down_ms: Option<u64>,
        /// Repeats; medians are reported.
        #[arg(long)]
        runs: Option<usize>,
        /// Tiny sizes, one short run: checks the harness, not for figures.
        #[arg(long)]
        smoke: bool,
        /// Directory for the results files.
        #[arg(long, env = "SHOPLENS_BENCH_OUT")]
        out: Option<PathBuf>,
    },
    /// The write side: order creation and status change on SQLite and on PostgreSQL with one
    /// and two replicas, and the outbox relay's fail-over when its replica dies (starts its
    /// own PostgreSQL server).
    WriteSide {
        /// Closed-loop clients per configuration (default 8).
        #[arg(long)]
        concurrency: Option<usize>,
        /// Measured seconds per configuration (default 15).
        #[arg(long)]
        duration_secs: Option<f64>,
        /// Short windows: checks the harness, not for figures.
        #[arg(long)]
        smoke: bool,
        /// Directory for the results files.
        #[arg(long, env = "SHOPLENS_BENCH_OUT")]
        out: Option<PathBuf>,
    },
    /// Every scenario with its defaults (the comparison, composer, then ingest and
    /// analytics on both back ends).
    All(ComposerArgs),
    /// The ingest worker alone, as `shoplens-ingest` starts it (the ingest scenario runs it
    /// as a child process to measure its memory).
    #[command(hide = true)]
    IngestWorker {
        #[arg(long)]
        spec: PathBuf,
    },
    /// One report export, as the `export` command runs it (the analytics scenario runs it as
    /// a child process to measure its memory).
    #[command(hide = true)]
    AnalyticsExport {
        #[arg(long)]
        spec: PathBuf,
    },
}

#[derive(Args, Clone)]
struct ComposerArgs {
    /// Orders seeded before measuring (also the read population).
    #[arg(long)]
    orders: Option<usize>,
    /// Measured seconds per mode and load type.
    #[arg(long)]
    duration_secs: Option<f64>,
    /// Closed-loop workers.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Repeats; medians are reported.
    #[arg(long)]
    runs: Option<usize>,
    /// Tiny sizes, one short run: checks the harness, not for figures.
    #[arg(long)]
    smoke: bool,
    /// Directory for the results files.
    #[arg(long, env = "SHOPLENS_BENCH_OUT")]
    out: Option<PathBuf>,
}

impl ComposerArgs {
    fn options(&self) -> ComposerOptions {
        let mut o = if self.smoke {
            ComposerOptions::smoke(ComposerOptions::default().out)
        } else {
            ComposerOptions::default()
        };
        if let Some(v) = self.orders {
            o.orders = v;
        }
        if let Some(v) = self.duration_secs {
            o.duration = Duration::from_secs_f64(v);
        }
        if let Some(v) = self.concurrency {
            o.concurrency = v;
        }
        if let Some(v) = self.runs {
            o.runs = v;
        }
        if let Some(v) = &self.out {
            o.out = v.clone();
        }
        o
    }
}

#[derive(Args, Clone)]
struct CompareArgs {
    /// The read side: the embedded log and Parquet read model, or Kafka and ClickHouse
    /// (the server SHOPLENS_TEST_CLICKHOUSE_URL / SHOPLENS_TEST_KAFKA_BROKERS name, else
    /// ones started here).
    #[arg(long, value_enum, default_value = "embedded")]
    backend: SingleBackend,
    /// Orders in the shop at each size, comma-separated, ascending (default 1000,5000).
    #[arg(long, value_delimiter = ',')]
    orders: Option<Vec<usize>>,
    /// Measurement rounds per size; medians are reported (default 3).
    #[arg(long)]
    runs: Option<usize>,
    /// Measured seconds per path and round (default 4).
    #[arg(long)]
    duration_secs: Option<f64>,
    /// Status changes timed per round for staleness (default 20).
    #[arg(long)]
    staleness_samples: Option<usize>,
    /// Tiny sizes, one short run: checks the harness, not for figures.
    #[arg(long)]
    smoke: bool,
    /// Directory for RESULTS.md (results/ under it gets the JSON and charts).
    #[arg(long, env = "SHOPLENS_BENCH_OUT")]
    out: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum SingleBackend {
    Embedded,
    Clickhouse,
}

impl CompareArgs {
    fn options(&self) -> anyhow::Result<CompareOptions> {
        let mut o = if self.smoke {
            CompareOptions::smoke(CompareOptions::default().out)
        } else {
            CompareOptions::default()
        };
        o.backend = match self.backend {
            SingleBackend::Embedded => Backend::Embedded,
            SingleBackend::Clickhouse => Backend::Clickhouse,
        };
        if let Some(v) = &self.orders {
            if v.is_empty() || v.contains(&0) {
                anyhow::bail!("--orders: give one or more positive order counts");
            }
            o.sizes = v.clone();
        }
        if let Some(v) = self.runs {
            o.runs = v.max(1);
        }
        if let Some(v) = self.duration_secs {
            anyhow::ensure!(v > 0.0, "--duration-secs must be positive");
            o.duration = Duration::from_secs_f64(v);
        }
        if let Some(v) = self.staleness_samples {
            o.staleness_samples = v;
        }
        if let Some(v) = &self.out {
            o.out = v.clone();
        }
        Ok(o)
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    Embedded,
    Clickhouse,
    Both,
}

impl BackendArg {
    fn backends(self) -> Vec<Backend> {
        match self {
            BackendArg::Embedded => vec![Backend::Embedded],
            BackendArg::Clickhouse => vec![Backend::Clickhouse],
            BackendArg::Both => vec![Backend::Embedded, Backend::Clickhouse],
        }
    }
}

#[derive(Args, Clone)]
struct IngestArgs {
    /// Which read model (and bus): embedded log -> Parquet store, Kafka -> ClickHouse, or
    /// both. The clickhouse back end starts its own ClickHouse and tansu broker unless
    /// SHOPLENS_TEST_CLICKHOUSE_URL / SHOPLENS_TEST_KAFKA_BROKERS name running ones.
    #[arg(long, value_enum, default_value = "both")]
    backend: BackendArg,
    /// Events in the throughput backlog (default 1,000,000).
    #[arg(long)]
    events: Option<u64>,
    /// Events in the backlog the worker-memory measurement drains (default 2,000,000).
    #[arg(long)]
    backlog: Option<u64>,
    /// Drains of the throughput backlog; medians are reported (default 3).
    #[arg(long)]
    runs: Option<usize>,
    /// Seconds of steady load for the freshness measurement (default 20).
    #[arg(long)]
    freshness_secs: Option<f64>,
    /// Events/s of the festival burst (default 50,000; on ClickHouse at most 90% of what the
    /// broker sustains taking and serving each event).
    #[arg(long)]
    burst_rate: Option<f64>,
    /// Seconds the festival burst lasts (default 30).
    #[arg(long)]
    burst_secs: Option<f64>,
    /// The embedded store's fsync (default true, the product default).
    #[arg(long)]
    store_fsync: Option<bool>,
    /// The worker's batch_max_events on the embedded path (default 10,000).
    #[arg(long)]
    embedded_batch: Option<usize>,
    /// The worker's batch_max_events on the ClickHouse path (default 20,000).
    #[arg(long)]
    clickhouse_batch: Option<usize>,
    /// An extra librdkafka property for the Kafka clients (`kafka.properties` of the
    /// config), e.g. `max.partition.fetch.bytes=8388608`; repeatable.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE")]
    kafka_properties: Vec<String>,
    /// Tiny sizes: checks the harness, not for figures.
    #[arg(long)]
    smoke: bool,
    /// Directory for the results files.
    #[arg(long, env = "SHOPLENS_BENCH_OUT")]
    out: Option<PathBuf>,
}

impl IngestArgs {
    fn options(&self) -> anyhow::Result<IngestOptions> {
        let exe = std::env::current_exe()?;
        let mut o = if self.smoke {
            IngestOptions::smoke(IngestOptions::default().out, exe)
        } else {
            IngestOptions {
                worker_exe: exe,
                ..IngestOptions::default()
            }
        };
        o.backends = self.backend.backends();
        if let Some(v) = self.events {
            o.events = v;
        }
        if let Some(v) = self.backlog {
            o.backlog = v;
        }
        if let Some(v) = self.runs {
            o.runs = v;
        }
        if let Some(v) = self.freshness_secs {
            o.freshness_duration = Duration::from_secs_f64(v);
        }
        if let Some(v) = self.burst_rate {
            o.burst_rate = v;
        }
        if let Some(v) = self.burst_secs {
            o.burst_duration = Duration::from_secs_f64(v);
        }
        if let Some(v) = self.store_fsync {
            o.store_fsync = v;
        }
        for p in &self.kafka_properties {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--kafka-property {p}: expected KEY=VALUE"))?;
            o.kafka_properties.insert(k.to_owned(), v.to_owned());
        }
        if let Some(v) = self.embedded_batch {
            o.embedded_worker.batch_max_events = v;
        }
        if let Some(v) = self.clickhouse_batch {
            o.clickhouse_worker.batch_max_events = v;
        }
        if let Some(v) = &self.out {
            o.out = v.clone();
        }
        Ok(o)
    }
}

#[derive(Args, Clone)]
struct ScaleArgs {
    /// Events in the backlog each run drains (default 2,000,000).
    #[arg(long)]
    events: Option<u64>,
    /// Partitions of every topic (default 6).
    #[arg(long)]
    partitions: Option<i32>,
    /// Tiny sizes: checks the harness, not for figures.
    #[arg(long)]
    smoke: bool,
    /// Directory for the results files.
    #[arg(long, env = "SHOPLENS_BENCH_OUT")]
    out: Option<PathBuf>,
}

impl ScaleArgs {
    fn options(&self) -> anyhow::Result<ingest::scale::ScaleOptions> {
        let mut ingest = IngestOptions {
            worker_exe: std::env::current_exe()?,
            ..IngestOptions::default()
        };
        if let Some(v) = &self.out {
            ingest.out = v.clone();
        }
        Ok(ingest::scale::ScaleOptions {
            events: self
                .events
                .unwrap_or(if self.smoke { 30_000 } else { 2_000_000 }),
            partitions: self.partitions.unwrap_or(6),
            workers: vec![1, 2, 3],
            smoke: self.smoke,
            ingest,
        })
    }
}

#[derive(Args, Clone)]
struct AnalyticsArgs {
    /// Which read model: the embedded Parquet store, ClickHouse, or both. ClickHouse: the
    /// server SHOPLENS_TEST_CLICKHOUSE_URL names, else one started here.
    #[arg(long, value_enum, default_value = "both")]
    backend: BackendArg,
    /// Simulated events per data size, comma-separated (default 1000000,10000000).
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<u64>>,
    /// Timed requests per dashboard view and run (default 200).
    #[arg(long)]
    queries: Option<usize>,
    /// Timed raw-scan queries per question and run (default 20).
    #[arg(long)]
    raw_queries: Option<usize>,
    /// Measurement rounds; medians are reported (default 3).
    #[arg(long)]
    runs: Option<usize>,
    /// Exports per format and size (default 3).
    #[arg(long)]
    export_runs: Option<usize>,
    /// Measure ClickHouse only at sizes up to this many events (larger sizes: embedded
    /// only).
    #[arg(long)]
    clickhouse_max_events: Option<u64>,
    /// The analytics server's result cache in MiB (default 0: off, so that every request
    /// computes its answer; the product's default is 64).
    #[arg(long)]
    result_cache_mb: Option<usize>,
    /// Tiny sizes: checks the harness, not for figures.
    #[arg(long)]
    smoke: bool,
    /// Directory for the results files.
    #[arg(long, env = "SHOPLENS_BENCH_OUT")]
    out: Option<PathBuf>,
}

impl AnalyticsArgs {
    fn options(&self) -> anyhow::Result<AnalyticsOptions> {
        let exe = std::env::current_exe()?;
        let mut o = if self.smoke {
            AnalyticsOptions::smoke(AnalyticsOptions::default().out, exe)
        } else {
            AnalyticsOptions {
                exe,
                ..AnalyticsOptions::default()
            }
        };
        o.backends = self.backend.backends();
        if let Some(v) = &self.sizes {
            if v.is_empty() || v.contains(&0) {
                anyhow::bail!("--sizes: give one or more positive event counts");
            }
            o.sizes = v.clone();
        }
        if let Some(v) = self.queries {
            o.queries = v.max(1);
            o.min_queries = o.min_queries.min(o.queries);
        }
        if let Some(v) = self.raw_queries {
            o.raw_queries = v.max(1);
            o.raw_min_queries = o.raw_min_queries.min(o.raw_queries);
        }
        if let Some(v) = self.runs {
            o.runs = v.max(1);
        }
        if let Some(v) = self.export_runs {
            o.export_runs = v.max(1);
        }
        if let Some(v) = self.clickhouse_max_events {
            o.clickhouse_max_events = Some(v);
        }
        if let Some(v) = self.result_cache_mb {
            o.result_cache_mb = v;
        }
        if let Some(v) = &self.out {
            o.out = v.clone();
        }
        Ok(o)
    }
}

fn main() -> anyhow::Result<()> {
    // Query workers are this program started with `query-worker`.
    shoplens_analytics::isolation::run_if_requested();
    tokio::runtime::Runtime::new()
        .map_err(|e| anyhow::anyhow!("failed to start the runtime: {e}"))?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    // The benchmark's progress, and only warnings of the system under test (unless
    // RUST_LOG says otherwise).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,shoplens_benches=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Composer(args) => run_composer(&args).await,
        Command::Ingest(args) => run_ingest(&args.options()?).await,
        Command::ScaleOut(args) => {
            let opts = args.options()?;
            let results = ingest::scale::run(&opts).await?;
            show(
                &results,
                &data_dir(&opts.ingest.out).join(format!("{}.json", results.stem())),
            );
            Ok(())
        }
        Command::Compare(args) => run_compare(&args.options()?).await,
        Command::Components { smoke, out } => run_components(smoke, out).await,
        Command::All(args) => {
            let compare_args = CompareArgs {
                backend: SingleBackend::Embedded,
                orders: None,
                runs: None,
                duration_secs: None,
                staleness_samples: None,
                smoke: args.smoke,
                out: args.out.clone(),
            };
            run_compare(&compare_args.options()?).await?;
            run_components(args.smoke, args.out.clone()).await?;
            run_composer(&args).await?;
            let ingest_args = IngestArgs {
                backend: BackendArg::Both,
                events: None,
                backlog: None,
                runs: None,
                freshness_secs: None,
                burst_rate: None,
                burst_secs: None,
                store_fsync: None,
                embedded_batch: None,
                clickhouse_batch: None,
                kafka_properties: Vec::new(),
                smoke: args.smoke,
                out: args.out.clone(),
            };
            run_ingest(&ingest_args.options()?).await?;
            let analytics_args = AnalyticsArgs {
                backend: BackendArg::Both,
                sizes: None,
                queries: None,
                raw_queries: None,
                runs: None,
                export_runs: None,
                clickhouse_max_events: None,
                result_cache_mb: None,
                smoke: args.smoke,
                out: args.out.clone(),
            };
            run_analytics(&analytics_args.options()?).await?;
            let mut isolation = if args.smoke {
                IsolationOptions::smoke(IsolationOptions::default().out)
            } else {
                IsolationOptions::default()
            };
            if let Some(out) = &args.out {
                isolation.out = out.clone();
            }
            run_isolation(&isolation).await
        }
        Command::Analytics(args) => run_analytics(&args.options()?).await,
        Command::Isolation {
            duration_secs,
            worker_cpus,
            bombs,
            cool_down_ms,
            runs,
            smoke,
            out,
        } => {
            let mut opts = if smoke {
                IsolationOptions::smoke(IsolationOptions::default().out)
            } else {
                IsolationOptions::default()
            };
            if let Some(v) = duration_secs {
                opts.duration = Duration::from_secs_f64(v);
            }
            opts.worker_cpus = worker_cpus;
            opts.bombs = bombs;
            opts.cool_down_ms = cool_down_ms;
            if let Some(v) = runs {
                opts.runs = v;
            }
            if let Some(v) = out {
                opts.out = v;
            }
            run_isolation(&opts).await
        }
        Command::WriteSide {
            concurrency,
            duration_secs,
            smoke,
            out,
        } => {
            let mut opts = if smoke {
                WritesOptions::smoke(WritesOptions::default().out)
            } else {
                WritesOptions::default()
            };
            if let Some(v) = concurrency {
                anyhow::ensure!(v > 0, "--concurrency must be positive");
                opts.clients = v;
            }
            if let Some(v) = duration_secs {
                anyhow::ensure!(v > 0.0, "--duration-secs must be positive");
                opts.duration = Duration::from_secs_f64(v);
            }
            if let Some(v) = out {
                opts.out = v;
            }
            let results = writes::run(&opts).await?;
            show(
                &results,
                &data_dir(&opts.out).join(format!("{}.json", results.stem())),
            );
            Ok(())
        }
        Command::IngestWorker { spec } => ingest::run_child(&spec).await,
        Command::AnalyticsExport { spec } => analytics::run_export_child(&spec).await,
    }
}

async fn run_isolation(opts: &IsolationOptions) -> anyhow::Result<()> {
    let results = isolation::run(opts).await?;
    show(&results, &opts.out.join("RESULTS.md"));
    Ok(())
}

async fn run_compare(opts: &CompareOptions) -> anyhow::Result<()> {
    let results = compare::run(opts).await?;
    show(&results, &opts.out.join("RESULTS.md"));
    Ok(())
}

async fn run_components(smoke: bool, out: Option<PathBuf>) -> anyhow::Result<()> {
    let mut opts = if smoke {
        ComponentsOptions::smoke(ComponentsOptions::default().out)
    } else {
        ComponentsOptions::default()
    };
    if let Some(out) = out {
        opts.out = out;
    }
    let results = components::run(&opts).await?;
    eprintln!("{}", results.markdown());
    Ok(())
}

async fn run_composer(args: &ComposerArgs) -> anyhow::Result<()> {
    let opts = args.options();
    let results = composer::run(&opts).await?;
    show(
        &results,
        &data_dir(&opts.out).join(format!("{}.json", results.stem())),
    );
    Ok(())
}

async fn run_ingest(opts: &IngestOptions) -> anyhow::Result<()> {
    let results = ingest::run(opts).await?;
    show(
        &results,
        &data_dir(&opts.out).join(format!("{}.json", results.stem())),
    );
    Ok(())
}

async fn run_analytics(opts: &AnalyticsOptions) -> anyhow::Result<()> {
    let results = analytics::run(opts).await?;
    show(
        &results,
        &data_dir(&opts.out).join(format!("{}.json", results.stem())),
    );
    Ok(())
}

/// Prints the section a scenario wrote, and where it wrote it.
fn show(results: &impl Report, wrote: &Path) {
    eprintln!("{}", results.markdown());
    eprintln!("wrote {}", wrote.display());
}
