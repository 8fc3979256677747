//! Dead letters as rows of [`shoplens_readmodel::tables::dead_letters_schema`] and back.

use std::sync::Arc;

use arrow_array::builder::{StringBuilder, TimestampMillisecondBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, TimestampMillisecondType, UInt64Type};
use arrow_array::{Array, ArrayRef, Int32Array, RecordBatch, StringArray, UInt64Array};
use bytes::Bytes;
use shoplens_readmodel::tables::dead_letters_schema;

use crate::IngestError;
use crate::sink::{DeadLetter, SinkResult};

/// The dead letters as one batch. The payload column is text: bytes that are not UTF-8 are
/// stored with replacement characters (the table's schema, shared with ClickHouse).
pub(super) fn to_batch(letters: &[&DeadLetter]) -> RecordBatch {
    let text = |f: &dyn Fn(&DeadLetter) -> Option<&str>| -> ArrayRef {
        let mut b = StringBuilder::new();
        for l in letters {
            b.append_option(f(l));
        }
        Arc::new(b.finish())
    };
    let mut received = TimestampMillisecondBuilder::new().with_timezone("UTC");
    for l in letters {
        received.append_value(l.received_at_ms);
    }
    let mut payload = StringBuilder::new();
    for l in letters {
        payload.append_value(String::from_utf8_lossy(&l.payload));
    }
    let columns: Vec<ArrayRef> = vec![
        text(&|l| Some(&l.topic)),
        Arc::new(Int32Array::from_iter_values(
            letters.iter().map(|l| l.partition),
        )),
        Arc::new(UInt64Array::from_iter_values(
            letters.iter().map(|l| l.offset),
        )),
        text(&|l| Some(&l.key)),
        text(&|l| l.event_id.as_deref()),
        text(&|l| l.event_type.as_deref()),
        text(&|l| Some(&l.reason_kind)),
        text(&|l| Some(&l.reason)),
        Arc::new(payload.finish()),
        Arc::new(received.finish()),
    ];
    RecordBatch::try_new(dead_letters_schema(), columns)
        .expect("dead-letter columns follow their schema")
}

fn corrupt(what: &str) -> IngestError {
    IngestError::Corrupt(format!("dead-letter segment: {what}"))
}

/// The columns that identify a dead letter and its aggregate: what [`coordinates`] reads.
pub(super) const COORDINATES: &[&str] = &["topic", "partition", "offset", "key"];

fn text<'a>(batch: &'a RecordBatch, name: &str) -> SinkResult<&'a StringArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| corrupt(name))
}

/// The (topic, partition, offset, key) of every row of a batch holding at least the
/// [`COORDINATES`] columns of the dead-letters schema.
pub(super) fn coordinates(batch: &RecordBatch) -> SinkResult<Vec<(String, i32, u64, String)>> {
    let topic = text(batch, "topic")?;
    let partition = batch
        .column_by_name("partition")
        .and_then(|c| c.as_primitive_opt::<Int32Type>())
        .ok_or_else(|| corrupt("partition"))?;
    let offset = batch
        .column_by_name("offset")
        .and_then(|c| c.as_primitive_opt::<UInt64Type>())
        .ok_or_else(|| corrupt("offset"))?;
    let key = text(batch, "key")?;
    Ok((0..batch.num_rows())
        .map(|i| {
            (
                topic.value(i).to_owned(),
                partition.value(i),
                offset.value(i),
                key.value(i).to_owned(),
            )
        })
        .collect())
}

/// The dead letters of a batch in the full dead-letters schema.
pub(super) fn from_batch(batch: &RecordBatch) -> SinkResult<Vec<DeadLetter>> {
    let coords = coordinates(batch)?;
    let (event_id, event_type, kind, reason, payload) = (
        text(batch, "event_id")?,
        text(batch, "event_type")?,
        text(batch, "reason_kind")?,
        text(batch, "reason")?,
        text(batch, "payload")?,
    );
    let received = batch
        .column_by_name("received_at")
        .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>())
        .ok_or_else(|| corrupt("received_at"))?;
    let opt = |a: &StringArray, i: usize| (!a.is_null(i)).then(|| a.value(i).to_owned());
    Ok(coords
        .into_iter()
        .enumerate()
        .map(|(i, (topic, partition, offset, key))| DeadLetter {
            topic,
            partition,
            offset,
            key,
            event_id: opt(event_id, i),
            event_type: opt(event_type, i),
            reason_kind: kind.value(i).to_owned(),
            reason: reason.value(i).to_owned(),
            payload: Bytes::copy_from_slice(payload.value(i).as_bytes()),
            received_at_ms: received.value(i),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_round_trip() {
        let a = DeadLetter {
            topic: "shop.orders".into(),
            partition: 0,
            offset: 7,
            key: "o1".into(),
            event_id: None,
            event_type: Some("OrderCreated".into()),
            reason_kind: "malformed_json".into(),
            reason: "expected value at line 1".into(),
            payload: Bytes::from_static(b"{oops"),
            received_at_ms: 1_700_000_000_123,
        };
        let b = DeadLetter {
            offset: 8,
            event_id: Some("x".into()),
            ..a.clone()
        };
        let batch = to_batch(&[&a, &b]);
        assert_eq!(batch.schema(), dead_letters_schema());
        assert_eq!(from_batch(&batch).unwrap(), vec![a, b]);
        assert_eq!(
            coordinates(&batch).unwrap()[1],
            ("shop.orders".into(), 0, 8, "o1".into())
        );
    }
}
