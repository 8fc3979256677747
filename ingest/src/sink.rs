//! What a read-model sink is: the one interface both back ends (ClickHouse and the embedded
//! Parquet store) implement, and the batch the worker hands them.
//!
//! Exactly-once *effect* rests on two rules every sink keeps:
//! - `apply` is idempotent by event id: a row whose `event_id` the sink already holds is
//!   skipped, so replaying after a crash, a relay duplicate or a rebalance never counts an
//!   event twice (the pre-aggregated tables only ever see rows that were new);
//! - `apply` returns `Ok` only once the batch is durably stored; the worker commits its bus
//!   position only after that, so a crash loses nothing.

use std::sync::Arc;

use arrow_array::RecordBatch;
use async_trait::async_trait;
use bytes::Bytes;
use shoplens_bus::Position;
use shoplens_contract::tables::RawTable;
use shoplens_readmodel::freshness::Freshness;
use shoplens_readmodel::tables::AggTable;

/// One flush of the worker.
#[derive(Debug, Clone, Default)]
pub struct IngestBatch {
    /// Valid events, one Arrow batch per raw table (schema: [`RawTable::schema`]), rows in
    /// the order they were consumed. No event id appears twice within an `IngestBatch`.
    pub tables: Vec<(RawTable, RecordBatch)>,
    /// Events that failed decoding or validation, or were parked behind one that did.
    pub dead_letters: Vec<DeadLetter>,
    /// Where the worker resumes once this batch is stored (next offsets).
    pub positions: Vec<Position>,
}

impl IngestBatch {
    pub fn row_count(&self) -> usize {
        self.tables.iter().map(|(_, b)| b.num_rows()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.row_count() == 0 && self.dead_letters.is_empty()
    }
}

/// An event the worker could not apply, kept with its bytes and the reason.
/// Identified by its bus coordinates (`topic`, `partition`, `offset`): a sink stores each
/// coordinate once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub topic: String,
    pub partition: i32,
    pub offset: u64,
    /// The bus key: the aggregate id. Parking works per (`topic`, `key`).
    pub key: String,
    /// Set when the envelope could be read far enough.
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    /// A short machine-readable kind: `malformed_json`, `invalid_field`, `unknown_type`,
    /// `unsupported_version`, `parked`.
    pub reason_kind: String,
    /// A human-readable reason naming the field where there is one.
    pub reason: String,
    pub payload: Bytes,
    /// When the worker dead-lettered it (ms since the Unix epoch).
    pub received_at_ms: i64,
}

/// What one `apply` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Rows stored in raw tables (and so counted by the aggregates).
    pub rows_written: usize,
    /// Rows skipped because the sink already held their event id.
    pub duplicates_skipped: usize,
    /// Dead letters stored (ones already stored are not counted).
    pub dead_letters_written: usize,
}

/// What a store's operations return.
pub type SinkResult<T> = crate::Result<T>;

/// A read-model store the worker writes to.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Stores the batch idempotently (see the module docs) and returns once it is durable
    /// and visible to queries.
    async fn apply(&self, batch: &IngestBatch) -> SinkResult<ApplyReport>;

    /// The (`topic`, `key`) pairs parked by earlier dead letters, so a restarted worker
    /// keeps parking later events of those aggregates.
    async fn parked_keys(&self) -> SinkResult<Vec<(String, String)>>;

    /// The freshness watermark of what is stored.
    async fn freshness(&self) -> SinkResult<Freshness>;

    /// Positions the sink stored with its data, if it keeps them; the worker seeks there on
    /// start. Sinks that do not keep positions return an empty list (the bus's committed
    /// offsets plus event-id idempotence are enough).
    async fn stored_positions(&self) -> SinkResult<Vec<Position>> {
        Ok(Vec::new())
    }

    /// Takes `partitions` over for this sink's writer and returns the positions stored for
    /// them. A store that several workers may write (ClickHouse) fences off every earlier
    /// writer of those partitions: their later writes store nothing, and an apply of this
    /// sink that another claim overtook fails with [`IngestError::Fenced`](crate::IngestError).
    /// A single-writer store just returns the positions.
    async fn claim(&self, partitions: &[(String, i32)]) -> SinkResult<Vec<Position>> {
        Ok(positions_of(self.stored_positions().await?, partitions))
    }

    // Reading back: for parity tests, the rebuild's checks and the analytics server.

    /// The whole pre-aggregated table, fully merged (one row per key), sorted by key, in
    /// the schema [`AggTable::schema`]. Both sinks return identical batches for the same
    /// events.
    async fn aggregate(&self, table: AggTable) -> SinkResult<RecordBatch>;

    /// Rows stored in a raw table.
    async fn raw_row_count(&self, table: RawTable) -> SinkResult<u64>;

    /// Every stored dead letter, ordered by (`topic`, `partition`, `offset`).
    async fn dead_letters(&self) -> SinkResult<Vec<DeadLetter>>;
}

/// The positions in `stored` of the given (topic, partition)s.
pub fn positions_of(stored: Vec<Position>, partitions: &[(String, i32)]) -> Vec<Position> {
    stored
        .into_iter()
        .filter(|p| {
            partitions
                .iter()
                .any(|(t, n)| *t == p.topic && *n == p.partition)
        })
        .collect()
}

/// The generations of a read model on one back end, and which one is live.
///
/// A generation is a complete, independent copy of the read model (raw tables,
/// aggregates, dead letters, stored positions). A rebuild fills a new generation beside the
/// live one and then switches readers to it with [`ReadModelStore::set_live`], so
/// dashboards never go blank; the old one is dropped afterwards.
#[async_trait]
pub trait ReadModelStore: Send + Sync + 'static {
    /// Opens (creating if missing, with all tables) one generation.
    async fn open(&self, generation: u32) -> SinkResult<Arc<dyn Sink>>;

    /// The live generation, `None` before the first one was made live.
    async fn live(&self) -> SinkResult<Option<u32>>;

    /// Makes `generation` the live one, atomically for readers.
    async fn set_live(&self, generation: u32) -> SinkResult<()>;

    /// Every generation that exists, ascending.
    async fn generations(&self) -> SinkResult<Vec<u32>>;

    /// Deletes a generation that is not live.
    async fn drop_generation(&self, generation: u32) -> SinkResult<()>;

    /// Whether several ingest processes may write this store at once (each fencing the
    /// others off its partitions); `false` for a store that takes one writer.
    fn shared(&self) -> bool {
        false
    }
}
