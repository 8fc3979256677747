//! An aggregate table merged from its files a few periods at a time, for a process whose
//! memory cannot hold the whole merged table (a query worker, the export command).
//!
//! Every aggregate file the store writes, a delta or a snapshot, is sorted by key, its
//! period first (`Aggregates::rows_of`). So in each file the rows of one period (a day; for
//! a rollup read from the daily files, a week or a month) are contiguous, and that period's
//! merged rows depend on those rows alone. Memory: one decoded batch per file and the rows
//! of the periods being merged, whatever the size of the table.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Int32Type};
use arrow_schema::{DataType, SchemaRef};
use datafusion::arrow::compute::concat_batches;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::streaming::PartitionStream;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use shoplens_readmodel::aggregate::Aggregates;
use shoplens_readmodel::tables::AggTable;

use super::{BATCH_ROWS, add_rows, widen_revenue};

/// `table` merged from `files` (its stored table's files, [`AggTable::rolls_up`]) as a
/// stream of batches sorted by key, each of about [`BATCH_ROWS`] rows; only the periods in
/// `ranges` (inclusive, of `table`'s period) if given.
#[derive(Debug)]
pub(super) struct MergeStream {
    pub table: AggTable,
    pub files: Vec<PathBuf>,
    pub ranges: Option<Vec<(i32, i32)>>,
    pub schema: SchemaRef,
}

impl PartitionStream for MergeStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut builder = RecordBatchReceiverStream::builder(self.schema.clone(), 2);
        let tx = builder.tx();
        let (table, files, ranges) = (self.table, self.files.clone(), self.ranges.clone());
        builder.spawn_blocking(move || {
            let mut merge = SortedMerge::open(table, &files, ranges)?;
            while let Some(batch) = merge.next_batch()? {
                if tx.blocking_send(Ok(batch)).is_err() {
                    break; // the query stopped reading
                }
            }
            Ok(())
        });
        builder.build()
    }
}

/// The merge itself, pulled a batch at a time.
pub(super) struct SortedMerge {
    table: AggTable,
    cursors: Vec<Cursor>,
    ranges: Option<Vec<(i32, i32)>>,
    /// The end (exclusive) of the periods merged so far: a file whose next row is before it
    /// is not sorted, and merging on would count a key twice.
    merged_until: i64,
}

impl SortedMerge {
    pub fn open(
        table: AggTable,
        files: &[PathBuf],
        ranges: Option<Vec<(i32, i32)>>,
    ) -> DfResult<SortedMerge> {
        let cursors = files
            .iter()
            .map(|path| {
                let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)?
                    .with_batch_size(BATCH_ROWS)
                    .build()?;
                Ok(Cursor {
                    path: path.clone(),
                    reader,
                    batch: None,
                    at: 0,
                })
            })
            .collect::<DfResult<Vec<_>>>()?;
        Ok(SortedMerge {
            table,
            cursors,
            ranges,
            merged_until: i64::MIN,
        })
    }

    /// The next rows of the merged table in key order; `None` at the end.
    pub fn next_batch(&mut self) -> DfResult<Option<RecordBatch>> {
        let schema = self.table.schema();
        let mut pieces = Vec::new();
        let mut rows = 0;
        while rows < BATCH_ROWS {
            let mut first: Option<i32> = None;
            for c in &mut self.cursors {
                if let Some(p) = c.peek()? {
                    first = Some(first.map_or(p, |f| f.min(p)));
                }
            }
            let Some(first) = first else { break };
            let (start, end) = self.period_of(first);
            if i64::from(first) < self.merged_until {
                let path = self.cursors.iter().find(|c| c.next_is(first));
                return Err(not_sorted(path.map(|c| &c.path)));
            }
            self.merged_until = end;
            let mut taken = Vec::new();
            let mut sources = 0;
            for c in &mut self.cursors {
                let rows = c.take(first, end)?;
                sources += usize::from(!rows.is_empty());
                taken.extend(rows);
            }
            let wanted = self
                .ranges
                .as_ref()
                .is_none_or(|r| r.iter().any(|&(lo, hi)| lo <= start && start <= hi));
            if !wanted {
                continue;
            }
            let piece = if sources == 1 && self.table.rolls_up().is_none() {
                // One file's rows: already one per key (a file holds a merged state, a
                // snapshot, or a delta).
                let taken = taken
                    .into_iter()
                    .map(|b| RecordBatch::try_new(schema.clone(), b.columns().to_vec()))
                    .collect::<Result<Vec<_>, _>>()?;
                concat_batches(&schema, &taken)?
            } else {
                let mut merged = Aggregates::new();
                for rows in &taken {
                    add_rows(&mut merged, self.table, rows)?;
                }
                merged.to_record_batch(self.table)
            };
            rows += piece.num_rows();
            pieces.push(piece);
        }
        if pieces.is_empty() {
            return Ok(None);
        }
        widen_revenue(self.table, concat_batches(&schema, &pieces)?).map(Some)
    }

    /// The output period a stored period belongs to, and the end (exclusive) of the stored
    /// periods it covers: a day is its own period, a rollup's is the day's week or month.
    fn period_of(&self, stored: i32) -> (i32, i64) {
        match self.table.grain() {
            Some(grain) => (grain.start(stored), i64::from(grain.next(stored))),
            None => (stored, i64::from(stored) + 1),
        }
    }
}

/// One file's rows, read a batch at a time.
struct Cursor {
    path: PathBuf,
    reader: ParquetRecordBatchReader,
    batch: Option<RecordBatch>,
    /// The next row of `batch`.
    at: usize,
}

impl Cursor {
    /// The period of the next row, reading the next batch when this one is done; `None`
    /// at the end of the file.
    fn peek(&mut self) -> DfResult<Option<i32>> {
        loop {
            if let Some(batch) = &self.batch
                && self.at < batch.num_rows()
            {
                return Ok(Some(periods(batch)?[self.at]));
            }
            match self.reader.next() {
                Some(batch) => {
                    self.batch = Some(batch?);
                    self.at = 0;
                }
                None => {
                    self.batch = None;
                    return Ok(None);
                }
            }
        }
    }

    fn next_is(&self, period: i32) -> bool {
        self.batch
            .as_ref()
            .and_then(|b| periods(b).ok().map(|p| p.get(self.at) == Some(&period)))
            .unwrap_or(false)
    }

    /// The rows from the next one up to the first of period `end` or later (slices of the
    /// batches they are in). Every one must be of period `from` or later: an earlier one
    /// belongs to periods already merged (the file is not sorted).
    fn take(&mut self, from: i32, end: i64) -> DfResult<Vec<RecordBatch>> {
        let mut rows = Vec::new();
        while let Some(p) = self.peek()?
            && i64::from(p) < end
        {
            let Some(batch) = &self.batch else { break };
            let ahead = &periods(batch)?[self.at..];
            let n = ahead
                .iter()
                .position(|&p| i64::from(p) >= end)
                .unwrap_or(ahead.len());
            if ahead[..n].iter().any(|&p| p < from) {
                return Err(not_sorted(Some(&self.path)));
            }
            rows.push(batch.slice(self.at, n));
            self.at += n;
        }
        Ok(rows)
    }
}

/// A batch's periods: its first column, a `Date32` day or month, or an `Int32` year.
fn periods(batch: &RecordBatch) -> DfResult<&[i32]> {
    let c = batch.column(0);
    if c.null_count() > 0 {
        return Err(DataFusionError::Execution(
            "an aggregate file has a null period".into(),
        ));
    }
    match c.data_type() {
        DataType::Date32 => Ok(c.as_primitive::<Date32Type>().values()),
        DataType::Int32 => Ok(c.as_primitive::<Int32Type>().values()),
        other => Err(DataFusionError::Execution(format!(
            "an aggregate file's period column is {other}, not a date or a year"
        ))),
    }
}

fn not_sorted(path: Option<&PathBuf>) -> DataFusionError {
    DataFusionError::Execution(format!(
        "aggregate file {} is not sorted by key; it cannot be merged a period at a time",
        path.map_or_else(|| "?".into(), |p| p.display().to_string())
    ))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use arrow_array::{ArrayRef, Date32Array, Decimal128Array, StringArray, UInt64Array};
    use parquet::arrow::ArrowWriter;

    use super::*;

    const DAILY: AggTable = AggTable::CustomerSpendDaily;

    /// A `customer_spend_daily` file of `days` x `customers` rows in the order given, each
    /// paid `paid` and `paid` cents; small row groups, so a file is read in many batches.
    fn file(dir: &Path, name: &str, days: &[i32], customers: u32, paid: u64) -> PathBuf {
        let mut rows = Vec::new();
        for &day in days {
            for c in 0..customers {
                rows.push((day, format!("c{c:04}")));
            }
        }
        let schema = DAILY.schema();
        let n = rows.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Date32Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.1))),
            Arc::new(UInt64Array::from_iter_values(std::iter::repeat_n(paid, n))),
            Arc::new(
                Decimal128Array::from_iter_values(std::iter::repeat_n(i128::from(paid), n))
                    .with_data_type(schema.field(3).data_type().clone()),
            ),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns).expect("batch");
        let path = dir.join(name);
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(1000))
            .build();
        let mut w = ArrowWriter::try_new(File::create(&path).expect("create"), schema, Some(props))
            .expect("writer");
        w.write(&batch).expect("write");
        w.close().expect("close");
        path
    }

    fn merged(table: AggTable, files: &[PathBuf], ranges: Option<Vec<(i32, i32)>>) -> RecordBatch {
        let mut merge = SortedMerge::open(table, files, ranges).expect("open");
        let mut batches = Vec::new();
        while let Some(b) = merge.next_batch().expect("merge") {
            assert!(b.num_rows() < 2 * BATCH_ROWS, "{} rows", b.num_rows());
            batches.push(b);
        }
        let schema = batches[0].schema();
        concat_batches(&schema, &batches).expect("concat")
    }

    /// The same table merged whole in memory, as the server merges it.
    fn in_memory(table: AggTable, files: &[PathBuf]) -> RecordBatch {
        let mut state = Aggregates::new();
        for path in files {
            let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
                .unwrap()
                .build()
                .unwrap();
            for b in reader {
                add_rows(&mut state, table, &b.unwrap()).unwrap();
            }
        }
        widen_revenue(table, state.to_record_batch(table)).unwrap()
    }

    #[test]
    fn merging_a_period_at_a_time_equals_merging_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        // A snapshot of 90 days (three months) and two deltas overlapping it and each other.
        let all: Vec<i32> = (19_700..19_790).collect();
        let files = [
            file(dir.path(), "snapshot", &all, 150, 1),
            file(dir.path(), "delta-1", &[19_750, 19_751, 19_800], 300, 2),
            file(dir.path(), "delta-2", &[19_690, 19_751], 10, 4),
        ];
        for table in [
            DAILY,
            AggTable::CustomerSpendMonthly,
            AggTable::CustomerSpendWeekly,
        ] {
            let expected = in_memory(table, &files);
            assert_eq!(merged(table, &files, None), expected, "{}", table.name());
        }
        // Periods outside the ranges are skipped, the rest merged alike.
        let got = merged(
            DAILY,
            &files,
            Some(vec![(19_751, 19_751), (19_800, 19_900)]),
        );
        let days = got.column(0).as_primitive::<Date32Type>();
        assert!(days.values().iter().all(|&d| d == 19_751 || d == 19_800));
        assert_eq!(got.num_rows(), 300 + 300);
        let paid = got
            .column(2)
            .as_primitive::<arrow_array::types::UInt64Type>();
        let day_19751: u64 = (0..got.num_rows())
            .filter(|&i| days.value(i) == 19_751)
            .map(|i| paid.value(i))
            .sum();
        // 150 customers in the snapshot, 300 in delta 1, 10 in delta 2.
        assert_eq!(day_19751, 150 + 300 * 2 + 10 * 4);
    }

    #[test]
    fn a_file_out_of_order_is_an_error_not_a_key_counted_twice() {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            file(dir.path(), "sorted", &[19_700, 19_701, 19_702], 5, 1),
            file(dir.path(), "unsorted", &[19_702, 19_700], 5, 1),
        ];
        let mut merge = SortedMerge::open(DAILY, &files, None).expect("open");
        let err = loop {
            match merge.next_batch() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("merged a file that is not sorted"),
                Err(e) => break e.to_string(),
            }
        };
        assert!(
            err.contains("unsorted") && err.contains("not sorted"),
            "{err}"
        );
    }
}
