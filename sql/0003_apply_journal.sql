-- The apply journal closes the one gap of the exactly-once design (ingest/src/clickhouse/):
-- before its raw inserts an apply writes (apply_id, done = 0), after ClickHouse acknowledged
-- them (apply_id, done = 1). An apply_id without a done row means the raw inserts may have
-- been stored without all their materialized views' inserts; the sink then recomputes the
-- aggregates from the raw tables and inserts the differences before it applies anything else.

CREATE TABLE IF NOT EXISTS {db}.apply_journal
(
    apply_id String,
    done UInt8,
    at Int64
)
ENGINE = MergeTree
ORDER BY apply_id;
