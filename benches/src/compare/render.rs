//! The comparison's section of `RESULTS.md`: environment, the seed's comparison table with
//! the figures measured, growth with the shop, and the load curves.

use std::fmt::Write as _;

use super::summary::highest_served;
use super::{
    CompareResults, PathSummary, ReadPath, SERVED_GOODPUT_SHARE, STALENESS_DEADLINE, SizeResult,
    curve_medians,
};
use crate::backend::Backend;
use crate::chart::Chart;
use crate::report::Report;
use crate::results::{COMPARISON, crate_list, environment, notes_list};

impl Report for CompareResults {
    /// The embedded run is the comparison; a run on Kafka and ClickHouse gets its own section.
    fn title(&self) -> &str {
        match self.options.backend {
            Backend::Embedded => COMPARISON,
            Backend::Clickhouse => "Comparison: API Composer vs CQRS, on Kafka and ClickHouse",
        }
    }

    fn stem(&self) -> &str {
        match self.options.backend {
            Backend::Embedded => "compare",
            Backend::Clickhouse => "compare-clickhouse",
        }
    }

    fn markdown(&self) -> String {
        let servers = match (&self.versions.clickhouse_server, &self.versions.broker) {
            (Some(ch), Some(b)) => format!(", ClickHouse {ch}, broker {b}"),
            _ => String::new(),
        };
        let sharing = format!(
            "the load generator and the whole system (five services, composer, ingest, \
             analytics{servers})"
        );
        let mut t = environment(&self.command, false, &self.machine, &sharing);
        t.push_str(&setup(self));
        let Some(big) = self.sizes.last() else {
            return t;
        };
        t.push_str(&the_table(self, big));
        t.push_str(&growth_table(self));
        t.push_str(&scalability_table(self, big));
        let stem = self.stem();
        t.push_str(&format!("\n![growth](results/{stem}-growth.svg)\n\n"));
        t.push_str(&notes_list(stem, &self.notes));
        t
    }

    fn charts(&self) -> Vec<(String, Chart)> {
        super::charts::charts(self)
    }
}

/// Versions, the back end, the shop and the sizes.
fn setup(r: &CompareResults) -> String {
    let o = &r.options;
    let mut t = String::new();
    let _ = writeln!(t, "- Versions: {}.", crate_list(&r.versions.crates));
    let _ = writeln!(
        t,
        "- Back end: {} ({}). Shop: {} customers, {} products; sizes {} orders. {} run(s) per \
         size, {:.1} s warm-up + {:.1} s measured per path; total run time {:.0} s.",
        o.backend.name(),
        match o.backend {
            Backend::Embedded => "embedded event log -> embedded Parquet read model",
            Backend::Clickhouse => "Kafka (tansu) -> ClickHouse read model",
        },
        o.customers,
        o.products,
        r.sizes
            .iter()
            .map(|s| format!("{} ({} events)", s.orders, s.events))
            .collect::<Vec<_>>()
            .join(", "),
        o.runs,
        o.warmup.as_secs_f64(),
        o.duration.as_secs_f64(),
        r.total_secs
    );
    t
}

/// The seed's comparison table, its figures measured at the largest size `big`.
fn the_table(r: &CompareResults, big: &SizeResult) -> String {
    let o = &r.options;
    let mut t = String::new();
    let row = |p: ReadPath| big.summary.iter().find(|x| x.path == p);
    let cell = |p: ReadPath, f: &dyn Fn(&PathSummary) -> String| row(p).map_or("n/a".into(), f);
    let stale = |p50, p99, misses| fmt_staleness(p50, p99, misses, big.staleness_samples);
    let lat = |s: &PathSummary| format!("{} / {} ms", fmt_ms(s.p50_ms), fmt_ms(s.p99_ms));
    let thr = |s: &PathSummary| format!("{:.0} req/s", s.throughput_rps);
    let cpu = |s: &PathSummary| format!("{} ms", fmt_ms(s.cpu_ms_per_request));
    // The highest offered load each path served, judged against its latency objective.
    let scal = |p: ReadPath| match highest_served(&r.curves, p) {
        Some(s) => format!("{:.0} req/s (p99 {} ms)", s.offered_rps, fmt_ms(s.p99_ms)),
        None if r.curves.iter().any(|c| c.path == p) => "none of the steps".into(),
        None => "n/a".into(),
    };
    let served = |p: ReadPath| format!("highest offered load served ({})", served_rule(p));
    let _ = writeln!(
        t,
        "\n### The table, measured ({} orders, {} events)\n",
        big.orders, big.events
    );
    let (tc, tq, dq, dc) = (
        ReadPath::TrackingComposer,
        ReadPath::TrackingCqrs,
        ReadPath::DashboardCqrs,
        ReadPath::DashboardComposer,
    );
    let (track, dash) = ("order tracking", "sales dashboard");
    let mut rows: Vec<[String; 5]> = vec![
        [
            track.into(),
            "latency p50 / p99".into(),
            cell(tc, &lat),
            cell(tq, &lat),
            format!("CQRS/composer p50 {}", fmt_x(big.tracking_p50_ratio)),
        ],
        [
            track.into(),
            format!(
                "throughput, closed loop ({} workers)",
                o.tracking_concurrency
            ),
            cell(tc, &thr),
            cell(tq, &thr),
            String::new(),
        ],
        [
            track.into(),
            "CPU per request".into(),
            cell(tc, &cpu),
            cell(tq, &cpu),
            String::new(),
        ],
        [
            track.into(),
            "staleness after a status change, p50 / p99".into(),
            format!(
                "**live**: {}",
                stale(
                    big.staleness_composer_p50_ms,
                    big.staleness_composer_p99_ms,
                    big.staleness_composer_misses
                )
            ),
            format!(
                "**eventually consistent**: {}",
                stale(
                    big.staleness_cqrs_p50_ms,
                    big.staleness_cqrs_p99_ms,
                    big.staleness_cqrs_misses
                )
            ),
            String::new(),
        ],
        [track.into(), served(tc), scal(tc), scal(tq), String::new()],
        [
            dash.into(),
            "latency p50 / p99".into(),
            cell(dc, &lat),
            cell(dq, &lat),
            format!("composer/CQRS p50 **{}**", fmt_x(big.dashboard_p50_ratio)),
        ],
        [
            dash.into(),
            format!(
                "throughput, closed loop ({} workers)",
                o.dashboard_concurrency
            ),
            cell(dc, &thr),
            cell(dq, &thr),
            String::new(),
        ],
        [
            dash.into(),
            "CPU per request".into(),
            cell(dc, &cpu),
            cell(dq, &cpu),
            format!("composer/CQRS **{}**", fmt_x(big.dashboard_cpu_ratio)),
        ],
        [dash.into(), served(dc), scal(dc), scal(dq), String::new()],
        [
            dash.into(),
            "same numbers".into(),
            // A run whose answers differ fails before writing this table.
            "yes: every row of the four views equal".into(),
            String::new(),
            String::new(),
        ],
    ];
    let first = &r.sizes[0];
    let growth = |p: ReadPath| {
        let a = first.summary.iter().find(|x| x.path == p)?;
        let b = big.summary.iter().find(|x| x.path == p)?;
        Some(b.p50_ms / a.p50_ms)
    };
    let g = |p: ReadPath| growth(p).map_or("n/a".into(), fmt_x);
    if r.sizes.len() > 1 {
        rows.push([
            format!(
                "growth {}x orders ({} -> {})",
                big.orders / first.orders.max(1),
                first.orders,
                big.orders
            ),
            "p50 grows".into(),
            format!("tracking {}, dashboard {}", g(tc), g(dc)),
            format!("tracking {}, dashboard {}", g(tq), g(dq)),
            String::new(),
        ]);
    }
    let _ = writeln!(t, "| requirement | measure | API Composer | CQRS | ratio |");
    let _ = writeln!(t, "|---|---|---:|---:|---:|");
    for row in &rows {
        let _ = writeln!(t, "| {} |", row.join(" | "));
    }
    let tracking = if big.tracking_p50_ratio >= 1.0 {
        format!(
            "for tracking one order the composer answers {} faster at the median than a point \
             look-up in the columnar read model, at {} of its CPU per request",
            fmt_x(big.tracking_p50_ratio),
            row(tc).zip(row(tq)).map_or("n/a".into(), |(c, q)| format!(
                "{:.0}%",
                100.0 * c.cpu_ms_per_request / q.cpu_ms_per_request
            ))
        )
    } else {
        format!(
            "for tracking one order the read model answers {} faster at the median than the \
             composer",
            fmt_x(1.0 / big.tracking_p50_ratio)
        )
    };
    let _ = writeln!(
        t,
        "\nThe seed's comparison table against these figures. *Query performance*: the \
         composer's live dashboard is {} slower at the median than the read model's and costs \
         {} the CPU per request, and its cost grows with the whole order history; {tracking}. \
         *Data freshness*: the composer is live (a status change shows after p50 {} ms, its \
         cached entry evicted by the change's event; {} of {} samples missed the {} s \
         deadline), the read model eventually consistent (p50 {} ms; {} of {} missed). \
         *Scalability*: the highest offered load each path served (goodput, counted inside \
         each step's window, >= {:.0}% of offered, no errors, and p99 <= {} ms for order \
         tracking, <= {} ms for the dashboard) and the load curves below.",
        fmt_x(big.dashboard_p50_ratio),
        fmt_x(big.dashboard_cpu_ratio),
        fmt_ms(big.staleness_composer_p50_ms),
        big.staleness_composer_misses,
        big.staleness_samples,
        STALENESS_DEADLINE.as_secs(),
        fmt_ms(big.staleness_cqrs_p50_ms),
        big.staleness_cqrs_misses,
        big.staleness_samples,
        SERVED_GOODPUT_SHARE * 100.0,
        ReadPath::TrackingCqrs.p99_objective().as_millis(),
        ReadPath::DashboardCqrs.p99_objective().as_millis()
    );
    t
}

/// Each path's latency, CPU and memory as the shop grows; errors.
fn growth_table(r: &CompareResults) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "\n### Growth (medians over runs)\n");
    let _ = writeln!(
        t,
        "| orders | events | seeded in s | read model caught up in s | tracking composer p50/p99 \
         ms | tracking CQRS p50/p99 ms | dashboard CQRS p50/p99 ms | dashboard composer p50/p99 \
         ms | dashboard CPU ms composer / CQRS | same numbers | RSS MiB start / end / peak |"
    );
    let _ = writeln!(t, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|");
    for s in &r.sizes {
        let f = |p: ReadPath| {
            s.summary
                .iter()
                .find(|x| x.path == p)
                .map_or("n/a".into(), |x| {
                    format!("{} / {}", fmt_ms(x.p50_ms), fmt_ms(x.p99_ms))
                })
        };
        let c = |p: ReadPath| {
            s.summary
                .iter()
                .find(|x| x.path == p)
                .map_or("n/a".into(), |x| fmt_ms(x.cpu_ms_per_request))
        };
        let _ = writeln!(
            t,
            "| {} | {} | {:.1} | {:.1} | {} | {} | {} | {} | {} / {} | {} | {:.0} / {:.0} / {:.0} |",
            s.orders,
            s.events,
            s.seed_secs,
            s.catch_up_secs,
            f(ReadPath::TrackingComposer),
            f(ReadPath::TrackingCqrs),
            f(ReadPath::DashboardCqrs),
            f(ReadPath::DashboardComposer),
            c(ReadPath::DashboardComposer),
            c(ReadPath::DashboardCqrs),
            if s.same_numbers { "yes" } else { "**no**" },
            s.rss_start_mib,
            s.rss_end_mib,
            s.peak_rss_mib
        );
    }
    let errors: Vec<String> = r
        .sizes
        .iter()
        .flat_map(|s| s.summary.iter().map(move |x| (s.orders, x.path, x.errors)))
        .filter(|(_, _, e)| *e > 0)
        .map(|(orders, p, e)| format!("{} at {orders} orders: {e}", p.label()))
        .collect();
    let _ = writeln!(
        t,
        "\nErrors in the closed loops (all sizes and runs): {}.",
        if errors.is_empty() {
            "none".to_owned()
        } else {
            errors.join("; ")
        }
    );

    t
}

/// Each path at rising offered load and through the burst, at the largest size `big`.
fn scalability_table(r: &CompareResults, big: &SizeResult) -> String {
    let stem = r.stem();
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\n### Scalability at {} orders (open loop, latency from the scheduled start)\n",
        big.orders
    );
    let _ = writeln!(
        t,
        "![order tracking](results/{stem}-tracking-load.svg) \
         ![sales dashboard](results/{stem}-dashboard-load.svg)\n"
    );
    let _ = writeln!(
        t,
        "Served req/s counts answers without error inside each step's window; late ones came \
         after it (in the latencies only). Order tracking: {}; sales dashboard: {}.\n",
        served_rule(ReadPath::TrackingCqrs),
        served_rule(ReadPath::DashboardCqrs)
    );
    let _ = writeln!(
        t,
        "| path | phase | fraction of closed-loop max | offered req/s | served req/s | late | \
         errors | p50 ms | p99 ms | served |"
    );
    let _ = writeln!(t, "|---|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for p in ReadPath::ALL {
        for phase in ["curve", "burst-base", "burst-peak", "burst-after"] {
            for s in curve_medians(&r.curves, p, phase) {
                let _ = writeln!(
                    t,
                    "| {} | {phase} | {:.2} | {:.0} | {:.0} | {} | {} | {} | {} | {} |",
                    p.label(),
                    s.fraction,
                    s.offered_rps,
                    s.goodput_rps,
                    s.late,
                    s.errors,
                    fmt_ms(s.p50_ms),
                    fmt_ms(s.p99_ms),
                    if s.served(p.p99_objective()) {
                        "yes"
                    } else {
                        "no"
                    }
                );
            }
        }
    }
    t
}

/// When a load step of `p` counts as served, in words.
fn served_rule(p: ReadPath) -> String {
    format!(
        "served = goodput >= {:.0}% of offered, no errors, p99 <= {} ms",
        SERVED_GOODPUT_SHARE * 100.0,
        p.p99_objective().as_millis()
    )
}

/// A path's staleness: its quantiles over the samples it showed in time, and how many of
/// `samples` it missed, so a path that falls behind cannot look fresher by losing its
/// slowest samples.
fn fmt_staleness(p50: f64, p99: f64, misses: u64, samples: u64) -> String {
    let missed = format!(
        "{misses} of {samples} missed the {} s deadline",
        STALENESS_DEADLINE.as_secs()
    );
    if samples == 0 {
        "not measured (no samples)".into()
    } else if misses >= samples {
        format!("none shown in time ({missed})")
    } else {
        format!("{} / {} ms ({missed})", fmt_ms(p50), fmt_ms(p99))
    }
}

/// Milliseconds to about three significant figures.
fn fmt_ms(v: f64) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A ratio, `9.4x` or `31x`.
fn fmt_x(v: f64) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v >= 10.0 {
        format!("{v:.0}x")
    } else {
        format!("{v:.1}x")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_shows_its_misses_beside_the_quantiles() {
        assert_eq!(
            fmt_staleness(12.34, 456.7, 0, 20),
            "12.3 / 457 ms (0 of 20 missed the 10 s deadline)"
        );
        assert_eq!(
            fmt_staleness(3.0, 9.5, 2, 20),
            "3.00 / 9.50 ms (2 of 20 missed the 10 s deadline)"
        );
        assert_eq!(
            fmt_staleness(f64::NAN, f64::NAN, 3, 3),
            "none shown in time (3 of 3 missed the 10 s deadline)"
        );
        assert_eq!(
            fmt_staleness(f64::NAN, f64::NAN, 0, 0),
            "not measured (no samples)"
        );
    }

    #[test]
    fn the_served_rule_states_each_paths_latency_objective() {
        assert_eq!(
            served_rule(ReadPath::DashboardComposer),
            "served = goodput >= 95% of offered, no errors, p99 <= 100 ms"
        );
        assert_eq!(
            served_rule(ReadPath::TrackingComposer),
            "served = goodput >= 95% of offered, no errors, p99 <= 50 ms"
        );
    }
}
