//! The comparison the design rests on, measured: the API Composer and CQRS each answering
//! both requirements, on the same machine, shop and data, in the same run.
//!
//! - **Order tracking**: the composer's Order Summary (live, five services per request,
//!   its cache and event-driven eviction as configured by default) against reading the
//!   order's state from the read model (`POST /api/v1/sql` on the analytics server: the
//!   order's latest status and shipment location). Latency and throughput in a closed
//!   loop, CPU per request, and **staleness**: the time from a status change in the order
//!   service until each path shows it.
//! - **Sales dashboard**: the analytics server's four views (pre-aggregated, CQRS) against
//!   the same four views computed live by the composer (`/api/v1/sales/dashboard`, which
//!   pages through every order). Both answers are checked to be equal before measuring.
//! - **Scalability**: each path at rising offered load (an open loop at fractions of what
//!   it sustained closed-loop in the same run), and a festival-sale burst.
//! - **Growth**: the shop grows between sizes (more orders seeded on top), and each cost is
//!   measured again.
//!
//! Everything runs in this process (the whole system via `shoplens::System`, the load
//! generator as tokio tasks), so CPU per request is the process's CPU time over the
//! measured window divided by the requests answered: services, composer, ingest, analytics
//! and the load generator together, the same accounting for both paths.
//!
//! Files: `figures` (what `compare.json` holds), `sizes` (the run: the system started once,
//! the shop grown through every size), `clients` (the four paths as a client calls them),
//! `bench` (one round of closed loops and staleness, the load curves), `summary` (medians
//! over runs), `render` and `charts` (the section of `RESULTS.md` and its charts).

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::backend::Backend;
use crate::machine::Machine;
use crate::servers::Servers;

mod bench;
mod charts;
mod clients;
mod figures;
mod render;
mod sizes;
mod summary;

pub use figures::{CompareResults, CurvePoint, PathRun, PathSummary, Round, SizeResult, Staleness};
pub use summary::{StepMedians, curve_medians};

use sizes::measure;

/// The p99 latency (from the scheduled start) an order-tracking load step must meet to count
/// as served: a customer refreshing one order expects an answer at once.
pub const TRACKING_P99_OBJECTIVE: Duration = Duration::from_millis(50);

/// The p99 latency a dashboard load step must meet to count as served: a page of four views
/// a business user waits for.
pub const DASHBOARD_P99_OBJECTIVE: Duration = Duration::from_millis(100);

/// The share of the offered load a step must answer without error, inside its window, to
/// count as served.
pub const SERVED_GOODPUT_SHARE: f64 = 0.95;

/// How long a path may take to show a new order, or its status change, before the
/// staleness sample counts as a miss for that path.
pub const STALENESS_DEADLINE: Duration = Duration::from_secs(10);

/// What to measure, and how long.
#[derive(Clone, Debug, Serialize)]
pub struct CompareOptions {
    pub backend: Backend,
    /// Orders in the shop at each measured size, ascending (the shop grows between them).
    pub sizes: Vec<usize>,
    pub customers: usize,
    pub products: usize,
    pub zipf_exponent: f64,
    pub runs: usize,
    #[serde(with = "secs")]
    pub warmup: Duration,
    #[serde(with = "secs")]
    pub duration: Duration,
    /// Closed-loop workers for order tracking (customers refreshing their orders).
    pub tracking_concurrency: usize,
    /// Closed-loop workers for the dashboard (business users).
    pub dashboard_concurrency: usize,
    /// Status changes timed per run for staleness.
    pub staleness_samples: usize,
    /// Offered load of the scalability curves, as fractions of each path's closed-loop
    /// throughput in the same run (measured at the largest size).
    pub curve_fractions: Vec<f64>,
    #[serde(with = "secs")]
    pub curve_step: Duration,
    /// Festival-sale burst: `base` fraction, then `burst` fraction, then `base` again, one
    /// `curve_step` each.
    pub burst_base: f64,
    pub burst_peak: f64,
    #[serde(skip)]
    pub out: PathBuf,
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            backend: Backend::Embedded,
            sizes: vec![1_000, 5_000],
            customers: 500,
            products: 200,
            zipf_exponent: 1.1,
            runs: 3,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(4),
            tracking_concurrency: 16,
            dashboard_concurrency: 4,
            staleness_samples: 20,
            curve_fractions: vec![0.25, 0.5, 0.75, 1.0, 1.5],
            curve_step: Duration::from_secs(2),
            burst_base: 0.3,
            burst_peak: 1.5,
            out: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        }
    }
}

impl CompareOptions {
    /// Tiny sizes, one short run: checks the harness, not for figures.
    pub fn smoke(out: PathBuf) -> Self {
        CompareOptions {
            sizes: vec![20, 40],
            customers: 10,
            products: 8,
            runs: 1,
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(400),
            tracking_concurrency: 4,
            dashboard_concurrency: 2,
            staleness_samples: 3,
            curve_fractions: vec![0.5, 1.0],
            curve_step: Duration::from_millis(300),
            out,
            ..CompareOptions::default()
        }
    }
}

/// The four paths measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadPath {
    /// Order tracking through the API Composer (`/api/v1/orders/{id}/summary`).
    TrackingComposer,
    /// Order tracking from the read model (`POST /api/v1/sql`).
    TrackingCqrs,
    /// The dashboard from the read model (the analytics server's four views).
    DashboardCqrs,
    /// The dashboard computed live by the composer (`/api/v1/sales/dashboard`).
    DashboardComposer,
}

impl ReadPath {
    pub const ALL: [ReadPath; 4] = [
        ReadPath::TrackingComposer,
        ReadPath::TrackingCqrs,
        ReadPath::DashboardCqrs,
        ReadPath::DashboardComposer,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ReadPath::TrackingComposer => "order tracking via API Composer",
            ReadPath::TrackingCqrs => "order tracking via CQRS read model",
            ReadPath::DashboardCqrs => "sales dashboard via CQRS read model",
            ReadPath::DashboardComposer => "sales dashboard via API Composer (live, all orders)",
        }
    }

    /// The p99 latency a load step of this path must meet to count as served.
    pub fn p99_objective(self) -> Duration {
        match self {
            ReadPath::TrackingComposer | ReadPath::TrackingCqrs => TRACKING_P99_OBJECTIVE,
            ReadPath::DashboardCqrs | ReadPath::DashboardComposer => DASHBOARD_P99_OBJECTIVE,
        }
    }

    pub fn pattern(self) -> &'static str {
        match self {
            ReadPath::TrackingComposer | ReadPath::DashboardComposer => "API Composer",
            ReadPath::TrackingCqrs | ReadPath::DashboardCqrs => "CQRS",
        }
    }
}

/// Runs the comparison and writes `compare.json` (or `compare-clickhouse.json`), the charts
/// and the comparison's section of `RESULTS.md` into `opts.out`.
pub async fn run(opts: &CompareOptions) -> anyhow::Result<CompareResults> {
    anyhow::ensure!(!opts.sizes.is_empty(), "no sizes to measure");
    let started = Instant::now();
    let machine = Machine::detect();
    let mut servers = match opts.backend {
        Backend::Embedded => None,
        Backend::Clickhouse => Some(Servers::from_env_or_start().await?),
    };
    let result = measure(opts, &machine, servers.as_ref(), started).await;
    if let Some(s) = servers.as_mut() {
        s.stop();
    }
    let results = result?;
    crate::report::write(&opts.out, &results)?;
    Ok(results)
}

fn command_line(o: &CompareOptions) -> String {
    let sizes: Vec<String> = o.sizes.iter().map(|s| s.to_string()).collect();
    format!(
        "cargo run --release -p shoplens-benches -- compare --backend {} --orders {} --runs {} \
         --duration-secs {}",
        o.backend.name(),
        sizes.join(","),
        o.runs,
        o.duration.as_secs_f64()
    )
}
