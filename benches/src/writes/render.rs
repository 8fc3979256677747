//! The "Write side" section of `RESULTS.md`: each configuration's operations, the
//! PostgreSQL/SQLite ratio, the fail-over, aims and notes.

use std::fmt::Write as _;

use super::WritesResults;
use crate::report::Report;
use crate::results::{aims_list, crate_list, environment, ms, notes_list, rate};

impl Report for WritesResults {
    fn title(&self) -> &str {
        "Write side: SQLite and PostgreSQL, replicas, relay fail-over"
    }

    fn stem(&self) -> &str {
        "write-side"
    }

    fn markdown(&self) -> String {
        let mut t = environment(
            &self.command,
            self.options.smoke,
            &self.machine,
            "the load generator, the services, the embedded log and the PostgreSQL server",
        );
        let _ = writeln!(
            t,
            "- {}; {}; {}. Run time {:.0} s.\n",
            self.versions.postgres,
            self.versions.postgres_settings,
            crate_list(&self.versions.crates),
            self.total_secs
        );
        t.push_str(&self.operations_table());
        t.push_str(&self.failover_table());
        t.push('\n');
        t.push_str(&aims_list(&self.aims));
        t.push('\n');
        t.push_str(&notes_list(self.stem(), &self.notes));
        t
    }
}

impl WritesResults {
    fn operations_table(&self) -> String {
        let o = &self.options;
        let mut t = format!(
            "Order creation and status change (Paid): {} clients in a closed loop, {:.1} s \
             measured after {:.1} s of warm-up, per configuration (a fresh database each).\n\n",
            o.clients,
            o.duration.as_secs_f64(),
            o.warmup.as_secs_f64()
        );
        let _ = writeln!(
            t,
            "| configuration | operation | ops/s | p50 ms | p99 ms | max ms | operations | errors |"
        );
        let _ = writeln!(t, "|---|---|---:|---:|---:|---:|---:|---:|");
        for c in &self.configurations {
            for op in &c.operations {
                let name = match op.operation {
                    "create" => "create (`POST /api/v1/orders`)",
                    _ => "status change to Paid",
                };
                let _ = writeln!(
                    t,
                    "| {} | {name} | {} | {} | {} | {} | {} | {} |",
                    c.name,
                    rate(op.throughput_per_sec),
                    ms(op.p50_ms),
                    ms(op.p99_ms),
                    ms(op.max_ms),
                    op.requests,
                    op.errors
                );
            }
        }
        let ratios: Vec<String> = self
            .ratios
            .iter()
            .map(|r| format!("{} {:.2}x", r.configuration, r.create_p99_over_sqlite))
            .collect();
        let _ = writeln!(
            t,
            "\nOrder creation p99, PostgreSQL over SQLite (no aim; reported): {}.\n",
            ratios.join(", ")
        );
        t
    }

    fn failover_table(&self) -> String {
        let f = &self.failover;
        let mut t = String::from(
            "Relay fail-over (PostgreSQL, two replicas on one database): A publishes the \
             outbox, orders are created through B, A is aborted (a crash), B takes over.\n\n",
        );
        let _ = writeln!(t, "| figure | value |");
        let _ = writeln!(t, "|---|---:|");
        let rows = [
            (
                "relay.takeover_poll_ms (default)".to_owned(),
                f.takeover_poll_ms.to_string(),
            ),
            (
                "relay.poll_interval_ms (default)".to_owned(),
                f.poll_interval_ms.to_string(),
            ),
            (
                format!(
                    "orders created through B ({:.0}/s, {:.1} s before the crash, {:.1} s after)",
                    f.rate_per_sec, f.before_crash_secs, f.after_crash_secs
                ),
                format!("{} ({} errors)", f.orders_created, f.errors),
            ),
            (
                "takeover: A aborted -> B publishes, ms".to_owned(),
                ms(f.takeover_ms),
            ),
            (
                "events stalled: A aborted -> next event in the log, ms".to_owned(),
                ms(f.stall_ms),
            ),
            (
                "longest OrderCreated delay (201 -> in the log), ms".to_owned(),
                ms(f.longest_delay_ms),
            ),
            (
                "delay before the crash (B writes, A publishes: poll-bound), p50 / max ms"
                    .to_owned(),
                format!(
                    "{} / {}",
                    ms(f.before_crash_delay_p50_ms),
                    ms(f.before_crash_delay_max_ms)
                ),
            ),
            (
                "events held up by the fail-over".to_owned(),
                f.held_up.to_string(),
            ),
            ("events lost".to_owned(), f.lost.to_string()),
            (
                "events published twice (A's unstamped batch)".to_owned(),
                f.duplicates.to_string(),
            ),
        ];
        for (name, value) in rows {
            let _ = writeln!(t, "| {name} | {value} |");
        }
        t
    }
}
