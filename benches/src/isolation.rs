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

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use shoplens_kit::identity::{Identity, Role, issue as issue_token};

use crate::histogram::Histogram;
use crate::machine::Machine;
use crate::results;
use crate::shop::{Shop, ShopSize};

use crate::SECRET;
const TITLE: &str = "Query isolation";

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
pub struct Aim {
    pub name: String,
    pub target: String,
    pub measured: String,
    pub met: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct IsolationResults {
    pub command: String,
    pub machine: Machine,
    pub options: IsolationOptions,
    pub runs: Vec<Run>,
    pub aims: Vec<Aim>,
}

/// The hostile queries the clients cycle through.
const HOSTILE: &[&str] = &[
    "SELECT levenshtein(repeat('a', 200000), repeat('b', 200000))",
    "SELECT count(*) FROM generate_series(1, 200000) a CROSS JOIN generate_series(1, 200000) b",
    "SELECT cardinality(array_agg(value)) FROM generate_series(1, 2000000000)",
    "SELECT length(concat(r, r, r, r, r, r, r, r, r, r, r, r, r, r, r, r)) \
     FROM (SELECT repeat('x', 60000000) AS r)",
];

const SMALL_SQL: &str = "SELECT count(*) AS n, sum(total) AS revenue FROM orders";

pub async fn run(opts: &IsolationOptions) -> anyhow::Result<IsolationResults> {
    let mut runs = Vec::new();
    for r in 0..opts.runs {
        tracing::info!(run = r + 1, of = opts.runs, "isolation run");
        runs.push(one_run(opts).await?);
    }
    let median = |f: fn(&Run) -> f64| results::median(runs.iter().map(f).collect());
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let create_p50 = ratio(
        median(|r| r.create_hostile.p50_ms),
        median(|r| r.create_idle.p50_ms),
    );
    let create_p99 = ratio(
        median(|r| r.create_hostile.p99_ms),
        median(|r| r.create_idle.p99_ms),
    );
    let summary_p50 = ratio(
        median(|r| r.summary_hostile.p50_ms),
        median(|r| r.summary_idle.p50_ms),
    );
    let summary_p99 = ratio(
        median(|r| r.summary_hostile.p99_ms),
        median(|r| r.summary_idle.p99_ms),
    );
    let added = median(|r| r.sql_isolated.p50_ms - r.sql_in_process.p50_ms);
    let aim = |name: &str, target: &str, measured: String, met: bool| Aim {
        name: name.to_owned(),
        target: target.to_owned(),
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
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: Machine::detect(),
        options: opts.clone(),
        runs,
        aims,
    };
    write(&opts.out, &results)?;
    Ok(results)
}

async fn start(opts: &IsolationOptions, isolated: bool) -> anyhow::Result<Shop> {
    let size = ShopSize {
        customers: 200,
        products: 100,
        orders: opts.orders,
        zipf_exponent: 1.0,
    };
    Shop::start_with(&size, |config| {
        config.auth.secret = SECRET.into();
        let q = &mut config.analytics.query;
        q.timeout_ms = 3_000;
        q.workers.enabled = isolated;
        q.workers.memory_mb = 512;
        q.workers.cpu_seconds = 6;
        q.workers.max_concurrent = opts.hostile.max(1);
        q.workers.max_concurrent_per_user = opts.hostile.max(1);
    })
    .await
}

async fn one_run(opts: &IsolationOptions) -> anyhow::Result<Run> {
    let mut run = Run::default();
    let shop = start(opts, true)
        .await
        .context("start the isolated system")?;
    let analytics = shop
        .system
        .info
        .analytics
        .clone()
        .context("no analytics server")?;
    let http = crate::admin_client(reqwest::Client::builder())?;

    // 1. The shop, idle and under hostile queries.
    (run.create_idle, run.summary_idle) = shop_latency(&shop, &http, opts.duration).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut hostile = tokio::task::JoinSet::new();
    for h in 0..opts.hostile {
        let (http, analytics, stop) = (http.clone(), analytics.clone(), stop.clone());
        hostile.spawn(async move {
            let mut answered = 0u64;
            let mut k = h;
            while !stop.load(Ordering::SeqCst) {
                let sql = HOSTILE[k % HOSTILE.len()];
                k += 1;
                if http
                    .post(format!("{analytics}/api/v1/sql"))
                    .json(&serde_json::json!({ "sql": sql }))
                    .send()
                    .await
                    .is_ok()
                {
                    answered += 1;
                }
            }
            answered
        });
    }
    // Let the hostile queries get going before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    (run.create_hostile, run.summary_hostile) = shop_latency(&shop, &http, opts.duration).await;
    stop.store(true, Ordering::SeqCst);
    while let Some(done) = hostile.join_next().await {
        run.hostile_answered += done.unwrap_or(0);
    }

    // 2. What isolation costs a normal query, with a warm pool.
    (run.sql_isolated, run.dashboard_isolated) = query_latency(&http, &analytics, opts).await;
    shop.stop().await;
    let shop = start(opts, false)
        .await
        .context("start the in-process system")?;
    let analytics = shop.system.info.analytics.clone().context("no analytics")?;
    (run.sql_in_process, run.dashboard_in_process) = query_latency(&http, &analytics, opts).await;
    shop.stop().await;
    Ok(run)
}

/// Order creation and Order Summary latency, two closed-loop clients each, for `duration`.
async fn shop_latency(
    shop: &Shop,
    http: &reqwest::Client,
    duration: Duration,
) -> (Latency, Latency) {
    let until = Instant::now() + duration;
    let customers = shop.catalogue.customers.clone();
    let products = shop.catalogue.products.clone();
    let orders = shop.reads.ids();
    let mut creators = tokio::task::JoinSet::new();
    for c in 0..2usize {
        let (http, url) = (http.clone(), shop.urls.order.clone());
        let (customers, products) = (customers.clone(), products.clone());
        creators.spawn(async move {
            let (mut h, mut errors, mut k) = (Histogram::default(), 0u64, c);
            while Instant::now() < until {
                k += 2;
                let body = serde_json::json!({
                    "customer_id": customers[k % customers.len()],
                    "lines": [{"product_id": products[k % products.len()], "quantity": 1}],
                });
                let started = Instant::now();
                match http
                    .post(format!("{url}/api/v1/orders"))
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => h.record(started.elapsed()),
                    _ => errors += 1,
                }
            }
            (h, errors)
        });
    }
    let mut readers = tokio::task::JoinSet::new();
    for c in 0..2usize {
        let (http, url) = (http.clone(), shop.system.info.composer.clone());
        let orders = orders.clone();
        readers.spawn(async move {
            let token = issue_token(
                SECRET,
                &Identity::new("admin", Role::Admin),
                Duration::from_secs(3600),
            );
            let (mut h, mut errors, mut k) = (Histogram::default(), 0u64, c);
            while Instant::now() < until {
                k += 7;
                let id = &orders[k % orders.len()];
                let started = Instant::now();
                match http
                    .get(format!("{url}/api/v1/orders/{id}/summary"))
                    .bearer_auth(&token)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => h.record(started.elapsed()),
                    _ => errors += 1,
                }
            }
            (h, errors)
        });
    }
    let gather = |mut set: tokio::task::JoinSet<(Histogram, u64)>| async move {
        let (mut all, mut errors) = (Histogram::default(), 0);
        while let Some(Ok((h, e))) = set.join_next().await {
            all.merge(&h);
            errors += e;
        }
        Latency::of(&all, errors)
    };
    (gather(creators).await, gather(readers).await)
}

/// A small SQL query and a dashboard view, one request at a time.
async fn query_latency(
    http: &reqwest::Client,
    analytics: &str,
    opts: &IsolationOptions,
) -> (Latency, Latency) {
    let mut out = Vec::new();
    for (is_sql, path) in [(true, "/api/v1/sql"), (false, "/api/v1/dashboard/daily")] {
        let (mut h, mut errors) = (Histogram::default(), 0u64);
        // Warm-up: caches, connections, the worker's first query.
        for i in 0..opts.samples + 20 {
            let started = Instant::now();
            let request = if is_sql {
                http.post(format!("{analytics}{path}"))
                    .json(&serde_json::json!({ "sql": SMALL_SQL }))
            } else {
                http.get(format!("{analytics}{path}"))
            };
            let ok = match request.send().await {
                Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                _ => false,
            };
            if i >= 20 {
                if ok {
                    h.record(started.elapsed());
                } else {
                    errors += 1;
                }
            }
        }
        out.push(Latency::of(&h, errors));
    }
    let dashboard = out.pop().unwrap_or_default();
    (out.pop().unwrap_or_default(), dashboard)
}

fn write(dir: &std::path::Path, r: &IsolationResults) -> anyhow::Result<()> {
    let data = results::data_dir(dir);
    std::fs::create_dir_all(&data)?;
    std::fs::write(data.join("isolation.json"), serde_json::to_vec_pretty(r)?)?;
    results::write_section(dir, TITLE, &markdown(r))
}

/// The "Query isolation" section of `RESULTS.md`.
pub fn markdown(r: &IsolationResults) -> String {
    use std::fmt::Write as _;
    let m = &r.machine;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Command: `{}`{}\n",
        r.command,
        if r.options.smoke {
            " (smoke run: sizes too small for figures)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        t,
        "- Date {}, commit {}, {} build; {} cores, {} MiB. The whole system runs in the \
         benchmark's process (embedded default), the load generator too; query workers are \
         child processes at nice 10.",
        m.date,
        m.git_commit.as_deref().unwrap_or("unknown"),
        m.profile,
        m.cores,
        m.memory_mib.unwrap_or(0)
    );
    let o = &r.options;
    let _ = writeln!(
        t,
        "- {} orders seeded; {} s per phase; {} hostile clients cycling CPU and memory bombs \
         (deadline 3 s, 512 MiB and 6 CPU-s per worker); {} sequential requests per query \
         shape; medians of {} runs.\n",
        o.orders,
        o.duration.as_secs_f64(),
        o.hostile,
        o.samples,
        o.runs
    );
    let median = |f: &dyn Fn(&Run) -> f64| results::median(r.runs.iter().map(f).collect());
    let _ = writeln!(
        t,
        "| path | idle p50 ms | idle p99 ms | hostile p50 ms | hostile p99 ms | errors |"
    );
    let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|");
    for (name, idle, hostile) in [
        (
            "order creation",
            (|r: &Run| &r.create_idle) as fn(&Run) -> &Latency,
            (|r: &Run| &r.create_hostile) as fn(&Run) -> &Latency,
        ),
        (
            "Order Summary",
            |r: &Run| &r.summary_idle,
            |r: &Run| &r.summary_hostile,
        ),
    ] {
        let _ = writeln!(
            t,
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            median(&|r| idle(r).p50_ms),
            median(&|r| idle(r).p99_ms),
            median(&|r| hostile(r).p50_ms),
            median(&|r| hostile(r).p99_ms),
            r.runs
                .iter()
                .map(|r| idle(r).errors + hostile(r).errors)
                .sum::<u64>()
        );
    }
    let _ = writeln!(
        t,
        "\nHostile queries answered (every one an error: deadline, memory, CPU or too busy): \
         {} in all runs.\n",
        r.runs.iter().map(|r| r.hostile_answered).sum::<u64>()
    );
    let _ = writeln!(
        t,
        "| query | in process p50 ms | p99 ms | query workers p50 ms | p99 ms | added p50 ms |"
    );
    let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|");
    for (name, inproc, iso) in [
        (
            "small SQL (`POST /api/v1/sql`)",
            (|r: &Run| &r.sql_in_process) as fn(&Run) -> &Latency,
            (|r: &Run| &r.sql_isolated) as fn(&Run) -> &Latency,
        ),
        (
            "dashboard daily view (in process in both)",
            |r: &Run| &r.dashboard_in_process,
            |r: &Run| &r.dashboard_isolated,
        ),
    ] {
        let _ = writeln!(
            t,
            "| {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            median(&|r| inproc(r).p50_ms),
            median(&|r| inproc(r).p99_ms),
            median(&|r| iso(r).p50_ms),
            median(&|r| iso(r).p99_ms),
            median(&|r| iso(r).p50_ms - inproc(r).p50_ms),
        );
    }
    let _ = writeln!(t, "\n| aim | target | measured | met |");
    let _ = writeln!(t, "|---|---|---|---|");
    for a in &r.aims {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} |",
            a.name,
            a.target,
            a.measured,
            if a.met { "yes" } else { "no" }
        );
    }
    t
}
