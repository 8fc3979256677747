//! The embedded back end measured: embedded log -> worker -> embedded Parquet store.

use std::path::Path;
use std::sync::Arc;

use shoplens_bus::{EmbeddedLog, EmbeddedLogConfig};
use shoplens_ingest::embedded::EmbeddedStore;
use shoplens_ingest::sink::ReadModelStore;
use shoplens_ingest::startup::{embedded_sources, start};
use shoplens_ingest::worker::WorkerStatus;
use shoplens_readmodel::config::{EmbeddedConfig, ReadModelConfig, ReadModelKind};
use tokio::time::Instant;

use shoplens_ingest::worker::WorkerConfig;

use super::drain::{apply_secs, drain_run, drain_timeout, ingest_config, throughput, wait_drained};
use super::events::{backlog_events, fill, topics};
use super::freshness::{Load, measure_freshness};
use super::memory::{ChildSource, ChildSpec, measure_child};
use super::{BackendResult, BusRates, IngestOptions};
use crate::backend::Backend;
use crate::machine::{dir_bytes, process_cpu_secs};

fn embedded_store_config(dir: &Path, fsync: bool) -> EmbeddedConfig {
    EmbeddedConfig {
        dir: dir.to_owned(),
        fsync,
        ..Default::default()
    }
}

/// Everything measured on the embedded log -> embedded store.
pub(super) async fn run_embedded(opts: &IngestOptions) -> anyhow::Result<BackendResult> {
    let scratch = tempfile::Builder::new()
        .prefix("shoplens-bench-ingest")
        .tempdir()?;
    let log_dir = scratch.path().join("eventlog");
    let topics = topics("");
    let log = EmbeddedLog::open(EmbeddedLogConfig {
        dir: log_dir.clone(),
        fsync: false,
    })?;
    let mut generator = backlog_events(1);
    tracing::info!(
        events = opts.events,
        "embedded: writing the backlog to the log"
    );
    let (payload_bytes, produce_secs) =
        fill(&log, &mut generator, "", opts.events, opts.publish_chunk).await?;
    let bus = BusRates {
        produce_events_per_sec: opts.events as f64 / produce_secs,
        produce_secs,
        consume_events_per_sec: None,
        consume_secs: None,
    };

    // One core for the whole process while the one-core drains run: the worker reads ahead
    // on its thread while the store writes on the blocking pool, so without the pin the two
    // would use both cores.
    let all_cpus =
        shoplens_analytics::isolation::allowed_cpus(std::process::id()).unwrap_or_default();
    let one_cpu = all_cpus.last().copied();
    let mut runs = Vec::new();
    for run in 1..=opts.runs {
        let store_dir = scratch.path().join(format!("readmodel-{run}"));
        // One core: the worker's thread decodes too (the child process's drain below is
        // the two-core figure).
        let one_core = WorkerConfig {
            decode_threads: 1,
            ..opts.embedded_worker.clone()
        };
        let config = ingest_config(&format!("bench{run}"), &topics, &one_core);
        let log = log.clone();
        let fsync = opts.store_fsync;
        let target = opts.events;
        let store_dir2 = store_dir.clone();
        // The worker on a runtime of one thread, driven from a thread of its own.
        type Drained = ((f64, f64, u64, WorkerStatus), f64, f64);
        if let Some(cpu) = one_cpu {
            shoplens_analytics::isolation::set_process_affinity(&[cpu]);
        }
        let drained = tokio::task::spawn_blocking(move || -> anyhow::Result<Drained> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let cpu0 = process_cpu_secs();
                let started = Instant::now();
                let store: Arc<dyn ReadModelStore> = Arc::new(EmbeddedStore::open(
                    embedded_store_config(&store_dir2, fsync),
                )?);
                let handle = start(&config, store, embedded_sources(log, config.topics())).await?;
                let drained = wait_drained(&handle, started, target, drain_timeout(target)).await;
                let cpu = process_cpu_secs() - cpu0;
                let apply = apply_secs(&handle).await;
                handle.stop().await;
                Ok::<_, anyhow::Error>((drained?, cpu, apply))
            })
        })
        .await;
        if !all_cpus.is_empty() {
            shoplens_analytics::isolation::set_process_affinity(&all_cpus);
        }
        let (drained, cpu, apply) = drained??;
        let r = drain_run(
            run,
            opts.events,
            drained,
            cpu,
            Some(dir_bytes(&store_dir)),
            apply,
        );
        tracing::info!(
            run,
            events_per_sec = r.events_per_sec as u64,
            cpu_secs = r.cpu_secs,
            "embedded: drained"
        );
        runs.push(r);
        let _ = std::fs::remove_dir_all(&store_dir);
    }
    let throughput = throughput(
        opts,
        Backend::Embedded,
        payload_bytes,
        "tokio current-thread runtime (one worker thread), the whole process pinned to one CPU",
        runs,
    );

    // Freshness: a fresh log, the worker running on the main runtime.
    tracing::info!("embedded: freshness at a steady load");
    let fresh_log = EmbeddedLog::open(EmbeddedLogConfig {
        dir: scratch.path().join("eventlog-fresh"),
        fsync: false,
    })?;
    let store: Arc<dyn ReadModelStore> = Arc::new(EmbeddedStore::open(embedded_store_config(
        &scratch.path().join("readmodel-fresh"),
        opts.store_fsync,
    ))?);
    let config = ingest_config("fresh", &topics, &opts.embedded_worker);
    let handle = start(
        &config,
        store,
        embedded_sources(fresh_log.clone(), config.topics()),
    )
    .await?;
    let freshness = measure_freshness(
        opts,
        Backend::Embedded,
        &handle,
        Arc::new(fresh_log.clone()),
        "",
        Load::steady(opts),
    )
    .await;
    tracing::info!(
        rate = opts.burst_rate,
        "embedded: freshness through a festival burst"
    );
    let burst = match &freshness {
        Ok(_) => {
            measure_freshness(
                opts,
                Backend::Embedded,
                &handle,
                Arc::new(fresh_log.clone()),
                "",
                Load::burst(opts, f64::INFINITY),
            )
            .await
        }
        Err(_) => Err(anyhow::anyhow!("not measured: the steady load failed")),
    };
    handle.stop().await;
    drop(fresh_log);
    let freshness = freshness?;

    // Memory: the backlog log, handed to a child process (one process owns a log).
    tracing::info!(
        backlog = opts.backlog,
        "embedded: worker memory under a backlog"
    );
    if opts.backlog > opts.events {
        fill(
            &log,
            &mut generator,
            "",
            opts.backlog - opts.events,
            opts.publish_chunk,
        )
        .await?;
    }
    let target: u64 = topics.iter().map(|t| log.end_offset(t)).sum();
    drop(log);
    let spec = ChildSpec {
        ingest: ingest_config("memory", &topics, &opts.embedded_worker),
        read_model: ReadModelConfig {
            kind: ReadModelKind::Embedded,
            embedded: embedded_store_config(
                &scratch.path().join("readmodel-memory"),
                opts.store_fsync,
            ),
            ..Default::default()
        },
        source: ChildSource::EmbeddedLog { dir: log_dir },
    };
    let memory = measure_child(opts, spec, target, scratch.path()).await?;
    Ok(BackendResult {
        backend: Backend::Embedded,
        setup: format!(
            "embedded log (fsync off) -> worker -> embedded Parquet store (fsync {})",
            if opts.store_fsync { "on" } else { "off" }
        ),
        bus,
        throughput,
        sink_ceiling: None,
        freshness,
        burst: burst?,
        memory,
    })
}
