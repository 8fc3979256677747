//! The "Query isolation" section of `RESULTS.md`: the shop idle and under hostile queries,
//! what running queries in workers costs, aims.

use std::fmt::Write as _;

use super::{Bombs, IsolationResults, Pick, median};
use crate::machine::Machine;
use crate::report::Report;
use crate::results::command_line;

impl Report for IsolationResults {
    fn title(&self) -> &str {
        "Query isolation"
    }

    fn stem(&self) -> &str {
        "isolation"
    }

    fn markdown(&self) -> String {
        let mut t = command_line(&self.command, self.options.smoke);
        t.push_str(&setup(&self.machine, self));
        t.push_str(&shop_table(self));
        t.push_str(&cost_table(self));
        t.push_str(&aims_table(self));
        t
    }
}

/// When, on what, and the sizes.
fn setup(m: &Machine, r: &IsolationResults) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "- Date {}, commit {}, {} build; {} cores, {} MiB. The whole system runs in the \
         benchmark's process (embedded default), the load generator too; query workers are \
         child processes in the kernel's idle scheduling class (SCHED_IDLE, the default \
         `analytics.query.workers.idle_class`); every HTTP connection has TCP_NODELAY.",
        m.date,
        m.commit(),
        m.profile,
        m.cores,
        m.memory()
    );
    let o = &r.options;
    let _ = writeln!(
        t,
        "- {} orders seeded; {} s per phase; {} hostile clients cycling {} \
         (deadline 3 s, 512 MiB and 6 CPU-s per worker), all as one user; {}; query workers \
         on {}; {} sequential requests per query shape; medians of {} runs.\n",
        o.orders,
        o.duration.as_secs_f64(),
        o.hostile,
        match o.bombs {
            Bombs::All => "CPU and memory bombs",
            Bombs::Cpu => "CPU bombs only (`--bombs cpu`)",
            Bombs::Memory => "memory bombs only (`--bombs memory`)",
        },
        match o.cool_down_ms {
            None => "the product's cool-down for a user whose queries keep ending their \
                     workers (`analytics.query.workers.cool_down_ms`)"
                .to_owned(),
            Some(0) => "no cool-down (`--cool-down-ms 0`)".to_owned(),
            Some(ms) => format!("a cool-down of {ms} ms (`--cool-down-ms`)"),
        },
        if o.worker_cpus.is_empty() {
            "the default CPU plan (`analytics.query.workers.cpus`: on four CPUs or more the \
             last quarter is theirs and the rest the shop's; on fewer, none set apart)"
                .to_owned()
        } else {
            format!("CPUs {:?} only (`--worker-cpus`)", o.worker_cpus)
        },
        o.samples,
        o.runs
    );
    t
}

/// Order creation and Order Summary, idle and under hostile queries.
fn shop_table(r: &IsolationResults) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| path | idle p50 ms | idle p99 ms | hostile p50 ms | hostile p99 ms | errors |"
    );
    let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|");
    let paths: [(&str, Pick, Pick); 2] = [
        ("order creation", |r| &r.create_idle, |r| &r.create_hostile),
        ("Order Summary", |r| &r.summary_idle, |r| &r.summary_hostile),
    ];
    for (name, idle, hostile) in paths {
        let _ = writeln!(
            t,
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            median(&r.runs, &|run| idle(run).p50_ms),
            median(&r.runs, &|run| idle(run).p99_ms),
            median(&r.runs, &|run| hostile(run).p50_ms),
            median(&r.runs, &|run| hostile(run).p99_ms),
            r.runs
                .iter()
                .map(|run| idle(run).errors + hostile(run).errors)
                .sum::<u64>()
        );
    }
    let _ = writeln!(
        t,
        "\nHostile queries answered (every one an error: deadline, memory, CPU or too busy): \
         {} in all runs.\n",
        r.runs.iter().map(|run| run.hostile_answered).sum::<u64>()
    );
    t
}

/// A small query and a dashboard view, in the server's process and in query workers.
fn cost_table(r: &IsolationResults) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| query | in process p50 ms | p99 ms | query workers p50 ms | p99 ms | added p50 ms |"
    );
    let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|");
    let queries: [(&str, Pick, Pick); 2] = [
        (
            "small SQL (`POST /api/v1/sql`)",
            |r| &r.sql_in_process,
            |r| &r.sql_isolated,
        ),
        (
            "dashboard daily view (in process in both)",
            |r| &r.dashboard_in_process,
            |r| &r.dashboard_isolated,
        ),
    ];
    for (name, inproc, iso) in queries {
        let _ = writeln!(
            t,
            "| {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            median(&r.runs, &|run| inproc(run).p50_ms),
            median(&r.runs, &|run| inproc(run).p99_ms),
            median(&r.runs, &|run| iso(run).p50_ms),
            median(&r.runs, &|run| iso(run).p99_ms),
            median(&r.runs, &|run| iso(run).p50_ms - inproc(run).p50_ms),
        );
    }
    t
}

/// Each aim with its target.
fn aims_table(r: &IsolationResults) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "\n| aim | target | measured | met |");
    let _ = writeln!(t, "|---|---|---|---|");
    for a in &r.aims {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} |",
            a.name,
            a.target.as_deref().unwrap_or_default(),
            a.measured,
            if a.met { "yes" } else { "no" }
        );
    }
    t
}
