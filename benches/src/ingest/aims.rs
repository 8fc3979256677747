//! The ingest scenario's aims, judged on what was measured.

use super::BackendResult;
use crate::backend::Backend;
use crate::results::Aim;

/// The aims per back end: events/s, freshness lag, worker memory.
pub(super) fn aims(backends: &[BackendResult]) -> Vec<Aim> {
    let mut aims = Vec::new();
    for b in backends {
        let t = &b.throughput;
        match b.backend {
            Backend::Embedded => aims.push(Aim {
                name: "embedded path at least 500,000 events/s on one core".into(),
                measured: format!(
                    "{:.0} events/s (median of {} drain(s) of {} events, worker on one thread; \
                     {:.0} events per CPU-second)",
                    t.median_events_per_sec,
                    t.runs.len(),
                    t.events,
                    t.median_events_per_cpu_sec
                ),
                met: t.median_events_per_sec >= 500_000.0,
                target: None,
            }),
            Backend::Clickhouse => aims.push(Aim {
                name: "Kafka -> ClickHouse at least 100,000 events/s on this machine, broker and \
                      ClickHouse on it"
                    .into(),
                measured: format!(
                    "{:.0} events/s end to end (median of {} drain(s) of {} events; {:.0}/s after \
                     the first batch; the broker alone delivers {:.0}/s to a bare consumer and \
                     accepts {:.0}/s from the producer)",
                    t.median_events_per_sec,
                    t.runs.len(),
                    t.events,
                    t.median_steady_events_per_sec,
                    b.bus.consume_events_per_sec.unwrap_or(f64::NAN),
                    b.bus.produce_events_per_sec
                ),
                met: t.median_events_per_sec >= 100_000.0,
                target: None,
            }),
        }
        let f = &b.freshness;
        aims.push(Aim {
            name: format!(
                "{}: freshness lag p99 under 1 s at {:.0} events/s",
                b.backend.name(),
                f.target_rate
            ),
            measured: format!(
                "p50 {:.0} ms, p99 {:.0} ms over {} batches at {:.0} events/s achieved",
                f.p50_ms, f.p99_ms, f.samples, f.achieved_rate
            ),
            met: f.p99_ms < 1_000.0 && f.achieved_rate >= 0.95 * f.target_rate,
            target: None,
        });
        let m = &b.memory;
        aims.push(Aim {
            name: format!(
                "{}: worker memory under 256 MB whatever the backlog",
                b.backend.name()
            ),
            measured: format!(
                "peak RSS {:.0} MiB draining a backlog of {} events",
                m.peak_rss_mib, m.backlog_events
            ),
            met: m.peak_rss_mib * 1_048_576.0 < 256_000_000.0,
            target: None,
        });
    }
    aims
}
