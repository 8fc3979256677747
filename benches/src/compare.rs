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

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};
use shoplens_kit::identity::{Identity, Role, issue as issue_token};
use tokio::time::Instant;

use crate::ingest::Backend;
use crate::load::{LoadResult, Outcome, Window, closed_loop, open_loop};
use crate::machine::{Machine, crate_versions, proc_status_mib, process_cpu_secs};
use crate::results::median;
use crate::servers::Servers;
use crate::shop::{ReadSet, Shop, ShopSize};

use crate::SECRET;
/// Open-loop requests in flight at most (beyond that they are counted as dropped).
const MAX_IN_FLIGHT: usize = 1024;

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

    pub fn pattern(self) -> &'static str {
        match self {
            ReadPath::TrackingComposer | ReadPath::DashboardComposer => "API Composer",
            ReadPath::TrackingCqrs | ReadPath::DashboardCqrs => "CQRS",
        }
    }
}

/// One closed-loop measurement of one path.
#[derive(Clone, Debug, Serialize)]
pub struct PathRun {
    pub path: ReadPath,
    pub requests: u64,
    pub errors: u64,
    pub throughput_rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Process CPU milliseconds per answered request (everything in this process).
    pub cpu_ms_per_request: f64,
}

/// Staleness samples of one run, in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Staleness {
    pub composer_ms: Vec<f64>,
    pub cqrs_ms: Vec<f64>,
    /// Samples where a path did not show the change within the limit (10 s).
    pub composer_timeouts: u64,
    pub cqrs_timeouts: u64,
}

/// One measured round at one size.
#[derive(Clone, Debug, Serialize)]
pub struct Round {
    pub run: usize,
    pub paths: Vec<PathRun>,
    pub staleness: Staleness,
}

/// One step of a scalability curve.
#[derive(Clone, Debug, Serialize)]
pub struct CurvePoint {
    pub path: ReadPath,
    pub run: usize,
    /// `curve` (a fraction of the closed-loop throughput) or `burst-base`/`burst-peak`/
    /// `burst-after`.
    pub phase: String,
    pub fraction: f64,
    pub offered_rps: f64,
    /// Answered without error per second.
    pub goodput_rps: f64,
    pub errors: u64,
    pub dropped: u64,
    /// From each request's scheduled start (queueing included).
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Medians over runs of one path at one size.
#[derive(Clone, Debug, Serialize)]
pub struct PathSummary {
    pub path: ReadPath,
    pub throughput_rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub cpu_ms_per_request: f64,
    pub errors: u64,
}

/// Everything measured at one size.
#[derive(Clone, Debug, Serialize)]
pub struct SizeResult {
    pub orders: usize,
    /// Events the services had published when measuring began (the read model's size).
    pub events: u64,
    pub seed_secs: f64,
    /// Seconds from the end of seeding until the read model answered the dashboard with
    /// the live figures.
    pub catch_up_secs: f64,
    /// The composer's live dashboard and the read model's four views gave the same rows.
    pub same_numbers: bool,
    pub rounds: Vec<Round>,
    pub summary: Vec<PathSummary>,
    /// Median over runs of p50(composer) / p50(CQRS), per requirement, from the same run.
    pub tracking_p50_ratio: f64,
    pub dashboard_p50_ratio: f64,
    pub dashboard_cpu_ratio: f64,
    pub staleness_composer_p50_ms: f64,
    pub staleness_composer_p99_ms: f64,
    pub staleness_cqrs_p50_ms: f64,
    pub staleness_cqrs_p99_ms: f64,
    /// This process's resident memory (the whole system and the load generator), MiB:
    /// when measuring began at this size, when it ended, and the peak so far (VmHWM).
    pub rss_start_mib: f64,
    pub rss_end_mib: f64,
    pub peak_rss_mib: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Versions {
    pub crates: Vec<(String, String)>,
    pub clickhouse: Option<String>,
    pub broker: Option<String>,
}

/// The whole comparison.
#[derive(Clone, Debug, Serialize)]
pub struct CompareResults {
    pub machine: Machine,
    pub versions: Versions,
    pub options: CompareOptions,
    pub command: String,
    pub total_secs: f64,
    pub sizes: Vec<SizeResult>,
    /// At the largest size.
    pub curves: Vec<CurvePoint>,
    pub notes: Vec<String>,
}

/// The order-tracking question as SQL on the read model: the order's latest status and
/// where its shipment last was (a row each, `field` and `value`; no shipment, no row).
fn tracking_sql(order_id: &str) -> String {
    format!(
        "SELECT 'status' AS field, to_status AS value FROM \
           (SELECT to_status, occurred_at FROM order_status_changes \
            WHERE order_id = '{order_id}' ORDER BY occurred_at DESC LIMIT 1) s \
         UNION ALL \
         SELECT 'location', location FROM \
           (SELECT location, occurred_at FROM shipment_events \
            WHERE order_id = '{order_id}' ORDER BY occurred_at DESC LIMIT 1) l"
    )
}

/// The four dashboard views the page loads, as the analytics server serves them.
const DASHBOARD_VIEWS: [(&str, &str, &str); 4] = [
    ("daily", "daily", ""),
    ("top-products", "top_products", "&limit=10"),
    ("top-customers", "top_customers", "&limit=10"),
    ("trends", "trends", "&period=month"),
];

/// The client side of the running system.
#[derive(Clone)]
struct Clients {
    http: reqwest::Client,
    composer: Arc<str>,
    analytics: Arc<str>,
    order: Arc<str>,
    auth: Arc<str>,
    /// `from=..&to=..`: the last 30 days, through tomorrow (UTC) so a run across midnight
    /// still sees its data.
    range: Arc<str>,
}

impl Clients {
    async fn summary_status(&self, id: &str) -> anyhow::Result<Option<String>> {
        let resp = self
            .http
            .get(format!("{}/api/v1/orders/{id}/summary", self.composer))
            .header("authorization", &*self.auth)
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "summary {}", resp.status());
        let v: Value = resp.json().await?;
        Ok(v["order"]["data"]["status"].as_str().map(str::to_owned))
    }

    async fn cqrs_status(&self, id: &str) -> anyhow::Result<Option<String>> {
        let resp = self
            .http
            .post(format!("{}/api/v1/sql", self.analytics))
            .header("content-type", "text/plain")
            .body(tracking_sql(id))
            .send()
            .await?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "sql {status}: {v}");
        Ok(v["rows"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["field"] == "status"))
            .and_then(|r| r["value"].as_str())
            .map(str::to_owned))
    }

    async fn get_json(&self, url: String, auth: bool) -> anyhow::Result<Value> {
        let mut req = self.http.get(&url);
        if auth {
            req = req.header("authorization", &*self.auth);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "GET {url}: {status} {body}");
        Ok(body)
    }

    async fn live_dashboard(&self) -> anyhow::Result<Value> {
        self.get_json(
            format!(
                "{}/api/v1/sales/dashboard?{}&limit=10&period=month",
                self.composer, self.range
            ),
            true,
        )
        .await
    }

    /// The page's four requests, at once (as the page sends them).
    async fn cqrs_dashboard(&self) -> anyhow::Result<Vec<Value>> {
        let calls = DASHBOARD_VIEWS.map(|(path, _, extra)| {
            self.get_json(
                format!(
                    "{}/api/v1/dashboard/{path}?{}{extra}",
                    self.analytics, self.range
                ),
                false,
            )
        });
        let [a, b, c, d] = calls;
        let (a, b, c, d) = tokio::try_join!(a, b, c, d)?;
        Ok(vec![a, b, c, d])
    }

    async fn request(&self, path: ReadPath, order_id: String) -> Outcome {
        let ok = match path {
            ReadPath::TrackingComposer => {
                matches!(self.summary_status(&order_id).await, Ok(Some(_)))
            }
            ReadPath::TrackingCqrs => matches!(self.cqrs_status(&order_id).await, Ok(Some(_))),
            ReadPath::DashboardCqrs => self.cqrs_dashboard().await.is_ok(),
            ReadPath::DashboardComposer => self.live_dashboard().await.is_ok(),
        };
        Outcome {
            ok,
            ..Outcome::default()
        }
    }

    /// Whether the read model's four views equal the live composition (the rows of each).
    async fn same_dashboard(&self) -> anyhow::Result<Option<String>> {
        let live = self.live_dashboard().await?;
        let cqrs = self.cqrs_dashboard().await?;
        for ((_, key, _), answer) in DASHBOARD_VIEWS.iter().zip(&cqrs) {
            if answer["rows"] != live[*key] {
                return Ok(Some(format!(
                    "{key}: read model {} live {}",
                    answer["rows"], live[*key]
                )));
            }
        }
        Ok(None)
    }
}

fn summarize(rs: &LoadResult, cpu_secs: f64, path: ReadPath) -> PathRun {
    let answered = rs.requests.saturating_sub(rs.errors).max(1);
    PathRun {
        path,
        requests: rs.requests,
        errors: rs.errors,
        throughput_rps: rs.throughput(),
        p50_ms: rs.latency.quantile_ms(0.5),
        p99_ms: rs.latency.quantile_ms(0.99),
        cpu_ms_per_request: cpu_secs * 1000.0 / answered as f64,
    }
}

struct Bench<'a> {
    opts: &'a CompareOptions,
    clients: Clients,
    reads: ReadSet,
}

impl Bench<'_> {
    fn concurrency(&self, path: ReadPath) -> usize {
        match path {
            ReadPath::TrackingComposer | ReadPath::TrackingCqrs => self.opts.tracking_concurrency,
            ReadPath::DashboardCqrs | ReadPath::DashboardComposer => {
                self.opts.dashboard_concurrency
            }
        }
    }

    async fn closed(&self, path: ReadPath, seed: u64) -> PathRun {
        let clients = self.clients.clone();
        let request = move |id: String| {
            let clients = clients.clone();
            async move { clients.request(path, id).await }
        };
        let c = self.concurrency(path);
        let e = self.opts.zipf_exponent;
        // Warm-up unmeasured, then the measured window with its CPU time.
        closed_loop(
            self.reads.clone(),
            e,
            seed,
            c,
            Window::new(Duration::ZERO, self.opts.warmup),
            request.clone(),
        )
        .await;
        let cpu0 = process_cpu_secs();
        let rs = closed_loop(
            self.reads.clone(),
            e,
            seed + 1,
            c,
            Window::new(Duration::ZERO, self.opts.duration),
            request,
        )
        .await;
        summarize(&rs, process_cpu_secs() - cpu0, path)
    }

    async fn open(&self, path: ReadPath, rate: f64, seed: u64, step: Duration) -> LoadResult {
        let clients = self.clients.clone();
        let request = move |id: String| {
            let clients = clients.clone();
            async move { clients.request(path, id).await }
        };
        open_loop(
            self.reads.clone(),
            self.opts.zipf_exponent,
            seed,
            rate,
            MAX_IN_FLIGHT,
            Window::new(Duration::ZERO, step),
            request,
        )
        .await
    }

    /// Places a new order, lets both paths see it as `Placed`, moves it to `Paid`, and
    /// times how long each path takes to show `Paid`.
    async fn staleness_sample(
        &self,
        shop: &Shop,
        k: usize,
    ) -> anyhow::Result<(Option<f64>, Option<f64>)> {
        let c = &self.clients;
        let cat = &shop.catalogue;
        let body = json!({
            "customer_id": cat.customers[k % cat.customers.len()],
            "lines": [{"product_id": cat.products[k % cat.products.len()], "quantity": 1}],
        });
        let resp = c
            .http
            .post(format!("{}/api/v1/orders", c.order))
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "placing an order: {}",
            resp.status()
        );
        let order: Value = resp.json().await?;
        let id = order["id"].as_str().context("order without id")?.to_owned();
        // Both paths have seen the order as it is (the composer has it cached).
        let limit = Duration::from_secs(10);
        let placed = Some("Placed".to_owned());
        let start = Instant::now();
        while c.summary_status(&id).await? != placed || c.cqrs_status(&id).await? != placed {
            anyhow::ensure!(start.elapsed() < limit, "order {id} never showed as Placed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let resp = c
            .http
            .post(format!("{}/api/v1/orders/{id}/status", c.order))
            .json(&json!({"status": "Paid"}))
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "paying: {}", resp.status());
        let changed = Instant::now();
        let paid = Some("Paid".to_owned());
        let watch = |composer: bool| {
            let id = id.clone();
            let paid = paid.clone();
            async move {
                loop {
                    let seen = if composer {
                        c.summary_status(&id).await.ok().flatten()
                    } else {
                        c.cqrs_status(&id).await.ok().flatten()
                    };
                    if seen == paid {
                        return Some(changed.elapsed().as_secs_f64() * 1000.0);
                    }
                    if changed.elapsed() > limit {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        };
        Ok(tokio::join!(watch(true), watch(false)))
    }

    async fn staleness(&self, shop: &Shop, run: usize) -> anyhow::Result<Staleness> {
        let mut s = Staleness::default();
        for k in 0..self.opts.staleness_samples {
            let (composer, cqrs) = self.staleness_sample(shop, run * 1000 + k).await?;
            match composer {
                Some(ms) => s.composer_ms.push(ms),
                None => s.composer_timeouts += 1,
            }
            match cqrs {
                Some(ms) => s.cqrs_ms.push(ms),
                None => s.cqrs_timeouts += 1,
            }
        }
        Ok(s)
    }

    async fn round(&self, shop: &Shop, run: usize) -> anyhow::Result<Round> {
        let mut paths = Vec::new();
        for (i, path) in ReadPath::ALL.into_iter().enumerate() {
            tracing::info!(run, path = path.label(), "closed loop");
            paths.push(self.closed(path, (run * 100 + i * 10) as u64).await);
        }
        tracing::info!(run, "staleness");
        let staleness = self.staleness(shop, run).await?;
        Ok(Round {
            run,
            paths,
            staleness,
        })
    }

    async fn curves(&self, round: &Round, run: usize) -> Vec<CurvePoint> {
        let mut points = Vec::new();
        for path in ReadPath::ALL {
            let max = round
                .paths
                .iter()
                .find(|p| p.path == path)
                .map_or(1.0, |p| p.throughput_rps.max(1.0));
            let mut steps: Vec<(String, f64)> = self
                .opts
                .curve_fractions
                .iter()
                .map(|f| ("curve".to_owned(), *f))
                .collect();
            steps.push(("burst-base".into(), self.opts.burst_base));
            steps.push(("burst-peak".into(), self.opts.burst_peak));
            steps.push(("burst-after".into(), self.opts.burst_base));
            for (i, (phase, fraction)) in steps.into_iter().enumerate() {
                let rate = (max * fraction).max(1.0);
                tracing::info!(run, path = path.label(), phase, rate, "open loop");
                let rs = self
                    .open(path, rate, (run * 1000 + i) as u64, self.opts.curve_step)
                    .await;
                points.push(CurvePoint {
                    path,
                    run,
                    phase,
                    fraction,
                    offered_rps: rate,
                    goodput_rps: rs.requests.saturating_sub(rs.errors) as f64
                        / rs.window_secs.max(1e-9),
                    errors: rs.errors,
                    dropped: rs.dropped,
                    p50_ms: rs.latency.quantile_ms(0.5),
                    p99_ms: rs.latency.quantile_ms(0.99),
                });
            }
        }
        points
    }
}

fn size_summary(rounds: &[Round]) -> Vec<PathSummary> {
    ReadPath::ALL
        .iter()
        .map(|&path| {
            let runs: Vec<&PathRun> = rounds
                .iter()
                .flat_map(|r| r.paths.iter().filter(move |p| p.path == path))
                .collect();
            let med = |f: fn(&PathRun) -> f64| median(runs.iter().map(|r| f(r)).collect());
            PathSummary {
                path,
                throughput_rps: med(|r| r.throughput_rps),
                p50_ms: med(|r| r.p50_ms),
                p99_ms: med(|r| r.p99_ms),
                cpu_ms_per_request: med(|r| r.cpu_ms_per_request),
                errors: runs.iter().map(|r| r.errors).sum(),
            }
        })
        .collect()
}

/// Median over runs of `num / den` for one figure, both from the same run.
fn ratio(rounds: &[Round], num: ReadPath, den: ReadPath, f: fn(&PathRun) -> f64) -> f64 {
    median(
        rounds
            .iter()
            .filter_map(|r| {
                let get = |p: ReadPath| r.paths.iter().find(|x| x.path == p).map(f);
                Some(get(num)? / get(den)?)
            })
            .collect(),
    )
}

fn rss(field: &str) -> f64 {
    proc_status_mib("self", field).unwrap_or(f64::NAN)
}

fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Events the services have published: the read model's raw row count.
async fn events_in_read_model(c: &Clients) -> anyhow::Result<u64> {
    let resp = c
        .http
        .post(format!("{}/api/v1/sql", c.analytics))
        .header("content-type", "text/plain")
        .body(
            "SELECT (SELECT count(*) FROM customer_events) + (SELECT count(*) FROM product_events) \
             + (SELECT count(*) FROM orders) + (SELECT count(*) FROM order_status_changes) \
             + (SELECT count(*) FROM product_purchases) + (SELECT count(*) FROM payment_events) \
             + (SELECT count(*) FROM shipment_events) AS n",
        )
        .send()
        .await?;
    let v: Value = resp.json().await?;
    v["rows"][0]["n"].as_u64().context("no event count")
}

/// Waits (at most 120 s) until the read model answers the dashboard with the live figures:
/// the seconds waited, and whether it did.
async fn catch_up(c: &Clients) -> (f64, bool) {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(120) {
        match c.same_dashboard().await {
            Ok(None) => return (start.elapsed().as_secs_f64(), true),
            Ok(Some(diff)) => last = diff,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tracing::warn!(difference = %last.chars().take(400).collect::<String>(),
        "the read model did not come to the live figures within 120 s");
    (start.elapsed().as_secs_f64(), false)
}

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
    crate::results::write_compare(&opts.out, &results)?;
    Ok(results)
}

async fn measure(
    opts: &CompareOptions,
    machine: &Machine,
    servers: Option<&Servers>,
    started: Instant,
) -> anyhow::Result<CompareResults> {
    let mut sizes = opts.sizes.clone();
    sizes.sort_unstable();
    let size = ShopSize {
        customers: opts.customers,
        products: opts.products,
        orders: sizes[0],
        zipf_exponent: opts.zipf_exponent,
    };
    let database = format!("bench_compare_{}", std::process::id());
    tracing::info!(
        ?size,
        backend = opts.backend.name(),
        "starting and seeding the shop"
    );
    let mut shop = Shop::start_with(&size, |config| {
        config.auth.secret = SECRET.into();
        if let Some(s) = servers {
            config.bus.kind = shoplens::config::BusKind::Kafka;
            config.bus.kafka.brokers = s.kafka_brokers.clone();
            config.read_model.kind = shoplens_ingest::startup::ReadModelKind::Clickhouse;
            config.read_model.clickhouse.url = s.clickhouse_url.clone();
            config.read_model.clickhouse.database = database.clone();
        }
    })
    .await?;
    let today = chrono::Utc::now().date_naive();
    let info = &shop.system.info;
    let clients = Clients {
        http: crate::admin_client(reqwest::Client::builder().pool_max_idle_per_host(4096))?,
        composer: info.composer.as_str().into(),
        analytics: info
            .analytics
            .clone()
            .context("the analytics server is not running")?
            .into(),
        order: info.order.as_str().into(),
        auth: format!(
            "Bearer {}",
            issue_token(
                SECRET,
                &Identity::new("admin", Role::Admin),
                Duration::from_secs(24 * 3600)
            )
        )
        .into(),
        range: format!(
            "from={}&to={}",
            today - chrono::Duration::days(29),
            today + chrono::Duration::days(1)
        )
        .into(),
    };
    let outcome = async {
        let mut results = Vec::new();
        let mut curves = Vec::new();
        let mut seed_secs = shop.seed_secs;
        let mut have = sizes[0];
        for (si, &orders) in sizes.iter().enumerate() {
            if orders > have {
                tracing::info!(orders, "growing the shop");
                seed_secs = shop.grow(&size, orders - have, 42 + si as u64).await?;
                have = orders;
            }
            let (catch_up_secs, same_numbers) = catch_up(&clients).await;
            let events = events_in_read_model(&clients).await.unwrap_or(0);
            tracing::info!(orders, events, catch_up_secs, same_numbers, "measuring");
            let rss_start_mib = rss("VmRSS:");
            let bench = Bench {
                opts,
                clients: clients.clone(),
                reads: ReadSet::new(shop.reads.ids(), orders),
            };
            let mut rounds = Vec::new();
            for run in 1..=opts.runs.max(1) {
                let round = bench.round(&shop, run).await?;
                if si + 1 == sizes.len() {
                    curves.extend(bench.curves(&round, run).await);
                }
                rounds.push(round);
            }
            let stale = |f: fn(&Staleness) -> &Vec<f64>| -> Vec<f64> {
                rounds
                    .iter()
                    .flat_map(|r| f(&r.staleness).clone())
                    .collect()
            };
            let (sc, sq) = (stale(|s| &s.composer_ms), stale(|s| &s.cqrs_ms));
            results.push(SizeResult {
                orders,
                events,
                seed_secs,
                catch_up_secs,
                same_numbers,
                summary: size_summary(&rounds),
                tracking_p50_ratio: ratio(
                    &rounds,
                    ReadPath::TrackingCqrs,
                    ReadPath::TrackingComposer,
                    |p| p.p50_ms,
                ),
                dashboard_p50_ratio: ratio(
                    &rounds,
                    ReadPath::DashboardComposer,
                    ReadPath::DashboardCqrs,
                    |p| p.p50_ms,
                ),
                dashboard_cpu_ratio: ratio(
                    &rounds,
                    ReadPath::DashboardComposer,
                    ReadPath::DashboardCqrs,
                    |p| p.cpu_ms_per_request,
                ),
                staleness_composer_p50_ms: quantile(sc.clone(), 0.5),
                staleness_composer_p99_ms: quantile(sc, 0.99),
                staleness_cqrs_p50_ms: quantile(sq.clone(), 0.5),
                staleness_cqrs_p99_ms: quantile(sq, 0.99),
                rss_start_mib,
                rss_end_mib: rss("VmRSS:"),
                peak_rss_mib: rss("VmHWM:"),
                rounds,
            });
        }
        Ok::<_, anyhow::Error>((results, curves))
    }
    .await;
    shop.stop().await;
    let (sizes, curves) = outcome?;
    Ok(CompareResults {
        machine: machine.clone(),
        versions: Versions {
            crates: crate_versions(&[
                "datafusion",
                "tokio",
                "reqwest",
                "moka",
                "rdkafka",
                "clickhouse",
            ]),
            clickhouse: servers.map(|s| s.clickhouse_version.clone()),
            broker: servers.map(|s| s.broker_version.clone()),
        },
        options: opts.clone(),
        command: command_line(opts),
        total_secs: started.elapsed().as_secs_f64(),
        sizes,
        curves,
        notes: notes(opts.backend),
    })
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

fn notes(backend: Backend) -> Vec<String> {
    let mut notes: Vec<String> = [
        "Order tracking, API Composer: GET /api/v1/orders/{id}/summary with an admin token, the \
         product's default composer (short-TTL cache with request coalescing, eviction by \
         events); orders picked Zipf by recency among the size's orders.",
        "Order tracking, CQRS: POST /api/v1/sql on the analytics server with the order's latest \
         status (order_status_changes) and latest shipment location (shipment_events) as one \
         query; the same orders.",
        "Sales dashboard, CQRS: the four requests the dashboard page sends at once (daily, \
         top-products, top-customers, trends) over the last 30 days; latency until all four \
         answered. API Composer: GET /api/v1/sales/dashboard on the composer, which pages \
         through every order of the order service (500 per page) and looks up names, answering \
         the same four views. Before measuring at each size both answers are compared row by \
         row (same_numbers).",
        "Closed loop: the given workers send back to back for the measured window after an \
         unmeasured warm-up; CPU per request = this process's CPU time over the window (all \
         services, composer, ingest, analytics and the load generator) / answered requests.",
        "Staleness: a new order is placed and read through both paths until each shows it as \
         Placed (the composer then has it cached); it is moved to Paid in the order service; \
         from the moment that call returned, both paths are polled every 2 ms until they show \
         Paid. No other load runs meanwhile.",
        "Scalability: at the largest size, an open loop per path at fractions of the throughput \
         that path sustained closed-loop in the same run, latency from each request's \
         scheduled start (queueing included, no coordinated omission); then a festival-sale \
         burst: base, peak and base again.",
        "Memory: this process's VmRSS when measuring at a size began and ended, and its VmHWM \
         (peak) so far, including the overload steps of the curves (open loops at 1.5x what \
         each path sustained, at most 1024 requests in flight): memory stays bounded when the \
         end-of-size figure does not keep growing with the load.",
        "Growth: the same shop grows between sizes (more orders seeded on top through the \
         services), and everything is measured again.",
        "Medians over runs; ratios are medians of per-run ratios (both paths measured in the \
         same run); the machine is shared, so compare ratios rather than absolute figures.",
    ]
    .map(str::to_owned)
    .to_vec();
    if backend == Backend::Clickhouse {
        notes.push(
            "CPU per request counts this process only: on this back end the ClickHouse server \
             and the Kafka broker run as their own processes, so the CQRS paths' CPU (and the \
             composer's relay publishing) is understated by theirs."
                .to_owned(),
        );
    }
    notes
}

/// Scalability points of one path and phase, median over runs, per fraction.
pub fn curve_medians(
    points: &[CurvePoint],
    path: ReadPath,
    phase: &str,
) -> Vec<(f64, f64, f64, f64)> {
    let mut by: BTreeMap<u64, Vec<&CurvePoint>> = BTreeMap::new();
    for p in points.iter().filter(|p| p.path == path && p.phase == phase) {
        by.entry((p.fraction * 1000.0) as u64).or_default().push(p);
    }
    by.values()
        .map(|ps| {
            let m = |f: fn(&CurvePoint) -> f64| median(ps.iter().map(|p| f(p)).collect());
            (
                m(|p| p.offered_rps),
                m(|p| p.goodput_rps),
                m(|p| p.p50_ms),
                m(|p| p.p99_ms),
            )
        })
        .collect()
}
