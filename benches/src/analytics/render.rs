//! The "Analytics" section of `RESULTS.md`: environment, data, dashboard against raw scans,
//! growth, exports, aims.

use std::fmt::Write as _;

use super::{AnalyticsResults, Latency};
use crate::report::Report;
use crate::results::{aims_list, crate_list, environment, mib, ms, notes_list, rate};

impl Report for AnalyticsResults {
    fn title(&self) -> &str {
        "Analytics"
    }

    fn stem(&self) -> &str {
        "analytics"
    }

    fn markdown(&self) -> String {
        let sharing = format!(
            "the benchmark client, the analytics server{}",
            if self.versions.clickhouse_server.is_some() {
                " and ClickHouse"
            } else {
                ""
            }
        );
        let mut t = environment(&self.command, self.options.smoke, &self.machine, &sharing);
        t.push_str(&setup(self));
        t.push_str(&data_table(self));
        t.push_str(&dashboard_table(self));
        t.push_str(&growth_table(self));
        t.push_str(&export_table(self));
        t.push('\n');
        t.push_str(&aims_list(&self.aims));
        t.push('\n');
        t.push_str(&notes_list(self.stem(), &self.notes));
        t
    }
}

/// Versions, the data of each size, how much was measured, and what was not.
fn setup(r: &AnalyticsResults) -> String {
    let o = &r.options;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "- Versions: ClickHouse {}; crates {}.",
        r.versions.clickhouse_server.as_deref().unwrap_or("not run"),
        crate_list(&r.versions.crates)
    );
    for d in &r.data {
        let _ = writeln!(
            t,
            "- Data {}: {} events ({} orders, {} customers, {} products) from {} to {} ({} \
             days), generated and turned into Arrow batches in {:.1} s.",
            events_label(d.events),
            d.events,
            d.orders,
            d.customers,
            d.products,
            d.first_day,
            d.last_day,
            d.days,
            d.prepare_secs
        );
    }
    let _ = writeln!(
        t,
        "- {} run(s) per size and back end; per run and question: dashboard {} warm-up + up to \
         {} timed requests ({:.0} s budget, at least {}), raw scan 1 warm-up + up to {} timed \
         ({:.0} s budget, at least {}). Medians over runs. Export: {} run(s) per format. Total \
         run time {:.0} s. Load average (1, 5, 15 min) at start {} and end {}.",
        o.runs,
        o.warmup,
        o.queries,
        o.query_budget.as_secs_f64(),
        o.min_queries,
        o.raw_queries,
        o.raw_budget.as_secs_f64(),
        o.raw_min_queries,
        o.export_runs,
        r.total_secs,
        r.load_average_start.as_deref().unwrap_or("unknown"),
        r.load_average_end.as_deref().unwrap_or("unknown")
    );
    for skip in &r.skipped {
        let _ = writeln!(t, "- Not measured: {skip}.");
    }
    t
}

/// What each size loaded into each back end.
fn data_table(r: &AnalyticsResults) -> String {
    let mut t = String::new();
    let _ = writeln!(t);
    let _ = writeln!(t, "Data loaded (straight to the sink, one pass per size):");
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "| backend | events | orders rows | product_purchases rows | product_sales_daily rows | \
         customer_spend_daily rows | daily_sales rows | load s | load events/s | store MiB | \
         bench process peak RSS MiB |"
    );
    let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in &r.results {
        let rows = |name: &str| {
            s.table_rows
                .get(name)
                .map_or("n/a".into(), |v| v.to_string())
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} | {} | {} | {} |",
            s.backend.name(),
            s.events,
            rows("orders"),
            rows("product_purchases"),
            rows("product_sales_daily"),
            rows("customer_spend_daily"),
            rows("daily_sales"),
            s.load_secs,
            rate(s.load_events_per_sec),
            s.store_bytes.map_or("n/a".into(), mib),
            s.bench_peak_rss_mib
                .map_or("n/a".into(), |v| format!("{v:.0}"))
        );
    }
    t
}

/// Dashboard latency against the same questions scanning the raw events, and failures.
fn dashboard_table(r: &AnalyticsResults) -> String {
    let mut t = String::new();
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "Dashboard (pre-aggregated tables, GET /api/v1/dashboard/...) against the same question \
         scanning the raw events (POST /api/v1/sql), one client, closed loop; ms, medians over \
         runs of per-run quantiles:"
    );
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "| backend | events | question | dashboard p50 | dashboard p99 | requests | raw p50 | \
         raw p99 | raw requests | raw / dashboard (p50) | same answer |"
    );
    let _ = writeln!(t, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for s in &r.results {
        for q in &s.questions {
            let errors = |l: &Latency| {
                let warmup: u64 = l.runs.iter().map(|r| r.warmup_errors).sum();
                match (l.errors, warmup) {
                    (0, 0) => String::new(),
                    (n, 0) => format!(" ({n} failed)"),
                    (0, w) => format!(" ({w} warm-up failed)"),
                    (n, w) => format!(" ({n} failed, {w} warm-up failed)"),
                }
            };
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | **{}** | {}{} | {} | {} | {}{} | {:.0}x | {} |",
                s.backend.name(),
                events_label(s.events),
                q.question.name,
                ms(q.dashboard.p50_ms),
                ms(q.dashboard.p99_ms),
                q.dashboard.requests,
                errors(&q.dashboard),
                ms(q.raw.p50_ms),
                ms(q.raw.p99_ms),
                q.raw.requests,
                errors(&q.raw),
                q.raw_over_dashboard_p50,
                match q.answers_agree {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "n/a",
                }
            );
        }
    }
    let failures: Vec<String> = r
        .results
        .iter()
        .flat_map(|s| {
            s.questions.iter().flat_map(move |q| {
                [("dashboard", &q.dashboard), ("raw", &q.raw)]
                    .into_iter()
                    .filter_map(move |(way, l)| {
                        l.first_error.as_ref().map(|e| {
                            format!(
                                "{} {} {} ({way}): {}",
                                s.backend.name(),
                                events_label(s.events),
                                q.question.name,
                                e.chars().take(300).collect::<String>()
                            )
                        })
                    })
            })
        })
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(t);
        let _ = writeln!(t, "Failed requests (first error of each):");
        for f in failures {
            let _ = writeln!(t, "- {f}");
        }
    }
    t
}

/// How latency grew with the data, between consecutive sizes.
fn growth_table(r: &AnalyticsResults) -> String {
    let mut t = String::new();
    if !r.growth.is_empty() {
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "Growth with the data (same invocation; ratio = value at the larger size / value \
             at the smaller):"
        );
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "| backend | question | events | dashboard p99 ms | dashboard p99 ratio | \
             dashboard p50 ratio | raw p99 ratio |"
        );
        let _ = writeln!(t, "|---|---|---|---:|---:|---:|---:|");
        for g in &r.growth {
            let _ = writeln!(
                t,
                "| {} | {} | {} -> {} | {} -> {} | **{:.2}x** | {:.2}x | {:.2}x |",
                g.backend.name(),
                g.question,
                events_label(g.from_events),
                events_label(g.to_events),
                ms(g.dashboard_p99_from_ms),
                ms(g.dashboard_p99_to_ms),
                g.dashboard_p99_ratio,
                g.dashboard_p50_ratio,
                g.raw_p99_ratio
            );
        }
    }
    t
}

/// Export throughput and memory.
fn export_table(r: &AnalyticsResults) -> String {
    let o = &r.options;
    let mut t = String::new();
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "Export (`shoplens_analytics::cli::export` of `{}` over the whole span, in a child \
         process; medians over runs, peak = largest VmHWM):",
        o.export_report
    );
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "| backend | events | format | rows | export s | rows/s | process wall s | peak RSS \
         (VmHWM) MiB | max sampled RSS MiB | file MiB |"
    );
    let _ = writeln!(t, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for s in &r.results {
        for e in &s.exports {
            let sampled = e
                .runs
                .iter()
                .map(|x| x.max_sampled_rss_mib)
                .fold(0.0, f64::max);
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {:.2} | **{}** | {:.2} | **{:.1}** | {:.1} | {:.1} |",
                s.backend.name(),
                events_label(s.events),
                e.format,
                e.rows,
                e.median_export_secs,
                rate(e.median_rows_per_sec),
                e.median_wall_secs,
                e.peak_rss_mib,
                sampled,
                e.file_mib
            );
        }
    }
    t
}

/// `1000000` as `1M`, `20000` as `20k`.
pub(super) fn events_label(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(100_000) {
        let m = n as f64 / 1e6;
        if n.is_multiple_of(1_000_000) {
            format!("{m:.0}M")
        } else {
            format!("{m:.1}M")
        }
    } else if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_counts_are_labelled_short() {
        assert_eq!(events_label(10_000_000), "10M");
        assert_eq!(events_label(20_000), "20k");
        assert_eq!(events_label(2_500_000), "2.5M");
        assert_eq!(events_label(1_234), "1234");
    }
}
