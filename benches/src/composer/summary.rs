//! Medians over runs of every mode and load, the ratios at the same offered load, and the
//! aims judged on them.

use super::{Load, Mode, ModeResult, RunResult, Summary, SummaryRow, find};
use crate::results::{Aim, median};

/// Medians over runs of every mode and load, and of the per-run ratios.
pub(super) fn summarize(runs: &[RunResult]) -> Summary {
    let mut rows = Vec::new();
    for load in [Load::Closed, Load::Open] {
        for mode in Mode::ALL {
            let all: Vec<&ModeResult> = runs
                .iter()
                .map(|r| {
                    find(
                        if load == Load::Closed {
                            &r.closed
                        } else {
                            &r.open
                        },
                        mode,
                    )
                })
                .collect();
            let med = |f: fn(&ModeResult) -> f64| median(all.iter().map(|r| f(r)).collect());
            rows.push(SummaryRow {
                mode,
                load,
                offered_rps: (load == Load::Open).then(|| med(|r| r.offered_rps.unwrap_or(0.0))),
                throughput_rps: med(|r| r.throughput_rps),
                p50_ms: med(|r| r.p50_ms),
                p99_ms: med(|r| r.p99_ms),
                service_p50_ms: med(|r| r.service_p50_ms),
                service_p99_ms: med(|r| r.service_p99_ms),
                calls_per_request: med(|r| r.calls_per_request),
                invalidations: med(|r| r.invalidations),
                errors: all.iter().map(|r| r.errors).sum(),
                degraded: all.iter().map(|r| r.degraded).sum(),
            });
        }
    }
    let over = |f: fn(&RunResult) -> f64| median(runs.iter().map(f).collect());
    Summary {
        rows,
        p99_ratio_no_cache_over_cache: over(|r| r.p99_ratio_no_cache_over_cache),
        p99_ratio_no_cache_over_cache_invalidation: over(|r| {
            r.p99_ratio_no_cache_over_cache_invalidation
        }),
        p99_ratio_scheduled_no_cache_over_cache: over(|r| {
            r.p99_ratio_scheduled_no_cache_over_cache
        }),
        p99_ratio_scheduled_no_cache_over_cache_invalidation: over(|r| {
            r.p99_ratio_scheduled_no_cache_over_cache_invalidation
        }),
        fanout_overhead_ms: over(|r| r.fanout.overhead_ms),
        fanout_critical_path_p50_ms: over(|r| r.fanout.critical_path_p50_ms),
        fanout_composer_p50_ms: over(|r| r.fanout.composer_no_cache_p50_ms),
    }
}

impl Summary {
    pub fn row(&self, mode: Mode, load: Load) -> &SummaryRow {
        self.rows
            .iter()
            .find(|r| r.mode == mode && r.load == load)
            .expect("every mode and load summarized")
    }
}

/// The aims: the cache's p99 gain, downstream calls per request, the fan-out overhead.
pub(super) fn aims(s: &Summary) -> Vec<Aim> {
    let b = s.row(Mode::Cache, Load::Closed).calls_per_request;
    let c = s
        .row(Mode::CacheInvalidation, Load::Closed)
        .calls_per_request;
    vec![
        Aim {
            name: "p99 with cache at least 10x lower than without, at the same offered load".into(),
            target: None,
            measured: format!(
                "p99(no cache)/p99(cache) = {:.1}x, with invalidation {:.1}x (latency from \
                 the send); from the scheduled start {:.1}x and {:.1}x",
                s.p99_ratio_no_cache_over_cache,
                s.p99_ratio_no_cache_over_cache_invalidation,
                s.p99_ratio_scheduled_no_cache_over_cache,
                s.p99_ratio_scheduled_no_cache_over_cache_invalidation
            ),
            met: s.p99_ratio_no_cache_over_cache >= 10.0,
        },
        Aim {
            name: "at most 0.2 downstream calls per composed request at the festival-sale hot set"
                .into(),
            target: None,
            measured: format!(
                "cache {b:.3}, cache+invalidation {c:.3} calls/request (closed loop)"
            ),
            met: b <= 0.2 && c <= 0.2,
        },
        Aim {
            name: "uncached composer p50 within 1 ms of the critical path of downstream calls"
                .into(),
            target: None,
            measured: format!(
                "composer p50 {:.2} ms - critical path p50 {:.2} ms = {:+.2} ms",
                s.fanout_composer_p50_ms, s.fanout_critical_path_p50_ms, s.fanout_overhead_ms
            ),
            met: s.fanout_overhead_ms <= 1.0,
        },
    ]
}
