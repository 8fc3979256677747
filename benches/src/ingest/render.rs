//! The "Ingest" section of `RESULTS.md`: environment, throughput, bus rates, freshness,
//! memory, aims.

use std::fmt::Write as _;

use super::IngestResults;
use crate::report::Report;
use crate::results::{aims_list, crate_list, environment, median, mib, notes_list, rate};

impl Report for IngestResults {
    fn title(&self) -> &str {
        "Ingest"
    }

    fn stem(&self) -> &str {
        "ingest"
    }

    fn markdown(&self) -> String {
        let mut t = environment(
            &self.command,
            self.options.smoke,
            &self.machine,
            "bench, worker, broker and ClickHouse",
        );
        t.push_str(&setup(self));
        t.push_str(&throughput_table(self));
        t.push_str(&drain_lines(self));
        t.push_str(&freshness_table(self));
        t.push_str(&memory_table(self));
        t.push('\n');
        t.push_str(&aims_list(&self.aims));
        t.push('\n');
        t.push_str(&notes_list(self.stem(), &self.notes));
        t
    }
}

/// Versions, what each back end ran on, and the sizes.
fn setup(r: &IngestResults) -> String {
    let mut t = String::new();
    let o = &r.options;
    let _ = writeln!(
        t,
        "- Versions: ClickHouse {}; broker {}; crates {}.",
        r.versions.clickhouse_server.as_deref().unwrap_or("not run"),
        r.versions.broker.as_deref().unwrap_or("not run"),
        crate_list(&r.versions.crates)
    );
    for b in &r.backends {
        let _ = writeln!(t, "- {}: {}.", b.backend.name(), b.setup);
    }
    let _ = writeln!(
        t,
        "- Data: {} events per throughput backlog ({} run(s), medians), memory backlog {} \
         events, freshness at {:.0} events/s for {:.0} s (+{:.1} s warm-up), then a burst at \
         {:.0} events/s for {:.0} s. Total run time \
         {:.0} s. Load average (1, 5, 15 min) at start {} and end {} (other work on the machine \
         shares the cores).",
        o.events,
        o.runs,
        o.backlog,
        o.freshness_rate,
        o.freshness_duration.as_secs_f64(),
        o.freshness_warmup.as_secs_f64(),
        o.burst_rate,
        o.burst_duration.as_secs_f64(),
        r.total_secs,
        r.load_average_start.as_deref().unwrap_or("unknown"),
        r.load_average_end.as_deref().unwrap_or("unknown")
    );
    t
}

/// Events/s draining the backlog, per back end.
fn throughput_table(r: &IngestResults) -> String {
    let mut t = String::new();
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
            "| {} | {} | {} | {} / {} | {} | **{}** | {} | {:.1} | {} | {} | {} |",
            b.backend.name(),
            th.events,
            mib(th.payload_bytes),
            th.batch_max_events,
            th.batch_max_delay_ms,
            th.runtime,
            rate(th.median_events_per_sec),
            rate(th.median_steady_events_per_sec),
            th.median_cpu_secs,
            rate(th.median_events_per_cpu_sec),
            first.map_or(0, |r| r.batches),
            first.and_then(|r| r.store_bytes).map_or("—".into(), mib)
        );
    }
    t
}

/// Per-run rates, where the drain time went, and what the bus alone does.
fn drain_lines(r: &IngestResults) -> String {
    let mut t = String::new();
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
    t
}

/// Freshness lag at a steady load, per back end.
fn freshness_table(r: &IngestResults) -> String {
    let mut t = String::new();
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
    for (b, f, load) in r
        .backends
        .iter()
        .flat_map(|b| [(b, &b.freshness, "steady"), (b, &b.burst, "burst")])
    {
        let _ = writeln!(
            t,
            "| {} ({load}) | {:.0} | {:.0} | {} / {} | {} | {} | **{}** | {} | {} / {} |",
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
    t
}

/// The worker's memory draining a backlog, per back end.
fn memory_table(r: &IngestResults) -> String {
    let mut t = String::new();
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
    t
}
