//! Medians over runs: each path's figures at a size, ratios between paths taken within a
//! run, and the points of the load curves.

use std::collections::BTreeMap;

use super::{CurvePoint, PathRun, PathSummary, ReadPath, Round};
use crate::results::median;

/// Each path's medians over the rounds of one size.
pub(super) fn size_summary(rounds: &[Round]) -> Vec<PathSummary> {
    ReadPath::ALL
        .iter()
        .map(|&path| {
            let runs: Vec<&PathRun> = rounds
                .iter()
                .flat_map(|r| r.paths.iter().filter(move |p| p.path == path))
                .collect();
            let med = |f: fn(&PathRun) -> f64| median(runs.iter().map(|r| f(r)).collect());
            PathSummary {
                path,
                throughput_rps: med(|r| r.throughput_rps),
                p50_ms: med(|r| r.p50_ms),
                p99_ms: med(|r| r.p99_ms),
                cpu_ms_per_request: med(|r| r.cpu_ms_per_request),
                errors: runs.iter().map(|r| r.errors).sum(),
            }
        })
        .collect()
}

/// Median over runs of `num / den` for one figure, both from the same run.
pub(super) fn ratio(rounds: &[Round], num: ReadPath, den: ReadPath, f: fn(&PathRun) -> f64) -> f64 {
    median(
        rounds
            .iter()
            .filter_map(|r| {
                let get = |p: ReadPath| r.paths.iter().find(|x| x.path == p).map(f);
                Some(get(num)? / get(den)?)
            })
            .collect(),
    )
}

/// Scalability points of one path and phase, median over runs, per fraction.
pub fn curve_medians(
    points: &[CurvePoint],
    path: ReadPath,
    phase: &str,
) -> Vec<(f64, f64, f64, f64)> {
    let mut by: BTreeMap<u64, Vec<&CurvePoint>> = BTreeMap::new();
    for p in points.iter().filter(|p| p.path == path && p.phase == phase) {
        by.entry((p.fraction * 1000.0) as u64).or_default().push(p);
    }
    by.values()
        .map(|ps| {
            let m = |f: fn(&CurvePoint) -> f64| median(ps.iter().map(|p| f(p)).collect());
            (
                m(|p| p.offered_rps),
                m(|p| p.goodput_rps),
                m(|p| p.p50_ms),
                m(|p| p.p99_ms),
            )
        })
        .collect()
}
