//! Result files: one machine-readable JSON file per scenario and one human-readable
//! `RESULTS.md` with a section per scenario (a rerun replaces only its own section).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::analytics::{AnalyticsResults, events_label};
use crate::chart::{Chart, Series};
use crate::compare::{CompareResults, PathSummary, ReadPath, curve_medians};
use crate::components::ComponentsResults;
use crate::composer::{ComposerResults, Load};
use crate::ingest::IngestResults;

/// The title of the comparison section, the first of `RESULTS.md`.
pub const COMPARISON: &str = "Comparison: API Composer vs CQRS";

/// Replaces (or appends) the `## {title}` section of `RESULTS.md` in `dir`.
pub fn write_section(dir: &Path, title: &str, body: &str) -> anyhow::Result<()> {
    let path = dir.join("RESULTS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        "# ShopLens benchmark results\n\nWritten by `cargo run --release -p shoplens-benches \
         -- all`; each scenario rewrites its own section.\n"
            .to_owned()
    });
    let heading = format!("## {title}\n");
    let mut out = String::new();
    let mut rest = old.as_str();
    if let Some(at) = rest.find(&heading) {
        out.push_str(&rest[..at]);
        rest = &rest[at + heading.len()..];
        rest = rest.find("\n## ").map_or("", |next| &rest[next + 1..]);
    } else if title == COMPARISON
        && let Some(first) = rest.find("\n## ")
    {
        // The comparison leads the file: it is what the other sections explain.
        out.push_str(&rest[..first + 1]);
        rest = &rest[first + 1..];
    } else {
        out.push_str(rest.trim_end());
        out.push_str("\n\n");
        rest = "";
    }
    out.push_str(&heading);
    out.push('\n');
    out.push_str(body.trim_end());
    out.push_str("\n\n");
    out.push_str(rest);
    std::fs::write(&path, out.trim_end().to_owned() + "\n")
        .with_context(|| format!("failed to write {}", path.display()))
}

fn ms(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}")
    } else {
        "n/a".into()
    }
}

/// What a scenario aims at, and whether the run met it.
#[derive(Clone, Debug, Serialize)]
pub struct Aim {
    /// What is aimed at, e.g. "export memory under 200 MB". Written as `aim`, the key the
    /// results files have always used.
    #[serde(rename = "aim")]
    pub name: String,
    /// The threshold, where the section shows it in a column of its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub measured: String,
    pub met: bool,
}

/// The median of the finite values (NaN when there are none).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The nearest-rank `q` quantile of `v` (NaN when it is empty).
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Where the machine-readable results and charts go: `results/` under the output directory
/// (whose `RESULTS.md` holds the tables).
pub fn data_dir(dir: &Path) -> std::path::PathBuf {
    dir.join("results")
}

/// Writes `results/<stem>.json` (the machine-readable results) and the `title` section of
/// `RESULTS.md` in `dir`.
fn write_scenario(
    dir: &Path,
    stem: &str,
    title: &str,
    results: &impl serde::Serialize,
    markdown: &str,
) -> anyhow::Result<()> {
    let data = data_dir(dir);
    std::fs::create_dir_all(&data)
        .with_context(|| format!("failed to create {}", data.display()))?;
    let json = data.join(format!("{stem}.json"));
    std::fs::write(&json, serde_json::to_vec_pretty(results)?)
        .with_context(|| format!("failed to write {}", json.display()))?;
    write_section(dir, title, markdown)
}

/// Writes `composer.json` and the "Composer" section of `RESULTS.md`.
pub fn write_composer(dir: &Path, r: &ComposerResults) -> anyhow::Result<()> {
    write_scenario(dir, "composer", "Composer", r, &composer_markdown(r))
}

/// The "Composer" section: environment, the medians table, ratios, aims.
pub fn composer_markdown(r: &ComposerResults) -> String {
    let m = &r.machine;
    let o = &r.options;
    let d = &r.data;
    let s = &r.summary;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Command: `{}`{}",
        r.command,
        if o.smoke {
            " (smoke run: sizes too small for figures)"
        } else {
            ""
        }
    );
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "- Date {}, commit {}, {} build, {}.",
        m.date,
        m.git_commit.as_deref().unwrap_or("unknown"),
        m.profile,
        m.rustc
    );
    let _ = writeln!(
        t,
        "- Machine: {} cores ({}), {} MiB memory, {}; load generator, composer and the five \
         services share these cores.",
        m.cores,
        m.cpu_model.as_deref().unwrap_or("unknown CPU"),
        m.memory_mib.map_or("unknown".into(), |v| v.to_string()),
        m.os
    );
    let _ = writeln!(
        t,
        "- Data: {} customers, {} products, {} orders seeded in {:.1} s; reads pick among \
         the {} most recent orders (Zipf s = {} by recency); {} orders at the end. \
         Background writer: {} new orders/s, a lifecycle step every {} ms ({} orders, {} \
         writes, {} errors).",
        d.customers,
        d.products,
        d.seeded_orders,
        d.seed_secs,
        d.read_population,
        o.zipf_exponent,
        d.orders_at_end,
        o.writer_rate_per_sec,
        o.writer_step.as_millis(),
        d.writer.orders_placed,
        d.writer.writes,
        d.writer.errors
    );
    let _ = writeln!(
        t,
        "- {} run(s); per run and mode: {:.1} s warm-up + {:.1} s measured, closed loop \
         ({} workers) and open loop (offered {:.0}% of the no-cache closed-loop throughput); \
         then the direct calls. Total run time {:.0} s. Medians over runs.",
        r.runs.len(),
        o.warmup.as_secs_f64(),
        o.duration.as_secs_f64(),
        o.concurrency,
        o.open_fraction * 100.0,
        r.total_secs
    );
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "| mode | load | offered load (req/s) | throughput (req/s) | p50 ms | p99 ms | \
         p50 / p99 ms from send | downstream calls/request | invalidations | errors | \
         degraded |"
    );
    let _ = writeln!(t, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in &s.rows {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {:.0} | {} | {} | {} / {} | {:.3} | {:.0} | {} | {} |",
            row.mode.name(),
            match row.load {
                Load::Closed => format!("closed, {} workers", o.concurrency),
                Load::Open => "open (same rate)".into(),
            },
            row.offered_rps.map_or("—".into(), |v| format!("{v:.0}")),
            row.throughput_rps,
            ms(row.p50_ms),
            ms(row.p99_ms),
            ms(row.service_p50_ms),
            ms(row.service_p99_ms),
            row.calls_per_request,
            row.invalidations,
            row.errors,
            row.degraded
        );
    }
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "- Same offered load (open loop), median of per-run ratios: p99(no cache) / \
         p99(cache) **{:.1}x**, p99(no cache) / p99(cache + invalidation) **{:.1}x** (latency \
         from the send); from the scheduled start {:.1}x and {:.1}x.",
        s.p99_ratio_no_cache_over_cache,
        s.p99_ratio_no_cache_over_cache_invalidation,
        s.p99_ratio_scheduled_no_cache_over_cache,
        s.p99_ratio_scheduled_no_cache_over_cache_invalidation
    );
    if let Some(run) = r.runs.first() {
        let f = &run.fanout;
        let calls: Vec<String> = ["order", "customer", "products", "payments", "shipments"]
            .iter()
            .map(|n| format!("{n} {}", ms(f.calls[n].p50_ms)))
            .collect();
        let _ = writeln!(
            t,
            "- Fan-out (critical path = two round trips: the order, then customer, products, \
             payments and shipments concurrently; calls made directly at the same offered \
             rate): uncached composer p50 {} ms − (order p50 + slowest second-round p50) {} ms \
             = **{:+.2} ms** overhead (median over runs). Run 1 call p50s (ms): {}; slowest \
             second-round call: {}; order + whole second round per sample p50 {} ms.",
            ms(s.fanout_composer_p50_ms),
            ms(s.fanout_critical_path_p50_ms),
            s.fanout_overhead_ms,
            calls.join(", "),
            f.slowest_second_round_call,
            ms(f.measured_two_rounds_p50_ms)
        );
    }
    let _ = writeln!(t);
    let _ = writeln!(t, "Aims:");
    for aim in &r.aims {
        let _ = writeln!(
            t,
            "- **{}** — {}: {}",
            if aim.met { "met" } else { "not met" },
            aim.name,
            aim.measured
        );
    }
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "How it is measured (also in `results/composer.json`, `notes`):"
    );
    for note in &r.notes {
        let _ = writeln!(t, "- {note}");
    }
    t
}

/// Writes `ingest.json` and the "Ingest" section of `RESULTS.md`.
pub fn write_ingest(dir: &Path, r: &IngestResults) -> anyhow::Result<()> {
    write_scenario(dir, "ingest", "Ingest", r, &ingest_markdown(r))
}

fn rate(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.0}")
    } else {
        "n/a".into()
    }
}

/// The "Ingest" section: environment, throughput, bus rates, freshness, memory, aims.
pub fn ingest_markdown(r: &IngestResults) -> String {
    let m = &r.machine;
    let o = &r.options;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Command: `{}`{}",
        r.command,
        if o.smoke {
            " (smoke run: sizes too small for figures)"
        } else {
            ""
        }
    );
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "- Date {}, commit {}, {} build, {}.",
        m.date,
        m.git_commit.as_deref().unwrap_or("unknown"),
        m.profile,
        m.rustc
    );
    let _ = writeln!(
        t,
        "- Machine: {} cores ({}), {} MiB memory, {}; bench, worker, broker and ClickHouse \
         share these cores.",
        m.cores,
        m.cpu_model.as_deref().unwrap_or("unknown CPU"),
        m.memory_mib.map_or("unknown".into(), |v| v.to_string()),
        m.os
    );
    let crates: Vec<String> = r
        .versions
        .crates
        .iter()
        .map(|(n, v)| format!("{n} {v}"))
        .collect();
    let _ = writeln!(
        t,
        "- Versions: ClickHouse {}; broker {}; crates {}.",
        r.versions.clickhouse_server.as_deref().unwrap_or("not run"),
        r.versions.broker.as_deref().unwrap_or("not run"),
        crates.join(", ")
    );
    for b in &r.backends {
        let _ = writeln!(t, "- {}: {}.", b.backend.name(), b.setup);
    }
    let _ = writeln!(
        t,
        "- Data: {} events per throughput backlog ({} run(s), medians), memory backlog {} \
         events, freshness at {:.0} events/s for {:.0} s (+{:.1} s warm-up). Total run time \
         {:.0} s. Load average (1, 5, 15 min) at start {} and end {} (other work on the machine \
         shares the cores).",
        o.events,
        o.runs,
        o.backlog,
        o.freshness_rate,
        o.freshness_duration.as_secs_f64(),
        o.freshness_warmup.as_secs_f64(),
        r.total_secs,
        r.load_average_start.as_deref().unwrap_or("unknown"),
        r.load_average_end.as_deref().unwrap_or("unknown")
    );
    let _ = writeln!(t);
    let _ = writeln!(t, "Throughput (backlog drained from start to all visible):");
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "| backend | events | payload MiB | batch (events / ms) | worker runtime | events/s | \
         events/s after first batch | CPU s per drain | events per CPU-s | batches | \
         store MiB |"
    );
    let _ = writeln!(t, "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|");
    for b in &r.backends {
        let th = &b.throughput;
        let first = th.runs.first();
        let _ = writeln!(
            t,
            "| {} | {} | {:.1} | {} / {} | {} | **{}** | {} | {:.1} | {} | {} | {} |",
            b.backend.name(),
            th.events,
            th.payload_bytes as f64 / 1_048_576.0,
            th.batch_max_events,
            th.batch_max_delay_ms,
            th.runtime,
            rate(th.median_events_per_sec),
            rate(th.median_steady_events_per_sec),
            th.median_cpu_secs,
            rate(th.median_events_per_cpu_sec),
            first.map_or(0, |r| r.batches),
            first
                .and_then(|r| r.store_bytes)
                .map_or("—".into(), |b| format!("{:.1}", b as f64 / 1_048_576.0))
        );
    }
    let _ = writeln!(t);
    let per_run: Vec<String> = r
        .backends
        .iter()
        .map(|b| {
            let runs: Vec<String> = b
                .throughput
                .runs
                .iter()
                .map(|x| rate(x.events_per_sec))
                .collect();
            format!("{} {}", b.backend.name(), runs.join(" / "))
        })
        .collect();
    let _ = writeln!(t, "- Per run (events/s): {}.", per_run.join("; "));
    for b in &r.backends {
        let th = &b.throughput;
        let _ = writeln!(
            t,
            "- {}: the sink's applies took {:.0}% of the drain time; the bench process (the \
             worker, the rest of it idle) used CPU for {:.0}% of the drain's wall time \
             (medians over runs).",
            b.backend.name(),
            th.median_apply_share * 100.0,
            median(th.runs.iter().map(|r| r.cpu_secs / r.secs).collect()) * 100.0
        );
    }
    for b in &r.backends {
        let bus = &b.bus;
        let _ = writeln!(
            t,
            "- {} bus: publish {} events/s ({:.1} s for the backlog){}.",
            b.backend.name(),
            rate(bus.produce_events_per_sec),
            bus.produce_secs,
            match (bus.consume_events_per_sec, bus.consume_secs) {
                (Some(c), Some(s)) => format!(
                    "; a bare consumer reads {} events/s ({s:.1} s after its first record)",
                    rate(c)
                ),
                _ => String::new(),
            }
        );
        if let (Some(c), Some(consume)) = (&b.sink_ceiling, bus.consume_events_per_sec) {
            let _ = writeln!(
                t,
                "- {}: the worker drained at {:.0}% of the rate a bare consumer reads from the \
                 broker. Without the broker ({}): {} events/s ({} events in {:.1} s, {} \
                 batches, applies {:.1} s).",
                b.backend.name(),
                b.throughput.median_events_per_sec / consume * 100.0,
                c.setup,
                rate(c.events_per_sec),
                c.events,
                c.secs,
                c.batches,
                c.apply_secs
            );
        }
    }
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "Freshness (per applied batch: visible_at − occurred_at of its newest event):"
    );
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "| backend | target events/s | achieved events/s | batch (events / ms) | batches \
         sampled | p50 ms | p99 ms | max ms | oldest event p50 / p99 ms |"
    );
    let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for b in &r.backends {
        let f = &b.freshness;
        let _ = writeln!(
            t,
            "| {} | {:.0} | {:.0} | {} / {} | {} | {} | **{}** | {} | {} / {} |",
            b.backend.name(),
            f.target_rate,
            f.achieved_rate,
            f.batch_max_events,
            f.batch_max_delay_ms,
            f.samples,
            rate(f.p50_ms),
            rate(f.p99_ms),
            rate(f.max_ms),
            rate(f.oldest_event_p50_ms),
            rate(f.oldest_event_p99_ms)
        );
    }
    let _ = writeln!(t);
    let _ = writeln!(t, "Worker memory (the worker alone in a child process):");
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "| backend | backlog events | batch events | drain s | events/s | peak RSS (VmHWM) MiB \
         | max sampled RSS MiB | RSS after drain MiB |"
    );
    let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for b in &r.backends {
        let mm = &b.memory;
        let _ = writeln!(
            t,
            "| {} | {} | {} | {:.1} | {} | **{:.1}** | {:.1} | {:.1} |",
            b.backend.name(),
            mm.backlog_events,
            mm.batch_max_events,
            mm.drain_secs,
            rate(mm.events_per_sec),
            mm.peak_rss_mib,
            mm.max_sampled_rss_mib,
            mm.rss_after_drain_mib
        );
    }
    let _ = writeln!(t);
    let _ = writeln!(t, "Aims:");
    for aim in &r.aims {
        let _ = writeln!(
            t,
            "- **{}** — {}: {}",
            if aim.met { "met" } else { "not met" },
            aim.name,
            aim.measured
        );
    }
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "How it is measured (also in `results/ingest.json`, `notes`):"
    );
    for note in &r.notes {
        let _ = writeln!(t, "- {note}");
    }
    t
}

/// Writes `analytics.json` and the "Analytics" section of `RESULTS.md`.
pub fn write_analytics(dir: &Path, r: &AnalyticsResults) -> anyhow::Result<()> {
    write_scenario(dir, "analytics", "Analytics", r, &analytics_markdown(r))
}

/// The "Analytics" section: environment, data, dashboard against raw scans, growth,
/// exports, aims.
pub fn analytics_markdown(r: &AnalyticsResults) -> String {
    let m = &r.machine;
    let o = &r.options;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Command: `{}`{}",
        r.command,
        if o.smoke {
            " (smoke run: sizes too small for figures)"
        } else {
            ""
        }
    );
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "- Date {}, commit {}, {} build, {}.",
        m.date,
        m.git_commit.as_deref().unwrap_or("unknown"),
        m.profile,
        m.rustc
    );
    let _ = writeln!(
        t,
        "- Machine: {} cores ({}), {} MiB memory, {}; the benchmark client, the analytics \
         server{} share these cores.",
        m.cores,
        m.cpu_model.as_deref().unwrap_or("unknown CPU"),
        m.memory_mib.map_or("unknown".into(), |v| v.to_string()),
        m.os,
        if r.versions.clickhouse_server.is_some() {
            " and ClickHouse"
        } else {
            ""
        }
    );
    let crates: Vec<String> = r
        .versions
        .crates
        .iter()
        .map(|(n, v)| format!("{n} {v}"))
        .collect();
    let _ = writeln!(
        t,
        "- Versions: ClickHouse {}; crates {}.",
        r.versions.clickhouse_server.as_deref().unwrap_or("not run"),
        crates.join(", ")
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
            s.store_bytes
                .map_or("n/a".into(), |b| format!("{:.1}", b as f64 / 1_048_576.0)),
            s.bench_peak_rss_mib
                .map_or("n/a".into(), |v| format!("{v:.0}"))
        );
    }
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
            let errors = |l: &crate::analytics::Latency| {
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
    let _ = writeln!(t);
    let _ = writeln!(t, "Aims:");
    for aim in &r.aims {
        let _ = writeln!(
            t,
            "- **{}** — {}: {}",
            if aim.met { "met" } else { "not met" },
            aim.name,
            aim.measured
        );
    }
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "How it is measured (also in `results/analytics.json`, `notes`):"
    );
    for note in &r.notes {
        let _ = writeln!(t, "- {note}");
    }
    t
}

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

fn fmt_x(v: f64) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v >= 10.0 {
        format!("{v:.0}x")
    } else {
        format!("{v:.1}x")
    }
}

/// Writes `results/compare.json`, the charts and the comparison section of `RESULTS.md`.
pub fn write_compare(dir: &Path, r: &CompareResults) -> anyhow::Result<()> {
    let data = data_dir(dir);
    std::fs::create_dir_all(&data)
        .with_context(|| format!("failed to create {}", data.display()))?;
    for (name, chart) in compare_charts(r) {
        let path = data.join(format!("{}-{name}", compare_names(r).0));
        std::fs::write(&path, chart.svg())
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    let (stem, title) = compare_names(r);
    write_scenario(dir, stem, &title, r, &compare_markdown(r))
}

/// The charts of the comparison: p99 against offered load per path, and how latency grows
/// with the shop.
pub fn compare_charts(r: &CompareResults) -> Vec<(&'static str, Chart)> {
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
                    .map(|(offered, _, _, p99)| (offered, p99))
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
    vec![
        ("tracking-load.svg", curve(true)),
        ("dashboard-load.svg", curve(false)),
        ("growth.svg", growth),
    ]
}

/// The results file stem and the section title of a comparison: the embedded run is the
/// comparison; a run on Kafka and ClickHouse gets its own section.
pub fn compare_names(r: &CompareResults) -> (&'static str, String) {
    match r.options.backend {
        crate::backend::Backend::Embedded => ("compare", COMPARISON.to_owned()),
        crate::backend::Backend::Clickhouse => (
            "compare-clickhouse",
            format!("{COMPARISON}, on Kafka and ClickHouse"),
        ),
    }
}

pub fn compare_markdown(r: &CompareResults) -> String {
    let mut t = String::new();
    let stem = compare_names(r).0;
    let m = &r.machine;
    let o = &r.options;
    let _ = writeln!(t, "Command: `{}`\n", r.command);
    let _ = writeln!(
        t,
        "- Date {}, commit {}, {} build, {}.",
        m.date,
        m.git_commit.as_deref().unwrap_or("unknown"),
        m.profile,
        m.rustc
    );
    let _ = writeln!(
        t,
        "- Machine: {} cores ({}), {} MiB memory, {}; the load generator and the whole \
         system (five services, composer, ingest, analytics{}) share these cores.",
        m.cores,
        m.cpu_model.as_deref().unwrap_or("unknown CPU"),
        m.memory_mib.unwrap_or(0),
        m.os,
        match (&r.versions.clickhouse_server, &r.versions.broker) {
            (Some(ch), Some(b)) => format!(", ClickHouse {ch}, broker {b}"),
            _ => String::new(),
        }
    );
    let crates: Vec<String> = r
        .versions
        .crates
        .iter()
        .map(|(n, v)| format!("{n} {v}"))
        .collect();
    let _ = writeln!(t, "- Versions: {}.", crates.join(", "));
    let _ = writeln!(
        t,
        "- Back end: {} ({}). Shop: {} customers, {} products; sizes {} orders. {} run(s) per \
         size, {:.1} s warm-up + {:.1} s measured per path; total run time {:.0} s.",
        o.backend.name(),
        match o.backend {
            crate::backend::Backend::Embedded =>
                "embedded event log -> embedded Parquet read model",
            crate::backend::Backend::Clickhouse => "Kafka (tansu) -> ClickHouse read model",
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
    let Some(big) = r.sizes.last() else {
        return t;
    };
    let row = |p: ReadPath| big.summary.iter().find(|x| x.path == p);
    let cell = |p: ReadPath, f: &dyn Fn(&PathSummary) -> String| row(p).map_or("n/a".into(), f);
    let lat = |s: &PathSummary| format!("{} / {} ms", fmt_ms(s.p50_ms), fmt_ms(s.p99_ms));
    let thr = |s: &PathSummary| format!("{:.0} req/s", s.throughput_rps);
    let cpu = |s: &PathSummary| format!("{} ms", fmt_ms(s.cpu_ms_per_request));
    // The highest offered load each path served (goodput >= 95% of offered, no errors).
    let sustained = |p: ReadPath| {
        curve_medians(&r.curves, p, "curve")
            .into_iter()
            .filter(|(offered, goodput, _, _)| *goodput >= 0.95 * offered)
            .map(|(offered, _, _, p99)| (offered, p99))
            .next_back()
    };
    let scal = |p: ReadPath| match sustained(p) {
        Some((offered, p99)) => format!("{offered:.0} req/s (p99 {} ms)", fmt_ms(p99)),
        None => "n/a".into(),
    };
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
                "**live**: {} / {} ms",
                fmt_ms(big.staleness_composer_p50_ms),
                fmt_ms(big.staleness_composer_p99_ms)
            ),
            format!(
                "**eventually consistent**: {} / {} ms",
                fmt_ms(big.staleness_cqrs_p50_ms),
                fmt_ms(big.staleness_cqrs_p99_ms)
            ),
            String::new(),
        ],
        [
            track.into(),
            "highest offered load served".into(),
            scal(tc),
            scal(tq),
            String::new(),
        ],
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
        [
            dash.into(),
            "highest offered load served".into(),
            scal(dc),
            scal(dq),
            String::new(),
        ],
        [
            dash.into(),
            "same numbers".into(),
            if big.same_numbers {
                "yes: every row of the four views equal"
            } else {
                "**no** (see the log)"
            }
            .into(),
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
         cached entry evicted by the change's event), the read model eventually consistent \
         (p50 {} ms). *Scalability*: the highest offered load each path served and the load \
         curves below.",
        fmt_x(big.dashboard_p50_ratio),
        fmt_x(big.dashboard_cpu_ratio),
        fmt_ms(big.staleness_composer_p50_ms),
        fmt_ms(big.staleness_cqrs_p50_ms)
    );

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
            f(tc),
            f(tq),
            f(dq),
            f(dc),
            c(dc),
            c(dq),
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
        "| path | phase | fraction of closed-loop max | offered req/s | served req/s | p50 ms | \
         p99 ms |"
    );
    let _ = writeln!(t, "|---|---|---:|---:|---:|---:|---:|");
    for p in ReadPath::ALL {
        for phase in ["curve", "burst-base", "burst-peak", "burst-after"] {
            let fractions: Vec<f64> = {
                let mut v: Vec<f64> = r
                    .curves
                    .iter()
                    .filter(|c| c.path == p && c.phase == phase)
                    .map(|c| c.fraction)
                    .collect();
                v.sort_by(f64::total_cmp);
                v.dedup();
                v
            };
            for (f, (offered, goodput, p50, p99)) in
                fractions.iter().zip(curve_medians(&r.curves, p, phase))
            {
                let _ = writeln!(
                    t,
                    "| {} | {phase} | {f:.2} | {offered:.0} | {goodput:.0} | {} | {} |",
                    p.label(),
                    fmt_ms(p50),
                    fmt_ms(p99)
                );
            }
        }
    }
    let _ = writeln!(t, "\n![growth](results/compare-growth.svg)\n");
    let _ = writeln!(
        t,
        "How it is measured (also in `results/compare.json`, `notes`):"
    );
    for n in &r.notes {
        let _ = writeln!(t, "- {n}");
    }
    t
}

/// Writes `results/components.json` and the "Components" section of `RESULTS.md`.
pub fn write_components(dir: &Path, r: &ComponentsResults) -> anyhow::Result<()> {
    write_scenario(dir, "components", "Components", r, &components_markdown(r))
}

pub fn components_markdown(r: &ComponentsResults) -> String {
    let mut t = String::new();
    let m = &r.machine;
    let _ = writeln!(
        t,
        "Command: `cargo run --release -p shoplens-benches -- components` (the same cases \
         under criterion: `cargo bench -p shoplens-benches`)\n"
    );
    let _ = writeln!(
        t,
        "- Date {}, commit {}, {} build, {}; {} cores ({}).",
        m.date,
        m.git_commit.as_deref().unwrap_or("unknown"),
        m.profile,
        m.rustc,
        m.cores,
        m.cpu_model.as_deref().unwrap_or("unknown CPU")
    );
    let crates: Vec<String> = r.crates.iter().map(|(n, v)| format!("{n} {v}")).collect();
    let _ = writeln!(
        t,
        "- Versions: {}. {} samples of {:.2} s per case after a warm-up, medians; total {:.0} s.\n",
        crates.join(", "),
        r.samples,
        r.sample_secs,
        r.total_secs
    );
    let _ = writeln!(
        t,
        "| case | per iteration | time per iteration | per element | elements/s |"
    );
    let _ = writeln!(t, "|---|---:|---:|---:|---:|");
    for c in &r.cases {
        let per_iter = if c.ns_per_iteration >= 1e6 {
            format!("{:.2} ms", c.ns_per_iteration / 1e6)
        } else {
            format!("{:.1} µs", c.ns_per_iteration / 1e3)
        };
        let _ = writeln!(
            t,
            "| {} | {} {} | {} | {:.0} ns | {:.0} |",
            c.name,
            c.elements_per_iteration,
            c.unit,
            per_iter,
            c.ns_per_element,
            c.elements_per_sec
        );
    }
    let _ = writeln!(
        t,
        "\nCases: event_decode/event_encode (the bus bytes of 200 orders' events <-> checked \
         envelopes), arrow_batch (10,000 decoded events into one Arrow batch per raw table), \
         cache_hit (1,000 Order Summary sections from the composer's cache), dashboard_query \
         (the daily view, 30 days, on an embedded read model of ~100,000 events), export_csv \
         (10,000 purchase rows through the export encoder)."
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank_and_medians_skip_what_is_not_finite() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert!(quantile(&[], 0.5).is_nan());
        assert_eq!(median(vec![3.0, 1.0, 2.0, 10.0]), 2.5);
        assert_eq!(median(vec![3.0, f64::NAN, 1.0]), 2.0);
    }

    #[test]
    fn a_section_is_replaced_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        write_section(dir.path(), "Composer", "one").unwrap();
        write_section(dir.path(), "Ingest", "two").unwrap();
        write_section(dir.path(), "Composer", "three").unwrap();
        let text = std::fs::read_to_string(dir.path().join("RESULTS.md")).unwrap();
        assert!(text.starts_with("# ShopLens benchmark results"), "{text}");
        assert!(text.contains("## Composer\n\nthree\n"), "{text}");
        assert!(text.contains("## Ingest\n\ntwo\n"), "{text}");
        assert!(!text.contains("one"), "{text}");
        assert_eq!(text.matches("## Composer").count(), 1);
    }
}
