//! A real crash at every failpoint of an apply (`shoplens_ingest::failpoint`), on both
//! stores: the worker runs in a child process (this test binary, running only
//! [`failpoint_child_worker`]) over the embedded log, armed to abort at one point; each test
//! asserts that the child died there (SIGABRT), restarts the worker in this process, and
//! checks that every event counts exactly once.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shoplens_ingest::clickhouse::ClickHouseStore;
use shoplens_ingest::embedded::EmbeddedStore;
use shoplens_ingest::failpoint;
use shoplens_ingest::sink::ReadModelStore;
use shoplens_ingest::startup::{IngestConfig, IngestHandle, embedded_sources, start};
use shoplens_readmodel::config::{ClickHouseConfig, EmbeddedConfig};
use shoplens_test_support::events::{StreamSpec, shop_events};

use crate::support::*;

/// The child's store directory and log.
const DIR: &str = "SHOPLENS_TEST_FAILPOINT_DIR";
/// Set when the child's store is ClickHouse: the database base name.
const CLICKHOUSE_DATABASE: &str = "SHOPLENS_TEST_FAILPOINT_CLICKHOUSE";

fn config() -> IngestConfig {
    let mut c = IngestConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        ..Default::default()
    };
    c.worker.batch_max_events = 500;
    c.worker.batch_max_delay_ms = 10;
    c.worker.retry_initial_ms = 10;
    c.worker.retry_max_ms = 50;
    c
}

async fn store(dir: &Path, clickhouse: Option<&str>) -> Arc<dyn ReadModelStore> {
    match clickhouse {
        None => Arc::new(
            EmbeddedStore::open(EmbeddedConfig {
                dir: dir.join("readmodel"),
                fsync: false,
                // Compactions early and often, so that one happens within the test's events.
                compact_fan_in: 4,
                aggregate_snapshot_after: 4,
                ..Default::default()
            })
            .expect("open the embedded store"),
        ),
        Some(database) => {
            let url = std::env::var("SHOPLENS_TEST_CLICKHOUSE_URL")
                .expect("SHOPLENS_TEST_CLICKHOUSE_URL: run the tests through ./scripts/test.sh");
            let config = ClickHouseConfig {
                url,
                database: database.to_owned(),
                request_timeout_ms: 10_000,
                ..ClickHouseConfig::default()
            };
            Arc::new(ClickHouseStore::connect(&config).await.expect("connect"))
        }
    }
}

async fn start_worker(
    dir: &Path,
    clickhouse: Option<&str>,
) -> (IngestHandle, shoplens_bus::EmbeddedLog) {
    let log = open_log(dir);
    let topics = TOPICS.iter().map(|t| t.to_string()).collect();
    let handle = start(
        &config(),
        store(dir, clickhouse).await,
        embedded_sources(log.clone(), topics),
    )
    .await
    .expect("start ingest");
    (handle, log)
}

/// Not a test on its own: the worker process the failpoint tests (and the worker's
/// SIGKILL test) start with [`spawn_worker`]. Without [`DIR`] it returns at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the failpoint tests' child process"]
async fn failpoint_child_worker() {
    let Some(dir) = std::env::var_os(DIR) else {
        return;
    };
    let clickhouse = std::env::var(CLICKHOUSE_DATABASE).ok();
    let _running = start_worker(&PathBuf::from(dir), clickhouse.as_deref()).await;
    std::future::pending::<()>().await;
}

/// Starts the worker in a child process: this test binary, running only
/// [`failpoint_child_worker`], over the log and store under `dir` (ClickHouse's `clickhouse`
/// database when given), armed at `failpoint` (`name@n`) when given. It is killed if the
/// handle is dropped.
pub fn spawn_worker(
    dir: &Path,
    clickhouse: Option<&str>,
    failpoint: Option<String>,
) -> tokio::process::Child {
    tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "failpoints::failpoint_child_worker",
            "--ignored",
            "--nocapture",
        ])
        .env(DIR, dir)
        .envs(failpoint.map(|f| ("SHOPLENS_FAILPOINT", f)))
        .envs(clickhouse.map(|d| (CLICKHOUSE_DATABASE, d)))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the child worker")
}

/// Publishes a shop's events, runs the worker in a child process armed at `point` (its
/// `nth` hit) until it aborts there, then restarts it here: the read model must hold every
/// event exactly once.
async fn crash_at(point: &'static str, nth: u32, clickhouse: bool) {
    assert!(failpoint::ALL.contains(&point), "{point}");
    let dir = tempfile::tempdir().unwrap();
    let events = shop_events(&StreamSpec {
        seed: 11,
        orders: 1_500,
        ..Default::default()
    });
    {
        // The log has one process at a time: the child's, until it is gone.
        let log = open_log(dir.path());
        publish(&log, &events).await;
    }
    let database = clickhouse.then(|| format!("t_fp_{}", uuid::Uuid::now_v7().simple()));

    let mut child = spawn_worker(
        dir.path(),
        database.as_deref(),
        Some(format!("{point}@{nth}")),
    );
    let status = tokio::time::timeout(Duration::from_secs(120), child.wait())
        .await
        .unwrap_or_else(|_| panic!("the worker never reached failpoint {point}"))
        .expect("reap the child worker");
    assert_eq!(
        status.signal(),
        Some(libc_sigabrt()),
        "the worker did not die at failpoint {point}: {status}"
    );

    let (handle, log) = start_worker(dir.path(), database.as_deref()).await;
    wait_caught_up(&handle, &log, &TOPICS).await;
    let (_, sink) = handle.ingest().live();
    assert_read_model(&sink, &events).await;
    handle.stop().await;
}

/// SIGABRT's number (6 on Linux, where these tests run).
fn libc_sigabrt() -> i32 {
    6
}

#[tokio::test]
async fn embedded_crash_after_a_raw_segment_is_written() {
    crash_at(failpoint::EMBEDDED_RAW_SEGMENT_WRITTEN, 3, false).await;
}

#[tokio::test]
async fn embedded_crash_after_every_segment_before_the_manifest() {
    crash_at(failpoint::EMBEDDED_SEGMENTS_WRITTEN, 3, false).await;
}

#[tokio::test]
async fn embedded_crash_while_swapping_the_manifest() {
    crash_at(failpoint::EMBEDDED_MANIFEST_TMP_WRITTEN, 3, false).await;
}

#[tokio::test]
async fn embedded_crash_after_the_manifest_is_swapped() {
    crash_at(failpoint::EMBEDDED_MANIFEST_SWAPPED, 3, false).await;
}

#[tokio::test]
async fn embedded_crash_in_a_compaction_before_its_manifest() {
    crash_at(failpoint::EMBEDDED_COMPACTION_BEFORE_SWAP, 1, false).await;
}

#[tokio::test]
async fn embedded_crash_after_an_apply_before_the_bus_commit() {
    crash_at(failpoint::WORKER_APPLIED, 3, false).await;
}

#[tokio::test]
async fn clickhouse_crash_after_the_journal_start_mark() {
    crash_at(failpoint::CLICKHOUSE_JOURNAL_STARTED, 3, true).await;
}

#[tokio::test]
async fn clickhouse_crash_after_the_raw_inserts() {
    crash_at(failpoint::CLICKHOUSE_RAW_INSERTED, 3, true).await;
}

#[tokio::test]
async fn clickhouse_crash_after_the_apply_before_the_bus_commit() {
    crash_at(failpoint::CLICKHOUSE_APPLY_DONE, 3, true).await;
}

#[tokio::test]
async fn clickhouse_crash_in_the_worker_before_the_bus_commit() {
    crash_at(failpoint::WORKER_APPLIED, 3, true).await;
}
