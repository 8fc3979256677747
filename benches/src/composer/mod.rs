//! The composer scenario: Order Summary latency, throughput and downstream calls per
//! request with (a) no cache, (b) the cache, (c) the cache plus event-driven invalidation,
//! against the five real services under a festival-sale read load, and the fan-out check
//! (uncached composer latency against the single downstream calls it is made of).
//!
//! Per run, on one shop (seeded once; a background writer keeps recent orders changing in
//! every mode, so the modes see the same conditions):
//! 1. closed loop: `concurrency` workers, each mode on a fresh composer (cold cache, then a
//!    warm-up);
//! 2. open loop at one offered rate for all modes: `open_fraction` of what (a) sustained in
//!    step 1 of the same run — the "same offered load" comparison;
//! 3. the composer's downstream calls made directly (no composer) at that same rate: the
//!    order, then customer, products (batch), payments and shipments at once.
//!
//! Every figure is measured in this process at run time; medians over runs; ratios are
//! taken within a run, then their median reported.
//!
//! Files: `figures` (what `composer.json` holds), `requests` (the summary and direct
//! requests, the composers under test and their counters), `bench` (one mode measured, the
//! fan-out check), `summary` (medians over runs, aims), `render` (the section of
//! `RESULTS.md`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::machine::Machine;
use crate::shop::{Shop, ShopSize, spawn_writer};

mod bench;
mod figures;
mod render;
mod requests;
mod summary;

pub use figures::{
    CallLatency, ComposerResults, DataSize, Fanout, ModeResult, NOTES, RunResult, Summary,
    SummaryRow,
};

use bench::Bench;
use summary::{aims, summarize};

/// The token secret of the benchmark's composers.
pub(crate) use crate::SECRET;

/// What to run.
#[derive(Clone, Debug, Serialize)]
pub struct ComposerOptions {
    pub customers: usize,
    pub products: usize,
    /// Orders seeded before measuring; also the read population.
    pub orders: usize,
    /// Measured time per mode and load type.
    pub duration: Duration,
    /// Unmeasured time before each measurement (fills the cache, opens connections).
    pub warmup: Duration,
    /// Closed-loop workers.
    pub concurrency: usize,
    pub runs: usize,
    /// Offered open-loop rate as a share of the no-cache closed-loop throughput.
    pub open_fraction: f64,
    /// Background writer: new orders per second, each driven through its lifecycle.
    pub writer_rate_per_sec: f64,
    /// Background writer: pause between one order's lifecycle steps.
    pub writer_step: Duration,
    /// Zipf exponent of the read popularity (by recency) and of the catalogue.
    pub zipf_exponent: f64,
    pub smoke: bool,
    /// Directory for `composer.json` and `RESULTS.md`.
    pub out: PathBuf,
}

impl Default for ComposerOptions {
    fn default() -> Self {
        ComposerOptions {
            customers: 200,
            products: 100,
            orders: 1000,
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            concurrency: 16,
            runs: 3,
            open_fraction: 0.75,
            writer_rate_per_sec: 10.0,
            writer_step: Duration::from_millis(200),
            zipf_exponent: 1.1,
            smoke: false,
            out: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        }
    }
}

impl ComposerOptions {
    /// Tiny sizes that show the harness works, in a few seconds; not for figures.
    pub fn smoke(out: PathBuf) -> Self {
        ComposerOptions {
            customers: 20,
            products: 20,
            orders: 20,
            duration: Duration::from_secs(1),
            warmup: Duration::from_millis(300),
            concurrency: 4,
            runs: 1,
            writer_rate_per_sec: 5.0,
            writer_step: Duration::from_millis(100),
            smoke: true,
            out,
            ..Default::default()
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    NoCache,
    Cache,
    #[serde(rename = "cache+invalidation")]
    CacheInvalidation,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::NoCache, Mode::Cache, Mode::CacheInvalidation];

    pub fn name(self) -> &'static str {
        match self {
            Mode::NoCache => "no-cache",
            Mode::Cache => "cache",
            Mode::CacheInvalidation => "cache+invalidation",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Mode::NoCache => "a",
            Mode::Cache => "b",
            Mode::CacheInvalidation => "c",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Load {
    /// `concurrency` workers back to back.
    Closed,
    /// A fixed request rate, the same for every mode.
    Open,
}

fn find(rows: &[ModeResult], mode: Mode) -> &ModeResult {
    rows.iter()
        .find(|r| r.mode == mode)
        .expect("every mode measured")
}

/// Runs the composer scenario and writes `composer.json` and the "Composer" section of
/// `RESULTS.md` into `opts.out`.
pub async fn run(opts: &ComposerOptions) -> anyhow::Result<ComposerResults> {
    let started = Instant::now();
    let machine = Machine::detect();
    let size = ShopSize {
        customers: opts.customers,
        products: opts.products,
        orders: opts.orders,
        zipf_exponent: opts.zipf_exponent,
    };
    tracing::info!(?size, "starting and seeding the shop");
    let shop = Shop::start(&size).await?;
    tracing::info!(
        secs = shop.seed_secs,
        orders = shop.reads.len(),
        "shop seeded"
    );
    let stop_writer = CancellationToken::new();
    let writer = spawn_writer(
        &shop,
        &size,
        opts.writer_rate_per_sec,
        opts.writer_step,
        stop_writer.clone(),
    );
    let bench = Bench {
        shop: &shop,
        opts,
        client: crate::admin_client(reqwest::Client::builder().pool_max_idle_per_host(4096))?,
        auth: crate::admin_bearer().into(),
    };
    let mut runs = Vec::new();
    let outcome: anyhow::Result<()> = async {
        for run in 1..=opts.runs.max(1) {
            let run_started = Instant::now();
            let mut closed = Vec::new();
            for mode in Mode::ALL {
                closed.push(bench.measure(mode, Load::Closed, run, 0.0).await?);
            }
            let rate = (find(&closed, Mode::NoCache).throughput_rps * opts.open_fraction).max(1.0);
            let mut open = Vec::new();
            for mode in Mode::ALL {
                open.push(bench.measure(mode, Load::Open, run, rate).await?);
            }
            let fanout = bench
                .fanout(run, rate, find(&open, Mode::NoCache).service_p50_ms)
                .await;
            let p99 = |m| find(&open, m).service_p99_ms;
            let sched = |m| find(&open, m).p99_ms;
            runs.push(RunResult {
                run,
                offered_rps: rate,
                p99_ratio_scheduled_no_cache_over_cache: sched(Mode::NoCache) / sched(Mode::Cache),
                p99_ratio_scheduled_no_cache_over_cache_invalidation: sched(Mode::NoCache)
                    / sched(Mode::CacheInvalidation),
                p99_ratio_no_cache_over_cache: p99(Mode::NoCache) / p99(Mode::Cache),
                p99_ratio_no_cache_over_cache_invalidation: p99(Mode::NoCache)
                    / p99(Mode::CacheInvalidation),
                closed,
                open,
                fanout,
                secs: run_started.elapsed().as_secs_f64(),
            });
        }
        Ok(())
    }
    .await;
    stop_writer.cancel();
    let writer = writer.await.unwrap_or_default();
    let data = DataSize {
        customers: shop.catalogue.customers.len(),
        products: shop.catalogue.products.len(),
        seeded_orders: shop.seeded.order_ids.len(),
        read_population: opts.orders,
        orders_at_end: shop.reads.len(),
        seed_secs: shop.seed_secs,
        writer,
    };
    shop.stop().await;
    outcome?;

    let summary = summarize(&runs);
    let aims = aims(&summary);
    let results = ComposerResults {
        scenario: "composer",
        command: command_line(opts),
        machine,
        options: opts.clone(),
        composer_cache: shoplens_composer::CacheConfig::default(),
        data,
        runs,
        summary,
        aims,
        notes: NOTES.to_vec(),
        total_secs: started.elapsed().as_secs_f64(),
    };
    crate::report::write(&opts.out, &results)?;
    Ok(results)
}

fn command_line(opts: &ComposerOptions) -> String {
    if opts.smoke {
        return "cargo run --release -p shoplens-benches -- composer --smoke".into();
    }
    format!(
        "cargo run --release -p shoplens-benches -- composer --orders {} --duration-secs {} \
         --concurrency {} --runs {}",
        opts.orders,
        opts.duration.as_secs_f64(),
        opts.concurrency,
        opts.runs
    )
}
