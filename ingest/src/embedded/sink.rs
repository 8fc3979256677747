//! One generation of the embedded store: Parquet segments per table, committed by the
//! manifest, with the aggregates in memory and exact dedup by event id.
//!
//! An `apply` writes new files only (one per raw table with new rows, one delta per
//! aggregate table that changed, one for new dead letters) and then replaces the manifest;
//! a crash at any point leaves the last manifest's store, and opening deletes files the
//! manifest does not list. Compaction merges small files into bigger ones in its own commit
//! and deletes the replaced files only after a grace period (a reader may be scanning them).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMillisecondType;
use arrow_array::{Array, BooleanArray, RecordBatch};
use async_trait::async_trait;
use shoplens_bus::Position;
use shoplens_contract::tables::{EVENT_ID, OCCURRED_AT, RawTable};
use shoplens_readmodel::aggregate::Aggregates;
use shoplens_readmodel::config::EmbeddedConfig;
use shoplens_readmodel::embedded::manifest::{Manifest, Segment, StoredPosition, TableId};
use shoplens_readmodel::embedded::{Snapshot, sync_dir};
use shoplens_readmodel::freshness::Freshness;
use shoplens_readmodel::tables::{AggTable, dead_letters_schema};

use super::dedup::{IdIndex, format_id, parse_id};
use super::letters;
use super::segment;
use crate::IngestError;
use crate::sink::{ApplyReport, DeadLetter, Sink, SinkResult};

/// What readers see; replaced (manifest) or extended (aggregates, parked keys) under a short
/// write lock at the end of each commit.
struct View {
    manifest: Arc<Manifest>,
    aggregates: Aggregates,
    parked: BTreeSet<(String, String)>,
}

/// What only the one running `apply` touches.
struct Writer {
    manifest: Manifest,
    ids: IdIndex,
    /// The largest event id stored per raw table: a larger id is new without any lookup.
    max_id: HashMap<RawTable, u128>,
    letters: HashSet<(String, i32, u64)>,
    /// Files replaced by compaction, deleted once the grace period has passed.
    retired: Vec<(PathBuf, Instant)>,
    /// A manifest replacement failed half-way: what is on disk is unknown until reopened.
    poisoned: bool,
    /// Where (in `TableId::all()`) the next compaction starts: at the table whose merge the
    /// last one left for later.
    compact_from: usize,
    /// Random, per open: part of every file name this writer creates.
    tag: String,
}

struct Inner {
    /// Held (an exclusive lock on `WRITER_LOCK`) while this sink exists: one writer per
    /// generation across processes; the kernel releases it when the process dies.
    _writer_lock: fs::File,
    root: PathBuf,
    config: EmbeddedConfig,
    generation: u32,
    writer: Arc<tokio::sync::Mutex<Writer>>,
    view: RwLock<View>,
    fail_before_commit: AtomicBool,
}

/// The [`Sink`] of one generation of the embedded store. Cheap to share: the worker and the
/// readers hold the same `Arc` (see [`super::EmbeddedStore`]).
pub struct EmbeddedSink {
    inner: Arc<Inner>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn corrupt(what: impl std::fmt::Display) -> IngestError {
    IngestError::Corrupt(what.to_string())
}

/// The file whose exclusive lock makes a process the writer of a generation.
const WRITER_LOCK: &str = "writer.lock";

/// Takes the writer's lock of the generation under `root`, or says who holds it. The lock is
/// advisory (`flock`): every writer takes it; readers never do.
fn lock_writer(root: &std::path::Path) -> SinkResult<fs::File> {
    use std::io::{Read, Seek, Write};
    let path = root.join(WRITER_LOCK);
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0)?;
            file.seek(std::io::SeekFrom::Start(0))?;
            write!(file, "{}", std::process::id())?;
            Ok(file)
        }
        Err(fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => String::new(),
                pid => format!(" (process {pid})"),
            };
            Err(IngestError::SecondWriter(
                root.display().to_string(),
                holder,
            ))
        }
        Err(fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

/// Runs blocking file work off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> SinkResult<T> + Send + 'static,
) -> SinkResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| IngestError::Io(std::io::Error::other(format!("blocking task failed: {e}"))))?
}

fn schema_of(table: TableId) -> arrow_schema::SchemaRef {
    match table {
        TableId::Raw(t) => t.schema(),
        TableId::Agg(t) => t.schema(),
        TableId::DeadLetters => dead_letters_schema(),
    }
}

impl EmbeddedSink {
    /// Opens (creating if missing) the generation stored under `root`: deletes files the
    /// manifest does not list, restores the aggregates from their segments and the dead
    /// letters' coordinates; raw tables are not read.
    pub(super) fn open_blocking(
        root: PathBuf,
        config: EmbeddedConfig,
        generation: u32,
    ) -> SinkResult<EmbeddedSink> {
        fs::create_dir_all(&root)?;
        let writer_lock = lock_writer(&root)?;
        for table in TableId::all() {
            fs::create_dir_all(root.join(table.dir()))?;
        }
        let manifest = match Manifest::load(&root)? {
            Some(m) => m,
            None => {
                let m = Manifest::default();
                m.store(&root, config.fsync)?;
                m
            }
        };
        Manifest::remove_leftover_tmp(&root)?;
        let listed: HashSet<&str> = manifest
            .all_segments()
            .map(|(_, s)| s.file.as_str())
            .collect();
        for table in TableId::all() {
            for entry in fs::read_dir(root.join(table.dir()))? {
                let entry = entry?;
                if !entry.file_type()?.is_file() {
                    continue;
                }
                let rel = format!("{}/{}", table.dir(), entry.file_name().to_string_lossy());
                if !listed.contains(rel.as_str()) {
                    segment::remove(&entry.path())?;
                }
            }
        }

        let mut max_id = HashMap::new();
        for table in RawTable::ALL {
            for seg in manifest.segments(TableId::Raw(table)) {
                if !root.join(&seg.file).is_file() {
                    return Err(corrupt(format!("segment {} is missing", seg.file)));
                }
                let (_, hi) = range_of(seg)?
                    .ok_or_else(|| corrupt(format!("raw segment {} has no id range", seg.file)))?;
                let max = max_id.entry(table).or_insert(hi);
                *max = (*max).max(hi);
            }
        }
        let mut aggregates = Aggregates::new();
        for table in AggTable::ALL {
            for seg in manifest.segments(TableId::Agg(table)) {
                for batch in segment::read(&root.join(&seg.file), &table.schema(), None)? {
                    aggregates
                        .merge_record_batch(table, &batch)
                        .map_err(|e| corrupt(format!("segment {}: {e}", seg.file)))?;
                }
            }
        }
        let mut letters = HashSet::new();
        let mut parked = BTreeSet::new();
        for seg in manifest.segments(TableId::DeadLetters) {
            let path = root.join(&seg.file);
            for batch in segment::read(&path, &dead_letters_schema(), Some(letters::COORDINATES))? {
                for (topic, partition, offset, key) in letters::coordinates(&batch)? {
                    letters.insert((topic.clone(), partition, offset));
                    parked.insert((topic, key));
                }
            }
        }
        if config.fsync {
            for table in TableId::all() {
                sync_dir(&root.join(table.dir()))?;
            }
        }
        let writer = Writer {
            manifest: manifest.clone(),
            ids: IdIndex::new(config.dedup_cache_ids),
            max_id,
            letters,
            retired: Vec::new(),
            poisoned: false,
            compact_from: 0,
            tag: format!("{:08x}", uuid::Uuid::now_v7().as_u128() as u32),
        };
        Ok(EmbeddedSink {
            inner: Arc::new(Inner {
                _writer_lock: writer_lock,
                root,
                config,
                generation,
                writer: Arc::new(tokio::sync::Mutex::new(writer)),
                view: RwLock::new(View {
                    manifest: Arc::new(manifest),
                    aggregates,
                    parked,
                }),
                fail_before_commit: AtomicBool::new(false),
            }),
        })
    }

    /// The generation this sink stores.
    pub fn generation(&self) -> u32 {
        self.inner.generation
    }

    /// The generation's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.root
    }

    /// The live files of every table as of the last commit, for readers that scan them.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::of(&self.inner.root, self.generation(), &self.manifest())
    }

    /// Makes the next `apply` write its files and then fail without replacing the manifest,
    /// as a crash between the two would. For tests.
    #[doc(hidden)]
    pub fn fail_next_commit(&self) {
        self.inner.fail_before_commit.store(true, Ordering::SeqCst);
    }

    fn manifest(&self) -> Arc<Manifest> {
        self.read_view(|v| v.manifest.clone())
    }

    fn read_view<T>(&self, f: impl FnOnce(&View) -> T) -> T {
        let view = self.inner.view.read().unwrap_or_else(|e| e.into_inner());
        f(&view)
    }
}

/// A raw segment's id range as numbers.
fn range_of(seg: &Segment) -> SinkResult<Option<(u128, u128)>> {
    let Some((lo, hi)) = &seg.id_range else {
        return Ok(None);
    };
    match (parse_id(lo), parse_id(hi)) {
        (Some(lo), Some(hi)) => Ok(Some((lo, hi))),
        _ => Err(corrupt(format!("segment {} has a bad id range", seg.file))),
    }
}

/// The ids of a batch's `event_id` column, as numbers.
fn ids_of(table: RawTable, batch: &RecordBatch) -> SinkResult<Vec<u128>> {
    let col = batch
        .column_by_name(EVENT_ID)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| corrupt(format!("table `{}`: event_id is not text", table.name())))?;
    let mut ids = Vec::with_capacity(col.len());
    for i in 0..col.len() {
        let id = col.value(i);
        ids.push(parse_id(id).ok_or_else(|| {
            corrupt(format!(
                "table `{}`: event_id `{id}` is not a UUID",
                table.name()
            ))
        })?);
    }
    Ok(ids)
}

/// A segment's file name: the manifest's counter, plus a tag of the sink that wrote it, so
/// that a writer that outlived its process's "crash" (a blocking task still running) and the
/// sink that reopened the generation never write the same file name.
fn segment_name(table: TableId, number: u64, tag: &str) -> String {
    format!("{}/{number:08}-{tag}.parquet", table.dir())
}

/// Threads that write (and sync) a commit's files side by side, so the syncs overlap. A few
/// threads, not one per file: each thread that allocates may get a malloc arena of its own,
/// and arenas keep what was freed in them (one thread per file took a drain's peak memory
/// from 184 to 304 MiB).
struct FileWriters {
    jobs: std::sync::mpsc::Sender<WriteJob>,
    done: std::sync::mpsc::Receiver<(usize, SinkResult<u64>)>,
    sent: std::cell::Cell<usize>,
}

/// A file to write: its place in the queue, path, schema and rows.
type WriteJob = (usize, PathBuf, arrow_schema::SchemaRef, RecordBatch);

/// Threads writing one commit's files.
const FILE_WRITERS: usize = 3;

impl FileWriters {
    /// Starts the threads in `scope`; they end once this value is finished or dropped.
    fn start<'scope>(scope: &'scope std::thread::Scope<'scope, '_>, fsync: bool) -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<WriteJob>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        let (report, done) = std::sync::mpsc::channel();
        for _ in 0..FILE_WRITERS {
            let queue = queue.clone();
            let report = report.clone();
            scope.spawn(move || {
                loop {
                    let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok((i, path, schema, rows)) = job else {
                        return;
                    };
                    let size = segment::write(&path, &schema, &[&rows], fsync);
                    if i == 0 && size.is_ok() {
                        crate::failpoint::hit(crate::failpoint::EMBEDDED_RAW_SEGMENT_WRITTEN);
                    }
                    if report.send((i, size)).is_err() {
                        return;
                    }
                }
            });
        }
        FileWriters {
            jobs,
            done,
            sent: std::cell::Cell::new(0),
        }
    }

    /// Queues `file`; its size comes back from [`FileWriters::finish`] in queueing order.
    fn write(&self, file: &NewFile) {
        let i = self.sent.get();
        self.sent.set(i + 1);
        // The writers outlive this value (they end when `jobs` is dropped), so a send fails
        // only if one panicked: `finish` then reports the file as not written.
        let _ = self
            .jobs
            .send((i, file.path.clone(), file.schema.clone(), file.rows.clone()));
    }

    /// Waits for every queued file; their sizes in queueing order.
    fn finish(self) -> Vec<SinkResult<u64>> {
        let FileWriters {
            jobs, done, sent, ..
        } = self;
        drop(jobs);
        let mut sizes: Vec<Option<SinkResult<u64>>> = (0..sent.get()).map(|_| None).collect();
        for (i, size) in done.iter() {
            sizes[i] = Some(size);
        }
        sizes
            .into_iter()
            .map(|s| s.unwrap_or_else(|| Err(corrupt("a file writer thread failed"))))
            .collect()
    }
}

/// Rows of an aggregate snapshot built and written at a time.
const SNAPSHOT_PIECE_ROWS: usize = 32 * 1024;

/// A file of a commit, named (in the manifest's sequence) before it is written.
struct NewFile {
    table: TableId,
    file: String,
    path: PathBuf,
    schema: arrow_schema::SchemaRef,
    rows: RecordBatch,
    id_range: Option<(String, String)>,
}

impl Inner {
    /// The name (in `next`'s sequence) and path of the next file of `table`.
    fn next_file(&self, next: &mut Manifest, tag: &str, table: TableId) -> (String, PathBuf) {
        let file = segment_name(table, next.next_segment, tag);
        next.next_segment += 1;
        let path = self.root.join(&file);
        (file, path)
    }

    /// Names the next file of `table` in `next` for `rows`.
    fn new_file(
        &self,
        next: &mut Manifest,
        tag: &str,
        table: TableId,
        schema: arrow_schema::SchemaRef,
        rows: RecordBatch,
        id_range: Option<(String, String)>,
    ) -> NewFile {
        let (file, path) = self.next_file(next, tag, table);
        NewFile {
            table,
            file,
            path,
            schema,
            rows,
            id_range,
        }
    }

    /// Reads the ids of a stored raw segment.
    fn read_ids(&self, table: RawTable, seg: &Segment) -> SinkResult<Vec<u128>> {
        let mut ids = Vec::with_capacity(seg.rows as usize);
        for batch in segment::read(
            &self.root.join(&seg.file),
            &table.schema(),
            Some(&[EVENT_ID]),
        )? {
            ids.extend(ids_of(table, &batch)?);
        }
        Ok(ids)
    }

    /// Which rows of a batch are new: not held by the store. Exact over all history.
    fn new_rows(&self, w: &mut Writer, table: RawTable, ids: &[u128]) -> SinkResult<Vec<bool>> {
        let max = w.max_id.get(&table).copied();
        let mut keep = vec![true; ids.len()];
        // Ids not above the table's max and not resident: they need a look into segments.
        let mut unknown: Vec<usize> = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            if max.is_none_or(|m| *id > m) {
                continue;
            }
            if w.ids.contains(table, *id) {
                keep[i] = false;
            } else {
                unknown.push(i);
            }
        }
        if unknown.is_empty() {
            return Ok(keep);
        }
        let segments: Vec<Segment> = w
            .manifest
            .segments(TableId::Raw(table))
            .iter()
            .filter(|s| !w.ids.is_resident(&s.file))
            .cloned()
            .collect();
        for seg in segments {
            let Some((lo, hi)) = range_of(&seg)? else {
                continue;
            };
            if !unknown.iter().any(|&i| lo <= ids[i] && ids[i] <= hi) {
                continue;
            }
            let mut stored = self.read_ids(table, &seg)?;
            stored.sort_unstable();
            unknown.retain(|&i| {
                let held = stored.binary_search(&ids[i]).is_ok();
                if held {
                    keep[i] = false;
                }
                !held
            });
            w.ids.insert(table, seg.file.clone(), stored);
            if unknown.is_empty() {
                break;
            }
        }
        Ok(keep)
    }

    fn apply_blocking(
        &self,
        w: &mut Writer,
        batch: &crate::sink::IngestBatch,
    ) -> SinkResult<ApplyReport> {
        if w.poisoned {
            return Err(IngestError::Unavailable(
                "an earlier commit failed half-way; reopen the store".into(),
            ));
        }
        self.delete_retired(w);
        let fsync = self.config.fsync;
        let mut next = w.manifest.clone();
        let mut report = ApplyReport::default();
        let mut written: Vec<PathBuf> = Vec::new();
        let mut dirs: BTreeSet<String> = BTreeSet::new();
        let mut fresh_tables: Vec<(RawTable, RecordBatch)> = Vec::new();
        let mut resident: Vec<(RawTable, String, Vec<u128>)> = Vec::new();
        let mut as_of = next.freshness.as_of_ms;

        let result = (|| -> SinkResult<Aggregates> {
            // Which rows are new, table by table against the id index; then the commit's
            // files are written (and synced) by a few threads side by side, so the syncs
            // overlap, and the aggregates are computed meanwhile.
            let mut files: Vec<NewFile> = Vec::new();
            for (table, rows) in &batch.tables {
                let table = *table;
                if rows.schema().fields() != table.schema().fields() {
                    return Err(corrupt(format!(
                        "a batch for `{}` does not have the table's schema",
                        table.name()
                    )));
                }
                if rows.num_rows() == 0 {
                    continue;
                }
                let ids = ids_of(table, rows)?;
                let keep = self.new_rows(w, table, &ids)?;
                let new_count = keep.iter().filter(|k| **k).count();
                report.duplicates_skipped += rows.num_rows() - new_count;
                if new_count == 0 {
                    continue;
                }
                let (fresh, fresh_ids) = if new_count == rows.num_rows() {
                    (rows.clone(), ids)
                } else {
                    let mask = BooleanArray::from(keep.clone());
                    let fresh = arrow_select::filter::filter_record_batch(rows, &mask)
                        .map_err(|e| corrupt(format!("filtering `{}`: {e}", table.name())))?;
                    let fresh_ids = ids
                        .iter()
                        .zip(&keep)
                        .filter(|(_, k)| **k)
                        .map(|(id, _)| *id);
                    (fresh, fresh_ids.collect())
                };
                report.rows_written += new_count;
                let at = fresh
                    .column_by_name(OCCURRED_AT)
                    .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>())
                    .ok_or_else(|| corrupt("occurred_at is not a timestamp"))?;
                if let Some(max) = arrow_arith_max(at) {
                    as_of = Some(as_of.map_or(max, |a| a.max(max)));
                }
                let lo = fresh_ids.iter().copied().min().unwrap_or(0);
                let hi = fresh_ids.iter().copied().max().unwrap_or(0);
                let file = self.new_file(
                    &mut next,
                    &w.tag,
                    TableId::Raw(table),
                    table.schema(),
                    fresh.clone(),
                    Some((format_id(lo), format_id(hi))),
                );
                resident.push((table, file.file.clone(), fresh_ids));
                fresh_tables.push((table, fresh));
                files.push(file);
            }

            let mut seen = HashSet::new();
            let new_letters: Vec<&DeadLetter> = batch
                .dead_letters
                .iter()
                .filter(|l| {
                    let key = (l.topic.clone(), l.partition, l.offset);
                    !w.letters.contains(&key) && seen.insert(key)
                })
                .collect();
            if !new_letters.is_empty() {
                files.push(self.new_file(
                    &mut next,
                    &w.tag,
                    TableId::DeadLetters,
                    dead_letters_schema(),
                    letters::to_batch(&new_letters),
                    None,
                ));
                report.dead_letters_written = new_letters.len();
            }

            let (delta, agg_files, sizes) = std::thread::scope(|scope| {
                let writers = FileWriters::start(scope, fsync);
                for f in &files {
                    writers.write(f);
                }
                // Aggregated while the raw files are written.
                let delta = Aggregates::from_raw_daily(fresh_tables.iter().map(|(t, b)| (*t, b)))
                    .map_err(|e| corrupt(format!("aggregating: {e}")));
                let mut agg_files = Vec::new();
                if let Ok(delta) = &delta {
                    // Rollups are neither computed nor stored: readers derive them from the
                    // daily deltas.
                    for table in AggTable::ALL {
                        if delta.len(table) == 0 || table.rolls_up().is_some() {
                            continue;
                        }
                        let file = self.new_file(
                            &mut next,
                            &w.tag,
                            TableId::Agg(table),
                            table.schema(),
                            delta.to_record_batch(table),
                            None,
                        );
                        writers.write(&file);
                        agg_files.push(file);
                    }
                }
                (delta, agg_files, writers.finish())
            });
            files.extend(agg_files);
            // Every file named is removed again on failure, written or not.
            written.extend(files.iter().map(|f| f.path.clone()));
            let delta = delta?;
            for (f, size) in files.into_iter().zip(sizes) {
                let bytes = size?;
                dirs.insert(f.table.dir());
                next.segments_mut(f.table).push(Segment {
                    file: f.file,
                    rows: f.rows.num_rows() as u64,
                    bytes,
                    id_range: f.id_range,
                    level: 0,
                });
            }
            Ok(delta)
        })();
        let delta = match result {
            Ok(delta) => delta,
            Err(e) => {
                remove_quietly(&written);
                return Err(e);
            }
        };

        let positions: Vec<StoredPosition> = batch.positions.iter().map(stored).collect();
        let positions_changed = next.merge_positions(&positions);
        let advanced = as_of > next.freshness.as_of_ms;
        if written.is_empty() && !positions_changed {
            return Ok(report);
        }
        if advanced {
            next.freshness = Freshness {
                as_of_ms: as_of,
                visible_at_ms: Some(now_ms()),
            };
        }
        if fsync {
            for dir in &dirs {
                sync_dir(&self.root.join(dir))?;
            }
        }
        crate::failpoint::hit(crate::failpoint::EMBEDDED_SEGMENTS_WRITTEN);
        if self.fail_before_commit.swap(false, Ordering::SeqCst) {
            return Err(IngestError::Io(std::io::Error::other(
                "injected failure before the manifest was replaced",
            )));
        }
        if let Err(e) = next.store_with(&self.root, fsync, || {
            crate::failpoint::hit(crate::failpoint::EMBEDDED_MANIFEST_TMP_WRITTEN)
        }) {
            w.poisoned = true;
            return Err(e.into());
        }
        crate::failpoint::hit(crate::failpoint::EMBEDDED_MANIFEST_SWAPPED);

        // Committed: bring memory in step.
        for (table, file, ids) in resident {
            if let Some(hi) = ids.iter().copied().max() {
                let max = w.max_id.entry(table).or_insert(hi);
                *max = (*max).max(hi);
            }
            w.ids.insert(table, file, ids);
        }
        let mut parked = Vec::new();
        for l in &batch.dead_letters {
            if w.letters.insert((l.topic.clone(), l.partition, l.offset)) {
                parked.push((l.topic.clone(), l.key.clone()));
            }
        }
        w.manifest = next;
        {
            let mut view = self.inner_view_write();
            view.manifest = Arc::new(w.manifest.clone());
            view.aggregates.merge(&delta);
            view.parked.extend(parked);
        }
        if let Err(e) = self.compact(w, report.rows_written as u64) {
            tracing::warn!(error = %e, generation = self.generation, "compaction failed; will retry");
        }
        self.delete_retired(w);
        Ok(report)
    }

    fn inner_view_write(&self) -> std::sync::RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Merges small files into bigger ones where a table has many, in its own commit.
    ///
    /// At least one merge if one is due, more while their rows stay within a budget (a
    /// merge left for later is the first the next compaction looks at): each row is merged
    /// once per level, so a budget of `new_rows` (what the apply wrote) per level, and one
    /// more, keeps up with the applies, while no apply takes every table's merges at once
    /// (all tables reach the fan-in together), which would hold up the batch read meanwhile.
    fn compact(&self, w: &mut Writer, new_rows: u64) -> SinkResult<()> {
        let fan_in = self.config.compact_fan_in.max(2);
        let mut next = w.manifest.clone();
        let levels = TableId::all()
            .flat_map(|t| next.segments(t).iter().map(|s| u64::from(s.level)))
            .max()
            .unwrap_or(0)
            + 1;
        let budget_rows = new_rows.max(1) * (levels + 1);
        let mut replaced: Vec<String> = Vec::new();
        let mut written: Vec<PathBuf> = Vec::new();
        let mut merged_ids: Vec<(RawTable, String, Vec<u128>)> = Vec::new();
        let mut dirs = BTreeSet::new();
        let tables: Vec<TableId> = TableId::all().collect();
        let start = w.compact_from % tables.len();
        let mut merged_rows = 0u64;
        let mut deferred = None;
        let result = (|| -> SinkResult<()> {
            for k in 0..tables.len() {
                let at = (start + k) % tables.len();
                let table = tables[at];
                if let TableId::Agg(agg) = table {
                    // Aggregates: all deltas become one snapshot of the state, once there
                    // are many and they hold at least as many rows as the last snapshot (so
                    // rewriting a big table is paid for by as many delta rows), or at the
                    // latest when there are 16 times as many.
                    let segs = next.segments(table);
                    let after = self.config.aggregate_snapshot_after.max(2);
                    let snapshot_rows: u64 =
                        segs.iter().filter(|s| s.level > 0).map(|s| s.rows).sum();
                    let delta_rows: u64 =
                        segs.iter().filter(|s| s.level == 0).map(|s| s.rows).sum();
                    if segs.len() < after
                        || (delta_rows < snapshot_rows && segs.len() < after.saturating_mul(16))
                    {
                        continue;
                    }
                    let (file, path) = self.next_file(&mut next, &w.tag, table);
                    written.push(path.clone());
                    // Written a piece at a time, so a snapshot never needs a copy of the
                    // whole table in memory (the view does not change meanwhile: only this
                    // writer changes it).
                    let mut out = segment::SegmentWriter::create(&path, &agg.schema())?;
                    let mut rows = 0;
                    loop {
                        let piece = self
                            .view
                            .read()
                            .unwrap_or_else(|e| e.into_inner())
                            .aggregates
                            .rows_of(agg, rows, SNAPSHOT_PIECE_ROWS);
                        if piece.num_rows() == 0 {
                            break;
                        }
                        rows += piece.num_rows();
                        out.write(&piece)?;
                    }
                    let bytes = out.finish(self.config.fsync)?;
                    dirs.insert(table.dir());
                    let old = std::mem::replace(
                        next.segments_mut(table),
                        vec![Segment {
                            file,
                            rows: rows as u64,
                            bytes,
                            id_range: None,
                            level: 1,
                        }],
                    );
                    replaced.extend(old.into_iter().map(|s| s.file));
                    continue;
                }
                // Raw tables and dead letters: merge `fan_in` files of one level, as long as
                // the result stays within `compact_max_rows`.
                let max_rows = self.config.compact_max_rows;
                let mut by_level: BTreeMap<u32, (Vec<usize>, u64)> = BTreeMap::new();
                for (i, s) in next.segments(table).iter().enumerate() {
                    let (picked, rows) = by_level.entry(s.level).or_default();
                    if picked.len() < fan_in && *rows + s.rows <= max_rows {
                        picked.push(i);
                        *rows += s.rows;
                    }
                }
                let Some((level, (picked, rows))) = by_level
                    .into_iter()
                    .find(|(_, (picked, _))| picked.len() >= fan_in)
                else {
                    continue;
                };
                if merged_rows > 0 && merged_rows + rows > budget_rows {
                    deferred = Some(at);
                    break;
                }
                merged_rows += rows;
                let schema = schema_of(table);
                let sources: Vec<Segment> = picked
                    .iter()
                    .map(|&i| next.segments(table)[i].clone())
                    .collect();
                let (file, path) = self.next_file(&mut next, &w.tag, table);
                written.push(path.clone());
                // The merged file's ids stay in memory only if all of its sources' were.
                let keep_ids = sources.iter().all(|s| w.ids.is_resident(&s.file));
                let mut ids = Vec::new();
                let mut out = segment::SegmentWriter::create(&path, &schema)?;
                for s in &sources {
                    segment::for_each(&self.root.join(&s.file), &schema, None, |b| {
                        if let (TableId::Raw(raw), true) = (table, keep_ids) {
                            ids.extend(ids_of(raw, &b)?);
                        }
                        out.write(&b)
                    })?;
                }
                let bytes = out.finish(self.config.fsync)?;
                dirs.insert(table.dir());
                let mut id_range = None;
                if let TableId::Raw(raw) = table {
                    let mut lo = u128::MAX;
                    let mut hi = 0;
                    for s in &sources {
                        if let Some((l, h)) = range_of(s)? {
                            lo = lo.min(l);
                            hi = hi.max(h);
                        }
                    }
                    id_range = Some((format_id(lo), format_id(hi)));
                    if keep_ids {
                        merged_ids.push((raw, file.clone(), std::mem::take(&mut ids)));
                    }
                }
                let merged = Segment {
                    file,
                    rows: sources.iter().map(|s| s.rows).sum(),
                    bytes,
                    id_range,
                    level: level + 1,
                };
                let segs = next.segments_mut(table);
                let first = picked[0];
                for &i in picked.iter().rev() {
                    segs.remove(i);
                }
                segs.insert(first, merged);
                replaced.extend(sources.into_iter().map(|s| s.file));
            }
            Ok(())
        })();
        if let Err(e) = result {
            remove_quietly(&written);
            return Err(e);
        }
        w.compact_from = deferred.unwrap_or(start);
        if written.is_empty() {
            return Ok(());
        }
        if self.config.fsync {
            for dir in &dirs {
                sync_dir(&self.root.join(dir))?;
            }
        }
        crate::failpoint::hit(crate::failpoint::EMBEDDED_COMPACTION_BEFORE_SWAP);
        if let Err(e) = next.store(&self.root, self.config.fsync) {
            w.poisoned = true;
            return Err(e.into());
        }
        let now = Instant::now();
        for file in &replaced {
            w.ids.remove(file);
            w.retired.push((self.root.join(file), now));
        }
        for (table, file, ids) in merged_ids {
            w.ids.insert(table, file, ids);
        }
        w.manifest = next;
        self.inner_view_write().manifest = Arc::new(w.manifest.clone());
        Ok(())
    }

    /// Deletes retired files whose grace period has passed (the rest go at the next open).
    fn delete_retired(&self, w: &mut Writer) {
        let grace = Duration::from_secs(self.config.retired_grace_secs);
        w.retired.retain(|(path, at)| {
            if at.elapsed() < grace {
                return true;
            }
            if let Err(e) = segment::remove(path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot delete a retired segment");
            }
            false
        });
    }
}

/// A bus position as the manifest stores it.
fn stored(p: &Position) -> StoredPosition {
    StoredPosition {
        topic: p.topic.clone(),
        partition: p.partition,
        next_offset: p.next_offset,
    }
}

fn arrow_arith_max(at: &arrow_array::TimestampMillisecondArray) -> Option<i64> {
    at.iter().flatten().max()
}

fn remove_quietly(files: &[PathBuf]) {
    for f in files {
        let _ = segment::remove(f);
    }
}

#[async_trait]
impl Sink for EmbeddedSink {
    async fn apply(&self, batch: &crate::sink::IngestBatch) -> SinkResult<ApplyReport> {
        if batch.is_empty() && batch.positions.is_empty() {
            return Ok(ApplyReport::default());
        }
        let mut writer = self.inner.writer.clone().lock_owned().await;
        let inner = self.inner.clone();
        let batch = batch.clone();
        blocking(move || inner.apply_blocking(&mut writer, &batch)).await
    }

    async fn parked_keys(&self) -> SinkResult<Vec<(String, String)>> {
        Ok(self.read_view(|v| v.parked.iter().cloned().collect()))
    }

    async fn freshness(&self) -> SinkResult<Freshness> {
        Ok(self.manifest().freshness)
    }

    async fn stored_positions(&self) -> SinkResult<Vec<Position>> {
        Ok(self
            .manifest()
            .positions
            .iter()
            .map(|p| Position {
                topic: p.topic.clone(),
                partition: p.partition,
                next_offset: p.next_offset,
            })
            .collect())
    }

    async fn aggregate(&self, table: AggTable) -> SinkResult<RecordBatch> {
        let Some(daily) = table.rolls_up() else {
            return Ok(self.read_view(|v| v.aggregates.to_record_batch(table)));
        };
        // The writer keeps no rollup: derived here, as readers of the store derive it.
        let rows = self.read_view(|v| v.aggregates.to_record_batch(daily));
        let mut rolled = Aggregates::new();
        rolled
            .roll_up(table, &rows)
            .map_err(|e| corrupt(format!("rolling up `{}`: {e}", table.name())))?;
        Ok(rolled.to_record_batch(table))
    }

    async fn raw_row_count(&self, table: RawTable) -> SinkResult<u64> {
        Ok(self
            .manifest()
            .segments(TableId::Raw(table))
            .iter()
            .map(|s| s.rows)
            .sum())
    }

    async fn dead_letters(&self) -> SinkResult<Vec<DeadLetter>> {
        let manifest = self.manifest();
        let root = self.inner.root.clone();
        blocking(move || {
            let mut all = Vec::new();
            for seg in manifest.segments(TableId::DeadLetters) {
                for batch in segment::read(&root.join(&seg.file), &dead_letters_schema(), None)? {
                    all.extend(letters::from_batch(&batch)?);
                }
            }
            all.sort_by(|a, b| {
                (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset))
            });
            Ok(all)
        })
        .await
    }
}
