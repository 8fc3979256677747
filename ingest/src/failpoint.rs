//! Failpoints: named steps of an apply where a test crashes the process, to show that a
//! crash exactly there loses and doubles nothing. Compiled in only with the `failpoints`
//! feature, which only this crate's tests turn on (through a dev-dependency on itself); in
//! any other build [`hit`] is empty.
//!
//! A test arms one point with `SHOPLENS_FAILPOINT=<name>` (or `<name>@<n>`: its n-th hit)
//! in the environment of a child process; when the child reaches it, it aborts (SIGABRT),
//! which is how the test knows the point was hit.

/// Every failpoint: the steps of an apply in each store, and of the worker around it.
pub const ALL: &[&str] = &[
    EMBEDDED_RAW_SEGMENT_WRITTEN,
    EMBEDDED_SEGMENTS_WRITTEN,
    EMBEDDED_MANIFEST_TMP_WRITTEN,
    EMBEDDED_MANIFEST_SWAPPED,
    EMBEDDED_COMPACTION_BEFORE_SWAP,
    CLICKHOUSE_JOURNAL_STARTED,
    CLICKHOUSE_RAW_INSERTED,
    CLICKHOUSE_APPLY_DONE,
    WORKER_APPLIED,
];

/// Embedded: the first file of an apply is on disk, the others still being written.
pub const EMBEDDED_RAW_SEGMENT_WRITTEN: &str = "embedded.raw_segment_written";
/// Embedded: every segment of an apply is on disk; the manifest still lists none of them.
pub const EMBEDDED_SEGMENTS_WRITTEN: &str = "embedded.segments_written";
/// Embedded: the new manifest is written to its temporary file, not yet renamed over.
pub const EMBEDDED_MANIFEST_TMP_WRITTEN: &str = "embedded.manifest_tmp_written";
/// Embedded: the new manifest is in place; the writer's memory is not yet updated.
pub const EMBEDDED_MANIFEST_SWAPPED: &str = "embedded.manifest_swapped";
/// Embedded: a compaction's merged segments are written; the manifest still lists the old.
pub const EMBEDDED_COMPACTION_BEFORE_SWAP: &str = "embedded.compaction_before_swap";
/// ClickHouse: the apply's start mark is in the journal; no raw row inserted yet.
pub const CLICKHOUSE_JOURNAL_STARTED: &str = "clickhouse.journal_started";
/// ClickHouse: the raw rows (and the views' rows) are inserted; no position, freshness or
/// done mark yet.
pub const CLICKHOUSE_RAW_INSERTED: &str = "clickhouse.raw_inserted";
/// ClickHouse: positions, freshness and the done mark are stored.
pub const CLICKHOUSE_APPLY_DONE: &str = "clickhouse.apply_done";
/// Worker: the sink applied the batch; the bus position is not committed yet.
pub const WORKER_APPLIED: &str = "worker.applied";

/// Aborts the process if the test armed `name` and this is the hit it named.
#[cfg(feature = "failpoints")]
pub fn hit(name: &'static str) {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let armed = ARMED.get_or_init(|| {
        let spec = std::env::var("SHOPLENS_FAILPOINT").ok()?;
        Some(match spec.split_once('@') {
            Some((name, n)) => (name.to_owned(), n.parse().unwrap_or(1)),
            None => (spec, 1),
        })
    });
    if let Some((armed, nth)) = armed
        && armed == name
        && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *nth
    {
        eprintln!("failpoint {name} hit: aborting");
        std::process::abort();
    }
}

/// Without the `failpoints` feature: nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &'static str) {}
