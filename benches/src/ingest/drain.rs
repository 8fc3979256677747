//! A worker draining a backlog: waiting until it has applied every record, the time its sink
//! spent applying, and the throughput figures of a run and of all runs.

use std::time::Duration;

use anyhow::bail;
use shoplens_ingest::startup::{IngestConfig, IngestHandle};
use shoplens_ingest::worker::{WorkerConfig, WorkerStatus};
use tokio::time::Instant;

use super::{DrainRun, IngestOptions, Throughput};
use crate::backend::Backend;
use crate::metrics::sum_metric;
use crate::results::median;

/// The worker's configuration: `group` reading `topics`, batching as `worker`.
pub(super) fn ingest_config(group: &str, topics: &[String], worker: &WorkerConfig) -> IngestConfig {
    IngestConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        group: group.to_owned(),
        topics: topics.to_vec(),
        worker: worker.clone(),
        ..Default::default()
    }
}

/// The status of the worker writing the live generation.
pub(super) fn live(handle: &IngestHandle) -> WorkerStatus {
    handle.ingest().status().live
}

/// Waits until `handle` has applied `target` records; returns (secs, first batch secs,
/// applied at first batch, status at the end), all from `started`.
pub(super) async fn wait_drained(
    handle: &IngestHandle,
    started: Instant,
    target: u64,
    timeout: Duration,
) -> anyhow::Result<(f64, f64, u64, WorkerStatus)> {
    let mut first: Option<(f64, u64)> = None;
    loop {
        let s = live(handle);
        let applied = s.applied_offsets();
        if applied > 0 && first.is_none() {
            first = Some((started.elapsed().as_secs_f64(), applied));
        }
        if applied >= target {
            let secs = started.elapsed().as_secs_f64();
            let (fs, fa) = first.unwrap_or((secs, applied));
            return Ok((secs, fs, fa, s));
        }
        if !s.running && started.elapsed() > Duration::from_secs(5) {
            bail!("the ingest worker stopped: {:?}", s.last_error);
        }
        if started.elapsed() > timeout {
            bail!(
                "the worker applied {applied} of {target} records within {timeout:?}: {:?}",
                s.last_error
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Seconds the worker of `handle` has spent in successful applies, from its `/metrics`.
/// NaN if they cannot be read.
pub(super) async fn apply_secs(handle: &IngestHandle) -> f64 {
    // `/metrics` is for monitors and administrators; the worker runs with the default
    // (loopback) key.
    let text = async {
        crate::admin_client(reqwest::Client::builder())?
            .get(format!("{}/metrics", handle.url()))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await
    }
    .await;
    match text {
        Ok(t) => sum_metric(&t, "shoplens_ingest_apply_duration_seconds_sum"),
        Err(_) => f64::NAN,
    }
}

/// How long a drain of `events` may take before it counts as stuck.
pub(super) fn drain_timeout(events: u64) -> Duration {
    Duration::from_secs(120 + events / 5_000)
}

/// The figures of one drain, from what `wait_drained` returned.
pub(super) fn drain_run(
    run: usize,
    events: u64,
    (secs, first_secs, first_applied, status): (f64, f64, u64, WorkerStatus),
    cpu_secs: f64,
    store_bytes: Option<u64>,
    apply_secs: f64,
) -> DrainRun {
    let steady_secs = secs - first_secs;
    DrainRun {
        run,
        events,
        secs,
        events_per_sec: events as f64 / secs,
        first_batch_secs: first_secs,
        steady_events_per_sec: if steady_secs > 0.0 {
            (events - first_applied.min(events)) as f64 / steady_secs
        } else {
            f64::NAN
        },
        cpu_secs,
        events_per_cpu_sec: events as f64 / cpu_secs,
        batches: status.batches,
        rows_written: status.rows_written,
        dead_letters: status.dead_letters,
        store_bytes,
        apply_secs,
        apply_share: apply_secs / secs,
    }
}

/// The throughput figures of all drains on `backend`: medians over runs.
pub(super) fn throughput(
    opts: &IngestOptions,
    backend: Backend,
    payload_bytes: u64,
    runtime: &str,
    runs: Vec<DrainRun>,
) -> Throughput {
    let w = opts.worker(backend);
    let med = |f: fn(&DrainRun) -> f64| median(runs.iter().map(f).collect());
    Throughput {
        events: opts.events,
        payload_bytes,
        runtime: runtime.to_owned(),
        batch_max_events: w.batch_max_events,
        batch_max_delay_ms: w.batch_max_delay_ms,
        median_events_per_sec: med(|r| r.events_per_sec),
        median_steady_events_per_sec: med(|r| r.steady_events_per_sec),
        median_events_per_cpu_sec: med(|r| r.events_per_cpu_sec),
        median_cpu_secs: med(|r| r.cpu_secs),
        median_apply_share: med(|r| r.apply_share),
        runs,
    }
}
