//! The ClickHouse read model: generations as databases, the DDL of `sql/` applied as
//! migrations, and the [`Sink`](crate::sink::Sink) that stores ingest batches with
//! exactly-once effect.
//!
//! One concern a file: `generations` ([`ClickHouseStore`]: a database per generation, the
//! live pointer), `migrations` (the DDL of `sql/`), `conn` (the client and its errors),
//! `rowbinary` (the row encoding), `dedup` (which rows are new), `sink` ([`ClickHouseSink`]:
//! the apply), `journal` (the apply journal and the aggregate repair) and `readback`
//! (aggregates and dead letters read back).
//!
//! # Exactly-once design
//!
//! ClickHouse (18.16 and current) has no transactions across tables and, without
//! replication, no insert deduplication. So the sink deduplicates itself, exactly, across all
//! history: before inserting a raw table's rows it reads which of the batch's event ids are
//! already stored (raw tables are `ORDER BY event_id`, and UUIDv7 ids sort by time, so the
//! batch's `[min, max]` id range is a narrow index range) and inserts only the new rows, in one
//! `INSERT` per table (one part: all or nothing). The seven aggregate tables are fed only by
//! materialized views on the raw tables, so they see exactly the rows that were new. Dead
//! letters are deduplicated the same way by (topic, partition, offset). A batch whose apply
//! failed is retried whole by the worker; whatever reached ClickHouse the first time is then
//! found and skipped.
//!
//! The one known gap of that design: ClickHouse writes the raw part first and then pushes the
//! block to each view in turn, so a server crash (or a view's failure, or a client timeout
//! while the server carries on) after the raw part was committed but before every view's
//! insert finished leaves the raw rows stored and some aggregate rows missing; the retry
//! would skip those rows as duplicates and the aggregates would stay short. (ClickHouse
//! documents the same for retried inserts: views can end up out of sync.)
//!
//! Closed cheaply with an apply journal (`sql/0003_apply_journal.sql`): an apply with raw
//! rows writes `(apply_id, done = 0)` beside its look-ups (no added latency) and
//! `(apply_id, done = 1)` once every raw insert was acknowledged. If an apply fails in
//! between (this process remembers it), or a sink starts and finds an apply id without its
//! done row (a crashed worker), the sink first waits until the inserts into its database
//! still running on the server have ended and then recomputes each aggregate from the raw tables, using
//! the views' own `SELECT`s read from the migrations, and inserts per key the difference to
//! what is stored ([`ClickHouseSink::repair_aggregates`]). That costs one scan of the raw
//! tables, only after a failure; a repair that finds nothing to correct inserts nothing.
//! It relies on one writer per partition at a time; several workers get that from fencing
//! (`fence`), which also keeps every other writer out while a repair runs.

mod conn;
mod dedup;
mod fence;
mod generations;
mod journal;
mod migrations;
mod readback;
mod rowbinary;
mod sink;

pub use generations::ClickHouseStore;
pub use migrations::{MIGRATIONS, migration_statements};
pub use sink::ClickHouseSink;
