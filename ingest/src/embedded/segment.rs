//! Reading and writing one segment: an immutable Parquet file holding rows of one table in
//! that table's Arrow schema. Files are written once under a name never reused and only
//! become part of the store when a manifest lists them.

use std::fs::{self, File};
use std::path::Path;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::IngestError;
use crate::sink::SinkResult;

/// Columns written without a dictionary.
const UNIQUE_IDS: [&str; 4] = ["event_id", "order_id", "payment_id", "shipment_id"];

/// Rows per Parquet row group; large enough for scans, small enough for bounded memory.
const ROW_GROUP_ROWS: usize = 128 * 1024;

fn io(e: impl std::fmt::Display) -> IngestError {
    IngestError::Io(std::io::Error::other(e.to_string()))
}

/// Writes `batches` (all in `schema`) as one Parquet file at `path`, synced to disk when
/// `fsync`; returns the file's size in bytes. The directory entry is not synced here: the
/// caller syncs each directory once per commit.
pub(super) fn write(
    path: &Path,
    schema: &SchemaRef,
    batches: &[&RecordBatch],
    fsync: bool,
) -> SinkResult<u64> {
    let mut writer = SegmentWriter::create(path, schema)?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish(fsync)
}

/// A segment being written batch by batch (compaction streams its sources through one).
pub(super) struct SegmentWriter {
    writer: ArrowWriter<File>,
}

impl SegmentWriter {
    pub(super) fn create(path: &Path, schema: &SchemaRef) -> SinkResult<SegmentWriter> {
        let file = File::create(path)?;
        let mut props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
        // These ids are unique per row or nearly (an order has a few rows): a dictionary
        // for them only costs the time to build it before Parquet falls back to plain
        // encoding. Customer and product ids repeat, and keep theirs.
        for field in schema.fields() {
            if UNIQUE_IDS.contains(&field.name().as_str()) {
                props = props.set_column_dictionary_enabled(
                    parquet::schema::types::ColumnPath::from(field.name().as_str()),
                    false,
                );
            }
        }
        let props = props.build();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(io)?;
        Ok(SegmentWriter { writer })
    }

    pub(super) fn write(&mut self, batch: &RecordBatch) -> SinkResult<()> {
        self.writer.write(batch).map_err(io)
    }

    /// Closes the file (synced when `fsync`) and returns its size in bytes.
    pub(super) fn finish(self, fsync: bool) -> SinkResult<u64> {
        let file = self.writer.into_inner().map_err(io)?;
        if fsync {
            file.sync_all()?;
        }
        Ok(file.metadata()?.len())
    }
}

/// Reads the columns named `columns` (all when `None`) of the segment at
/// `path`, checking that the file holds exactly `schema`'s fields. A missing or unreadable
/// file, or one of another schema, is [`IngestError::Corrupt`]: the manifest lists it.
pub(super) fn read(
    path: &Path,
    schema: &SchemaRef,
    columns: Option<&[&str]>,
) -> SinkResult<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for_each(path, schema, columns, |b| {
        out.push(b);
        Ok(())
    })?;
    Ok(out)
}

/// As [`read`], handing over one batch (at most a row group) at a time, so memory stays
/// bounded however big the file is.
pub(super) fn for_each(
    path: &Path,
    schema: &SchemaRef,
    columns: Option<&[&str]>,
    mut f: impl FnMut(RecordBatch) -> SinkResult<()>,
) -> SinkResult<()> {
    let corrupt = |e: &dyn std::fmt::Display| {
        IngestError::Corrupt(format!("segment {} cannot be read: {e}", path.display()))
    };
    let file = File::open(path).map_err(|e| corrupt(&e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| corrupt(&e))?;
    if builder.schema().fields() != schema.fields() {
        return Err(corrupt(&format!(
            "it holds columns {:?}, expected {:?}",
            builder.schema().fields(),
            schema.fields()
        )));
    }
    let builder = match columns {
        Some(columns) => {
            let indices = columns
                .iter()
                .map(|name| schema.index_of(name))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| corrupt(&e))?;
            let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
            builder.with_projection(mask)
        }
        None => builder,
    };
    let reader = builder
        .with_batch_size(ROW_GROUP_ROWS)
        .build()
        .map_err(|e| corrupt(&e))?;
    for batch in reader {
        f(batch.map_err(|e| corrupt(&e))?)?;
    }
    Ok(())
}

/// Removes a file, treating "already gone" as done.
pub(super) fn remove(path: &Path) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Int32Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn a_segment_reads_back_whole_or_projected_and_other_schemas_are_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, false),
            Field::new("b", DataType::Int32, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["x", "y"])),
                Arc::new(Int32Array::from(vec![Some(1), None])),
            ],
        )
        .unwrap();
        let path = dir.path().join("1.parquet");
        let bytes = write(&path, &schema, &[&batch, &batch], true).unwrap();
        assert_eq!(bytes, fs::metadata(&path).unwrap().len());
        let back = read(&path, &schema, None).unwrap();
        assert_eq!(
            back,
            vec![arrow_select::concat::concat_batches(&schema, [&batch, &batch]).unwrap()]
        );
        let ids = read(&path, &schema, Some(&["a"])).unwrap();
        assert_eq!(ids[0].num_columns(), 1);
        assert_eq!(ids[0].num_rows(), 4);

        let other = Arc::new(Schema::new(vec![Field::new("a", DataType::Utf8, false)]));
        assert!(matches!(
            read(&path, &other, None),
            Err(IngestError::Corrupt(_))
        ));
        fs::write(&path, b"not parquet").unwrap();
        assert!(matches!(
            read(&path, &schema, None),
            Err(IngestError::Corrupt(_))
        ));
        remove(&path).unwrap();
        remove(&path).unwrap();
        assert!(matches!(
            read(&path, &schema, None),
            Err(IngestError::Corrupt(_))
        ));
    }
}
