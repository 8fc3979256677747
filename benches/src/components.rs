//! Component micro-benchmarks: the hot inner steps of both read paths, each alone, in this
//! process, on synthetic shop events. The same cases run two ways: here (`-- components`,
//! medians written to the results files like every scenario) and under criterion
//! (`cargo bench -p shoplens-benches`, its own statistics and HTML reports under
//! `target/criterion`).
//!
//! - `event_decode` / `event_encode`: an event's bytes on the bus to a checked [`Envelope`]
//!   and back (the ingest worker's and the outbox relay's per-event cost);
//! - `arrow_batch`: 10,000 decoded events into one Arrow record batch per raw table (the
//!   worker's batching step);
//! - `cache_hit`: an Order Summary section served from the composer's cache;
//! - `dashboard_query`: the dashboard's daily view over a 30-day range on an embedded read
//!   model of 100,000 events (DataFusion over Parquet, the aggregate merged in memory);
//! - `export_csv`: 10,000 purchase rows encoded as CSV by the export encoder.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use shoplens_analytics::dashboard::{Dashboard, DateRange};
use shoplens_analytics::engine::{Engine, QueryConfig};
use shoplens_analytics::export::{Encoder, ExportFormat};
use shoplens_contract::Envelope;
use shoplens_contract::tables::RawTable;
use shoplens_ingest::embedded::EmbeddedStore;
use shoplens_ingest::sink::{IngestBatch, ReadModelStore};
use shoplens_readmodel::config::EmbeddedConfig;
use shoplens_test_support::events::{StreamSpec, shop_events};

use crate::machine::{Machine, crate_versions};
use crate::report::{self, Report};
use crate::results::crate_list;

/// One benchmarked operation: `run` does `elements` units of work (events, rows, lookups).
pub struct Case {
    pub name: &'static str,
    pub unit: &'static str,
    pub elements: u64,
    pub run: Box<dyn FnMut()>,
}

/// Keeps what the cases borrow (a runtime, a scratch directory) alive while they run.
pub struct Fixture {
    pub runtime: Arc<tokio::runtime::Runtime>,
    _dir: tempfile::TempDir,
}

fn events(orders: u32) -> Vec<Envelope> {
    shop_events(&StreamSpec {
        seed: 11,
        customers: 1_000,
        products: 200,
        orders,
        ..StreamSpec::default()
    })
}

/// Builds every case. Setup (data, stores, caches) happens here, not in the timed part.
/// `small`: a hundredth of the dashboard's data (the smoke run).
pub fn cases(small: bool) -> anyhow::Result<(Fixture, Vec<Case>)> {
    let runtime = Arc::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
    );
    let dir = tempfile::tempdir()?;
    let mut cases = Vec::new();

    // Bus bytes <-> envelopes: a mix of every event type, cycled.
    let sample = events(200);
    let bytes: Vec<Vec<u8>> = sample.iter().map(Envelope::to_json).collect();
    let n = bytes.len() as u64;
    cases.push(Case {
        name: "event_decode",
        unit: "events",
        elements: n,
        run: Box::new(move || {
            for b in &bytes {
                std::hint::black_box(Envelope::decode(b).ok());
            }
        }),
    });
    let envs = sample.clone();
    cases.push(Case {
        name: "event_encode",
        unit: "events",
        elements: n,
        run: Box::new(move || {
            for e in &envs {
                std::hint::black_box(e.to_json());
            }
        }),
    });

    // Decoded events into Arrow batches, as the worker batches them.
    let batch: Vec<Envelope> = events(1_400).into_iter().take(10_000).collect();
    let batch_len = batch.len() as u64;
    cases.push(Case {
        name: "arrow_batch",
        unit: "events",
        elements: batch_len,
        run: Box::new(move || {
            std::hint::black_box(shoplens_contract::tables::to_batches(batch.iter()));
        }),
    });

    // A composer cache hit: the section is there and fresh.
    let cache = runtime.block_on(async {
        let settings = shoplens_composer::cache::SectionSettings {
            enabled: true,
            ttl: Duration::from_secs(3600),
            stale_for: Duration::from_secs(3600),
            max_entries: 10_000,
        };
        let metrics = shoplens_composer::metrics::ComposerMetrics::register(
            &shoplens_kit::metrics::Metrics::new(),
        );
        let cache: shoplens_composer::cache::SectionCache<String> =
            shoplens_composer::cache::SectionCache::new("order", &settings, metrics);
        for i in 0..1_000 {
            cache
                .put(
                    &format!("order-{i}"),
                    shoplens_composer::cache::Fetched::now(format!("value {i}")),
                )
                .await;
        }
        cache
    });
    let keys: Vec<String> = (0..1_000).map(|i| format!("order-{i}")).collect();
    let rt = runtime.clone();
    cases.push(Case {
        name: "cache_hit",
        unit: "lookups",
        elements: keys.len() as u64,
        run: Box::new(move || {
            rt.block_on(async {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
                for k in &keys {
                    let hit = cache
                        .get(k, deadline, async {
                            Err(shoplens_composer::downstream::FetchError::NotFound)
                        })
                        .await;
                    std::hint::black_box(hit);
                }
            })
        }),
    });

    // The dashboard's daily view on an embedded read model of ~100,000 events.
    let all = events(if small { 135 } else { 13_500 });
    let (engine, last_day) = runtime.block_on(async {
        let config = EmbeddedConfig {
            dir: dir.path().join("readmodel"),
            fsync: false,
            ..EmbeddedConfig::default()
        };
        let store = EmbeddedStore::open(config.clone()).context("open the embedded store")?;
        let sink = store.open(1).await?;
        for chunk in all.chunks(20_000) {
            sink.apply(&IngestBatch {
                tables: shoplens_contract::tables::to_batches(chunk.iter()),
                ..IngestBatch::default()
            })
            .await?;
        }
        store.set_live(1).await?;
        drop(sink);
        let read_model = Arc::new(shoplens_analytics::embedded::EmbeddedReadModel::new(
            store.dir().to_owned(),
        ));
        let engine = Engine::new(read_model, &QueryConfig::default()).await?;
        let last = all
            .iter()
            .map(|e| e.occurred_at)
            .max()
            .unwrap_or_default()
            .date_naive();
        Ok::<_, anyhow::Error>((engine, last))
    })?;
    let dashboard = Dashboard::new(engine.clone());
    let range = DateRange {
        from: last_day - chrono::Duration::days(29),
        to: last_day,
    };
    let rt = runtime.clone();
    let freshness = shoplens_readmodel::freshness::FreshnessReport::new(
        1,
        shoplens_readmodel::freshness::Freshness::default(),
        Some(0),
        0,
    );
    // The timed query must be one that answers, with data.
    let check = runtime.block_on(dashboard.daily(
        shoplens_analytics::engine::Pii::Visible,
        freshness.clone(),
        range,
    ))?;
    anyhow::ensure!(
        check.rows.iter().any(|r| r.orders_placed > 0),
        "the dashboard case's range holds no orders"
    );
    cases.push(Case {
        name: "dashboard_query",
        unit: "queries",
        elements: 1,
        run: Box::new(move || {
            let answer = rt.block_on(dashboard.daily(
                shoplens_analytics::engine::Pii::Visible,
                freshness.clone(),
                range,
            ));
            std::hint::black_box(answer.ok());
        }),
    });

    // Export: purchase rows encoded as CSV.
    let purchases: Vec<Envelope> = all
        .iter()
        .filter(|e| RawTable::for_event(e.event_type()) == RawTable::ProductPurchases)
        .take(10_000)
        .cloned()
        .collect();
    let table = shoplens_contract::tables::to_batches(purchases.iter())
        .into_iter()
        .find(|(t, _)| *t == RawTable::ProductPurchases)
        .map(|(_, b)| b)
        .context("no purchases in the sample")?;
    let rows = table.num_rows() as u64;
    cases.push(Case {
        name: "export_csv",
        unit: "rows",
        elements: rows,
        run: Box::new(move || {
            let mut enc = Encoder::new(ExportFormat::Csv, table.schema()).expect("csv encoder");
            let head = enc.write(&table).expect("encode");
            let tail = enc.finish().expect("finish");
            std::hint::black_box((head, tail));
        }),
    });
    Ok((Fixture { runtime, _dir: dir }, cases))
}

/// What one case measured.
#[derive(Clone, Debug, Serialize)]
pub struct CaseResult {
    pub name: &'static str,
    pub unit: &'static str,
    pub elements_per_iteration: u64,
    /// Median over samples of the time one iteration took.
    pub ns_per_iteration: f64,
    pub ns_per_element: f64,
    pub elements_per_sec: f64,
    /// Per sample: ns per iteration.
    pub samples: Vec<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ComponentsResults {
    pub machine: Machine,
    pub crates: Vec<(String, String)>,
    pub samples: usize,
    pub sample_secs: f64,
    pub total_secs: f64,
    pub cases: Vec<CaseResult>,
}

#[derive(Clone, Debug)]
pub struct ComponentsOptions {
    pub samples: usize,
    pub sample_time: Duration,
    /// Less data to set up (the smoke run).
    pub small: bool,
    pub out: PathBuf,
}

impl Default for ComponentsOptions {
    fn default() -> Self {
        ComponentsOptions {
            samples: 10,
            sample_time: Duration::from_millis(500),
            small: false,
            out: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        }
    }
}

impl ComponentsOptions {
    pub fn smoke(out: PathBuf) -> Self {
        ComponentsOptions {
            samples: 2,
            sample_time: Duration::from_millis(20),
            small: true,
            out,
        }
    }
}

/// Times `case`: a warm-up, then `samples` samples of at least `sample_time` each.
fn measure(case: &mut Case, samples: usize, sample_time: Duration) -> CaseResult {
    let warm = Instant::now();
    let mut warm_iters = 0u64;
    while warm.elapsed() < sample_time / 2 || warm_iters == 0 {
        (case.run)();
        warm_iters += 1;
    }
    let mut per_iter = Vec::new();
    for _ in 0..samples.max(1) {
        let start = Instant::now();
        let mut iters = 0u64;
        while start.elapsed() < sample_time || iters == 0 {
            (case.run)();
            iters += 1;
        }
        per_iter.push(start.elapsed().as_nanos() as f64 / iters as f64);
    }
    let ns = crate::results::median(per_iter.clone());
    let per_element = ns / case.elements.max(1) as f64;
    CaseResult {
        name: case.name,
        unit: case.unit,
        elements_per_iteration: case.elements,
        ns_per_iteration: ns,
        ns_per_element: per_element,
        elements_per_sec: 1e9 / per_element,
        samples: per_iter,
    }
}

/// Runs every case on a thread of its own (the cases block on their own runtime).
pub async fn run(opts: &ComponentsOptions) -> anyhow::Result<ComponentsResults> {
    let started = Instant::now();
    let machine = Machine::detect();
    let o = opts.clone();
    let cases = tokio::task::spawn_blocking(move || {
        let (_fixture, mut cases) = cases(o.small)?;
        Ok::<_, anyhow::Error>(
            cases
                .iter_mut()
                .map(|c| {
                    tracing::info!(case = c.name, "measuring");
                    measure(c, o.samples, o.sample_time)
                })
                .collect::<Vec<_>>(),
        )
    })
    .await??;
    let results = ComponentsResults {
        machine,
        crates: crate_versions(&["arrow-array", "datafusion", "moka", "serde_json", "parquet"]),
        samples: opts.samples,
        sample_secs: opts.sample_time.as_secs_f64(),
        total_secs: started.elapsed().as_secs_f64(),
        cases,
    };
    report::write(&opts.out, &results)?;
    Ok(results)
}

impl Report for ComponentsResults {
    fn title(&self) -> &str {
        "Components"
    }

    fn stem(&self) -> &str {
        "components"
    }

    fn markdown(&self) -> String {
        let m = &self.machine;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "Command: `cargo run --release -p shoplens-benches -- components` (the same cases \
             under criterion: `cargo bench -p shoplens-benches`)\n"
        );
        let _ = writeln!(
            t,
            "- Date {}, commit {}, {} build, {}; {} cores ({}).",
            m.date,
            m.commit(),
            m.profile,
            m.rustc,
            m.cores,
            m.cpu()
        );
        let _ = writeln!(
            t,
            "- Versions: {}. {} samples of {:.2} s per case after a warm-up, medians; total \
             {:.0} s.\n",
            crate_list(&self.crates),
            self.samples,
            self.sample_secs,
            self.total_secs
        );
        let _ = writeln!(
            t,
            "| case | per iteration | time per iteration | per element | elements/s |"
        );
        let _ = writeln!(t, "|---|---:|---:|---:|---:|");
        for c in &self.cases {
            let per_iter = if c.ns_per_iteration >= 1e6 {
                format!("{:.2} ms", c.ns_per_iteration / 1e6)
            } else {
                format!("{:.1} µs", c.ns_per_iteration / 1e3)
            };
            let _ = writeln!(
                t,
                "| {} | {} {} | {} | {:.0} ns | {:.0} |",
                c.name,
                c.elements_per_iteration,
                c.unit,
                per_iter,
                c.ns_per_element,
                c.elements_per_sec
            );
        }
        let _ = writeln!(
            t,
            "\nCases: event_decode/event_encode (the bus bytes of 200 orders' events <-> \
             checked envelopes), arrow_batch (10,000 decoded events into one Arrow batch per \
             raw table), cache_hit (1,000 Order Summary sections from the composer's cache), \
             dashboard_query (the daily view, 30 days, on an embedded read model of ~100,000 \
             events), export_csv (10,000 purchase rows through the export encoder)."
        );
        t
    }
}
