//! One run of the isolation scenario: the system started with query workers, a small query
//! timed, the shop timed idle and under hostile queries; then the small query timed on a
//! system without workers holding the same seeded data.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{Bombs, IsolationOptions, Latency, Run};
use crate::histogram::Histogram;
use crate::shop::{Shop, ShopSize};

use crate::SECRET;

/// Hostile queries that spin until the deadline or the CPU cap.
const CPU_BOMBS: &[&str] = &[
    "SELECT levenshtein(repeat('a', 200000), repeat('b', 200000))",
    "SELECT count(*) FROM generate_series(1, 200000) a CROSS JOIN generate_series(1, 200000) b",
];

/// Hostile queries that allocate until the memory cap.
const MEMORY_BOMBS: &[&str] = &[
    "SELECT cardinality(array_agg(value)) FROM generate_series(1, 2000000000)",
    "SELECT length(concat(r, r, r, r, r, r, r, r, r, r, r, r, r, r, r, r)) \
     FROM (SELECT repeat('x', 60000000) AS r)",
];

/// The hostile queries the clients cycle through: CPU and memory bombs in turn, or one kind.
fn hostile_queries(bombs: Bombs) -> Vec<&'static str> {
    match bombs {
        Bombs::All => CPU_BOMBS.iter().chain(MEMORY_BOMBS).copied().collect(),
        Bombs::Cpu => CPU_BOMBS.to_vec(),
        Bombs::Memory => MEMORY_BOMBS.to_vec(),
    }
}

const SMALL_SQL: &str = "SELECT count(*) AS n, sum(total) AS revenue FROM orders";

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
        // Every query computed: a cached answer never reaches a worker, so it would not show
        // what running queries in workers costs.
        q.result_cache_mb = 0;
        q.workers.enabled = isolated;
        q.workers.memory_mb = 512;
        q.workers.cpu_seconds = 6;
        q.workers.max_concurrent = opts.hostile.max(1);
        q.workers.max_concurrent_per_user = opts.hostile.max(1);
        q.workers.cpus = opts.worker_cpus.clone();
        if let Some(ms) = opts.cool_down_ms {
            q.workers.cool_down_ms = ms;
        }
    })
    .await
}

/// One run: the query cost with workers, the shop idle and under hostile queries, then the
/// query cost without workers, on a system of its own with the same seeded data.
pub(super) async fn one_run(opts: &IsolationOptions) -> anyhow::Result<Run> {
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

    // 1. What isolation costs a normal query, with a warm pool: first, while this system
    // holds the same data as the in-process one below (the shop phases add thousands of
    // orders).
    (run.sql_isolated, run.dashboard_isolated) = query_latency(&http, &analytics, opts).await;

    // 2. The shop, idle and under hostile queries.
    (run.create_idle, run.summary_idle) = shop_latency(&shop, &http, opts.duration).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut hostile = tokio::task::JoinSet::new();
    let queries = hostile_queries(opts.bombs);
    for h in 0..opts.hostile {
        let (http, analytics, stop) = (http.clone(), analytics.clone(), stop.clone());
        let queries = queries.clone();
        hostile.spawn(async move {
            let mut answered = 0u64;
            let mut k = h;
            while !stop.load(Ordering::SeqCst) {
                let sql = queries[k % queries.len()];
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
            let (mut h, mut errors, mut k) = (Histogram::default(), 0u64, c);
            while Instant::now() < until {
                k += 7;
                let id = &orders[k % orders.len()];
                let started = Instant::now();
                match http
                    .get(format!("{url}/api/v1/orders/{id}/summary"))
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
