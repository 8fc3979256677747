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

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use shoplens_composer::{ComposerConfig, ServiceUrls};
use shoplens_kit::identity::{Identity, Role, issue as issue_token};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::histogram::Histogram;
use crate::load::{LoadResult, Outcome, Window, closed_loop, open_loop};
use crate::machine::Machine;
use crate::results::median;
use crate::shop::{Shop, ShopSize, WriterReport, spawn_writer};

/// The token secret of the benchmark's composers.
use crate::SECRET;
/// Open-loop requests in flight at most (bounds memory if a mode cannot keep up).
const MAX_IN_FLIGHT: usize = 2048;

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

/// One mode measured once.
#[derive(Clone, Debug, Serialize)]
pub struct ModeResult {
    pub mode: Mode,
    pub load: Load,
    /// Open loop: the request rate offered.
    pub offered_rps: Option<f64>,
    pub requests: u64,
    /// Non-2xx answers or failed requests.
    pub errors: u64,
    /// 200s with a stale or unavailable section.
    pub degraded: u64,
    /// Open loop: requests not sent because too many were in flight.
    pub dropped: u64,
    pub throughput_rps: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// Latency from the actual send (the open loop's `p50_ms`/`p99_ms` count from the
    /// scheduled start, which adds the generator's timer delay, up to about 1 ms).
    pub service_p50_ms: f64,
    pub service_p99_ms: f64,
    /// `shoplens_composer_downstream_calls_total` delta over the measured window.
    pub downstream_calls: f64,
    pub calls_per_request: f64,
    pub cache_hits: f64,
    pub cache_misses: f64,
    pub invalidations: f64,
    pub events_seen: f64,
}

/// One downstream call measured directly.
#[derive(Clone, Debug, Serialize)]
pub struct CallLatency {
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The fan-out check of one run.
#[derive(Clone, Debug, Serialize)]
pub struct Fanout {
    pub offered_rps: f64,
    pub samples: u64,
    pub errors: u64,
    /// Per call: `order`, then `customer`, `products`, `payments`, `shipments` (concurrent);
    /// `second_round` is the wall time of the four concurrent calls together.
    pub calls: BTreeMap<&'static str, CallLatency>,
    pub order_p50_ms: f64,
    /// The second-round call with the highest p50.
    pub slowest_second_round_call: &'static str,
    pub slowest_second_round_p50_ms: f64,
    /// `order_p50_ms + slowest_second_round_p50_ms`: the critical path of two round trips.
    pub critical_path_p50_ms: f64,
    /// p50 of order + second round measured per sample (includes the wait for the slowest
    /// of four, which is more than the slowest single p50).
    pub measured_two_rounds_p50_ms: f64,
    /// The open-loop no-cache composer p50 (from the send) of the same run, same rate.
    pub composer_no_cache_p50_ms: f64,
    /// `composer_no_cache_p50_ms - critical_path_p50_ms`.
    pub overhead_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub run: usize,
    pub offered_rps: f64,
    pub closed: Vec<ModeResult>,
    pub open: Vec<ModeResult>,
    pub fanout: Fanout,
    /// Open loop, same offered load: p99(no cache) / p99(cache), latency from the send.
    pub p99_ratio_no_cache_over_cache: f64,
    /// Open loop, same offered load: p99(no cache) / p99(cache + invalidation), from the send.
    pub p99_ratio_no_cache_over_cache_invalidation: f64,
    /// The same two ratios with latency from the scheduled start.
    pub p99_ratio_scheduled_no_cache_over_cache: f64,
    pub p99_ratio_scheduled_no_cache_over_cache_invalidation: f64,
    pub secs: f64,
}

/// Medians over runs of one mode and load type.
#[derive(Clone, Debug, Serialize)]
pub struct SummaryRow {
    pub mode: Mode,
    pub load: Load,
    pub offered_rps: Option<f64>,
    pub throughput_rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub service_p50_ms: f64,
    pub service_p99_ms: f64,
    pub calls_per_request: f64,
    pub invalidations: f64,
    pub errors: u64,
    pub degraded: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub rows: Vec<SummaryRow>,
    pub p99_ratio_no_cache_over_cache: f64,
    pub p99_ratio_no_cache_over_cache_invalidation: f64,
    pub p99_ratio_scheduled_no_cache_over_cache: f64,
    pub p99_ratio_scheduled_no_cache_over_cache_invalidation: f64,
    pub fanout_overhead_ms: f64,
    pub fanout_critical_path_p50_ms: f64,
    pub fanout_composer_p50_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Aim {
    pub aim: &'static str,
    pub measured: String,
    pub met: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct DataSize {
    pub customers: usize,
    pub products: usize,
    pub seeded_orders: usize,
    /// Readers pick among this many most recent orders.
    pub read_population: usize,
    pub orders_at_end: usize,
    pub seed_secs: f64,
    pub writer: WriterReport,
}

/// Everything `composer.json` holds.
#[derive(Clone, Debug, Serialize)]
pub struct ComposerResults {
    pub scenario: &'static str,
    pub command: String,
    pub machine: Machine,
    pub options: ComposerOptions,
    pub composer_cache: shoplens_composer::CacheConfig,
    pub data: DataSize,
    pub runs: Vec<RunResult>,
    pub summary: Summary,
    pub aims: Vec<Aim>,
    pub notes: Vec<&'static str>,
    pub total_secs: f64,
}

const NOTES: &[&str] = &[
    "Read load: GET /api/v1/orders/{id}/summary with an admin token; orders picked with \
     shop_simulator::ZipfPicker by recency rank (rank 0 = newest) over the most recent \
     `orders` orders — customers refreshing the orders they just placed in a festival sale.",
    "Background writes in every mode (so modes are comparable): new orders at \
     writer_rate_per_sec, each driven through payment, capture, Paid, shipment, Shipped, \
     location updates, delivery and Delivered, one step per writer_step; new orders join the \
     read set at once.",
    "Closed loop: `concurrency` workers, throughput is what the system sustained. Open loop: \
     one fixed rate for every mode (open_fraction of the no-cache closed-loop throughput of \
     the same run). Open-loop p50/p99 count from each request's scheduled start (no \
     coordinated omission; includes the generator's timer delay, up to about 1 ms); \
     service p50/p99 count from the actual send. The 10x aim and the fan-out check use the \
     latter.",
    "Downstream calls/request: delta of shoplens_composer_downstream_calls_total on the \
     composer's /metrics over the measured window, divided by the requests answered in it.",
    "Fan-out: the critical path of an uncached summary is two round trips — the order, then \
     customer, products (one batch), payments and shipments concurrently. The same calls \
     are made directly at the same offered rate; overhead = composer no-cache p50 - (order \
     p50 + the highest p50 of the four second-round calls).",
    "Each measurement uses a fresh composer (cold cache) and a warm-up that is not measured; \
     the five services, their data and the event log are shared by all runs.",
];

/// Counters read from a composer's `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    downstream_calls: f64,
    cache_hits: f64,
    cache_misses: f64,
    invalidations: f64,
    events_seen: f64,
}

/// The sum of every sample of `name` (any labels) in a Prometheus text page.
pub fn sum_metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            (rest.starts_with('{') || rest.starts_with(' ')).then_some(())?;
            l.rsplit(' ').next()?.parse::<f64>().ok()
        })
        .sum()
}

async fn counters(client: &reqwest::Client, base: &str) -> anyhow::Result<Counters> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(Counters {
        downstream_calls: sum_metric(&text, "shoplens_composer_downstream_calls_total"),
        cache_hits: sum_metric(&text, "shoplens_composer_cache_hits_total"),
        cache_misses: sum_metric(&text, "shoplens_composer_cache_misses_total"),
        invalidations: sum_metric(&text, "shoplens_composer_cache_invalidations_total"),
        events_seen: sum_metric(&text, "shoplens_composer_events_seen_total"),
    })
}

async fn start_composer(
    shop: &Shop,
    mode: Mode,
    tag: &str,
) -> anyhow::Result<shoplens_composer::ComposerHandle> {
    let mut config = ComposerConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        services: ServiceUrls {
            customer: shop.urls.customer.clone(),
            product: shop.urls.product.clone(),
            order: shop.urls.order.clone(),
            payment: shop.urls.payment.clone(),
            shipping: shop.urls.shipping.clone(),
        },
        invalidation: mode == Mode::CacheInvalidation,
        ..Default::default()
    };
    config.auth.secret = SECRET.into();
    config.cache.enabled = mode != Mode::NoCache;
    let events: Option<Box<dyn shoplens_bus::EventSource>> = if config.invalidation {
        let log = shop
            .system
            .log
            .as_ref()
            .context("the composer benchmark runs on the embedded log")?;
        Some(Box::new(log.consumer(
            &format!("composer-invalidation-{}-{tag}", mode.label()),
            &["shop.orders", "shop.payments", "shop.shipping"],
        )?))
    } else {
        None
    };
    shoplens_composer::start(&config, events)
        .await
        .context("failed to start the composer")
}

/// One summary request against the composer at `base`.
fn summary_request(
    client: reqwest::Client,
    base: Arc<str>,
    auth: Arc<str>,
) -> impl Fn(String) -> std::pin::Pin<Box<dyn Future<Output = Outcome> + Send>> + Clone + Send + 'static
{
    move |id: String| {
        let request = client
            .get(format!("{base}/api/v1/orders/{id}/summary"))
            .header("authorization", &*auth);
        Box::pin(async move {
            match request.send().await {
                Ok(resp) => {
                    let ok = resp.status().is_success();
                    let body = resp.bytes().await.unwrap_or_default();
                    let degraded = ok && contains(&body, b"\"degraded\":true");
                    Outcome {
                        ok,
                        degraded,
                        parts: Vec::new(),
                    }
                }
                Err(_) => Outcome::default(),
            }
        })
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The composer's calls for one summary, made directly: the order, then the other four at
/// once, each timed.
fn direct_request(
    client: reqwest::Client,
    urls: Arc<shop_simulator::ShopUrls>,
) -> impl Fn(String) -> std::pin::Pin<Box<dyn Future<Output = Outcome> + Send>> + Clone + Send + 'static
{
    move |id: String| {
        let client = client.clone();
        let urls = urls.clone();
        Box::pin(async move {
            let timed = |url: String| {
                let client = client.clone();
                async move {
                    let start = Instant::now();
                    let body = match client.get(url).send().await {
                        Ok(r) if r.status().is_success() => r.bytes().await.ok(),
                        _ => None,
                    };
                    (body, start.elapsed())
                }
            };
            let (order, order_time) = timed(format!("{}/api/v1/orders/{id}", urls.order)).await;
            let Some(order) =
                order.and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            else {
                return Outcome::default();
            };
            let customer = order["customer_id"].as_str().unwrap_or_default();
            let mut products: Vec<&str> = order["lines"]
                .as_array()
                .map(|ls| ls.iter().filter_map(|l| l["product_id"].as_str()).collect())
                .unwrap_or_default();
            products.sort_unstable();
            products.dedup();
            let second = Instant::now();
            let (c, p, pay, s) = tokio::join!(
                timed(format!("{}/api/v1/customers/{customer}", urls.customer)),
                timed(format!(
                    "{}/api/v1/products?ids={}",
                    urls.product,
                    products.join(",")
                )),
                timed(format!("{}/api/v1/payments?order_id={id}", urls.payment)),
                timed(format!("{}/api/v1/shipments?order_id={id}", urls.shipping)),
            );
            let second = second.elapsed();
            Outcome {
                ok: c.0.is_some() && p.0.is_some() && pay.0.is_some() && s.0.is_some(),
                degraded: false,
                parts: vec![
                    ("order", order_time),
                    ("customer", c.1),
                    ("products", p.1),
                    ("payments", pay.1),
                    ("shipments", s.1),
                    ("second_round", second),
                    ("two_rounds", order_time + second),
                ],
            }
        })
    }
}

struct Bench<'a> {
    shop: &'a Shop,
    opts: &'a ComposerOptions,
    client: reqwest::Client,
    auth: Arc<str>,
}

impl Bench<'_> {
    async fn measure(
        &self,
        mode: Mode,
        load: Load,
        run: usize,
        rate: f64,
    ) -> anyhow::Result<ModeResult> {
        let tag = format!("r{run}-{load:?}").to_lowercase();
        let composer = start_composer(self.shop, mode, &tag).await?;
        let base: Arc<str> = composer.url().into();
        let request = summary_request(self.client.clone(), base.clone(), self.auth.clone());
        let window = Window::new(self.opts.warmup, self.opts.duration);
        let (reads, s, seed) = (self.shop.reads.clone(), self.opts.zipf_exponent, run as u64);
        let task = match load {
            Load::Closed => {
                let c = self.opts.concurrency;
                tokio::spawn(closed_loop(reads, s, seed, c, window, request))
            }
            Load::Open => tokio::spawn(open_loop(
                reads,
                s,
                seed,
                rate,
                MAX_IN_FLIGHT,
                window,
                request,
            )),
        };
        tokio::time::sleep_until(window.measure_from).await;
        let before = counters(&self.client, &base).await?;
        let result = task.await.context("load task failed")?;
        let after = counters(&self.client, &base).await?;
        composer.stop().await;
        let r = mode_result(
            mode,
            load,
            (load == Load::Open).then_some(rate),
            &result,
            before,
            after,
        );
        tracing::info!(
            mode = mode.name(),
            ?load,
            rps = r.throughput_rps,
            p50 = r.p50_ms,
            p99 = r.p99_ms,
            calls_per_request = r.calls_per_request,
            "measured"
        );
        Ok(r)
    }

    async fn fanout(&self, run: usize, rate: f64, composer_p50: f64) -> Fanout {
        let request = direct_request(self.client.clone(), Arc::new(self.shop.urls.clone()));
        let window = Window::new(self.opts.warmup, self.opts.duration);
        let result = open_loop(
            self.shop.reads.clone(),
            self.opts.zipf_exponent,
            run as u64,
            rate,
            MAX_IN_FLIGHT,
            window,
            request,
        )
        .await;
        fanout_result(&result, rate, composer_p50)
    }
}

fn mode_result(
    mode: Mode,
    load: Load,
    offered_rps: Option<f64>,
    r: &LoadResult,
    before: Counters,
    after: Counters,
) -> ModeResult {
    let calls = after.downstream_calls - before.downstream_calls;
    ModeResult {
        mode,
        load,
        offered_rps,
        requests: r.requests,
        errors: r.errors,
        degraded: r.degraded,
        dropped: r.dropped,
        throughput_rps: r.throughput(),
        p50_ms: r.latency.quantile_ms(0.50),
        p90_ms: r.latency.quantile_ms(0.90),
        p99_ms: r.latency.quantile_ms(0.99),
        max_ms: r.latency.max_ms(),
        mean_ms: r.latency.mean_ms(),
        service_p50_ms: r.service.quantile_ms(0.50),
        service_p99_ms: r.service.quantile_ms(0.99),
        downstream_calls: calls,
        calls_per_request: if r.requests > 0 {
            calls / r.requests as f64
        } else {
            f64::NAN
        },
        cache_hits: after.cache_hits - before.cache_hits,
        cache_misses: after.cache_misses - before.cache_misses,
        invalidations: after.invalidations - before.invalidations,
        events_seen: after.events_seen - before.events_seen,
    }
}

fn fanout_result(r: &LoadResult, rate: f64, composer_p50: f64) -> Fanout {
    let empty = Histogram::default();
    let h = |name: &str| r.parts.get(name).unwrap_or(&empty);
    let calls: BTreeMap<&'static str, CallLatency> = [
        "order",
        "customer",
        "products",
        "payments",
        "shipments",
        "second_round",
        "two_rounds",
    ]
    .into_iter()
    .map(|name| {
        (
            name,
            CallLatency {
                p50_ms: h(name).quantile_ms(0.5),
                p99_ms: h(name).quantile_ms(0.99),
            },
        )
    })
    .collect();
    let (slowest, slowest_p50) = ["customer", "products", "payments", "shipments"]
        .into_iter()
        .map(|n| (n, calls[n].p50_ms))
        .fold(("customer", f64::MIN), |a, b| if b.1 > a.1 { b } else { a });
    let order_p50 = calls["order"].p50_ms;
    let critical = order_p50 + slowest_p50;
    Fanout {
        offered_rps: rate,
        samples: r.requests,
        errors: r.errors,
        order_p50_ms: order_p50,
        slowest_second_round_call: slowest,
        slowest_second_round_p50_ms: slowest_p50,
        critical_path_p50_ms: critical,
        measured_two_rounds_p50_ms: calls["two_rounds"].p50_ms,
        calls,
        composer_no_cache_p50_ms: composer_p50,
        overhead_ms: composer_p50 - critical,
    }
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
        auth: format!(
            "Bearer {}",
            issue_token(
                SECRET,
                &Identity::new("admin", Role::Admin),
                Duration::from_secs(24 * 3600)
            )
        )
        .into(),
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
    crate::results::write_composer(&opts.out, &results)?;
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

fn summarize(runs: &[RunResult]) -> Summary {
    let mut rows = Vec::new();
    for load in [Load::Closed, Load::Open] {
        for mode in Mode::ALL {
            let all: Vec<&ModeResult> = runs
                .iter()
                .map(|r| {
                    find(
                        if load == Load::Closed {
                            &r.closed
                        } else {
                            &r.open
                        },
                        mode,
                    )
                })
                .collect();
            let med = |f: fn(&ModeResult) -> f64| median(all.iter().map(|r| f(r)).collect());
            rows.push(SummaryRow {
                mode,
                load,
                offered_rps: (load == Load::Open).then(|| med(|r| r.offered_rps.unwrap_or(0.0))),
                throughput_rps: med(|r| r.throughput_rps),
                p50_ms: med(|r| r.p50_ms),
                p99_ms: med(|r| r.p99_ms),
                service_p50_ms: med(|r| r.service_p50_ms),
                service_p99_ms: med(|r| r.service_p99_ms),
                calls_per_request: med(|r| r.calls_per_request),
                invalidations: med(|r| r.invalidations),
                errors: all.iter().map(|r| r.errors).sum(),
                degraded: all.iter().map(|r| r.degraded).sum(),
            });
        }
    }
    let over = |f: fn(&RunResult) -> f64| median(runs.iter().map(f).collect());
    Summary {
        rows,
        p99_ratio_no_cache_over_cache: over(|r| r.p99_ratio_no_cache_over_cache),
        p99_ratio_no_cache_over_cache_invalidation: over(|r| {
            r.p99_ratio_no_cache_over_cache_invalidation
        }),
        p99_ratio_scheduled_no_cache_over_cache: over(|r| {
            r.p99_ratio_scheduled_no_cache_over_cache
        }),
        p99_ratio_scheduled_no_cache_over_cache_invalidation: over(|r| {
            r.p99_ratio_scheduled_no_cache_over_cache_invalidation
        }),
        fanout_overhead_ms: over(|r| r.fanout.overhead_ms),
        fanout_critical_path_p50_ms: over(|r| r.fanout.critical_path_p50_ms),
        fanout_composer_p50_ms: over(|r| r.fanout.composer_no_cache_p50_ms),
    }
}

impl Summary {
    pub fn row(&self, mode: Mode, load: Load) -> &SummaryRow {
        self.rows
            .iter()
            .find(|r| r.mode == mode && r.load == load)
            .expect("every mode and load summarized")
    }
}

fn aims(s: &Summary) -> Vec<Aim> {
    let b = s.row(Mode::Cache, Load::Closed).calls_per_request;
    let c = s
        .row(Mode::CacheInvalidation, Load::Closed)
        .calls_per_request;
    vec![
        Aim {
            aim: "p99 with cache at least 10x lower than without, at the same offered load",
            measured: format!(
                "p99(no cache)/p99(cache) = {:.1}x, with invalidation {:.1}x (latency from \
                 the send); from the scheduled start {:.1}x and {:.1}x",
                s.p99_ratio_no_cache_over_cache,
                s.p99_ratio_no_cache_over_cache_invalidation,
                s.p99_ratio_scheduled_no_cache_over_cache,
                s.p99_ratio_scheduled_no_cache_over_cache_invalidation
            ),
            met: s.p99_ratio_no_cache_over_cache >= 10.0,
        },
        Aim {
            aim: "at most 0.2 downstream calls per composed request at the festival-sale hot set",
            measured: format!(
                "cache {b:.3}, cache+invalidation {c:.3} calls/request (closed loop)"
            ),
            met: b <= 0.2 && c <= 0.2,
        },
        Aim {
            aim: "uncached composer p50 within 1 ms of the critical path of downstream calls",
            measured: format!(
                "composer p50 {:.2} ms - critical path p50 {:.2} ms = {:+.2} ms",
                s.fanout_composer_p50_ms, s.fanout_critical_path_p50_ms, s.fanout_overhead_ms
            ),
            met: s.fanout_overhead_ms <= 1.0,
        },
    ]
}
