//! Medians over runs: each path's figures at a size, ratios between paths taken within a
//! run, staleness with its misses, and the steps of the load curves with whether each was
//! served.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{CurvePoint, PathRun, PathSummary, ReadPath, Round, SERVED_GOODPUT_SHARE, Staleness};
use crate::results::{median, quantile};

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

/// One path's staleness over the rounds of a size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct StalenessFigures {
    /// Over the samples the path showed in time (NaN when it showed none).
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    /// Samples the path did not show within the deadline, of `samples` taken.
    pub(super) misses: u64,
    pub(super) samples: u64,
}

/// The staleness of the path `of` picks (its samples in time and its misses) over `rounds`.
pub(super) fn staleness(rounds: &[Round], of: fn(&Staleness) -> (&[f64], u64)) -> StalenessFigures {
    let mut shown = Vec::new();
    let mut misses = 0;
    for r in rounds {
        let (ms, missed) = of(&r.staleness);
        shown.extend_from_slice(ms);
        misses += missed;
    }
    StalenessFigures {
        p50_ms: quantile(&shown, 0.5),
        p99_ms: quantile(&shown, 0.99),
        misses,
        samples: shown.len() as u64 + misses,
    }
}

/// One step of a load curve: medians over runs, errors and late answers summed over them.
#[derive(Clone, Debug, PartialEq)]
pub struct StepMedians {
    pub fraction: f64,
    pub offered_rps: f64,
    /// Answered without error inside the step's window, per second.
    pub goodput_rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    /// Answered after the step's window closed (not in the goodput).
    pub late: u64,
}

impl StepMedians {
    /// Whether the path served this step: goodput at least [`SERVED_GOODPUT_SHARE`] of the
    /// offered load, no errors, and p99 within `objective`. A step without a p99 (nothing
    /// answered) was not served: the comparisons are false for NaN.
    pub fn served(&self, objective: Duration) -> bool {
        self.errors == 0
            && self.goodput_rps >= SERVED_GOODPUT_SHARE * self.offered_rps
            && self.p99_ms <= objective.as_secs_f64() * 1000.0
    }
}

/// The highest step of `path`'s load curve that it served within its latency objective.
pub fn highest_served(points: &[CurvePoint], path: ReadPath) -> Option<StepMedians> {
    curve_medians(points, path, "curve")
        .into_iter()
        .rfind(|s| s.served(path.p99_objective()))
}

/// Steps of one path and phase, medians over runs, by rising fraction.
pub fn curve_medians(points: &[CurvePoint], path: ReadPath, phase: &str) -> Vec<StepMedians> {
    let mut by: BTreeMap<u64, Vec<&CurvePoint>> = BTreeMap::new();
    for p in points.iter().filter(|p| p.path == path && p.phase == phase) {
        by.entry((p.fraction * 1000.0) as u64).or_default().push(p);
    }
    by.values()
        .map(|ps| {
            let m = |f: fn(&CurvePoint) -> f64| median(ps.iter().map(|p| f(p)).collect());
            StepMedians {
                fraction: m(|p| p.fraction),
                offered_rps: m(|p| p.offered_rps),
                goodput_rps: m(|p| p.goodput_rps),
                p50_ms: m(|p| p.p50_ms),
                p99_ms: m(|p| p.p99_ms),
                errors: ps.iter().map(|p| p.errors).sum(),
                late: ps.iter().map(|p| p.late).sum(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(run: usize, fraction: f64, goodput_rps: f64, p99_ms: f64, errors: u64) -> CurvePoint {
        CurvePoint {
            path: ReadPath::DashboardCqrs,
            run,
            phase: "curve".into(),
            fraction,
            offered_rps: fraction * 100.0,
            goodput_rps,
            errors,
            dropped: 0,
            late: 0,
            p50_ms: p99_ms / 2.0,
            p99_ms,
        }
    }

    fn step(goodput_rps: f64, p99_ms: f64, errors: u64) -> StepMedians {
        StepMedians {
            fraction: 1.0,
            offered_rps: 100.0,
            goodput_rps,
            p50_ms: p99_ms / 2.0,
            p99_ms,
            errors,
            late: 0,
        }
    }

    #[test]
    fn a_step_is_served_only_with_goodput_no_errors_and_p99_within_the_objective() {
        let objective = Duration::from_millis(100);
        assert!(step(95.0, 100.0, 0).served(objective));
        // Each condition alone fails the step.
        assert!(!step(94.9, 20.0, 0).served(objective), "goodput short");
        assert!(!step(100.0, 20.0, 1).served(objective), "an error");
        assert!(
            !step(100.0, 100.5, 0).served(objective),
            "p99 over the objective"
        );
        // The same step meets the dashboard's objective but not order tracking's.
        let s = step(100.0, 70.0, 0);
        assert!(s.served(ReadPath::DashboardCqrs.p99_objective()));
        assert!(!s.served(ReadPath::TrackingCqrs.p99_objective()));
        // Nothing answered: no p99, no goodput.
        assert!(!step(f64::NAN, f64::NAN, 0).served(objective));
    }

    #[test]
    fn the_highest_served_step_needs_the_latency_objective_and_counts_errors_over_runs() {
        let points = vec![
            point(1, 0.5, 50.0, 20.0, 0),
            point(2, 0.5, 50.0, 30.0, 0),
            // Full goodput, but p99 over the dashboard's 100 ms: not served.
            point(1, 1.0, 100.0, 150.0, 0),
            point(2, 1.0, 100.0, 140.0, 0),
            // Within the objective, but one run had an error: not served.
            point(1, 0.75, 75.0, 40.0, 0),
            point(2, 0.75, 75.0, 40.0, 1),
        ];
        let best = highest_served(&points, ReadPath::DashboardCqrs).expect("a step served");
        assert_eq!(best.fraction, 0.5);
        assert_eq!(best.p99_ms, 25.0);
        let steps = curve_medians(&points, ReadPath::DashboardCqrs, "curve");
        assert_eq!(
            steps.iter().map(|s| s.fraction).collect::<Vec<_>>(),
            [0.5, 0.75, 1.0]
        );
        assert_eq!(steps[1].errors, 1);
        assert!(highest_served(&points, ReadPath::TrackingCqrs).is_none());
    }

    #[test]
    fn staleness_keeps_misses_beside_the_quantiles_of_the_samples_shown() {
        let round = |run, cqrs_ms: Vec<f64>, cqrs_misses| Round {
            run,
            paths: Vec::new(),
            staleness: Staleness {
                composer_ms: vec![1.0, 2.0],
                cqrs_ms,
                composer_misses: 0,
                cqrs_misses,
            },
        };
        let rounds = [round(1, vec![10.0], 1), round(2, vec![30.0, 20.0], 0)];
        let cqrs = staleness(&rounds, |s| (&s.cqrs_ms, s.cqrs_misses));
        assert_eq!((cqrs.misses, cqrs.samples), (1, 4));
        assert_eq!((cqrs.p50_ms, cqrs.p99_ms), (20.0, 30.0));
        let composer = staleness(&rounds, |s| (&s.composer_ms, s.composer_misses));
        assert_eq!((composer.misses, composer.samples), (0, 4));
        let all_missed = staleness(&[round(1, Vec::new(), 3)], |s| (&s.cqrs_ms, s.cqrs_misses));
        assert_eq!((all_missed.misses, all_missed.samples), (3, 3));
        assert!(all_missed.p50_ms.is_nan());
    }
}
