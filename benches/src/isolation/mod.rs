//! Query isolation: what hostile queries do to the shop, and what running ad-hoc queries in
//! worker processes costs a normal query.
//!
//! 1. **The shop under hostile queries.** The whole system in this process (embedded
//!    default); order creation (`POST /api/v1/orders`) and the Order Summary API measured
//!    closed-loop while nothing else runs (idle), then while `hostile` clients keep the
//!    analytics server's query workers busy with CPU and memory bombs. Aim: p50 and p99 under
//!    hostile load within 2x of idle.
//! 2. **What isolation costs.** A small SQL query (`POST /api/v1/sql`) and a dashboard view,
//!    sequentially, with a warm worker pool against the same system with
//!    `analytics.query.workers.enabled = false` (queries in the server process, as before
//!    isolation). Aim: under 1 ms added at p50. Dashboard views run in the server process in
//!    both (fixed SQL over the aggregate tables), so their difference is the noise floor.
//!
//! Files: `measure` (one run: the systems started, the shop and the queries timed), `render`
//! (the section of `RESULTS.md`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::histogram::Histogram;
use crate::machine::Machine;
use crate::report;
use crate::results::{self, Aim};

mod measure;
mod render;

use measure::one_run;

/// What the scenario runs.
#[derive(Clone, Debug, Serialize)]
pub struct IsolationOptions {
    #[serde(skip)]
    pub out: PathBuf,
    /// Orders seeded before measuring.
    pub orders: usize,
    /// Measured seconds per phase.
    pub duration: Duration,
    /// Hostile clients at once.
    pub hostile: usize,
    /// Requests per query shape for the isolation cost.
    pub samples: usize,
    pub runs: usize,
    pub smoke: bool,
    /// The CPUs the query workers may run on; empty: any.
    pub worker_cpus: Vec<usize>,
    /// Which hostile queries the clients cycle through.
    pub bombs: Bombs,
    /// `analytics.query.workers.cool_down_ms`; `None`: the product's default.
    pub cool_down_ms: Option<u64>,
}

/// The kinds of hostile query.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Bombs {
    /// CPU and memory bombs, in turn.
    #[default]
    All,
    /// Queries that spin until the deadline or the CPU cap.
    Cpu,
    /// Queries that allocate until the memory cap.
    Memory,
}

impl Default for IsolationOptions {
    fn default() -> Self {
        IsolationOptions {
            out: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"))),
            orders: 500,
            duration: Duration::from_secs(10),
            hostile: 4,
            samples: 500,
            runs: 3,
            smoke: false,
            worker_cpus: Vec::new(),
            bombs: Bombs::All,
            cool_down_ms: None,
        }
    }
}

impl IsolationOptions {
    pub fn smoke(out: PathBuf) -> IsolationOptions {
        IsolationOptions {
            out,
            orders: 30,
            duration: Duration::from_secs(2),
            hostile: 2,
            samples: 20,
            runs: 1,
            smoke: true,
            worker_cpus: Vec::new(),
            bombs: Bombs::All,
            cool_down_ms: None,
        }
    }
}

/// Latency figures of one measured path.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Latency {
    fn of(h: &Histogram, errors: u64) -> Latency {
        Latency {
            requests: h.count(),
            errors,
            p50_ms: h.quantile_ms(0.5),
            p99_ms: h.quantile_ms(0.99),
        }
    }
}

/// One run's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Run {
    pub create_idle: Latency,
    pub create_hostile: Latency,
    pub summary_idle: Latency,
    pub summary_hostile: Latency,
    /// Hostile queries answered (each with an error: deadline, memory, CPU, too busy).
    pub hostile_answered: u64,
    pub sql_isolated: Latency,
    pub sql_in_process: Latency,
    pub dashboard_isolated: Latency,
    pub dashboard_in_process: Latency,
}

#[derive(Clone, Debug, Serialize)]
pub struct IsolationResults {
    pub command: String,
    pub machine: Machine,
    pub options: IsolationOptions,
    pub runs: Vec<Run>,
    pub aims: Vec<Aim>,
}

/// Picks one measured path out of a run.
type Pick = fn(&Run) -> &Latency;

/// The median over `runs` of `f`.
fn median(runs: &[Run], f: &dyn Fn(&Run) -> f64) -> f64 {
    results::median(runs.iter().map(f).collect())
}

/// Runs the isolation scenario and writes `isolation.json` and the "Query isolation"
/// section of `RESULTS.md` into `opts.out`.
pub async fn run(opts: &IsolationOptions) -> anyhow::Result<IsolationResults> {
    let mut runs = Vec::new();
    for r in 0..opts.runs {
        tracing::info!(run = r + 1, of = opts.runs, "isolation run");
        runs.push(one_run(opts).await?);
    }
    // Latency under hostile queries over latency idle, at p50 and at p99.
    let slowdown = |idle: Pick, hostile: Pick| {
        let ratio = |q: fn(&Latency) -> f64| {
            let idle = median(&runs, &|r| q(idle(r)));
            if idle > 0.0 {
                median(&runs, &|r| q(hostile(r))) / idle
            } else {
                f64::NAN
            }
        };
        (ratio(|l| l.p50_ms), ratio(|l| l.p99_ms))
    };
    let (create_p50, create_p99) = slowdown(|r| &r.create_idle, |r| &r.create_hostile);
    let (summary_p50, summary_p99) = slowdown(|r| &r.summary_idle, |r| &r.summary_hostile);
    let added = median(&runs, &|r| r.sql_isolated.p50_ms - r.sql_in_process.p50_ms);
    let aim = |name: &str, target: &str, measured: String, met: bool| Aim {
        name: name.to_owned(),
        target: Some(target.to_owned()),
        measured,
        met,
    };
    let aims = vec![
        aim(
            "order creation under hostile queries",
            "p50 and p99 within 2x of idle",
            format!("p50 {create_p50:.2}x, p99 {create_p99:.2}x"),
            create_p50 <= 2.0 && create_p99 <= 2.0,
        ),
        aim(
            "Order Summary under hostile queries",
            "p50 and p99 within 2x of idle",
            format!("p50 {summary_p50:.2}x, p99 {summary_p99:.2}x"),
            summary_p50 <= 2.0 && summary_p99 <= 2.0,
        ),
        aim(
            "what isolation adds to a small SQL query",
            "under 1 ms at p50",
            format!("{added:.3} ms"),
            added < 1.0,
        ),
    ];
    let results = IsolationResults {
        // As the README says to run it, whatever the binary was called as.
        command: std::iter::once("cargo run --release -p shoplens-benches --".to_owned())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" "),
        machine: Machine::detect(),
        options: opts.clone(),
        runs,
        aims,
    };
    report::write(&opts.out, &results)?;
    Ok(results)
}
