//! The data of one size: synthetic shop events generated chunk by chunk and applied straight
//! to each back end's sink, then made live; and removed again once measured.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, NaiveDate, Utc};
use shoplens_contract::EventType;
use shoplens_contract::tables::to_batches;
use shoplens_ingest::clickhouse::ClickHouseStore;
use shoplens_ingest::embedded::EmbeddedStore;
use shoplens_ingest::sink::{IngestBatch, ReadModelStore, Sink};
use shoplens_readmodel::config::{
    ClickHouseConfig, EmbeddedConfig, ReadModelConfig, ReadModelKind,
};
use shoplens_test_support::events::StreamSpec;
use tokio::time::Instant;

use super::{AnalyticsOptions, DataInfo};
use crate::backend::Backend;
use crate::machine::dir_bytes;
use crate::servers::{Servers, unique_name};
use crate::synthetic::ShopEvents;

/// At most this many orders are generated at once.
const MAX_CHUNK_ORDERS: u64 = 20_000;

/// Expected events per order of the synthetic stream (see `NOTES`).
const EVENTS_PER_ORDER: f64 = 7.5;

/// The events of one data size: enough orders for `events` events, in chunks of at most
/// `MAX_CHUNK_ORDERS` spread evenly over the span.
fn data_events(opts: &AnalyticsOptions, events: u64) -> ShopEvents {
    let registrations = u64::from(opts.customers) + u64::from(opts.products);
    let orders = (events.saturating_sub(registrations) as f64 / EVENTS_PER_ORDER)
        .ceil()
        .max(1.0) as u64;
    let chunks = orders.div_ceil(MAX_CHUNK_ORDERS).max(1);
    let span_ms = opts.span_days * 86_400_000;
    ShopEvents::new(StreamSpec {
        seed: 42,
        customers: opts.customers,
        products: opts.products,
        orders: orders.div_ceil(chunks) as u32,
        start: opts.start.and_time(chrono::NaiveTime::MIN).and_utc(),
        span: chrono::Duration::milliseconds(span_ms / chunks as i64),
    })
}

/// A store being loaded.
struct Target {
    backend: Backend,
    store: Arc<dyn ReadModelStore>,
    sink: Arc<dyn Sink>,
    apply_secs: f64,
    read_model: ReadModelConfig,
}

/// A loaded read model, ready to be read.
pub(super) struct Loaded {
    pub(super) backend: Backend,
    pub(super) read_model: ReadModelConfig,
    pub(super) load_secs: f64,
    pub(super) store_bytes: Option<u64>,
}

/// Sends one statement to ClickHouse's HTTP interface; its answer text.
async fn clickhouse(url: &str, sql: &str) -> anyhow::Result<String> {
    let resp = reqwest::Client::new()
        .post(url)
        .body(sql.to_owned())
        .send()
        .await
        .context("ClickHouse does not answer")?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        bail!("ClickHouse refused `{sql}`: {}", text.trim());
    }
    Ok(text)
}

/// Fills a new read model per back end with `events` events.
pub(super) async fn load(
    opts: &AnalyticsOptions,
    backends: &[Backend],
    events: u64,
    servers: Option<&Servers>,
    dir: &Path,
) -> anyhow::Result<(DataInfo, Vec<Loaded>, Vec<(Backend, String)>)> {
    let mut targets = Vec::new();
    for &backend in backends {
        let (store, read_model): (Arc<dyn ReadModelStore>, ReadModelConfig) = match backend {
            Backend::Embedded => {
                let embedded = EmbeddedConfig {
                    dir: dir.join(format!("readmodel-{events}")),
                    fsync: false,
                    ..EmbeddedConfig::default()
                };
                let store = EmbeddedStore::open(embedded.clone())
                    .context("failed to open the embedded store")?;
                let read_model = ReadModelConfig {
                    kind: ReadModelKind::Embedded,
                    embedded: EmbeddedConfig {
                        dir: store.dir().to_owned(),
                        ..embedded
                    },
                    ..ReadModelConfig::default()
                };
                (Arc::new(store), read_model)
            }
            Backend::Clickhouse => {
                let servers = servers.context("no ClickHouse server")?;
                let config = ClickHouseConfig {
                    url: servers.clickhouse_url.clone(),
                    database: unique_name("bench_analytics"),
                    request_timeout_ms: 300_000,
                    ..ClickHouseConfig::default()
                };
                let store = ClickHouseStore::connect(&config)
                    .await
                    .context("failed to connect to ClickHouse")?;
                let read_model = ReadModelConfig {
                    kind: ReadModelKind::Clickhouse,
                    clickhouse: config,
                    ..ReadModelConfig::default()
                };
                (Arc::new(store), read_model)
            }
        };
        let sink = store.open(1).await.context("failed to open generation 1")?;
        targets.push(Target {
            backend,
            store,
            sink,
            apply_secs: 0.0,
            read_model,
        });
    }

    let mut failed = Vec::new();
    let filled = fill(opts, events, &mut targets, &mut failed).await;
    let (prepare_secs, orders, first, last) = match filled {
        Ok(x) => x,
        Err(e) => {
            let stores: Vec<(Backend, ReadModelConfig)> = targets
                .into_iter()
                .map(|t| (t.backend, t.read_model))
                .collect();
            for (backend, read_model) in &stores {
                drop_read_model(*backend, read_model).await;
            }
            return Err(e);
        }
    };
    let mut loaded = Vec::new();
    for target in targets {
        target
            .store
            .set_live(1)
            .await
            .context("failed to make generation 1 live")?;
        let Target {
            backend,
            store,
            sink,
            apply_secs,
            read_model,
        } = target;
        // The writer's in-memory state is not the reader's: drop it before measuring.
        drop(sink);
        drop(store);
        let store_bytes = match backend {
            Backend::Embedded => Some(dir_bytes(&read_model.embedded.dir)),
            Backend::Clickhouse => clickhouse_bytes(&read_model.clickhouse).await,
        };
        tracing::info!(
            backend = backend.name(),
            events,
            secs = apply_secs,
            "loaded"
        );
        loaded.push(Loaded {
            backend,
            read_model,
            load_secs: apply_secs,
            store_bytes,
        });
    }
    let data = DataInfo {
        events,
        orders,
        customers: opts.customers,
        products: opts.products,
        first_day: first,
        last_day: last,
        days: (last - first).num_days() + 1,
        prepare_secs,
    };
    Ok((data, loaded, failed))
}

/// Generates `events` events and applies them to every target; a target whose apply fails
/// is dropped (its data removed) and named in `failed`. Returns (prepare secs, orders, first
/// day, last day); fails only when every target failed.
async fn fill(
    opts: &AnalyticsOptions,
    events: u64,
    targets: &mut Vec<Target>,
    failed: &mut Vec<(Backend, String)>,
) -> anyhow::Result<(f64, u64, NaiveDate, NaiveDate)> {
    let mut generator = data_events(opts, events);
    let mut left = events;
    let mut prepare_secs = 0.0;
    let mut orders = 0u64;
    let mut first: Option<DateTime<Utc>> = None;
    let mut last: Option<DateTime<Utc>> = None;
    let mut progress = Instant::now();
    while left > 0 {
        let t = Instant::now();
        let chunk = generator.take(left.min(opts.load_batch as u64) as usize);
        for e in &chunk {
            if e.event_type() == EventType::OrderCreated {
                orders += 1;
            }
            first = Some(first.map_or(e.occurred_at, |f| f.min(e.occurred_at)));
            last = Some(last.map_or(e.occurred_at, |l| l.max(e.occurred_at)));
        }
        let tables = to_batches(&chunk);
        prepare_secs += t.elapsed().as_secs_f64();
        left -= chunk.len() as u64;
        drop(chunk);
        let mut i = 0;
        while i < targets.len() {
            let target = &mut targets[i];
            let t = Instant::now();
            let applied = target
                .sink
                .apply(&IngestBatch {
                    tables: tables.clone(),
                    ..IngestBatch::default()
                })
                .await;
            target.apply_secs += t.elapsed().as_secs_f64();
            match applied {
                Ok(_) => i += 1,
                // One back end failing does not stop the others.
                Err(e) => {
                    let target = targets.remove(i);
                    let error = format!("apply failed: {e}");
                    tracing::warn!(backend = target.backend.name(), events, error, "loading");
                    failed.push((target.backend, error));
                    let (backend, read_model) = (target.backend, target.read_model.clone());
                    drop(target);
                    drop_read_model(backend, &read_model).await;
                }
            }
        }
        if targets.is_empty() {
            bail!(
                "every back end failed: {}",
                failed
                    .iter()
                    .map(|(b, e)| format!("{}: {e}", b.name()))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        if progress.elapsed() > Duration::from_secs(15) {
            progress = Instant::now();
            tracing::info!(events, loaded = events - left, "loading");
        }
    }
    Ok((
        prepare_secs,
        orders,
        first.unwrap_or_default().date_naive(),
        last.unwrap_or_default().date_naive(),
    ))
}

/// Bytes of the active parts of the live generation's database.
async fn clickhouse_bytes(config: &ClickHouseConfig) -> Option<u64> {
    let db = format!("{}_g1", config.database);
    for column in ["bytes_on_disk", "bytes"] {
        let sql =
            format!("SELECT sum({column}) FROM system.parts WHERE active AND database = '{db}'");
        if let Ok(text) = clickhouse(&config.url, &sql).await
            && let Ok(v) = text.trim().parse()
        {
            return Some(v);
        }
    }
    None
}

/// Drops a read model the benchmark stored (the data of the larger sizes is gigabytes).
pub(super) async fn drop_read_model(backend: Backend, read_model: &ReadModelConfig) {
    match backend {
        Backend::Embedded => {
            let _ = std::fs::remove_dir_all(&read_model.embedded.dir);
        }
        Backend::Clickhouse => {
            let c = &read_model.clickhouse;
            for db in [format!("{}_g1", c.database), format!("{}_meta", c.database)] {
                if let Err(e) = clickhouse(&c.url, &format!("DROP DATABASE IF EXISTS {db}")).await {
                    tracing::warn!(error = %e, "could not drop a benchmark database");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use shoplens_contract::Service;

    use super::*;

    #[test]
    fn generated_events_are_exact_in_number_and_span_the_period() {
        let opts = AnalyticsOptions {
            customers: 20,
            products: 5,
            ..AnalyticsOptions::default()
        };
        let mut g = data_events(&opts, 30_000);
        let a = g.take(10_000);
        let b = g.take(20_000);
        assert_eq!(a.len() + b.len(), 30_000);
        let registrations = a
            .iter()
            .chain(&b)
            .filter(|e| e.producer == Service::Customer)
            .count();
        assert_eq!(registrations, 20);
        let first = a.iter().map(|e| e.occurred_at).min().unwrap();
        let last = b.iter().map(|e| e.occurred_at).max().unwrap();
        assert!((last - first).num_days() >= 700, "{first} .. {last}");
    }
}
