//! The write side past one machine (issue 20): order creation and status change on SQLite
//! and on PostgreSQL with one and two replicas, and the outbox relay's fail-over when the
//! replica publishing it dies.
//!
//! The customer and product services run in this process on SQLite, on an embedded log in a
//! temp dir (fsync off, as in every scenario: the bus is not what is measured); one customer
//! and a few products are created once. A PostgreSQL server of the benchmark's own
//! ([`crate::servers::Postgres`], fsync on) holds the order service's databases. Then:
//!
//! 1. **Closed loops**, per configuration (the order service on SQLite with one replica, on
//!    PostgreSQL with one, on PostgreSQL with two sharing one database; a fresh database
//!    each): `clients` clients for a warm-up and `duration`, each creating an order
//!    (`POST /api/v1/orders`) and then paying it (`POST /api/v1/orders/{id}/status`, Paid),
//!    alternating between the replicas. p50/p99 and throughput per operation.
//! 2. **Fail-over** (PostgreSQL, two replicas, a fresh database): A publishes the outbox,
//!    orders are created through B at `failover_rate`; A dies at once; how long until B
//!    publishes, how long the events stalled, the longest delay of an OrderCreated event,
//!    lost and duplicate events.
//!
//! Files: `fixture` (the services and what is created once), `measure` (one closed loop),
//! `failover`, `figures` (the JSON file's types), `render` (the section of `RESULTS.md`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::machine::{Machine, crate_versions};
use crate::report;
use crate::results::Aim;
use crate::servers::Postgres;

mod failover;
mod figures;
mod fixture;
mod measure;
mod render;

pub use figures::{Configuration, Failover, Operation, Ratio, WritesResults, WritesVersions};

/// What the scenario runs.
#[derive(Clone, Debug, Serialize)]
pub struct WritesOptions {
    #[serde(skip)]
    pub out: PathBuf,
    /// Closed-loop clients per configuration.
    pub clients: usize,
    /// Measured time per configuration.
    pub duration: Duration,
    /// Unmeasured time first (connections, caches, the first pages of the tables).
    pub warmup: Duration,
    /// Products the orders pick from.
    pub products: usize,
    /// Orders per second through B during the fail-over.
    pub failover_rate: f64,
    /// Fail-over: orders before A's crash, and after.
    pub failover_before: Duration,
    pub failover_after: Duration,
    pub smoke: bool,
}

impl Default for WritesOptions {
    fn default() -> Self {
        WritesOptions {
            out: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            clients: 8,
            duration: Duration::from_secs(15),
            warmup: Duration::from_secs(1),
            products: 5,
            failover_rate: 50.0,
            failover_before: Duration::from_secs(4),
            failover_after: Duration::from_secs(6),
            smoke: false,
        }
    }
}

impl WritesOptions {
    /// Short windows: checks the harness, not for figures. The fail-over keeps writing long
    /// enough after the crash for the takeover (up to `relay.takeover_poll_ms`, 1 s).
    pub fn smoke(out: PathBuf) -> WritesOptions {
        WritesOptions {
            out,
            duration: Duration::from_millis(1500),
            warmup: Duration::from_millis(300),
            failover_before: Duration::from_millis(1500),
            failover_after: Duration::from_millis(2500),
            smoke: true,
            ..WritesOptions::default()
        }
    }
}

/// The aims: the issue names none in figures but "fail-over within seconds" (here: B
/// publishes within 2 s of A's crash with the default `relay.takeover_poll_ms`) and nothing
/// lost.
fn aims(f: &Failover) -> Vec<Aim> {
    vec![
        Aim {
            name: format!(
                "relay fail-over within seconds (default takeover_poll_ms {})",
                f.takeover_poll_ms
            ),
            target: Some("B publishes within 2 s of A's crash".into()),
            measured: format!("{:.0} ms", f.takeover_ms),
            met: f.takeover_ms < 2000.0,
        },
        Aim {
            name: "no event lost in the fail-over".into(),
            target: Some("every created order's OrderCreated in the log".into()),
            measured: format!("{} of {} orders' events missing", f.lost, f.orders_created),
            met: f.lost == 0 && f.orders_created > 0,
        },
    ]
}

/// PostgreSQL's creation p99 over SQLite's, per PostgreSQL configuration.
fn ratios(configurations: &[Configuration]) -> Vec<Ratio> {
    let p99 = |c: &Configuration| {
        c.operations
            .iter()
            .find(|o| o.operation == "create")
            .map_or(f64::NAN, |o| o.p99_ms)
    };
    let Some(sqlite) = configurations.iter().find(|c| c.database == "sqlite") else {
        return Vec::new();
    };
    configurations
        .iter()
        .filter(|c| c.database == "postgres")
        .map(|c| Ratio {
            configuration: c.name.clone(),
            create_p99_over_sqlite: p99(c) / p99(sqlite),
        })
        .collect()
}

fn notes(opts: &WritesOptions, f: &Failover) -> Vec<String> {
    vec![
        format!(
            "One process: the order service replicas, the customer and product services, the \
             embedded log and the load generator ({} clients) share the machine's cores with \
             the PostgreSQL server; the figures are the whole machine's, not one service's.",
            opts.clients
        ),
        "SQLite runs `journal_mode = WAL`, `synchronous = FULL` (one writer connection); \
         PostgreSQL runs with fsync and synchronous_commit on, ten pool connections per \
         replica. The embedded log runs fsync off in every configuration."
            .into(),
        "Order creation includes the order service's calls to the customer and product \
         services (SQLite, same process); the status change touches the order service only."
            .into(),
        "Closed loop: each client creates an order, then pays it, back to back; iteration i \
         of client c creates through replica (c + i) mod n and pays through the next, so on \
         two replicas each takes half of each operation and a payment goes through the \
         replica that did not create the order. Operations started after the warm-up are \
         counted; throughput is successful operations per second of the measured window."
            .into(),
        format!(
            "Fail-over: replica A starts first and takes the outbox lock (checked), then B \
             (checked to stand by); orders through B at {:.0}/s for {:.1} s, then A is aborted \
             (`ServiceHandle::abort`: no drain, no stamp, its lock session closes) and orders \
             go on through B for {:.1} s. Takeover: from the abort until B's \
             `publishes_outbox()` (polled every 10 ms). An order's delay: from its 201 until \
             its OrderCreated event was read from the log (a consumer woken by each append). \
             The replicas publish to a topic of their own.",
            f.rate_per_sec, f.before_crash_secs, f.after_crash_secs
        ),
        format!(
            "relay.takeover_poll_ms = {} (default): a standing-by replica asks for the lock \
             this often, so the takeover takes up to that plus the server ending the dead \
             session (at once here: the abort closes the socket; a machine that vanishes \
             takes the ~11 s of the lock session's TCP keepalives). One crash per run: where it \
             falls in B's poll cycle decides the figure, anywhere from 0 to that interval.",
            f.takeover_poll_ms
        ),
        format!(
            "relay.poll_interval_ms = {} (default) bounds the idle latency of a write on a \
             replica that does not publish: its commit wakes only its own relay, which stands \
             by, so the publisher finds the row at its next poll: about half the interval on \
             average, at most the interval plus a batch's publish (the delay before the \
             crash shows it). A write on the publishing replica wakes its relay at once.",
            f.poll_interval_ms
        ),
    ]
}

/// Runs the scenario and writes `results/write-side.json` and its section of `RESULTS.md`
/// in `opts.out`.
pub async fn run(opts: &WritesOptions) -> anyhow::Result<WritesResults> {
    let started = Instant::now();
    let pg = Postgres::start().await.context("start PostgreSQL")?;
    tracing::info!(version = %pg.version, "PostgreSQL started");
    let versions = WritesVersions {
        postgres: pg.version.clone(),
        postgres_settings: pg.settings.clone(),
        crates: crate_versions(&["sqlx", "sqlx-postgres", "sqlx-sqlite", "libsqlite3-sys"]),
    };
    let fx = fixture::Fixture::start(opts.products)
        .await
        .context("start the customer and product services")?;
    let mut configurations = Vec::new();
    for (name, database, replicas) in [
        ("SQLite, 1 replica", "sqlite", 1),
        ("PostgreSQL, 1 replica", "postgres", 1),
        ("PostgreSQL, 2 replicas", "postgres", 2),
    ] {
        tracing::info!(configuration = name, "write-side closed loop");
        // A fresh database per configuration.
        let url = if database == "sqlite" {
            fx.sqlite_url("orders-sqlite")
        } else {
            pg.database_url(&format!("orders_{replicas}"))
        };
        let mut handles = Vec::new();
        for _ in 0..replicas {
            handles.push(fx.order_replica(url.clone(), "").await?);
        }
        let urls: Vec<String> = handles.iter().map(|h| h.url()).collect();
        configurations.push(
            measure::closed_loop(
                &fx,
                name,
                database,
                &urls,
                opts.clients,
                opts.warmup,
                opts.duration,
            )
            .await,
        );
        for h in handles {
            h.stop().await;
        }
    }
    tracing::info!("write-side fail-over");
    let failover = failover::failover(&fx, &pg, opts)
        .await
        .context("the fail-over run")?;
    fx.stop().await;
    drop(pg);
    let results = WritesResults {
        scenario: "write-side",
        command: std::iter::once("cargo run --release -p shoplens-benches --".to_owned())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" "),
        machine: Machine::detect(),
        versions,
        options: opts.clone(),
        ratios: ratios(&configurations),
        configurations,
        aims: aims(&failover),
        notes: notes(opts, &failover),
        failover,
        total_secs: started.elapsed().as_secs_f64(),
    };
    report::write(&opts.out, &results)?;
    Ok(results)
}
