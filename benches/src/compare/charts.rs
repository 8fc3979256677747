//! The comparison's charts: p99 against offered load per path, and how latency grows with
//! the shop.

use super::{CompareResults, ReadPath, curve_medians};
use crate::chart::{Chart, Series};
use crate::report::Report;

/// The charts, named `{stem}-tracking-load`, `{stem}-dashboard-load` and `{stem}-growth`.
pub fn charts(r: &CompareResults) -> Vec<(String, Chart)> {
    let curve = |tracking: bool| Chart {
        title: if tracking {
            "Order tracking: p99 latency as offered load rises".into()
        } else {
            "Sales dashboard: p99 latency as offered load rises".into()
        },
        x_label: "offered load (requests/s, log scale)".into(),
        y_label: "p99 latency (ms, log scale)".into(),
        log_x: true,
        log_y: true,
        series: ReadPath::ALL
            .iter()
            .filter(|p| {
                matches!(p, ReadPath::TrackingComposer | ReadPath::TrackingCqrs) == tracking
            })
            .map(|&p| Series {
                name: p.label().into(),
                points: curve_medians(&r.curves, p, "curve")
                    .into_iter()
                    .map(|s| (s.offered_rps, s.p99_ms))
                    .collect(),
            })
            .collect(),
    };
    let growth = Chart {
        title: "Latency p50 as the shop grows".into(),
        x_label: "orders in the shop (log scale)".into(),
        y_label: "p50 latency (ms, log scale)".into(),
        log_x: true,
        log_y: true,
        series: ReadPath::ALL
            .iter()
            .map(|&p| Series {
                name: p.label().into(),
                points: r
                    .sizes
                    .iter()
                    .filter_map(|s| {
                        let row = s.summary.iter().find(|x| x.path == p)?;
                        Some((s.orders as f64, row.p50_ms))
                    })
                    .collect(),
            })
            .collect(),
    };
    let stem = r.stem();
    vec![
        (format!("{stem}-tracking-load"), curve(true)),
        (format!("{stem}-dashboard-load"), curve(false)),
        (format!("{stem}-growth"), growth),
    ]
}
