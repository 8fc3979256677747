//! The worker's memory: the worker alone in a child process (this binary's hidden
//! `ingest-worker` command, started as `shoplens-ingest` starts it) draining a backlog, its
//! RSS sampled and its peak read from `/proc`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use shoplens_bus::{EmbeddedLog, EmbeddedLogConfig, KafkaConfig};
use shoplens_ingest::startup::{IngestConfig, embedded_sources, kafka_sources, open_store, start};
use shoplens_readmodel::config::ReadModelConfig;
use tokio::time::Instant;

use super::drain::drain_timeout;
use super::{IngestOptions, MemoryResult};
use crate::child;
use crate::machine::proc_status_mib;

/// Where the child worker reads from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildSource {
    EmbeddedLog { dir: PathBuf },
    Kafka(KafkaConfig),
}

/// The child worker's configuration (a JSON file passed to `ingest-worker --spec`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildSpec {
    pub ingest: IngestConfig,
    pub read_model: ReadModelConfig,
    pub source: ChildSource,
}

/// The hidden `ingest-worker` command: the worker alone, as `shoplens-ingest` starts it,
/// until the process is killed.
pub async fn run_child(spec: &Path) -> anyhow::Result<()> {
    let spec: ChildSpec = child::read_spec(spec)?;
    let store = open_store(&spec.read_model)
        .await
        .context("failed to open the read model")?;
    let sources = match &spec.source {
        ChildSource::EmbeddedLog { dir } => embedded_sources(
            EmbeddedLog::open(EmbeddedLogConfig {
                dir: dir.clone(),
                fsync: false,
            })?,
            spec.ingest.topics(),
        ),
        ChildSource::Kafka(k) => kafka_sources(k.clone(), spec.ingest.topics()),
    };
    let handle = start(&spec.ingest, store, sources)
        .await
        .context("failed to start the ingest worker")?;
    tokio::signal::ctrl_c().await?;
    handle.stop().await;
    Ok(())
}

/// Runs the child worker on `spec` until it has applied `target` records; its memory.
pub(super) async fn measure_child(
    opts: &IngestOptions,
    spec: ChildSpec,
    target: u64,
    dir: &Path,
) -> anyhow::Result<MemoryResult> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut spec = spec;
    spec.ingest.listen = ([127, 0, 0, 1], port).into();
    let spec_path = dir.join("worker.json");
    child::write_spec(&spec_path, &spec)?;
    let started = Instant::now();
    let mut child = child::spawn(
        &opts.worker_exe,
        "ingest-worker",
        &spec_path,
        std::process::Stdio::inherit(),
    )?;
    let pid = child.id();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/api/v1/status");
    let mut max_rss = 0.0f64;
    let timeout = drain_timeout(target);
    let result = loop {
        if let Some(rss) = proc_status_mib(&pid.to_string(), "VmRSS:") {
            max_rss = max_rss.max(rss);
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(anyhow::anyhow!("the worker process exited: {status}"));
        }
        if started.elapsed() > timeout {
            break Err(anyhow::anyhow!(
                "the worker process did not drain {target} records within {timeout:?}"
            ));
        }
        let applied = match client.get(&url).send().await {
            Ok(r) => r
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|v| {
                    v["live"]["positions"].as_array().map(|ps| {
                        ps.iter()
                            .map(|p| p["next_offset"].as_u64().unwrap_or(0))
                            .sum::<u64>()
                    })
                })
                .unwrap_or(0),
            Err(_) => 0,
        };
        if applied >= target {
            let secs = started.elapsed().as_secs_f64();
            let hwm = proc_status_mib(&pid.to_string(), "VmHWM:");
            let rss = proc_status_mib(&pid.to_string(), "VmRSS:");
            break match (hwm, rss) {
                (Some(hwm), Some(rss)) => Ok((secs, hwm, rss)),
                _ => Err(anyhow::anyhow!("cannot read /proc/{pid}/status")),
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    let (secs, hwm, rss) = result?;
    Ok(MemoryResult {
        backlog_events: target,
        process: format!(
            "{} ingest-worker (child process, multi-thread runtime)",
            opts.worker_exe
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ),
        batch_max_events: spec.ingest.worker.batch_max_events,
        drain_secs: secs,
        events_per_sec: target as f64 / secs,
        peak_rss_mib: hwm,
        max_sampled_rss_mib: max_rss.max(rss),
        rss_after_drain_mib: rss,
    })
}
