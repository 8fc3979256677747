//! The types of `results/write-side.json`: what each configuration's closed loop and the
//! fail-over measured.

use serde::Serialize;

use super::WritesOptions;
use crate::histogram::Histogram;
use crate::machine::Machine;
use crate::results::Aim;

/// One operation of one configuration's closed loop.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Operation {
    /// `create` (`POST /api/v1/orders`) or `pay` (`POST /api/v1/orders/{id}/status`, Paid).
    pub operation: &'static str,
    /// Answered with success in the measured window.
    pub requests: u64,
    pub errors: u64,
    /// Successful operations per second of the measured window.
    pub throughput_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    pub max_ms: f64,
}

impl Operation {
    pub(super) fn of(operation: &'static str, h: &Histogram, errors: u64, secs: f64) -> Self {
        Operation {
            operation,
            requests: h.count(),
            errors,
            throughput_per_sec: if secs > 0.0 {
                h.count() as f64 / secs
            } else {
                0.0
            },
            p50_ms: h.quantile_ms(0.5),
            p99_ms: h.quantile_ms(0.99),
            mean_ms: h.mean_ms(),
            max_ms: h.max_ms(),
        }
    }
}

/// One configuration of the order service and its closed loop.
#[derive(Clone, Debug, Serialize)]
pub struct Configuration {
    /// e.g. `PostgreSQL, 2 replicas`.
    pub name: String,
    /// `sqlite` or `postgres`.
    pub database: &'static str,
    pub replicas: usize,
    pub clients: usize,
    /// The measured window (after the warm-up).
    pub window_secs: f64,
    /// `create`, then `pay`.
    pub operations: Vec<Operation>,
}

/// PostgreSQL's order-creation p99 over SQLite's (no aim: reported).
#[derive(Clone, Debug, Serialize)]
pub struct Ratio {
    pub configuration: String,
    pub create_p99_over_sqlite: f64,
}

/// The relay's fail-over: replica A publishes the outbox, orders are created through B, A
/// dies at once (`ServiceHandle::abort`), B takes over.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Failover {
    /// `relay.takeover_poll_ms` of both replicas (the default).
    pub takeover_poll_ms: u64,
    /// `relay.poll_interval_ms` of both replicas (the default): a write on the replica that
    /// does not publish wakes no relay, so the publisher's poll picks it up.
    pub poll_interval_ms: u64,
    pub rate_per_sec: f64,
    pub before_crash_secs: f64,
    pub after_crash_secs: f64,
    /// A published before the crash and B did not (checked; the run fails otherwise).
    pub first_replica_published: bool,
    /// Orders B answered 201 for.
    pub orders_created: u64,
    /// Creation requests that failed.
    pub errors: u64,
    /// Events of the topic in the log at the end (every kind, duplicates included).
    pub events_in_log: u64,
    /// From the abort until B's relay held the outbox lock (`publishes_outbox()`, polled
    /// every 10 ms).
    pub takeover_ms: f64,
    /// From the abort until the next event appeared in the log: how long the events stalled.
    pub stall_ms: f64,
    /// The longest time from an order's 201 until its OrderCreated event was in the log.
    pub longest_delay_ms: f64,
    /// The same for the orders created before the crash (B writes, A publishes: the poll
    /// interval bounds it), p50 and max.
    pub before_crash_delay_p50_ms: f64,
    pub before_crash_delay_max_ms: f64,
    /// Orders created before events flowed again after the crash whose event appeared only
    /// then: held up by the fail-over (waiting in the outbox, or published by A and not
    /// stamped, during the stall).
    pub held_up: u64,
    /// Orders whose OrderCreated event never appeared (within the wait at the end).
    pub lost: u64,
    /// Events in the log more than once (same event id): published by A but not stamped.
    pub duplicates: u64,
}

/// Versions of what ran besides the machine.
#[derive(Clone, Debug, Serialize)]
pub struct WritesVersions {
    /// `postgres --version` of the server started here.
    pub postgres: String,
    /// The settings it ran with.
    pub postgres_settings: String,
    pub crates: Vec<(String, String)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct WritesResults {
    pub scenario: &'static str,
    pub command: String,
    pub machine: Machine,
    pub versions: WritesVersions,
    pub options: WritesOptions,
    /// SQLite 1 replica, PostgreSQL 1 replica, PostgreSQL 2 replicas.
    pub configurations: Vec<Configuration>,
    pub ratios: Vec<Ratio>,
    pub failover: Failover,
    pub aims: Vec<Aim>,
    pub notes: Vec<String>,
    pub total_secs: f64,
}
