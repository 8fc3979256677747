//! Freshness at a steady load, and through a festival burst: events published at a fixed rate
//! with `occurred_at` = now, and the lag of every batch the running worker applies.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use chrono::Utc;
use shoplens_bus::{BusRecord, EventBus};
use shoplens_ingest::startup::IngestHandle;
use tokio::time::Instant;

use super::drain::live;
use super::events::{backlog_events, record};
use super::{FreshnessResult, IngestOptions};
use crate::backend::Backend;
use crate::results::quantile;

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// A publishing rate held for a time.
#[derive(Clone, Copy, Debug)]
pub(super) struct Load {
    pub rate: f64,
    pub duration: Duration,
}

impl Load {
    /// The steady load of `opts`.
    pub fn steady(opts: &IngestOptions) -> Load {
        Load {
            rate: opts.freshness_rate,
            duration: opts.freshness_duration,
        }
    }

    /// The festival burst of `opts`, at most `ceiling` events/s.
    pub fn burst(opts: &IngestOptions, ceiling: f64) -> Load {
        Load {
            rate: opts.burst_rate.min(ceiling),
            duration: opts.burst_duration,
        }
    }
}

/// Publishes at `load` with occurred_at = now and samples the worker's freshness per batch.
pub(super) async fn measure_freshness(
    opts: &IngestOptions,
    backend: Backend,
    handle: &IngestHandle,
    bus: Arc<dyn EventBus>,
    prefix: &str,
    load: Load,
) -> anyhow::Result<FreshnessResult> {
    // The worker must own its partitions first (a Kafka member's group join takes seconds):
    // the lag figure is known only then.
    let joined = Instant::now();
    while live(handle).lag_events.is_none() {
        if joined.elapsed() > Duration::from_secs(60) {
            bail!("the freshness worker did not join its group within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = load.rate;
    let total = opts.freshness_warmup + load.duration;
    let prefix_owned = prefix.to_owned();
    let publisher = tokio::spawn(async move {
        let mut generator = backlog_events(99);
        let started = Instant::now();
        let mut sent = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while started.elapsed() < total {
            tick.tick().await;
            let due = (started.elapsed().as_secs_f64() * rate) as u64;
            if due <= sent {
                continue;
            }
            // Milliseconds, as the contract stores them.
            let now = chrono::DateTime::from_timestamp_millis(now_ms()).unwrap_or_default();
            let records: Vec<BusRecord> = generator
                .take((due - sent) as usize)
                .into_iter()
                .map(|mut e| {
                    e.occurred_at = now;
                    record(&prefix_owned, &e)
                })
                .collect();
            bus.publish(&records).await?;
            sent = due;
        }
        Ok::<_, shoplens_bus::BusError>((sent, started.elapsed().as_secs_f64()))
    });
    let started = Instant::now();
    let sample_from = now_ms() + opts.freshness_warmup.as_millis() as i64;
    let mut newest = Vec::new();
    let mut oldest = Vec::new();
    let mut last = live(handle).freshness;
    while !publisher.is_finished() || started.elapsed() < total + Duration::from_secs(2) {
        if started.elapsed() > total + Duration::from_secs(30) {
            break;
        }
        let f = live(handle).freshness;
        if f.visible_at_ms != last.visible_at_ms
            && let (Some(visible), Some(as_of)) = (f.visible_at_ms, f.as_of_ms)
        {
            if as_of >= sample_from {
                newest.push((visible - as_of) as f64);
                if let Some(prev) = last.as_of_ms {
                    oldest.push((visible - prev) as f64);
                }
            }
            last = f;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (sent, secs) = publisher.await??;
    let w = opts.worker(backend);
    let samples = newest.len();
    if samples == 0 {
        bail!("no applied batch was sampled during the freshness measurement");
    }
    Ok(FreshnessResult {
        target_rate: rate,
        achieved_rate: sent as f64 / secs,
        events_published: sent,
        measured_secs: load.duration.as_secs_f64(),
        batch_max_events: w.batch_max_events,
        batch_max_delay_ms: w.batch_max_delay_ms,
        samples,
        p50_ms: quantile(&newest, 0.5),
        p99_ms: quantile(&newest, 0.99),
        max_ms: quantile(&newest, 1.0),
        oldest_event_p50_ms: quantile(&oldest, 0.5),
        oldest_event_p99_ms: quantile(&oldest, 0.99),
    })
}
