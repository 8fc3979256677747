//! The embedded back end: DataFusion over the embedded store's committed Parquet files.
//!
//! Reads only what the live generation's manifest lists (through
//! [`shoplens_readmodel::embedded::read_snapshot`]), never opens the store for writing,
//! so it runs beside the worker in the same process or in another one. Raw tables and dead
//! letters are scanned from their files (with Parquet pruning); an aggregate table is its
//! delta files merged into one row per key, kept in memory until the files change, and
//! merged incrementally while new deltas are only appended. In a process with a memory
//! budget ([`EmbeddedReadModel::within`]) a table too large for it is instead merged a
//! period at a time at each scan (`merge`).

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Int32Type};
use arrow_schema::DataType;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use datafusion::arrow::compute::cast;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::{MemTable, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::streaming::StreamingTableExec;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use shoplens_readmodel::aggregate::Aggregates;
use shoplens_readmodel::config::{ReadModelConfig, ReadModelKind};
use shoplens_readmodel::embedded::{LiveFile, Snapshot, live_manifest, read_snapshot};
use shoplens_readmodel::tables::{AggTable, RawTable};

use crate::plan::column_bounds;
use crate::read_model::{REVENUE_SUM, ReadModel, ReadModelError, Table, Watermark};

mod merge;

use merge::MergeStream;

/// The embedded read model under `dir` (the store's directory, `data/readmodel` by default).
#[derive(Clone)]
pub struct EmbeddedReadModel {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    /// The most rows a merged aggregate table may have to be kept in memory; `None`: no
    /// limit. A larger one is merged a period at a time at every scan.
    resident_rows: Option<u64>,
    /// The last snapshot read, with the identity of the files it was read from.
    snapshot: Mutex<Option<(SnapshotKey, Arc<Snapshot>)>>,
    /// Per aggregate table: the delta files merged so far, their merged state, and that
    /// state as the batch queries scan.
    merged: tokio::sync::Mutex<HashMap<AggTable, Merged>>,
    /// Per dimension table: its files decoded, while they fit [`RESIDENT_BYTES`].
    resident: tokio::sync::Mutex<HashMap<RawTable, Resident>>,
}

/// The raw tables kept decoded in memory: the customer and product events, which the
/// `customers` and `products` views read at every dashboard top-N (for the names of the
/// ids it ranked). Decoding their Parquet files was a sixth of such a request's CPU time.
const RESIDENT_TABLES: [RawTable; 2] = [RawTable::Customers, RawTable::Products];

/// A dimension table larger than this in memory is scanned from its files instead
/// (10,000 customers take about 2 MiB).
const RESIDENT_BYTES: usize = 16 * 1024 * 1024;

struct Resident {
    files: Vec<PathBuf>,
    /// `None` once the files decoded to more than [`RESIDENT_BYTES`].
    batches: Option<Vec<RecordBatch>>,
}

enum Merged {
    /// Merged in memory.
    Resident {
        files: Vec<PathBuf>,
        state: Box<Aggregates>,
        partitions: Partitions,
    },
    /// More rows than this process keeps in memory, in this generation (whose tables only
    /// ever gain keys): scanned with a [`MergeStream`].
    Oversized { generation: u32 },
}

/// What one row of a merged table costs in memory, as a bound: its entry in the merged state
/// (a B-tree entry of 56 bytes and the tree's slack) plus its row in the batch queries scan,
/// which is built once whole and then copied into partitions.
pub const MERGED_ROW_BYTES: u64 = 256;

/// A merged table as the scans read it: [`PARTITIONS`] partitions of batches of at most
/// [`BATCH_ROWS`] rows, each with buffers of its own.
type Partitions = Arc<Vec<Vec<RecordBatch>>>;

/// Partitions of a merged table: one per core a query uses (`engine`'s target partitions),
/// so an aggregate over it needs no repartitioning.
const PARTITIONS: usize = 2;

/// Rows per batch of a merged table: DataFusion's batch size. One batch of a million rows
/// would be buffered whole by every operator that holds a batch.
const BATCH_ROWS: usize = 8192;

/// `batch` cut into [`PARTITIONS`] partitions of batches of at most [`BATCH_ROWS`] rows,
/// copied (a slice would keep, and be accounted as, the whole batch's buffers).
fn partitions(batch: &RecordBatch) -> DfResult<Partitions> {
    let mut parts = vec![Vec::new(); PARTITIONS];
    let mut at = 0;
    let mut i = 0;
    while at < batch.num_rows() {
        let n = BATCH_ROWS.min(batch.num_rows() - at);
        let slice = batch.slice(at, n);
        let copied = datafusion::arrow::compute::concat_batches(&batch.schema(), [&slice])?;
        parts[i % PARTITIONS].push(copied);
        at += n;
        i += 1;
    }
    Ok(Arc::new(parts))
}

/// Identifies one version of the live generation's manifest: it is replaced by a rename,
/// so a new version has a new inode or modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SnapshotKey {
    generation: u32,
    manifest: Option<FileStamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

fn stamp(path: &Path) -> std::io::Result<Option<FileStamp>> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(FileStamp {
            ino: m.ino(),
            len: m.len(),
            modified: m.modified().ok(),
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn unavailable(e: impl fmt::Display) -> ReadModelError {
    ReadModelError::Unavailable(e.to_string())
}

impl EmbeddedReadModel {
    /// Reads the store under `dir`; nothing is opened until the first query.
    pub fn new(dir: impl Into<PathBuf>) -> EmbeddedReadModel {
        EmbeddedReadModel::with_resident_rows(dir.into(), None)
    }

    /// Reads the store under `dir` in a process with about `bytes` of memory for merged
    /// aggregate tables: one that would take more than a quarter of it (at
    /// [`MERGED_ROW_BYTES`] a row) is merged a period at a time at every scan instead of
    /// being kept merged in memory. Slower for it, but the query does not run out of memory.
    pub fn within(dir: impl Into<PathBuf>, bytes: u64) -> EmbeddedReadModel {
        EmbeddedReadModel::with_resident_rows(dir.into(), Some(bytes / 4 / MERGED_ROW_BYTES))
    }

    fn with_resident_rows(dir: PathBuf, resident_rows: Option<u64>) -> EmbeddedReadModel {
        EmbeddedReadModel {
            inner: Arc::new(Inner {
                dir,
                resident_rows,
                snapshot: Mutex::new(None),
                merged: tokio::sync::Mutex::new(HashMap::new()),
                resident: tokio::sync::Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl Inner {
    /// The live generation's files now; `None` before a generation is live.
    fn snapshot(&self) -> Result<Option<Arc<Snapshot>>, ReadModelError> {
        let Some((generation, manifest)) = live_manifest(&self.dir)? else {
            return Ok(None);
        };
        let key = SnapshotKey {
            generation,
            manifest: stamp(&manifest).map_err(unavailable)?,
        };
        let mut cached = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, snap)) = cached.as_ref()
            && *k == key
        {
            return Ok(Some(snap.clone()));
        }
        let snap = Arc::new(read_snapshot(&self.dir, generation)?);
        *cached = Some((key, snap.clone()));
        Ok(Some(snap))
    }

    /// `table` merged to one row per key, as of `snapshot`; `None` if it has more rows than
    /// this process keeps in memory (`resident_rows`): scan it with a [`MergeStream`].
    /// A rollup is not stored: it is its daily table's deltas, each row at its week or month.
    async fn merged(&self, table: AggTable, snapshot: &Snapshot) -> DfResult<Option<Partitions>> {
        let stored = table.rolls_up().unwrap_or(table);
        let stored_files = snapshot
            .aggregates
            .get(&stored)
            .map_or(&[][..], Vec::as_slice);
        let limit = self.resident_rows;
        // A stored table has at least as many keys as its largest file (a snapshot has a
        // row per key): no need to find out by merging.
        let largest = stored_files.iter().map(|f| f.rows).max().unwrap_or(0);
        if stored == table && limit.is_some_and(|limit| largest > limit) {
            return Ok(None);
        }
        let files: Vec<PathBuf> = stored_files.iter().map(|f| f.path.clone()).collect();
        let generation = snapshot.generation;
        let mut all = self.merged.lock().await;
        match all.get(&table) {
            Some(Merged::Resident {
                files: old,
                partitions,
                ..
            }) if *old == files => return Ok(Some(partitions.clone())),
            Some(Merged::Oversized { generation: g }) if *g == generation => return Ok(None),
            _ => {}
        }
        let (mut state, done) = match all.remove(&table) {
            // Only new deltas appended: merge just those.
            Some(Merged::Resident {
                files: old, state, ..
            }) if files.starts_with(&old) => (*state, old.len()),
            // Compacted (or a new generation): start over.
            _ => (Aggregates::new(), 0),
        };
        let new_files = files[done..].to_vec();
        let within = tokio::task::spawn_blocking(move || -> DfResult<Option<Aggregates>> {
            for path in &new_files {
                let file = File::open(path)?;
                for batch in ParquetRecordBatchReaderBuilder::try_new(file)?.build()? {
                    add_rows(&mut state, table, &batch?)?;
                    if limit.is_some_and(|limit| state.len(table) as u64 > limit) {
                        return Ok(None);
                    }
                }
            }
            Ok(Some(state))
        })
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))??;
        let Some(state) = within else {
            all.insert(table, Merged::Oversized { generation });
            return Ok(None);
        };
        let partitions = partitions(&widen_revenue(table, state.to_record_batch(table))?)?;
        all.insert(
            table,
            Merged::Resident {
                files,
                state: Box::new(state),
                partitions: partitions.clone(),
            },
        );
        Ok(Some(partitions))
    }

    /// `table`'s rows in `files`, decoded, if it is a dimension table that fits in
    /// [`RESIDENT_BYTES`]; `None` means: scan the files. Files only appended since the last
    /// call are the only ones decoded.
    async fn resident(
        &self,
        table: RawTable,
        files: &[LiveFile],
    ) -> DfResult<Option<Vec<RecordBatch>>> {
        if !RESIDENT_TABLES.contains(&table) {
            return Ok(None);
        }
        let files: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
        let mut all = self.resident.lock().await;
        let (mut batches, done) = match all.remove(&table) {
            Some(r) if r.files == files => {
                let batches = r.batches.clone();
                all.insert(table, r);
                return Ok(batches);
            }
            Some(Resident {
                files: old,
                batches: Some(batches),
            }) if files.starts_with(&old) => (batches, old.len()),
            _ => (Vec::new(), 0),
        };
        let new_files = files[done..].to_vec();
        let decoded = tokio::task::spawn_blocking(move || -> DfResult<Vec<RecordBatch>> {
            let mut decoded = Vec::new();
            for path in &new_files {
                decoded.extend(read_parquet(path)?);
            }
            Ok(decoded)
        })
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))??;
        batches.extend(decoded);
        let bytes: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
        let batches = (bytes <= RESIDENT_BYTES).then_some(batches);
        all.insert(
            table,
            Resident {
                files,
                batches: batches.clone(),
            },
        );
        Ok(batches)
    }
}

fn read_parquet(path: &Path) -> DfResult<Vec<RecordBatch>> {
    let file = File::open(path)?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    Ok(reader.collect::<Result<Vec<_>, _>>()?)
}

/// Adds `rows` of `table`'s stored table ([`AggTable::rolls_up`]: the daily table of a
/// rollup) to `state`.
fn add_rows(state: &mut Aggregates, table: AggTable, rows: &RecordBatch) -> DfResult<()> {
    let added = if table.rolls_up().is_some() {
        state.roll_up(table, rows)
    } else {
        state.merge_record_batch(table, rows)
    };
    added.map_err(|e| DataFusionError::External(Box::new(e)))
}

/// The merged batch in [`Table::schema`]: revenue as [`REVENUE_SUM`].
fn widen_revenue(table: AggTable, batch: RecordBatch) -> DfResult<RecordBatch> {
    let schema = Table::Agg(table).schema();
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if f.data_type() == &REVENUE_SUM {
                cast(c, &REVENUE_SUM)
            } else {
                Ok(c.clone())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema, columns)?)
}

#[async_trait]
impl ReadModel for EmbeddedReadModel {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn config(&self) -> ReadModelConfig {
        let defaults = ReadModelConfig::default();
        ReadModelConfig {
            kind: ReadModelKind::Embedded,
            embedded: shoplens_readmodel::config::EmbeddedConfig {
                dir: self.inner.dir.clone(),
                ..defaults.embedded
            },
            ..defaults
        }
    }

    fn provider(&self, table: Table) -> Arc<dyn TableProvider> {
        Arc::new(EmbeddedTable {
            model: self.inner.clone(),
            table,
            schema: table.schema(),
        })
    }

    async fn watermark(&self) -> Result<Watermark, ReadModelError> {
        let inner = self.inner.clone();
        let snapshot = tokio::task::spawn_blocking(move || inner.snapshot())
            .await
            .map_err(unavailable)??;
        Ok(snapshot
            .map(|s| Watermark {
                generation: s.generation,
                freshness: s.freshness,
                version: s.version,
            })
            .unwrap_or_default())
    }
}

/// One table of the embedded read model; resolves the live files at every scan.
struct EmbeddedTable {
    model: Arc<Inner>,
    table: Table,
    schema: SchemaRef,
}

impl fmt::Debug for EmbeddedTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmbeddedTable({})", self.table.name())
    }
}

impl EmbeddedTable {
    fn files<'a>(&self, snapshot: &'a Snapshot) -> &'a [LiveFile] {
        match self.table {
            Table::Raw(t) => snapshot.raw.get(&t).map_or(&[], Vec::as_slice),
            Table::DeadLetters => &snapshot.dead_letters,
            Table::Agg(_) => &[],
        }
    }
}

#[async_trait]
impl TableProvider for EmbeddedTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Raw files prune row groups with the filters, merged aggregates skip the batches
        // outside the period ranges ([`period_ranges`]); DataFusion still applies them.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let model = self.model.clone();
        let snapshot = tokio::task::spawn_blocking(move || model.snapshot())
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))??;
        let empty = || -> DfResult<Arc<dyn ExecutionPlan>> {
            let schema = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            };
            Ok(Arc::new(EmptyExec::new(schema)))
        };
        let Some(snapshot) = snapshot else {
            return empty();
        };
        if let Table::Agg(t) = self.table {
            let period = self.schema.field(0).name();
            let Some(partitions) = self.model.merged(t, &snapshot).await? else {
                let stored = t.rolls_up().unwrap_or(t);
                let files = snapshot
                    .aggregates
                    .get(&stored)
                    .map_or(&[][..], Vec::as_slice);
                let merge = MergeStream {
                    table: t,
                    files: files.iter().map(|f| f.path.clone()).collect(),
                    ranges: period_ranges(period, filters),
                    schema: self.schema.clone(),
                };
                return Ok(Arc::new(StreamingTableExec::try_new(
                    self.schema.clone(),
                    vec![Arc::new(merge)],
                    projection,
                    [],
                    false,
                    limit,
                )?));
            };
            let partitions = match period_ranges(period, filters) {
                Some(ranges) => in_ranges(&partitions, &ranges),
                None => partitions.as_ref().clone(),
            };
            let mem = MemTable::try_new(self.schema.clone(), partitions)?;
            return mem.scan(state, projection, filters, limit).await;
        }
        let files = self.files(&snapshot);
        if files.is_empty() {
            return empty();
        }
        if let Table::Raw(t) = self.table
            && let Some(batches) = self.model.resident(t, files).await?
        {
            let mem = MemTable::try_new(self.schema.clone(), vec![batches])?;
            return mem.scan(state, projection, filters, limit).await;
        }
        let urls = files
            .iter()
            .map(|f| ListingTableUrl::parse(f.path.to_string_lossy()))
            .collect::<DfResult<Vec<_>>>()?;
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(self.schema.clone());
        ListingTable::try_new(config)?
            .scan(state, projection, filters, limit)
            .await
    }
}

/// The inclusive ranges of the period column `period` (an aggregate table's first column:
/// its day, month or year, as an `i32`) that `filters` allow, if they bound it with
/// comparisons to literals, `AND`s and `OR`s of them (a rollup's edge days are two ranges,
/// `crate::rollup`); `None` if they do not bound it. No range: no period passes.
fn period_ranges(period: &str, filters: &[Expr]) -> Option<Vec<(i32, i32)>> {
    filters
        .iter()
        .map(|f| expr_ranges(period, f))
        .fold(None, both)
}

/// At most this many ranges are kept apart; more become the one range spanning them all
/// (fewer batches skipped, never a batch wrongly skipped).
const MAX_RANGES: usize = 64;

/// The ranges of `period` that `e` allows (see [`period_ranges`]).
fn expr_ranges(period: &str, e: &Expr) -> Option<Vec<(i32, i32)>> {
    use datafusion::logical_expr::{BinaryExpr, Operator};
    match e {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => both(expr_ranges(period, left), expr_ranges(period, right)),
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) => {
            let mut either = expr_ranges(period, left)?;
            either.extend(expr_ranges(period, right)?);
            Some(bounded(either))
        }
        _ => {
            let (lo, hi) = column_bounds(e, period)?;
            Some(vec![(lo.unwrap_or(i32::MIN), hi.unwrap_or(i32::MAX))])
        }
    }
}

/// The ranges both conditions allow (`None`: a condition that does not bound the period).
fn both(a: Option<Vec<(i32, i32)>>, b: Option<Vec<(i32, i32)>>) -> Option<Vec<(i32, i32)>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(intersect(&a, &b)),
        (a, b) => a.or(b),
    }
}

/// The periods in both `a` and `b`.
fn intersect(a: &[(i32, i32)], b: &[(i32, i32)]) -> Vec<(i32, i32)> {
    let both = a
        .iter()
        .flat_map(|&(alo, ahi)| {
            b.iter()
                .map(move |&(blo, bhi)| (alo.max(blo), ahi.min(bhi)))
        })
        .filter(|(lo, hi)| lo <= hi)
        .collect();
    bounded(both)
}

/// `ranges`, or the one range spanning them if there are more than [`MAX_RANGES`].
fn bounded(ranges: Vec<(i32, i32)>) -> Vec<(i32, i32)> {
    if ranges.len() <= MAX_RANGES {
        return ranges;
    }
    let lo = ranges.iter().map(|r| r.0).min().unwrap_or(i32::MIN);
    let hi = ranges.iter().map(|r| r.1).max().unwrap_or(i32::MAX);
    vec![(lo, hi)]
}

/// The batches of `partitions` that may hold a period in one of `ranges`. A merged table is
/// sorted by its period (its state is ordered by period, then id), so a batch's first and
/// last rows bound its periods.
fn in_ranges(partitions: &Partitions, ranges: &[(i32, i32)]) -> Vec<Vec<RecordBatch>> {
    let bounds = |b: &RecordBatch| {
        let c = b.column(0);
        if c.null_count() > 0 {
            return None;
        }
        let values = match c.data_type() {
            DataType::Date32 => c.as_primitive::<Date32Type>().values(),
            DataType::Int32 => c.as_primitive::<Int32Type>().values(),
            _ => return None,
        };
        Some((*values.first()?, *values.last()?))
    };
    partitions
        .iter()
        .map(|part| {
            part.iter()
                .filter(|b| match bounds(b) {
                    Some((first, last)) => ranges.iter().any(|&(lo, hi)| first <= hi && last >= lo),
                    None => b.num_rows() > 0,
                })
                .cloned()
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Date32Array;
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::{col, lit};

    fn day(v: i32) -> Expr {
        lit(ScalarValue::Date32(Some(v)))
    }

    #[test]
    fn the_period_ranges_are_read_from_comparisons_with_literals() {
        let range = |filters: Vec<Expr>| period_ranges("day", &filters);
        assert_eq!(
            range(vec![col("day").between(day(10), day(20))]),
            Some(vec![(10, 20)])
        );
        assert_eq!(
            range(vec![col("day").gt_eq(day(10)).and(col("day").lt(day(20)))]),
            Some(vec![(10, 19)])
        );
        // Both ends in separate filters, one written the other way round.
        assert_eq!(
            range(vec![day(20).gt_eq(col("day")), col("day").gt(day(10))]),
            Some(vec![(11, 20)])
        );
        assert_eq!(range(vec![col("day").eq(day(7))]), Some(vec![(7, 7)]));
        assert_eq!(
            range(vec![col("year").eq(lit(2025)), col("day").lt_eq(day(3))]),
            Some(vec![(i32::MIN, 3)])
        );
        // A rollup's edge days: two ranges, each kept.
        let edges = col("day")
            .gt_eq(day(1))
            .and(col("day").lt_eq(day(5)))
            .or(col("day").gt_eq(day(40)).and(col("day").lt_eq(day(44))));
        assert_eq!(range(vec![edges]), Some(vec![(1, 5), (40, 44)]));
        assert_eq!(
            range(vec![col("day").gt(day(3)).or(col("day").lt(day(1)))]),
            Some(vec![(4, i32::MAX), (i32::MIN, 0)])
        );
        // An OR within an AND: each range cut to the bounds around it.
        assert_eq!(
            range(vec![
                col("day").between(day(1), day(10)),
                col("day").lt(day(3)).or(col("day").gt(day(8)))
            ]),
            Some(vec![(1, 2), (9, 10)])
        );
        // Bounds no period meets: nothing to read.
        assert_eq!(
            range(vec![col("day").eq(day(1)), col("day").eq(day(2))]),
            Some(vec![])
        );
        // Many ranges are bounded in number, spanning every period allowed.
        let many = (0..100)
            .map(|i| col("day").eq(day(i * 10)))
            .reduce(Expr::or)
            .unwrap();
        let ranges = range(vec![many]).unwrap();
        assert!(ranges.len() <= MAX_RANGES, "{ranges:?}");
        for i in 0..100 {
            assert!(ranges.iter().any(|&(lo, hi)| lo <= i * 10 && i * 10 <= hi));
        }
        // Nothing that bounds the period: every batch is read.
        for filters in [
            vec![],
            vec![col("day").not_eq(day(3))],
            vec![col("day").lt(day(3)).or(col("units").gt(lit(3)))],
            vec![col("units").gt(lit(3))],
            vec![col("day").not_between(day(1), day(2))],
        ] {
            assert_eq!(range(filters.clone()), None, "{filters:?}");
        }
    }

    #[test]
    fn only_batches_outside_the_range_are_skipped() {
        let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
            "day",
            DataType::Date32,
            false,
        )]));
        let batch = |days: &[i32]| {
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Date32Array::from(days.to_vec()))],
            )
            .unwrap()
        };
        // Sorted by day, cut into batches taken in turn by two partitions.
        let partitions: Partitions = Arc::new(vec![
            vec![batch(&[1, 2, 3]), batch(&[7, 8, 9])],
            vec![batch(&[4, 5, 6]), batch(&[10, 10, 11])],
        ]);
        let kept = |ranges: &[(i32, i32)]| -> Vec<Vec<i32>> {
            in_ranges(&partitions, ranges)
                .iter()
                .flatten()
                .map(|b| b.column(0).as_primitive::<Date32Type>().values().to_vec())
                .collect()
        };
        assert_eq!(kept(&[(3, 4)]), vec![vec![1, 2, 3], vec![4, 5, 6]]);
        assert_eq!(kept(&[(9, 10)]), vec![vec![7, 8, 9], vec![10, 10, 11]]);
        assert_eq!(kept(&[(12, 20)]), Vec::<Vec<i32>>::new());
        assert_eq!(kept(&[(5, 5)]), vec![vec![4, 5, 6]]);
        assert_eq!(kept(&[(i32::MIN, i32::MAX)]).len(), 4);
        // Two ranges: the batches of either, none between them.
        assert_eq!(
            kept(&[(2, 2), (11, 12)]),
            vec![vec![1, 2, 3], vec![10, 10, 11]]
        );
    }
}
