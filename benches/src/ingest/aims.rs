//! The ingest scenario's aims, judged on what was measured.

use super::BackendResult;
use crate::backend::Backend;
use crate::results::Aim;

/// The aims per back end (issue 19): events/s on one core and on two, against the broker and
/// without it, freshness lag, worker memory.
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
            Backend::Clickhouse => {}
        }
        match b.backend {
            Backend::Embedded => aims.push(Aim {
                name: "embedded: a drain of the whole backlog (a rebuild) at least 800,000 \
                       events/s on 2 cores"
                    .into(),
                measured: format!(
                    "{:.0} events/s draining {} events ({})",
                    b.memory.events_per_sec, b.memory.backlog_events, b.memory.process
                ),
                met: b.memory.events_per_sec >= 800_000.0,
                target: None,
            }),
            Backend::Clickhouse => aims.push(Aim {
                name: "Kafka -> ClickHouse at least 90% of what a bare consumer reads from the \
                      broker"
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
                met: b
                    .bus
                    .consume_events_per_sec
                    .is_some_and(|bare| t.median_events_per_sec >= 0.9 * bare),
                target: None,
            }),
        }
        if let Some(c) = &b.sink_ceiling {
            aims.push(Aim {
                name: "embedded log -> ClickHouse at least 400,000 events/s".into(),
                measured: format!(
                    "{:.0} events/s ({} events in {:.1} s, {} batches)",
                    c.events_per_sec, c.events, c.secs, c.batches
                ),
                met: c.events_per_sec >= 400_000.0,
                target: None,
            });
        }
        let f = &b.freshness;
        aims.push(Aim {
            name: format!(
                "{}: freshness lag p99 at most 250 ms at {:.0} events/s",
                b.backend.name(),
                f.target_rate
            ),
            measured: format!(
                "p50 {:.0} ms, p99 {:.0} ms over {} batches at {:.0} events/s achieved",
                f.p50_ms, f.p99_ms, f.samples, f.achieved_rate
            ),
            met: f.p99_ms <= 250.0 && f.achieved_rate >= 0.95 * f.target_rate,
            target: None,
        });
        let f = &b.burst;
        aims.push(Aim {
            name: format!(
                "{}: freshness lag p99 at most 1 s through a {:.0} s burst at {:.0} events/s",
                b.backend.name(),
                f.measured_secs,
                f.target_rate
            ),
            measured: format!(
                "p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms over {} batches at {:.0} events/s \
                 achieved",
                f.p50_ms, f.p99_ms, f.max_ms, f.samples, f.achieved_rate
            ),
            met: f.p99_ms <= 1000.0 && f.achieved_rate >= 0.95 * f.target_rate,
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
