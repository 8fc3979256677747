//! The ingest worker's Prometheus metrics, registered in its server's registry: throughput,
//! batch sizes and apply latency, dead letters, sink failures, lag and the freshness
//! watermark.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use shoplens_kit::metrics::{Metrics, latency_histogram};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    pub table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// Every metric of one ingest process (the live worker and a rebuild share them; the
/// freshness and lag gauges describe the live generation).
pub struct IngestMetrics {
    pub events_consumed: Counter,
    pub rows_written: Family<TableLabels, Counter>,
    pub duplicates_skipped: Counter,
    pub dead_letters: Family<ReasonLabels, Counter>,
    pub batches: Counter,
    pub batch_events: Histogram,
    pub apply_seconds: Histogram,
    pub sink_failures: Counter,
    pub lag_events: Gauge,
    pub freshness_as_of_ms: Gauge<i64, AtomicI64>,
    pub freshness_visible_at_ms: Gauge<i64, AtomicI64>,
    pub live_generation: Gauge,
}

impl IngestMetrics {
    pub fn register(registry: &Metrics) -> Arc<IngestMetrics> {
        let m = IngestMetrics {
            events_consumed: Counter::default(),
            rows_written: Family::default(),
            duplicates_skipped: Counter::default(),
            dead_letters: Family::default(),
            batches: Counter::default(),
            // 1 to about 1M events.
            batch_events: Histogram::new(exponential_buckets(1.0, 4.0, 11)),
            apply_seconds: latency_histogram(),
            sink_failures: Counter::default(),
            lag_events: Gauge::default(),
            freshness_as_of_ms: Gauge::default(),
            freshness_visible_at_ms: Gauge::default(),
            live_generation: Gauge::default(),
        };
        registry.register(
            "ingest_events_consumed",
            "Events read from the bus (before deduplication)",
            m.events_consumed.clone(),
        );
        registry.register(
            "ingest_rows_written",
            "Rows newly stored in raw tables, by table",
            m.rows_written.clone(),
        );
        registry.register(
            "ingest_duplicates_skipped",
            "Events skipped because the read model already held their event id",
            m.duplicates_skipped.clone(),
        );
        registry.register(
            "ingest_dead_letters",
            "Events dead-lettered, by reason kind",
            m.dead_letters.clone(),
        );
        registry.register(
            "ingest_batches",
            "Batches applied to the sink",
            m.batches.clone(),
        );
        registry.register(
            "ingest_batch_events",
            "Events per applied batch",
            m.batch_events.clone(),
        );
        registry.register(
            "ingest_apply_duration_seconds",
            "Time to apply one batch to the sink (successful attempts)",
            m.apply_seconds.clone(),
        );
        registry.register(
            "ingest_sink_failures",
            "Failed apply attempts (the worker backs off and retries)",
            m.sink_failures.clone(),
        );
        registry.register(
            "ingest_lag_events",
            "Events on the bus not yet applied by the live generation",
            m.lag_events.clone(),
        );
        registry.register(
            "ingest_freshness_as_of_ms",
            "Newest event time visible in the live read model (ms since the Unix epoch)",
            m.freshness_as_of_ms.clone(),
        );
        registry.register(
            "ingest_freshness_visible_at_ms",
            "When that newest event became visible (ms since the Unix epoch)",
            m.freshness_visible_at_ms.clone(),
        );
        registry.register(
            "ingest_live_generation",
            "The read-model generation readers see",
            m.live_generation.clone(),
        );
        Arc::new(m)
    }
}
