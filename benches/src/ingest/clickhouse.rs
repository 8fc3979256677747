//! The Kafka -> ClickHouse back end measured: the broker's own rates, the worker draining
//! from the broker, the sink's ceiling without the broker, freshness and memory.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use shoplens_bus::{
    EmbeddedLog, EmbeddedLogConfig, EventSource, KafkaBus, KafkaConfig, KafkaSource,
};
use shoplens_ingest::clickhouse::ClickHouseStore;
use shoplens_ingest::sink::ReadModelStore;
use shoplens_ingest::startup::{embedded_sources, kafka_sources, start};
use shoplens_readmodel::config::{ClickHouseConfig, ReadModelConfig, ReadModelKind};
use tokio::time::Instant;

use super::drain::{apply_secs, drain_run, drain_timeout, ingest_config, throughput, wait_drained};
use super::events::{backlog_events, fill, topics};
use super::freshness::{Load, measure_freshness};
use super::memory::{ChildSource, ChildSpec, measure_child};
use super::{BackendResult, BusRates, IngestOptions, SinkCeiling};
use crate::backend::Backend;
use crate::machine::process_cpu_secs;
use crate::servers::{Servers, unique_name};

/// Everything measured on Kafka -> ClickHouse, on the servers `servers` names.
pub(super) async fn run_clickhouse(
    opts: &IngestOptions,
    servers: &Servers,
) -> anyhow::Result<BackendResult> {
    let scratch = tempfile::Builder::new()
        .prefix("shoplens-bench-ingest")
        .tempdir()?;
    let kafka = KafkaConfig {
        brokers: servers.kafka_brokers.clone(),
        session_timeout_ms: opts.kafka_session_timeout_ms,
        properties: opts.kafka_properties.clone(),
        ..Default::default()
    };
    let prefix = unique_name("bench");
    let topics = topics(&prefix);
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let bus = KafkaBus::connect(&kafka, &names)
        .await
        .context("connect to the Kafka broker")?;
    let mut generator = backlog_events(1);
    tracing::info!(events = opts.events, "kafka: publishing the backlog");
    let (payload_bytes, produce_secs) = fill(
        &bus,
        &mut generator,
        &prefix,
        opts.events,
        opts.publish_chunk,
    )
    .await?;

    // The broker's own delivery rate: a bare consumer.
    tracing::info!("kafka: bare consumer");
    let mut source = KafkaSource::subscribe(&kafka, &unique_name("bare"), &names).await?;
    let mut got = 0u64;
    let mut first: Option<Instant> = None;
    let joined = Instant::now();
    while got < opts.events {
        if joined.elapsed() > drain_timeout(opts.events) {
            bail!("a bare consumer read {got} of {} records", opts.events);
        }
        let records = source.poll(20_000, Duration::from_millis(500)).await?;
        if !records.is_empty() && first.is_none() {
            first = Some(Instant::now());
        }
        got += records.len() as u64;
    }
    let consume_secs = first.map_or(f64::NAN, |f| f.elapsed().as_secs_f64());
    source.close().await;
    let bus_rates = BusRates {
        produce_events_per_sec: opts.events as f64 / produce_secs,
        produce_secs,
        consume_events_per_sec: Some(opts.events as f64 / consume_secs),
        consume_secs: Some(consume_secs),
    };

    let ch_config = |database: &str| ClickHouseConfig {
        url: servers.clickhouse_url.clone(),
        database: database.to_owned(),
        ..Default::default()
    };
    let mut runs = Vec::new();
    for run in 1..=opts.runs {
        let config = ingest_config(&unique_name("drain"), &topics, &opts.clickhouse_worker);
        let cpu0 = process_cpu_secs();
        let started = Instant::now();
        let store: Arc<dyn ReadModelStore> =
            Arc::new(ClickHouseStore::connect(&ch_config(&unique_name("bench"))).await?);
        let handle = start(&config, store, kafka_sources(kafka.clone(), topics.clone())).await?;
        let drained = wait_drained(&handle, started, opts.events, drain_timeout(opts.events)).await;
        let cpu = process_cpu_secs() - cpu0;
        let apply = apply_secs(&handle).await;
        handle.stop().await;
        let r = drain_run(run, opts.events, drained?, cpu, None, apply);
        tracing::info!(
            run,
            events_per_sec = r.events_per_sec as u64,
            steady = r.steady_events_per_sec as u64,
            "kafka -> clickhouse: drained"
        );
        runs.push(r);
    }
    let throughput = throughput(
        opts,
        Backend::Clickhouse,
        payload_bytes,
        "tokio multi-thread runtime (2 worker threads), as in shoplens-ingest",
        runs,
    );

    tracing::info!("embedded log -> clickhouse: the sink without the broker");
    let ceiling_log = EmbeddedLog::open(EmbeddedLogConfig {
        dir: scratch.path().join("eventlog"),
        fsync: false,
    })?;
    fill(
        &ceiling_log,
        &mut backlog_events(1),
        "",
        opts.events,
        opts.publish_chunk,
    )
    .await?;
    let sink_ceiling = {
        let config = ingest_config("ceiling", &self::topics(""), &opts.clickhouse_worker);
        let started = Instant::now();
        let store: Arc<dyn ReadModelStore> =
            Arc::new(ClickHouseStore::connect(&ch_config(&unique_name("ceiling"))).await?);
        let handle = start(
            &config,
            store,
            embedded_sources(ceiling_log.clone(), config.topics()),
        )
        .await?;
        let drained = wait_drained(&handle, started, opts.events, drain_timeout(opts.events)).await;
        let apply = apply_secs(&handle).await;
        handle.stop().await;
        let (secs, _, _, status) = drained?;
        SinkCeiling {
            setup: "embedded log (fsync off) -> worker (multi-thread runtime) -> ClickHouse",
            events: opts.events,
            secs,
            events_per_sec: opts.events as f64 / secs,
            apply_secs: apply,
            batches: status.batches,
        }
    };
    drop(ceiling_log);
    tracing::info!(
        events_per_sec = sink_ceiling.events_per_sec as u64,
        "embedded log -> clickhouse: drained"
    );

    tracing::info!("kafka -> clickhouse: freshness at a steady load");
    let fresh_prefix = unique_name("fresh");
    let fresh_topics = self::topics(&fresh_prefix);
    let fresh_names: Vec<&str> = fresh_topics.iter().map(String::as_str).collect();
    let fresh_bus = KafkaBus::connect(&kafka, &fresh_names).await?;
    let config = ingest_config(
        &unique_name("fresh"),
        &fresh_topics,
        &opts.clickhouse_worker,
    );
    let store: Arc<dyn ReadModelStore> =
        Arc::new(ClickHouseStore::connect(&ch_config(&unique_name("fresh"))).await?);
    let handle = start(
        &config,
        store,
        kafka_sources(kafka.clone(), fresh_topics.clone()),
    )
    .await?;
    let fresh_bus: Arc<dyn shoplens_bus::EventBus> = Arc::new(fresh_bus);
    let freshness = measure_freshness(
        opts,
        Backend::Clickhouse,
        &handle,
        fresh_bus.clone(),
        &fresh_prefix,
        Load::steady(opts),
    )
    .await;
    // The broker's own limit: through a burst it takes every event from the producer and
    // serves it to the worker, on the same two cores, so it sustains at most
    // 1 / (1/produce + 1/drain) events/s (the rates measured above, each alone); 90% of that.
    let burst_load = Load::burst(
        opts,
        0.9 * sustained_rate(
            bus_rates.produce_events_per_sec,
            throughput.median_events_per_sec,
        ),
    );
    tracing::info!(
        rate = burst_load.rate,
        "kafka -> clickhouse: freshness through a burst"
    );
    let burst = match &freshness {
        Ok(_) => {
            measure_freshness(
                opts,
                Backend::Clickhouse,
                &handle,
                fresh_bus,
                &fresh_prefix,
                burst_load,
            )
            .await
        }
        Err(_) => Err(anyhow::anyhow!("not measured: the steady load failed")),
    };
    handle.stop().await;
    let freshness = freshness?;

    tracing::info!(
        backlog = opts.backlog,
        "kafka -> clickhouse: worker memory under a backlog"
    );
    let mut target = opts.events;
    if opts.backlog > opts.events {
        fill(
            &bus,
            &mut generator,
            &prefix,
            opts.backlog - opts.events,
            opts.publish_chunk,
        )
        .await?;
        target = opts.backlog;
    }
    let spec = ChildSpec {
        ingest: ingest_config(&unique_name("memory"), &topics, &opts.clickhouse_worker),
        read_model: ReadModelConfig {
            kind: ReadModelKind::Clickhouse,
            clickhouse: ch_config(&unique_name("memory")),
            ..Default::default()
        },
        source: ChildSource::Kafka(kafka.clone()),
    };
    let memory = measure_child(opts, spec, target, scratch.path()).await?;
    Ok(BackendResult {
        backend: Backend::Clickhouse,
        setup: format!(
            "tansu Kafka broker ({}) -> worker -> ClickHouse {} (MergeTree tables and \
             materialized views)",
            servers.broker_version, servers.clickhouse_version
        ),
        bus: bus_rates,
        throughput,
        sink_ceiling: Some(sink_ceiling),
        freshness,
        burst: burst?,
        memory,
    })
}

/// The rate a broker sustains when it takes each event from a producer at `produce` events/s
/// at most and serves it to a consumer at `drain` events/s at most, one after the other on
/// the same CPUs: each event costs it 1/produce + 1/drain seconds.
fn sustained_rate(produce: f64, drain: f64) -> f64 {
    if produce <= 0.0 || drain <= 0.0 {
        return 0.0;
    }
    1.0 / (1.0 / produce + 1.0 / drain)
}

#[cfg(test)]
mod tests {
    use super::sustained_rate;

    #[test]
    fn a_broker_that_takes_and_serves_each_event_sustains_less_than_either_alone() {
        assert_eq!(sustained_rate(40_000.0, 40_000.0), 20_000.0);
        assert!((sustained_rate(60_000.0, 30_000.0) - 20_000.0).abs() < 1e-6);
        assert_eq!(sustained_rate(0.0, 30_000.0), 0.0);
    }
}
