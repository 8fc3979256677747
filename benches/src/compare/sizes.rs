//! The comparison's run: the whole system started once (on the chosen back end), the shop
//! seeded and grown through every size, and each size measured in rounds.

use anyhow::Context;
use tokio::time::Instant;

use super::bench::Bench;
use super::clients::{Clients, catch_up, events_in_read_model};
use super::figures::notes;
use super::summary::{ratio, size_summary, staleness};
use super::{CompareOptions, CompareResults, ReadPath, SizeResult, command_line};
use crate::machine::{Machine, Versions, crate_versions, proc_status_mib};
use crate::servers::Servers;
use crate::shop::{ReadSet, Shop, ShopSize};

use crate::SECRET;

fn rss(field: &str) -> f64 {
    proc_status_mib("self", field).unwrap_or(f64::NAN)
}

/// Starts the system, then seeds or grows the shop to each size and measures it.
pub(super) async fn measure(
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
            config.read_model.kind = shoplens_readmodel::config::ReadModelKind::Clickhouse;
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
        auth: crate::admin_bearer().into(),
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
            // Figures of two paths that answer differently would compare nothing: the run
            // fails here, naming the difference, rather than reporting them.
            let catch_up_secs = catch_up(&clients)
                .await
                .with_context(|| format!("at {orders} orders"))?;
            let events = events_in_read_model(&clients).await.unwrap_or(0);
            tracing::info!(orders, events, catch_up_secs, "measuring");
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
            let sc = staleness(&rounds, |s| (&s.composer_ms, s.composer_misses));
            let sq = staleness(&rounds, |s| (&s.cqrs_ms, s.cqrs_misses));
            results.push(SizeResult {
                orders,
                events,
                seed_secs,
                catch_up_secs,
                same_numbers: true,
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
                staleness_composer_p50_ms: sc.p50_ms,
                staleness_composer_p99_ms: sc.p99_ms,
                staleness_cqrs_p50_ms: sq.p50_ms,
                staleness_cqrs_p99_ms: sq.p99_ms,
                // Each sample times both paths.
                staleness_samples: sc.samples,
                staleness_composer_misses: sc.misses,
                staleness_cqrs_misses: sq.misses,
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
            clickhouse_server: servers.map(|s| s.clickhouse_version.clone()),
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
