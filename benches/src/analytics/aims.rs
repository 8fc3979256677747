//! How latency grew with the data, and the scenario's aims judged on what was measured.

use super::{Growth, SizeResult, events_label};
use crate::backend::Backend;
use crate::results::Aim;

/// How each question's latency grew from each size to the next larger one, per back end.
pub(super) fn growth(results: &[SizeResult], backends: &[Backend]) -> Vec<Growth> {
    let mut out = Vec::new();
    for &backend in backends {
        let mut mine: Vec<&SizeResult> = results.iter().filter(|r| r.backend == backend).collect();
        mine.sort_by_key(|r| r.events);
        for pair in mine.windows(2) {
            let (small, large) = (pair[0], pair[1]);
            for (a, b) in small.questions.iter().zip(&large.questions) {
                out.push(Growth {
                    backend,
                    question: a.question.name.clone(),
                    from_events: small.events,
                    to_events: large.events,
                    dashboard_p99_from_ms: a.dashboard.p99_ms,
                    dashboard_p99_to_ms: b.dashboard.p99_ms,
                    dashboard_p99_ratio: b.dashboard.p99_ms / a.dashboard.p99_ms,
                    dashboard_p50_ratio: b.dashboard.p50_ms / a.dashboard.p50_ms,
                    raw_p99_ratio: b.raw.p99_ms / a.raw.p99_ms,
                });
            }
        }
    }
    out
}

/// The aims per back end: dashboard p99, flatness as the data grows, export rate and memory.
pub(super) fn aims(results: &[SizeResult], growth: &[Growth], backends: &[Backend]) -> Vec<Aim> {
    let mut aims = Vec::new();
    for &backend in backends {
        let mine: Vec<&SizeResult> = results.iter().filter(|r| r.backend == backend).collect();
        if mine.is_empty() {
            continue;
        }
        let name = backend.name();
        // Worst dashboard p99 per size; a failed request counts as not met.
        let mut per_size = Vec::new();
        let mut met = true;
        for r in &mine {
            let worst = r
                .questions
                .iter()
                .filter(|q| q.dashboard.p99_ms.is_finite())
                .max_by(|a, b| a.dashboard.p99_ms.total_cmp(&b.dashboard.p99_ms));
            let failed: u64 = r
                .questions
                .iter()
                .map(|q| {
                    q.dashboard.errors
                        + q.dashboard
                            .runs
                            .iter()
                            .map(|x| x.warmup_errors)
                            .sum::<u64>()
                })
                .sum();
            let unmeasured: Vec<&str> = r
                .questions
                .iter()
                .filter(|q| !q.dashboard.p99_ms.is_finite())
                .map(|q| q.question.name.as_str())
                .collect();
            let mut line = match worst {
                Some(q) => format!(
                    "{}: {:.2} ms ({})",
                    events_label(r.events),
                    q.dashboard.p99_ms,
                    q.question.name
                ),
                None => format!("{}: nothing measured", events_label(r.events)),
            };
            if failed > 0 {
                line.push_str(&format!(", {failed} dashboard requests failed"));
            }
            if !unmeasured.is_empty() {
                line.push_str(&format!(", no figure for {}", unmeasured.join(", ")));
            }
            per_size.push(line);
            met &= worst.is_some_and(|q| q.dashboard.p99_ms < 10.0)
                && failed == 0
                && unmeasured.is_empty();
        }
        aims.push(Aim {
            name: format!("{name}: dashboard p99 under 10 ms (every view, every size)"),
            measured: format!("worst view p99 per size — {}", per_size.join("; ")),
            met,
            target: None,
        });
        let g: Vec<&Growth> = growth.iter().filter(|g| g.backend == backend).collect();
        match g
            .iter()
            .max_by(|a, b| a.dashboard_p99_ratio.total_cmp(&b.dashboard_p99_ratio))
        {
            Some(worst) => {
                let smallest = g.iter().map(|x| x.from_events).min().unwrap_or(1).max(1);
                let largest = g.iter().map(|x| x.to_events).max().unwrap_or(1);
                let factor = largest as f64 / smallest as f64;
                let pairs = g
                    .iter()
                    .map(|x| (x.from_events, x.to_events))
                    .any(|p| p != (worst.from_events, worst.to_events));
                aims.push(Aim {
                    name: format!(
                        "{name}: dashboard latency flat as data grows (10x the events -> p99 \
                         under 1.5x)"
                    ),
                    measured: format!(
                        "{} -> {} events ({factor:.0}x): worst p99 ratio {:.2}x ({}, {} -> {}: \
                         {:.2} -> {:.2} ms); per view: {}",
                        events_label(smallest),
                        events_label(largest),
                        worst.dashboard_p99_ratio,
                        worst.question,
                        events_label(worst.from_events),
                        events_label(worst.to_events),
                        worst.dashboard_p99_from_ms,
                        worst.dashboard_p99_to_ms,
                        g.iter()
                            .map(|x| {
                                let pair = if pairs {
                                    format!(
                                        " ({} -> {})",
                                        events_label(x.from_events),
                                        events_label(x.to_events)
                                    )
                                } else {
                                    String::new()
                                };
                                format!("{}{pair} {:.2}x", x.question, x.dashboard_p99_ratio)
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    met: factor >= 10.0 && g.iter().all(|x| x.dashboard_p99_ratio < 1.5),
                    target: None,
                });
            }
            None => aims.push(Aim {
                name: format!("{name}: dashboard latency flat as data grows"),
                measured: "needs two sizes".into(),
                met: false,
                target: None,
            }),
        }
        let Some(largest) = mine.iter().max_by_key(|r| r.events) else {
            continue;
        };
        let label = events_label(largest.events);
        let rates: Vec<String> = largest
            .exports
            .iter()
            .map(|e| {
                format!(
                    "{} {:.0} rows/s ({} rows in {:.2} s)",
                    e.format, e.median_rows_per_sec, e.rows, e.median_export_secs
                )
            })
            .collect();
        aims.push(Aim {
            name: format!("{name}: export at least 1M rows/s"),
            measured: format!(
                "{} at {label} events: {}",
                largest
                    .exports
                    .first()
                    .map_or("no export".into(), |e| e.report.clone()),
                rates.join("; ")
            ),
            met: !largest.exports.is_empty()
                && largest
                    .exports
                    .iter()
                    .all(|e| e.median_rows_per_sec >= 1_000_000.0),
            target: None,
        });
        let peaks: Vec<String> = largest
            .exports
            .iter()
            .map(|e| format!("{} {:.1} MiB", e.format, e.peak_rss_mib))
            .collect();
        aims.push(Aim {
            name: format!("{name}: export memory under 200 MB"),
            measured: format!(
                "peak RSS (VmHWM) of the export process at {label} events: {}",
                peaks.join("; ")
            ),
            met: !largest.exports.is_empty()
                && largest
                    .exports
                    .iter()
                    .all(|e| e.peak_rss_mib * 1_048_576.0 < 200_000_000.0),
            target: None,
        });
    }
    aims
}
