-- Fencing for several ingest workers on one generation (ingest/src/clickhouse/fence.rs).
--
-- A worker that takes over bus partitions (a consumer-group assignment) claims them: one
-- row per (topic, partition) with a fresh token and an epoch above every earlier one. A
-- token is a fence holder while it has claims and none of them was superseded by a later
-- epoch. Every write of a fenced worker is an `INSERT .. SELECT .. WHERE` its token is a
-- holder, checked by ClickHouse when the insert starts; so a worker that lost a partition
-- (a rebalance, or a paused "zombie" that wakes up) can no longer write anything once the new
-- owner's claim is stored, and the new owner waits for inserts already running before it
-- reads what is stored.

CREATE TABLE IF NOT EXISTS {db}.owners
(
    topic String,
    partition Int32,
    token String,
    epoch UInt64,
    claimed_at Int64
)
ENGINE = MergeTree
ORDER BY (topic, partition, epoch);

CREATE VIEW IF NOT EXISTS {db}.fence_holders
AS SELECT DISTINCT token FROM {db}.owners
WHERE token NOT IN
(
    SELECT token FROM {db}.owners
    WHERE (topic, partition, epoch) NOT IN
        (SELECT topic, partition, max(epoch) FROM {db}.owners GROUP BY topic, partition)
);

-- Which writer an apply belongs to: an unfinished apply is repaired only once its writer is
-- fenced off (or it had none: a single unfenced writer), never while it may still be running.
ALTER TABLE {db}.apply_journal ADD COLUMN token String DEFAULT '';
