//! The "Composer" section of `RESULTS.md`: environment, the medians table, the ratios at the
//! same offered load, the fan-out check, aims.

use std::fmt::Write as _;

use super::{ComposerResults, Load};
use crate::report::Report;
use crate::results::{aims_list, environment, ms, notes_list};

impl Report for ComposerResults {
    fn title(&self) -> &str {
        "Composer"
    }

    fn stem(&self) -> &str {
        "composer"
    }

    fn markdown(&self) -> String {
        let r = self;
        let o = &r.options;
        let d = &r.data;
        let s = &r.summary;
        let mut t = environment(
            &r.command,
            o.smoke,
            &r.machine,
            "load generator, composer and the five services",
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
             ({} workers) and open loop (offered {:.0}% of the no-cache closed-loop \
             throughput); then the direct calls. Total run time {:.0} s. Medians over runs.",
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
             p99(cache) **{:.1}x**, p99(no cache) / p99(cache + invalidation) **{:.1}x** \
             (latency from the send); from the scheduled start {:.1}x and {:.1}x.",
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
                "- Fan-out (critical path = two round trips: the order, then customer, \
                 products, payments and shipments concurrently; calls made directly at the \
                 same offered rate): uncached composer p50 {} ms − (order p50 + slowest \
                 second-round p50) {} ms = **{:+.2} ms** overhead (median over runs). Run 1 \
                 call p50s (ms): {}; slowest second-round call: {}; order + whole second round \
                 per sample p50 {} ms.",
                ms(s.fanout_composer_p50_ms),
                ms(s.fanout_critical_path_p50_ms),
                s.fanout_overhead_ms,
                calls.join(", "),
                f.slowest_second_round_call,
                ms(f.measured_two_rounds_p50_ms)
            );
        }
        let _ = writeln!(t);
        t.push_str(&aims_list(&r.aims));
        let _ = writeln!(t);
        t.push_str(&notes_list(self.stem(), &r.notes));
        t
    }
}
