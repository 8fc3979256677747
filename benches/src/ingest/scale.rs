//! Scale-out of the ingest path (issue 17): `shoplens-ingest` workers in one consumer group
//! draining one backlog from Kafka (topics of [`ScaleOptions::partitions`] partitions) into
//! one ClickHouse generation, with 1, 2 and 3 worker processes. Each worker is this binary's
//! hidden `ingest-worker` command (the worker alone, as `shoplens-ingest` starts it), so its
//! CPU time is its own: events/s, and CPU seconds per million events of the workers
//! (`utime + stime` of the child processes) and of the whole machine (broker and ClickHouse
//! included, from `/proc/stat`). The ceiling: one worker process reading the embedded log
//! instead of the broker.
//!
//! Then the rebalance pause: two workers draining, a third joins, later one leaves
//! (SIGTERM: it applies what it holds and leaves the group); for each, the longest time the
//! group as a whole applied nothing (what the generation's stored positions show, sampled
//! every 25 ms).

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use shoplens_bus::{EmbeddedLog, EmbeddedLogConfig, KafkaBus, KafkaConfig};
use shoplens_readmodel::clickhouse::generation_database;
use shoplens_readmodel::config::{ClickHouseConfig, ReadModelConfig, ReadModelKind};
use tokio::time::Instant;

use super::IngestOptions;
use super::drain::ingest_config;
use super::events::{backlog_events, fill, topics};
use super::memory::{ChildSource, ChildSpec};
use crate::child;
use crate::machine::{Machine, machine_busy_secs, pid_cpu_secs};
use crate::report::Report;
use crate::servers::{Servers, unique_name};

/// What to run.
#[derive(Clone, Debug, Serialize)]
pub struct ScaleOptions {
    /// Events in the backlog each run drains.
    pub events: u64,
    /// Partitions of every topic.
    pub partitions: i32,
    /// Worker counts measured.
    pub workers: Vec<usize>,
    pub smoke: bool,
    #[serde(skip)]
    pub ingest: IngestOptions,
}

/// One drain of the backlog by `workers` worker processes.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleRun {
    pub workers: usize,
    /// `kafka` or `embedded log` (the ceiling without the broker).
    pub source: &'static str,
    pub events: u64,
    /// From starting the workers until every event was applied (group joins included).
    pub total_secs: f64,
    /// From the first event applied until the last.
    pub drain_secs: f64,
    pub events_per_sec: f64,
    pub worker_cpu_secs: f64,
    pub worker_cpu_secs_per_million: f64,
    pub machine_cpu_secs_per_million: f64,
}

/// The longest time the group applied nothing after a membership change (`None`: the
/// backlog was drained before the change, so there was nothing to measure).
#[derive(Debug, Clone, Serialize)]
pub struct RebalancePause {
    pub change: &'static str,
    pub longest_pause_secs: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScaleResults {
    pub scenario: &'static str,
    pub command: String,
    pub machine: Machine,
    pub setup: String,
    pub options: ScaleOptions,
    pub runs: Vec<ScaleRun>,
    pub pauses: Vec<RebalancePause>,
    /// Why the pause run could not finish (e.g. the group stopped applying), if it did not.
    pub pauses_error: Option<String>,
    pub total_secs: f64,
}

/// Events the generation `db` has stored positions for, over every partition.
async fn applied(http: &reqwest::Client, url: &str, db: &str) -> u64 {
    let sql = format!(
        "SELECT sum(m) FROM (SELECT max(next_offset) AS m FROM {db}.positions \
         GROUP BY topic, partition)"
    );
    match http.post(url).body(sql).send().await {
        Ok(r) if r.status().is_success() => r
            .text()
            .await
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

/// The worker processes of one run, in one consumer group.
struct Group {
    spec: ChildSpec,
    dir: std::path::PathBuf,
    exe: std::path::PathBuf,
    children: Vec<Child>,
}

impl Group {
    /// No workers yet, in a new consumer group writing a new ClickHouse read model; and the
    /// database of its first generation.
    fn new(
        opts: &ScaleOptions,
        servers: &Servers,
        dir: &Path,
        source: ChildSource,
        topics: &[String],
    ) -> (Group, String) {
        let base = unique_name("scale");
        let db = generation_database(&base, 1);
        let group = Group {
            spec: ChildSpec {
                ingest: ingest_config(
                    &unique_name("scale"),
                    topics,
                    &opts.ingest.clickhouse_worker,
                ),
                read_model: ReadModelConfig {
                    kind: ReadModelKind::Clickhouse,
                    clickhouse: ClickHouseConfig {
                        url: servers.clickhouse_url.clone(),
                        database: base,
                        ..Default::default()
                    },
                    ..Default::default()
                },
                source,
            },
            dir: dir.to_owned(),
            exe: opts.ingest.worker_exe.clone(),
            children: Vec::new(),
        };
        (group, db)
    }

    fn add(&mut self) -> anyhow::Result<()> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut spec = self.spec.clone();
        spec.ingest.listen = ([127, 0, 0, 1], port).into();
        let path = self
            .dir
            .join(format!("worker-{}.json", self.children.len()));
        child::write_spec(&path, &spec)?;
        self.children.push(child::spawn(
            &self.exe,
            "ingest-worker",
            &path,
            Stdio::inherit(),
        )?);
        Ok(())
    }

    fn cpu_secs(&self) -> f64 {
        self.children.iter().map(|c| pid_cpu_secs(c.id())).sum()
    }

    /// SIGTERM to worker `i` (it applies what it holds and leaves the group).
    fn stop(&mut self, i: usize) {
        let pid = self.children[i].id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        for (i, c) in self.children.iter_mut().enumerate() {
            if let Some(status) = c.try_wait()? {
                bail!("worker {i} exited: {status}");
            }
        }
        Ok(())
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// How long the pause run waits without progress before it calls the group stalled.
const STALL: Duration = Duration::from_secs(120);

fn drain_timeout(events: u64) -> Duration {
    Duration::from_secs(120 + events / 2_000)
}

/// Drains the backlog with `workers` processes reading `source`; one [`ScaleRun`].
async fn drain(
    opts: &ScaleOptions,
    servers: &Servers,
    dir: &Path,
    source: ChildSource,
    topics: &[String],
    workers: usize,
) -> anyhow::Result<ScaleRun> {
    let source_name = match source {
        ChildSource::Kafka(_) => "kafka",
        ChildSource::EmbeddedLog { .. } => "embedded log",
    };
    let (mut group, db) = Group::new(opts, servers, dir, source, topics);
    let http = reqwest::Client::new();
    let machine0 = machine_busy_secs();
    let started = Instant::now();
    for _ in 0..workers {
        group.add()?;
    }
    let mut first: Option<Instant> = None;
    loop {
        group.check_alive()?;
        let n = applied(&http, &servers.clickhouse_url, &db).await;
        if n > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if n >= opts.events {
            break;
        }
        if started.elapsed() > drain_timeout(opts.events) {
            bail!("{workers} workers applied {n} of {} events", opts.events);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let total_secs = started.elapsed().as_secs_f64();
    let drain_secs = first.map_or(total_secs, |f| f.elapsed().as_secs_f64());
    let worker_cpu = group.cpu_secs();
    let machine_cpu = machine_busy_secs() - machine0;
    drop(group);
    let million = opts.events as f64 / 1e6;
    let run = ScaleRun {
        workers,
        source: source_name,
        events: opts.events,
        total_secs,
        drain_secs,
        events_per_sec: opts.events as f64 / drain_secs,
        worker_cpu_secs: worker_cpu,
        worker_cpu_secs_per_million: worker_cpu / million,
        machine_cpu_secs_per_million: machine_cpu / million,
    };
    tracing::info!(?run, "scale-out: drained");
    Ok(run)
}

/// Two workers draining, a third joining, then one leaving: the longest pause after each.
async fn pauses(
    opts: &ScaleOptions,
    servers: &Servers,
    dir: &Path,
    kafka: &KafkaConfig,
    topics: &[String],
) -> anyhow::Result<Vec<RebalancePause>> {
    let (mut group, db) = Group::new(
        opts,
        servers,
        dir,
        ChildSource::Kafka(kafka.clone()),
        topics,
    );
    let http = reqwest::Client::new();
    let started = Instant::now();
    group.add()?;
    group.add()?;
    const CHANGES: [&str; 2] = [
        "a third worker joins two",
        "one of three workers leaves (SIGTERM)",
    ];
    // When each change happened, and the longest pause after it so far.
    let mut changed: Vec<Instant> = Vec::new();
    let mut longest = [None::<f64>; 2];
    let mut last_n = 0;
    let mut last_progress = Instant::now();
    loop {
        group.check_alive().ok();
        let n = applied(&http, &servers.clickhouse_url, &db).await;
        let now = Instant::now();
        if n > last_n {
            if let Some(at) = changed.last() {
                let i = changed.len() - 1;
                let gap = now.duration_since(last_progress.max(*at)).as_secs_f64();
                longest[i] = Some(longest[i].unwrap_or(0.0).max(gap));
            }
            last_n = n;
            last_progress = now;
        }
        if n >= opts.events {
            break;
        }
        if changed.is_empty() && n >= opts.events / 4 {
            group.add()?;
            changed.push(Instant::now());
        } else if changed.len() == 1 && n >= opts.events * 3 / 5 {
            group.stop(0);
            changed.push(Instant::now());
        }
        if started.elapsed() > drain_timeout(opts.events) {
            bail!("the pause run applied {n} of {} events", opts.events);
        }
        if !changed.is_empty() && last_progress.elapsed() > STALL {
            bail!(
                "the group applied nothing for {} s after \"{}\" ({n} of {} events applied)",
                STALL.as_secs(),
                CHANGES[changed.len() - 1],
                opts.events
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(CHANGES
        .iter()
        .zip(longest)
        .map(|(change, secs)| RebalancePause {
            change,
            longest_pause_secs: secs,
        })
        .collect())
}

/// Runs the scale-out scenario and writes `scale-out.json` and its section of `RESULTS.md`.
pub async fn run(opts: &ScaleOptions) -> anyhow::Result<ScaleResults> {
    let started = Instant::now();
    let machine = Machine::detect();
    let mut servers = Servers::from_env_or_start().await?;
    let result = async {
        let scratch = tempfile::Builder::new()
            .prefix("shoplens-bench-scale")
            .tempdir()?;
        let kafka = KafkaConfig {
            brokers: servers.kafka_brokers.clone(),
            partitions: opts.partitions,
            session_timeout_ms: opts.ingest.kafka_session_timeout_ms,
            properties: opts.ingest.kafka_properties.clone(),
            ..Default::default()
        };
        let prefix = unique_name("scale");
        let topics = topics(&prefix);
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let bus = KafkaBus::connect(&kafka, &names)
            .await
            .context("connect to the Kafka broker")?;
        tracing::info!(events = opts.events, "scale-out: publishing the backlog");
        fill(
            &bus,
            &mut backlog_events(7),
            &prefix,
            opts.events,
            opts.ingest.publish_chunk,
        )
        .await?;
        let mut runs = Vec::new();
        for &n in &opts.workers {
            runs.push(
                drain(
                    opts,
                    &servers,
                    scratch.path(),
                    ChildSource::Kafka(kafka.clone()),
                    &topics,
                    n,
                )
                .await?,
            );
        }
        let log_dir = scratch.path().join("eventlog");
        {
            let log = EmbeddedLog::open(EmbeddedLogConfig {
                dir: log_dir.clone(),
                fsync: false,
            })?;
            fill(
                &log,
                &mut backlog_events(7),
                "",
                opts.events,
                opts.ingest.publish_chunk,
            )
            .await?;
        }
        runs.push(
            drain(
                opts,
                &servers,
                scratch.path(),
                ChildSource::EmbeddedLog { dir: log_dir },
                &self::topics(""),
                1,
            )
            .await?,
        );
        // A stalled group is a finding, not a reason to lose the drains measured above.
        let pauses = pauses(opts, &servers, scratch.path(), &kafka, &topics)
            .await
            .map_err(|e| format!("{e:#}"));
        anyhow::Ok((runs, pauses))
    }
    .await;
    let setup = format!(
        "tansu Kafka broker ({}) -> shoplens-ingest worker processes in one consumer group \
         -> ClickHouse {}",
        servers.broker_version, servers.clickhouse_version
    );
    servers.stop();
    let (runs, pauses) = result?;
    let (pauses, pauses_error) = match pauses {
        Ok(p) => (p, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let results = ScaleResults {
        scenario: "scale-out",
        command: command_line(opts),
        machine,
        setup,
        options: opts.clone(),
        runs,
        pauses,
        pauses_error,
        total_secs: started.elapsed().as_secs_f64(),
    };
    crate::report::write(&opts.ingest.out, &results)?;
    Ok(results)
}

fn command_line(opts: &ScaleOptions) -> String {
    if opts.smoke {
        return "cargo run --release -p shoplens-benches -- scale-out --smoke".into();
    }
    format!(
        "cargo run --release -p shoplens-benches -- scale-out --events {} --partitions {}",
        opts.events, opts.partitions
    )
}

impl Report for ScaleResults {
    fn title(&self) -> &str {
        "Ingest scale-out: several workers in one consumer group"
    }

    fn stem(&self) -> &str {
        "scale-out"
    }

    fn markdown(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "`{}` ({:.0} s). {}. Machine: {}, {} cores.\n",
            self.command,
            self.total_secs,
            self.setup,
            self.machine.cpu(),
            self.machine.cores
        );
        let _ = writeln!(
            out,
            "Each run drains the same backlog of {} events from topics of {} partitions into a \
             new ClickHouse generation; each worker is its own process. CPU: the worker \
             processes' own, and the whole machine's (broker and ClickHouse included).\n",
            self.options.events, self.options.partitions
        );
        let _ = writeln!(
            out,
            "| workers | source | events/s (first to last applied) | total s (joins included) | worker CPU s / 1M events | machine CPU s / 1M events |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for r in &self.runs {
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.1} | {:.1} | {:.1} |",
                r.workers,
                r.source,
                r.events_per_sec,
                r.total_secs,
                r.worker_cpu_secs_per_million,
                r.machine_cpu_secs_per_million
            );
        }
        let _ = writeln!(
            out,
            "\nRebalance pause (aim: under 10 s): the longest time the group applied nothing \
             after each change, two workers draining the backlog.\n"
        );
        if let Some(e) = &self.pauses_error {
            let _ = writeln!(out, "**Not measured: {e}.**\n");
        }
        let _ = writeln!(out, "| change | longest pause (s) |");
        let _ = writeln!(out, "|---|---|");
        for p in &self.pauses {
            let secs = p
                .longest_pause_secs
                .map_or("not measured (drained before)".to_owned(), |s| {
                    format!("{s:.2}")
                });
            let _ = writeln!(out, "| {} | {secs} |", p.change);
        }
        out
    }
}
