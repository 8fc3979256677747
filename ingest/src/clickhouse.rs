//! The ClickHouse read model: generations as databases, the DDL of `sql/` applied as
//! migrations, and the [`Sink`] that stores ingest batches with exactly-once effect.
//!
//! # Exactly-once design
//!
//! ClickHouse (18.16 and current) has no transactions across tables and, without
//! replication, no insert deduplication. So the sink deduplicates itself, exactly, across all
//! history: before inserting a raw table's rows it reads which of the batch's event ids are
//! already stored (raw tables are `ORDER BY event_id`, and UUIDv7 ids sort by time, so the
//! batch's `[min, max]` id range is a narrow index range) and inserts only the new rows, in one
//! `INSERT` per table (one part: all or nothing). The five aggregate tables are fed only by
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
//! done row (a crashed worker), the sink first waits until no insert into its database is
//! still running on the server and then recomputes each aggregate from the raw tables, using
//! the views' own `SELECT`s read from the migrations, and inserts per key the difference to
//! what is stored ([`ClickHouseSink::repair_aggregates`]). That costs one scan of the raw
//! tables, only after a failure; a repair that finds nothing to correct inserts nothing.
//! It relies on one writer per generation, which the dedup needs anyway.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::clickhouse::Client;
use arrow_array::{
    Array, ArrayRef, Date32Array, Decimal128Array, Int32Array, RecordBatch, StringArray,
    TimestampMillisecondArray, UInt64Array,
};
use arrow_schema::{DataType, TimeUnit};
use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;
use shoplens_bus::Position;
use shoplens_contract::tables::{EVENT_ID, MONEY, OCCURRED_AT, RawTable};
use shoplens_readmodel::clickhouse::{
    create_live_table_sql, freshness_sql, generation_database, generation_of, generation_prefix,
    live_pointer_sql, meta_database,
};
use shoplens_readmodel::config::ClickHouseConfig;
use shoplens_readmodel::freshness::Freshness;
use shoplens_readmodel::tables::{AggTable, DEAD_LETTERS};
use tokio::sync::Mutex;

use crate::sink::{
    ApplyReport, DeadLetter, IngestBatch, ReadModelStore, Sink, SinkError, SinkResult,
};

/// The migrations of `sql/`, applied in this order; `{db}` stands for the generation's
/// database. Each file holds `;`-terminated statements and whole-line `--` comments.
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_raw_tables",
        include_str!("../../sql/0001_raw_tables.sql"),
    ),
    (
        "0002_read_model",
        include_str!("../../sql/0002_read_model.sql"),
    ),
    (
        "0003_apply_journal",
        include_str!("../../sql/0003_apply_journal.sql"),
    ),
];

/// At most this many event ids are looked up with one query. Each query names its ids (an
/// `IN` list, ~40 bytes an id, well under 18.16's 256 KiB `max_query_size`), so its answer
/// is never larger than the chunk, however many stored rows the chunk's id range spans.
const LOOKUP_CHUNK: usize = 4096;

/// A ClickHouse error as a sink error: anything on the way (network, timeout, an HTTP error
/// answer) is `Unavailable` and worth a retry; data the client cannot read is `Corrupt`.
fn ch_err(context: &str, e: ::clickhouse::error::Error) -> SinkError {
    use ::clickhouse::error::Error as E;
    match e {
        E::Network(_) | E::TimedOut | E::BadResponse(_) | E::Compression(_) => {
            SinkError::Unavailable(format!("{context}: {e}"))
        }
        other => SinkError::Corrupt(format!("{context}: {other}")),
    }
}

fn corrupt(msg: impl Into<String>) -> SinkError {
    SinkError::Corrupt(msg.into())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// One client and its request timeout, shared by the store and its sinks.
#[derive(Clone)]
struct Conn {
    client: Client,
    timeout: Duration,
}

impl Conn {
    /// Runs one request within the timeout.
    async fn run<T>(
        &self,
        context: &str,
        fut: impl Future<Output = ::clickhouse::error::Result<T>>,
    ) -> SinkResult<T> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(result) => result.map_err(|e| ch_err(context, e)),
            Err(_) => Err(SinkError::Unavailable(format!(
                "{context}: no answer within {:?}",
                self.timeout
            ))),
        }
    }

    async fn execute(&self, sql: &str) -> SinkResult<()> {
        self.run(sql, self.client.query(sql).execute()).await
    }

    /// Sends RowBinary rows to `table` (qualified) in one `INSERT`.
    async fn insert(&self, table: &str, rows: Vec<u8>) -> SinkResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let context = format!("insert into {table}");
        let client = &self.client;
        self.run(&context, async move {
            let mut insert =
                client.insert_formatted_with(format!("INSERT INTO {table} FORMAT RowBinary"));
            insert.send(Bytes::from(rows)).await?;
            insert.end().await
        })
        .await
    }
}

/// The materialized views of the migrations as (target table, SELECT) for database `db`:
/// what each view adds to its target for the rows of one insert, so run over a whole raw
/// table it gives that table's whole contribution.
fn view_selects(db: &str) -> Vec<(String, String)> {
    MIGRATIONS
        .iter()
        .flat_map(|(_, text)| migration_statements(text, db))
        .filter(|st| st.starts_with("CREATE MATERIALIZED VIEW"))
        .filter_map(|st| {
            let (head, select) = st.split_once("\nAS ")?;
            let target = head.lines().find_map(|l| l.trim().strip_prefix("TO "))?;
            let target = target.trim().rsplit('.').next()?.to_owned();
            Some((target, select.to_owned()))
        })
        .collect()
}

/// Whether a name is safe to splice into SQL as a database name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The statements of one migration file for database `db`.
pub fn migration_statements(sql: &str, db: &str) -> Vec<String> {
    let text: String = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    text.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.replace("{db}", db))
        .collect()
}

/// The generations of one read model in ClickHouse, and its live pointer.
#[derive(Clone)]
pub struct ClickHouseStore {
    conn: Conn,
    base: String,
}

impl fmt::Debug for ClickHouseStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouseStore")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl ClickHouseStore {
    /// Connects and creates the meta database with the live pointer if missing. Fails with
    /// `Unavailable` if ClickHouse cannot be reached.
    pub async fn connect(config: &ClickHouseConfig) -> SinkResult<ClickHouseStore> {
        if !valid_name(&config.database) {
            return Err(corrupt(format!(
                "database base name `{}` must be letters, digits and `_`",
                config.database
            )));
        }
        let client = Client::default()
            .with_url(config.url.clone())
            .with_user(config.user.clone())
            .with_password(config.password.clone())
            .with_validation(false);
        let store = ClickHouseStore {
            conn: Conn {
                client,
                timeout: Duration::from_millis(config.request_timeout_ms.max(1)),
            },
            base: config.database.clone(),
        };
        create_database(&store.conn, &store.meta_database()).await?;
        store
            .conn
            .execute(&create_live_table_sql(&store.base))
            .await
            .or_else(already_exists)?;
        Ok(store)
    }

    /// The database that holds generation `generation`.
    pub fn database(&self, generation: u32) -> String {
        generation_database(&self.base, generation)
    }

    /// The database that holds the live pointer.
    pub fn meta_database(&self) -> String {
        meta_database(&self.base)
    }

    /// The database of the live generation, `None` before one was made live: what the
    /// analytics server queries.
    pub async fn live_database(&self) -> SinkResult<Option<String>> {
        Ok(self.live().await?.map(|g| self.database(g)))
    }

    /// Opens (creating and migrating) generation `generation` as its concrete sink.
    pub async fn open_sink(&self, generation: u32) -> SinkResult<ClickHouseSink> {
        let db = self.database(generation);
        create_database(&self.conn, &db).await?;
        migrate(&self.conn, &db).await?;
        Ok(ClickHouseSink {
            conn: self.conn.clone(),
            db,
            as_of: Mutex::new(None),
            repair_pending: Mutex::new(None),
        })
    }
}

/// A concurrent `CREATE ... IF NOT EXISTS` of the same object may still lose the race with
/// "already exists"; that is success.
fn already_exists(e: SinkError) -> SinkResult<()> {
    match &e {
        SinkError::Unavailable(m) if m.contains("already exists") => Ok(()),
        _ => Err(e),
    }
}

async fn create_database(conn: &Conn, db: &str) -> SinkResult<()> {
    conn.execute(&format!("CREATE DATABASE IF NOT EXISTS {db}"))
        .await
        .or_else(already_exists)
}

/// Applies the migrations not yet recorded in `{db}.schema_migrations`, in order. Every
/// statement is `IF NOT EXISTS`, so a second process doing the same at once is harmless.
async fn migrate(conn: &Conn, db: &str) -> SinkResult<()> {
    conn.execute(&format!(
        "CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version String, applied_at Int64) \
         ENGINE = MergeTree ORDER BY version"
    ))
    .await
    .or_else(already_exists)?;
    let sql = format!("SELECT DISTINCT version FROM {db}.schema_migrations");
    let applied: HashSet<String> = conn
        .run(&sql, conn.client.query(&sql).fetch_all::<String>())
        .await?
        .into_iter()
        .collect();
    for (version, text) in MIGRATIONS {
        if applied.contains(*version) {
            continue;
        }
        for statement in migration_statements(text, db) {
            conn.execute(&statement).await.or_else(already_exists)?;
        }
        let mut row = RowBinary::default();
        row.str(version);
        row.i64(now_ms());
        conn.insert(&format!("{db}.schema_migrations"), row.0)
            .await?;
        tracing::info!(database = db, version, "applied ClickHouse migration");
    }
    Ok(())
}

#[async_trait]
impl ReadModelStore for ClickHouseStore {
    async fn open(&self, generation: u32) -> SinkResult<Arc<dyn Sink>> {
        Ok(Arc::new(self.open_sink(generation).await?))
    }

    async fn live(&self) -> SinkResult<Option<u32>> {
        let sql = live_pointer_sql(&self.base);
        let (generation, count) = self
            .conn
            .run(&sql, self.conn.client.query(&sql).fetch_one::<(u32, u64)>())
            .await?;
        Ok((count > 0).then_some(generation))
    }

    async fn set_live(&self, generation: u32) -> SinkResult<()> {
        if !self.generations().await?.contains(&generation) {
            return Err(corrupt(format!(
                "generation {generation} does not exist; open it first"
            )));
        }
        let mut row = RowBinary::default();
        row.u32(generation);
        row.i64(now_ns());
        // One row in one INSERT: readers see the old pointer or the new one.
        self.conn
            .insert(&format!("{}.live", self.meta_database()), row.0)
            .await
    }

    async fn generations(&self) -> SinkResult<Vec<u32>> {
        let sql = "SELECT name FROM system.databases WHERE startsWith(name, ?)";
        let prefix = generation_prefix(&self.base);
        let names = self
            .conn
            .run(
                sql,
                self.conn
                    .client
                    .query(sql)
                    .bind(prefix.as_str())
                    .fetch_all::<String>(),
            )
            .await?;
        let mut generations: Vec<u32> = names
            .iter()
            .filter_map(|n| generation_of(&self.base, n))
            .collect();
        generations.sort_unstable();
        Ok(generations)
    }

    async fn drop_generation(&self, generation: u32) -> SinkResult<()> {
        if self.live().await? == Some(generation) {
            return Err(corrupt(format!(
                "generation {generation} is live; make another one live before dropping it"
            )));
        }
        self.conn
            .execute(&format!(
                "DROP DATABASE IF EXISTS {}",
                self.database(generation)
            ))
            .await
    }
}

/// Rows in ClickHouse's RowBinary format.
#[derive(Default)]
struct RowBinary(Vec<u8>);

impl RowBinary {
    fn len(&mut self, mut n: usize) {
        // LEB128, as ClickHouse's VarUInt.
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                self.0.push(byte);
                return;
            }
            self.0.push(byte | 0x80);
        }
    }

    fn bytes(&mut self, v: &[u8]) {
        self.len(v.len());
        self.0.extend_from_slice(v);
    }

    fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    fn opt_str(&mut self, v: Option<&str>) {
        match v {
            Some(v) => {
                self.0.push(0);
                self.str(v);
            }
            None => self.0.push(1),
        }
    }

    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
}

/// One column of a raw batch, typed, as its ClickHouse column wants it.
enum Column<'a> {
    Str(&'a StringArray, bool),
    Int32(&'a Int32Array),
    /// Timestamp(ms) -> Int64.
    Millis(&'a TimestampMillisecondArray, bool),
    /// Decimal128(18, 2) -> Decimal(18, 2), whose RowBinary is the Int64 of its cents.
    Money(&'a Decimal128Array, bool),
}

fn typed<'a, T: Array + 'static>(col: &'a ArrayRef, name: &str) -> SinkResult<&'a T> {
    col.as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| corrupt(format!("column `{name}` is {}", col.data_type())))
}

/// The columns of `batch`, checked against the contract's schema of `table` (which the DDL
/// of `sql/0001_raw_tables.sql` mirrors column by column).
fn raw_columns(table: RawTable, batch: &RecordBatch) -> SinkResult<Vec<Column<'_>>> {
    let schema = table.schema();
    if batch.num_columns() != schema.fields().len() {
        return Err(corrupt(format!(
            "table `{}`: batch has {} columns, the contract {}",
            table.name(),
            batch.num_columns(),
            schema.fields().len()
        )));
    }
    schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, col)| {
            let name = field.name();
            if col.data_type() != field.data_type() {
                return Err(corrupt(format!(
                    "table `{}`: column `{name}` is {}, the contract says {}",
                    table.name(),
                    col.data_type(),
                    field.data_type()
                )));
            }
            let nullable = field.is_nullable();
            if !nullable && col.null_count() > 0 {
                return Err(corrupt(format!(
                    "table `{}`: column `{name}` holds nulls",
                    table.name()
                )));
            }
            Ok(match field.data_type() {
                DataType::Utf8 => Column::Str(typed(col, name)?, nullable),
                DataType::Int32 => Column::Int32(typed(col, name)?),
                DataType::Timestamp(TimeUnit::Millisecond, _) => {
                    Column::Millis(typed(col, name)?, nullable)
                }
                t if *t == MONEY => Column::Money(typed(col, name)?, nullable),
                other => {
                    return Err(corrupt(format!(
                        "table `{}`: column `{name}` has unsupported type {other}",
                        table.name()
                    )));
                }
            })
        })
        .collect()
}

/// The given rows of a raw batch as RowBinary, in the table's column order.
fn encode_rows(table: RawTable, batch: &RecordBatch, rows: &[usize]) -> SinkResult<Vec<u8>> {
    let columns = raw_columns(table, batch)?;
    let mut out = RowBinary(Vec::with_capacity(rows.len() * 128));
    for &i in rows {
        for col in &columns {
            let null = |a: &dyn Array, nullable: bool, out: &mut RowBinary| -> bool {
                if nullable {
                    if a.is_null(i) {
                        out.0.push(1);
                        return true;
                    }
                    out.0.push(0);
                }
                false
            };
            match col {
                Column::Str(a, nullable) => {
                    if !null(*a, *nullable, &mut out) {
                        out.str(a.value(i));
                    }
                }
                Column::Int32(a) => out.i32(a.value(i)),
                Column::Millis(a, nullable) => {
                    if !null(*a, *nullable, &mut out) {
                        out.i64(a.value(i));
                    }
                }
                Column::Money(a, nullable) => {
                    if !null(*a, *nullable, &mut out) {
                        let cents = i64::try_from(a.value(i)).map_err(|_| {
                            corrupt(format!(
                                "table `{}`: amount {} does not fit Decimal(18, 2)",
                                table.name(),
                                a.value_as_string(i)
                            ))
                        })?;
                        out.i64(cents);
                    }
                }
            }
        }
    }
    Ok(out.0)
}

fn encode_dead_letter(out: &mut RowBinary, d: &DeadLetter) {
    out.str(&d.topic);
    out.i32(d.partition);
    out.u64(d.offset);
    out.str(&d.key);
    out.opt_str(d.event_id.as_deref());
    out.opt_str(d.event_type.as_deref());
    out.str(&d.reason_kind);
    out.str(&d.reason);
    out.bytes(&d.payload);
    out.i64(d.received_at_ms);
}

/// The ids of a batch sorted, as chunks of at most [`LOOKUP_CHUNK`] ids; each chunk is one
/// lookup: its `[first, last]` range (for the primary-key index) and its ids.
fn id_chunks<'a>(ids: &[&'a str]) -> Vec<Vec<&'a str>> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.chunks(LOOKUP_CHUNK).map(<[&str]>::to_vec).collect()
}

/// An SQL list of quoted ids. Ids are UUIDs the worker formatted itself; anything else is
/// refused rather than quoted.
fn id_list(ids: &[&str]) -> SinkResult<String> {
    let mut out = String::with_capacity(ids.len() * 40);
    for (i, id) in ids.iter().enumerate() {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return Err(corrupt(format!("event id `{id}` is not a UUID")));
        }
        if i > 0 {
            out.push(',');
        }
        out.push('\'');
        out.push_str(id);
        out.push('\'');
    }
    Ok(out)
}

fn date32(values: impl Iterator<Item = i32>) -> ArrayRef {
    Arc::new(Date32Array::from_iter_values(values))
}

fn money_array(values: impl Iterator<Item = i128>) -> SinkResult<ArrayRef> {
    let DataType::Decimal128(precision, scale) = MONEY else {
        return Err(corrupt("MONEY is not a Decimal128"));
    };
    Ok(Arc::new(
        Decimal128Array::from_iter_values(values)
            .with_precision_and_scale(precision, scale)
            .map_err(|e| corrupt(e.to_string()))?,
    ))
}

fn u64s(values: impl Iterator<Item = u64>) -> ArrayRef {
    Arc::new(UInt64Array::from_iter_values(values))
}

fn strings<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

#[derive(::clickhouse::Row, Deserialize)]
struct SalesRow {
    key: i32,
    orders_placed: u64,
    orders_paid: u64,
    items_sold: u64,
    revenue: i128,
}

#[derive(::clickhouse::Row, Deserialize)]
struct ProductRow {
    day: i32,
    product_id: String,
    units: u64,
    revenue: i128,
    order_lines: u64,
}

#[derive(::clickhouse::Row, Deserialize)]
struct CustomerRow {
    day: i32,
    customer_id: String,
    orders_paid: u64,
    revenue: i128,
}

#[derive(::clickhouse::Row, Deserialize)]
struct DeadLetterRow {
    topic: String,
    partition: i32,
    offset: u64,
    key: String,
    event_id: Option<String>,
    event_type: Option<String>,
    reason_kind: String,
    reason: String,
    payload: Vec<u8>,
    received_at: i64,
}

/// One generation of the read model in ClickHouse.
pub struct ClickHouseSink {
    conn: Conn,
    db: String,
    /// The freshness watermark as stored, once read: `apply` writes a freshness row only
    /// when it advances. `None` until loaded.
    as_of: Mutex<Option<Option<i64>>>,
    /// Whether an apply may have left the aggregates short (see the module docs). `None`
    /// until the journal was read.
    repair_pending: Mutex<Option<bool>>,
}

impl fmt::Debug for ClickHouseSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouseSink")
            .field("database", &self.db)
            .finish_non_exhaustive()
    }
}

impl ClickHouseSink {
    /// The database this sink writes.
    pub fn database(&self) -> &str {
        &self.db
    }

    /// The row indices of `batch` whose event ids `table` does not hold yet.
    async fn new_rows(&self, table: RawTable, batch: &RecordBatch) -> SinkResult<Vec<usize>> {
        let ids = batch
            .column_by_name(EVENT_ID)
            .ok_or_else(|| corrupt(format!("table `{}`: no column `{EVENT_ID}`", table.name())))?;
        let ids: &StringArray = typed(ids, EVENT_ID)?;
        if ids.null_count() > 0 {
            return Err(corrupt(format!("table `{}`: null event_id", table.name())));
        }
        let values: Vec<&str> = (0..ids.len()).map(|i| ids.value(i)).collect();
        let mut stored: HashSet<String> = HashSet::new();
        for chunk in id_chunks(&values) {
            let (Some(first), Some(last)) = (chunk.first(), chunk.last()) else {
                continue;
            };
            let sql = format!(
                "SELECT event_id FROM {}.{} WHERE event_id >= ? AND event_id <= ? \
                 AND event_id IN ({})",
                self.db,
                table.name(),
                id_list(&chunk)?
            );
            let found = self
                .conn
                .run(
                    "SELECT event_id .. IN (..)",
                    self.conn
                        .client
                        .query(&sql)
                        .bind(*first)
                        .bind(*last)
                        .fetch_all::<String>(),
                )
                .await?;
            stored.extend(found);
        }
        let mut seen: HashSet<&str> = HashSet::with_capacity(values.len());
        Ok(values
            .iter()
            .enumerate()
            .filter(|(_, id)| !stored.contains(**id) && seen.insert(**id))
            .map(|(i, _)| i)
            .collect())
    }

    /// The dead letters of the batch not stored yet (and not repeated within the batch).
    async fn new_dead_letters<'a>(
        &self,
        letters: &'a [DeadLetter],
    ) -> SinkResult<Vec<&'a DeadLetter>> {
        let mut ranges: BTreeMap<(&str, i32), (u64, u64)> = BTreeMap::new();
        for d in letters {
            let r = ranges
                .entry((d.topic.as_str(), d.partition))
                .or_insert((d.offset, d.offset));
            r.0 = r.0.min(d.offset);
            r.1 = r.1.max(d.offset);
        }
        let sql = format!(
            "SELECT offset FROM {}.{DEAD_LETTERS} \
             WHERE topic = ? AND partition = ? AND offset >= ? AND offset <= ?",
            self.db
        );
        let mut stored: HashSet<(&str, i32, u64)> = HashSet::new();
        for ((topic, partition), (low, high)) in ranges {
            let offsets = self
                .conn
                .run(
                    &sql,
                    self.conn
                        .client
                        .query(&sql)
                        .bind(topic)
                        .bind(partition)
                        .bind(low)
                        .bind(high)
                        .fetch_all::<u64>(),
                )
                .await?;
            stored.extend(offsets.into_iter().map(|o| (topic, partition, o)));
        }
        Ok(letters
            .iter()
            .filter(|d| stored.insert((d.topic.as_str(), d.partition, d.offset)))
            .collect())
    }

    async fn journal(&self, apply_id: &str, done: u8) -> SinkResult<()> {
        let mut row = RowBinary::default();
        row.str(apply_id);
        row.0.push(done);
        row.i64(now_ms());
        self.conn
            .insert(&format!("{}.apply_journal", self.db), row.0)
            .await
    }

    /// Repairs the aggregates if the journal holds an apply that never finished, then marks
    /// those applies done.
    async fn repair_if_journal_says_so(&self) -> SinkResult<()> {
        let sql = format!(
            "SELECT apply_id FROM {}.apply_journal GROUP BY apply_id HAVING max(done) = 0",
            self.db
        );
        let unfinished = self
            .conn
            .run(&sql, self.conn.client.query(&sql).fetch_all::<String>())
            .await?;
        if unfinished.is_empty() {
            return Ok(());
        }
        let fixed = self.repair_aggregates().await?;
        tracing::warn!(
            database = %self.db,
            unfinished_applies = unfinished.len(),
            corrected_rows = fixed,
            "repaired aggregates after an interrupted apply"
        );
        for id in unfinished {
            self.journal(&id, 1).await?;
        }
        Ok(())
    }

    /// Makes every aggregate table equal to what its materialized views give over the whole
    /// raw tables, by inserting per key the difference (truth minus stored sums; counts wrap
    /// modulo 2^64, which `sum` undoes). Returns the number of correction rows. Must not run
    /// beside an apply (the sink's own applies wait for it); refuses while an insert into
    /// this database is still running on the server (e.g. one whose client timed out).
    pub async fn repair_aggregates(&self) -> SinkResult<u64> {
        // An insert whose client gave up (a timeout, or a sibling insert of the same apply
        // that failed) may still be running on the server: wait for it, within the request
        // timeout, so the repair never races it.
        let sql = "SELECT count() FROM system.processes WHERE startsWith(query, ?)";
        let prefix = format!("INSERT INTO {}.", self.db);
        let deadline = tokio::time::Instant::now() + self.conn.timeout;
        loop {
            let running = self
                .conn
                .run(
                    sql,
                    self.conn
                        .client
                        .query(sql)
                        .bind(prefix.as_str())
                        .fetch_one::<u64>(),
                )
                .await?;
            if running == 0 {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(SinkError::Unavailable(format!(
                    "{running} inserts into {} still running; repair later",
                    self.db
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let views = view_selects(&self.db);
        let mut corrected = 0;
        for table in AggTable::ALL {
            let selects: Vec<&str> = views
                .iter()
                .filter(|(target, _)| target == table.name())
                .map(|(_, select)| select.as_str())
                .collect();
            // The table's columns: the model's (money is Decimal, the rest UInt64 sums after
            // the keys) plus `contributions`.
            let schema = table.schema();
            let mut columns: Vec<(String, String)> = schema
                .fields()
                .iter()
                .map(|f| {
                    let ty = if *f.data_type() == MONEY {
                        "Decimal"
                    } else {
                        "UInt64"
                    };
                    (f.name().clone(), ty.to_owned())
                })
                .collect();
            columns.push(("contributions".into(), "UInt64".into()));
            if selects.is_empty() {
                return Err(corrupt(format!(
                    "no views feed aggregate `{}`",
                    table.name()
                )));
            }
            let (keys, sums) = columns.split_at(table.key_columns());
            let keys: Vec<&str> = keys.iter().map(|(n, _)| n.as_str()).collect();
            let keys = keys.join(", ");
            let truth_sums: Vec<String> = sums
                .iter()
                .map(|(n, _)| format!("sum({n}) AS truth_{n}"))
                .collect();
            let stored_sums: Vec<String> = sums
                .iter()
                .map(|(n, _)| format!("sum({n}) AS stored_{n}"))
                .collect();
            let differences: Vec<String> = sums
                .iter()
                .map(|(n, ty)| {
                    if ty.starts_with("Decimal") {
                        format!("truth_{n} - stored_{n}")
                    } else {
                        format!("toUInt64(truth_{n} - stored_{n})")
                    }
                })
                .collect();
            let differs: Vec<String> = sums
                .iter()
                .map(|(n, _)| format!("truth_{n} != stored_{n}"))
                .collect();
            let names: Vec<&str> = sums.iter().map(|(n, _)| n.as_str()).collect();
            let db = &self.db;
            let name = table.name();
            let insert = format!(
                "INSERT INTO {db}.{name} ({keys}, {names}) \
                 SELECT {keys}, {differences} FROM \
                 (SELECT {keys}, {truth_sums} FROM ({union}) GROUP BY {keys}) \
                 ALL FULL OUTER JOIN \
                 (SELECT {keys}, {stored_sums} FROM {db}.{name} GROUP BY {keys}) \
                 USING ({keys}) WHERE {differs}",
                names = names.join(", "),
                differences = differences.join(", "),
                truth_sums = truth_sums.join(", "),
                stored_sums = stored_sums.join(", "),
                union = selects.join(" UNION ALL "),
                differs = differs.join(" OR "),
            );
            let count = format!(
                "SELECT count() FROM \
                 (SELECT {keys}, {truth_sums} FROM ({union}) GROUP BY {keys}) \
                 ALL FULL OUTER JOIN \
                 (SELECT {keys}, {stored_sums} FROM {db}.{name} GROUP BY {keys}) \
                 USING ({keys}) WHERE {differs}",
                truth_sums = truth_sums.join(", "),
                stored_sums = stored_sums.join(", "),
                union = selects.join(" UNION ALL "),
                differs = differs.join(" OR "),
            );
            let rows = self
                .conn
                .run(&count, self.conn.client.query(&count).fetch_one::<u64>())
                .await?;
            if rows > 0 {
                self.conn.execute(&insert).await?;
                corrected += rows;
            }
        }
        Ok(corrected)
    }

    async fn stored_as_of(&self) -> SinkResult<Option<i64>> {
        Ok(self.freshness().await?.as_of_ms)
    }

    async fn sales(&self, table: AggTable, key: &str) -> SinkResult<RecordBatch> {
        let sql = format!(
            "SELECT toInt32({key}) AS k, sum(orders_placed), sum(orders_paid), sum(items_sold), \
             sum(revenue) FROM {}.{} GROUP BY k HAVING sum(contributions) != 0 ORDER BY k",
            self.db,
            table.name()
        );
        let rows = self
            .conn
            .run(&sql, self.conn.client.query(&sql).fetch_all::<SalesRow>())
            .await?;
        let keys = rows.iter().map(|r| r.key);
        let key_column: ArrayRef = if table == AggTable::YearlySales {
            Arc::new(Int32Array::from_iter_values(keys))
        } else {
            date32(keys)
        };
        batch(
            table,
            vec![
                key_column,
                u64s(rows.iter().map(|r| r.orders_placed)),
                u64s(rows.iter().map(|r| r.orders_paid)),
                u64s(rows.iter().map(|r| r.items_sold)),
                money_array(rows.iter().map(|r| r.revenue))?,
            ],
        )
    }
}

fn batch(table: AggTable, columns: Vec<ArrayRef>) -> SinkResult<RecordBatch> {
    RecordBatch::try_new(table.schema(), columns).map_err(|e| corrupt(e.to_string()))
}

#[async_trait]
impl Sink for ClickHouseSink {
    async fn apply(&self, batch: &IngestBatch) -> SinkResult<ApplyReport> {
        let mut report = ApplyReport::default();
        let mut newest: Option<i64> = None;
        let mut inserts: Vec<(String, Vec<u8>)> = Vec::new();
        // Held for the whole apply: a repair never runs beside raw inserts.
        let mut repair_pending = self.repair_pending.lock().await;
        if repair_pending.is_none() || *repair_pending == Some(true) {
            *repair_pending = Some(true);
            self.repair_if_journal_says_so().await?;
            *repair_pending = Some(false);
        }
        let apply_id = uuid::Uuid::now_v7().to_string();
        // Which rows and dead letters are new: all look-ups at once.
        let tables: Vec<&(RawTable, RecordBatch)> = batch
            .tables
            .iter()
            .filter(|(_, rows)| rows.num_rows() > 0)
            .collect();
        let writes_raw = !tables.is_empty();
        let (new_rows, letters, ()) = tokio::try_join!(
            futures::future::try_join_all(
                tables
                    .iter()
                    .map(|(table, rows)| self.new_rows(*table, rows))
            ),
            self.new_dead_letters(&batch.dead_letters),
            async {
                if writes_raw {
                    self.journal(&apply_id, 0).await
                } else {
                    Ok(())
                }
            },
        )?;
        for ((table, rows), new) in tables.into_iter().zip(new_rows) {
            report.duplicates_skipped += rows.num_rows() - new.len();
            report.rows_written += new.len();
            // Every row of the batch is stored once this apply succeeds, duplicates included:
            // so a retry whose rows all went in the first time still advances the watermark.
            let at = rows.column_by_name(OCCURRED_AT).ok_or_else(|| {
                corrupt(format!(
                    "table `{}`: no column `{OCCURRED_AT}`",
                    table.name()
                ))
            })?;
            let at: &TimestampMillisecondArray = typed(at, OCCURRED_AT)?;
            newest = newest.max(at.iter().flatten().max());
            if new.is_empty() {
                continue;
            }
            inserts.push((
                format!("{}.{}", self.db, table.name()),
                encode_rows(*table, rows, &new)?,
            ));
        }
        report.dead_letters_written = letters.len();
        if !letters.is_empty() {
            let mut out = RowBinary::default();
            for d in letters {
                encode_dead_letter(&mut out, d);
            }
            inserts.push((format!("{}.{DEAD_LETTERS}", self.db), out.0));
        }
        // One INSERT per table, concurrently; a retry after any failure is idempotent.
        if writes_raw {
            // From here until the done mark, a failure may leave the views behind.
            *repair_pending = Some(true);
        }
        futures::future::try_join_all(
            inserts
                .into_iter()
                .map(|(table, rows)| async move { self.conn.insert(&table, rows).await }),
        )
        .await?;

        // Only now, with the data acknowledged: the positions (a restarted worker seeks there),
        // the freshness watermark and the journal's done mark, at once.
        let positions = async {
            if batch.positions.is_empty() {
                return Ok(());
            }
            let mut out = RowBinary::default();
            let applied_at = now_ms();
            for p in &batch.positions {
                out.str(&p.topic);
                out.i32(p.partition);
                out.u64(p.next_offset);
                out.i64(applied_at);
            }
            self.conn
                .insert(&format!("{}.positions", self.db), out.0)
                .await
        };
        let freshness = async {
            let Some(newest) = newest else {
                return Ok(());
            };
            let mut as_of = self.as_of.lock().await;
            let current = match *as_of {
                Some(current) => current,
                None => self.stored_as_of().await?,
            };
            if current.is_none_or(|c| newest > c) {
                let mut out = RowBinary::default();
                out.i64(newest);
                out.i64(now_ms());
                self.conn
                    .insert(&format!("{}.freshness", self.db), out.0)
                    .await?;
                *as_of = Some(Some(newest));
            } else {
                *as_of = Some(current);
            }
            Ok(())
        };
        let done = async {
            if writes_raw {
                self.journal(&apply_id, 1).await
            } else {
                Ok(())
            }
        };
        tokio::try_join!(positions, freshness, done)?;
        *repair_pending = Some(false);
        Ok(report)
    }

    async fn parked_keys(&self) -> SinkResult<Vec<(String, String)>> {
        let sql = format!(
            "SELECT DISTINCT topic, key FROM {}.{DEAD_LETTERS} ORDER BY topic, key",
            self.db
        );
        self.conn
            .run(
                &sql,
                self.conn.client.query(&sql).fetch_all::<(String, String)>(),
            )
            .await
    }

    async fn freshness(&self) -> SinkResult<Freshness> {
        let sql = freshness_sql(&self.db);
        let row = self
            .conn
            .run(
                &sql,
                self.conn.client.query(&sql).fetch_optional::<(i64, i64)>(),
            )
            .await?;
        Ok(Freshness {
            as_of_ms: row.map(|r| r.0),
            visible_at_ms: row.map(|r| r.1),
        })
    }

    async fn stored_positions(&self) -> SinkResult<Vec<Position>> {
        let sql = format!(
            "SELECT topic, partition, max(next_offset) FROM {}.positions \
             GROUP BY topic, partition ORDER BY topic, partition",
            self.db
        );
        let rows = self
            .conn
            .run(
                &sql,
                self.conn
                    .client
                    .query(&sql)
                    .fetch_all::<(String, i32, u64)>(),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(topic, partition, next_offset)| Position {
                topic,
                partition,
                next_offset,
            })
            .collect())
    }

    /// Keys whose rows add up to no contribution (possible only after a repair took one back)
    /// are left out, as the Rust reference has no such keys.
    async fn aggregate(&self, table: AggTable) -> SinkResult<RecordBatch> {
        match table {
            AggTable::DailySales => self.sales(table, "day").await,
            AggTable::MonthlySales => self.sales(table, "month").await,
            AggTable::YearlySales => self.sales(table, "year").await,
            AggTable::ProductSalesDaily => {
                let sql = format!(
                    "SELECT toInt32(day) AS d, product_id, sum(units), sum(revenue), \
                     sum(order_lines) FROM {}.{} GROUP BY d, product_id \
                     HAVING sum(contributions) != 0 ORDER BY d, product_id",
                    self.db,
                    table.name()
                );
                let rows = self
                    .conn
                    .run(&sql, self.conn.client.query(&sql).fetch_all::<ProductRow>())
                    .await?;
                batch(
                    table,
                    vec![
                        date32(rows.iter().map(|r| r.day)),
                        strings(rows.iter().map(|r| r.product_id.as_str())),
                        u64s(rows.iter().map(|r| r.units)),
                        money_array(rows.iter().map(|r| r.revenue))?,
                        u64s(rows.iter().map(|r| r.order_lines)),
                    ],
                )
            }
            AggTable::CustomerSpendDaily => {
                let sql = format!(
                    "SELECT toInt32(day) AS d, customer_id, sum(orders_paid), sum(revenue) \
                     FROM {}.{} GROUP BY d, customer_id \
                     HAVING sum(contributions) != 0 ORDER BY d, customer_id",
                    self.db,
                    table.name()
                );
                let rows = self
                    .conn
                    .run(
                        &sql,
                        self.conn.client.query(&sql).fetch_all::<CustomerRow>(),
                    )
                    .await?;
                batch(
                    table,
                    vec![
                        date32(rows.iter().map(|r| r.day)),
                        strings(rows.iter().map(|r| r.customer_id.as_str())),
                        u64s(rows.iter().map(|r| r.orders_paid)),
                        money_array(rows.iter().map(|r| r.revenue))?,
                    ],
                )
            }
        }
    }

    async fn raw_row_count(&self, table: RawTable) -> SinkResult<u64> {
        let sql = format!("SELECT count() FROM {}.{}", self.db, table.name());
        self.conn
            .run(&sql, self.conn.client.query(&sql).fetch_one::<u64>())
            .await
    }

    async fn dead_letters(&self) -> SinkResult<Vec<DeadLetter>> {
        let sql = format!(
            "SELECT topic, partition, offset, key, event_id, event_type, reason_kind, reason, \
             payload, received_at FROM {}.{DEAD_LETTERS} ORDER BY topic, partition, offset",
            self.db
        );
        let rows = self
            .conn
            .run(
                &sql,
                self.conn.client.query(&sql).fetch_all::<DeadLetterRow>(),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| DeadLetter {
                topic: r.topic,
                partition: r.partition,
                offset: r.offset,
                key: r.key,
                event_id: r.event_id,
                event_type: r.event_type,
                reason_kind: r.reason_kind,
                reason: r.reason,
                payload: Bytes::from(r.payload),
                received_at_ms: r.received_at,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_they_reach_sql() {
        assert!(valid_name("shoplens_test_1"));
        assert!(!valid_name("x; DROP DATABASE y"));
        assert!(!valid_name(""));
        assert!(!valid_name("a-b"));
    }

    #[test]
    fn migrations_split_into_statements_without_comments() {
        let s = migration_statements(
            "-- a comment; with a semicolon\nCREATE TABLE {db}.a (x Int8)\nENGINE = Log;\n\n\
             CREATE TABLE {db}.b (y Int8) ENGINE = Log;\n",
            "g1",
        );
        assert_eq!(
            s,
            vec![
                "CREATE TABLE g1.a (x Int8)\nENGINE = Log",
                "CREATE TABLE g1.b (y Int8) ENGINE = Log"
            ]
        );
        // Every embedded statement is idempotent.
        for (_, text) in MIGRATIONS {
            for st in migration_statements(text, "d") {
                assert!(st.contains("IF NOT EXISTS"), "{st}");
            }
        }
    }

    /// The raw tables' DDL has exactly the contract's columns, in its order, with the
    /// ClickHouse type RowBinary encoding assumes.
    #[test]
    fn raw_table_ddl_matches_the_contract() {
        let statements = migration_statements(MIGRATIONS[0].1, "d");
        for table in RawTable::ALL {
            let head = format!("CREATE TABLE IF NOT EXISTS d.{}\n", table.name());
            let st = statements
                .iter()
                .find(|s| s.starts_with(&head))
                .unwrap_or_else(|| panic!("no DDL for {}", table.name()));
            let body = &st[st.find('(').unwrap() + 1..st.rfind(')').unwrap()];
            let columns: Vec<(String, String)> = body
                .split(",\n")
                .map(|c| {
                    let (name, ty) = c.trim().split_once(' ').unwrap();
                    (name.to_owned(), ty.trim().to_owned())
                })
                .collect();
            let expected: Vec<(String, String)> = table
                .schema()
                .fields()
                .iter()
                .map(|f| {
                    let base = match f.data_type() {
                        DataType::Utf8 => "String",
                        DataType::Int32 => "Int32",
                        DataType::Timestamp(..) => "Int64",
                        t if *t == MONEY => "Decimal(18, 2)",
                        t => panic!("unexpected type {t}"),
                    };
                    let ty = if f.is_nullable() {
                        format!("Nullable({base})")
                    } else {
                        base.to_owned()
                    };
                    (f.name().clone(), ty)
                })
                .collect();
            assert_eq!(columns, expected, "{}", table.name());
        }
    }

    #[test]
    fn every_aggregate_is_fed_by_the_views_the_model_defines() {
        let views = view_selects("d");
        let count = |t: AggTable| {
            views
                .iter()
                .filter(|(target, _)| target == t.name())
                .count()
        };
        assert_eq!(views.len(), 12);
        assert_eq!(count(AggTable::DailySales), 3);
        assert_eq!(count(AggTable::MonthlySales), 3);
        assert_eq!(count(AggTable::YearlySales), 3);
        assert_eq!(count(AggTable::ProductSalesDaily), 1);
        assert_eq!(count(AggTable::CustomerSpendDaily), 2);
        for (_, select) in &views {
            assert!(select.starts_with("SELECT"), "{select}");
            assert!(select.contains("FROM d."), "{select}");
        }
    }

    #[test]
    fn rows_are_encoded_as_rowbinary() {
        let schema = RawTable::OrderStatusChanges.schema();
        let b = RecordBatch::try_new(
            schema,
            vec![
                strings(["e1", "e2"].into_iter()),
                Arc::new(TimestampMillisecondArray::from(vec![1, 2]).with_timezone("UTC")),
                strings(["o", "o"].into_iter()),
                strings(["c", "c"].into_iter()),
                Arc::new(StringArray::from(vec![None, Some("Placed")])),
                strings(["Placed", "Paid"].into_iter()),
            ],
        )
        .unwrap();
        let bytes = encode_rows(RawTable::OrderStatusChanges, &b, &[1]).unwrap();
        let mut expected = vec![2, b'e', b'2'];
        expected.extend(2i64.to_le_bytes());
        expected.extend([1, b'o', 1, b'c', 0, 6]);
        expected.extend(b"Placed");
        expected.push(4);
        expected.extend(b"Paid");
        assert_eq!(bytes, expected);

        let purchases = RecordBatch::try_new(
            RawTable::ProductPurchases.schema(),
            vec![
                strings(["e"].into_iter()),
                Arc::new(TimestampMillisecondArray::from(vec![-5]).with_timezone("UTC")),
                strings(["o"].into_iter()),
                Arc::new(Int32Array::from(vec![3])),
                strings(["c"].into_iter()),
                strings(["p"].into_iter()),
                Arc::new(Int32Array::from(vec![2])),
                money_array([150].into_iter()).unwrap(),
                money_array([i128::from(i64::MAX) + 1].into_iter()).unwrap(),
                strings(["EUR"].into_iter()),
            ],
        )
        .unwrap();
        let err = encode_rows(RawTable::ProductPurchases, &purchases, &[0]).unwrap_err();
        assert!(err.to_string().contains("Decimal(18, 2)"), "{err}");
        // A batch of another table's schema is refused, not mis-encoded.
        let err = encode_rows(RawTable::Orders, &b, &[0]).unwrap_err();
        assert!(matches!(err, SinkError::Corrupt(_)), "{err}");
    }

    #[test]
    fn lengths_are_leb128_and_ids_are_looked_up_in_sorted_chunks() {
        let mut out = RowBinary::default();
        out.len(127);
        out.len(128);
        out.len(300);
        assert_eq!(out.0, vec![0x7f, 0x80, 0x01, 0xac, 0x02]);

        assert_eq!(id_chunks(&["b", "c", "a"]), vec![vec!["a", "b", "c"]]);
        let ids: Vec<String> = (0..LOOKUP_CHUNK + 1).map(|i| format!("{i:06}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let chunks = id_chunks(&refs);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0][0], "000000");
        assert_eq!(chunks[1], vec![format!("{LOOKUP_CHUNK:06}").as_str()]);
        assert!(id_chunks(&[]).is_empty());
        assert_eq!(id_list(&["0a-1", "ff"]).unwrap(), "'0a-1','ff'");
        assert!(matches!(id_list(&["x' OR 1"]), Err(SinkError::Corrupt(_))));
    }
}
