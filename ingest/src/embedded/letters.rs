//! Dead letters as rows of [`crate::model::dead_letters_schema`] and back.

use std::sync::Arc;

use arrow_array::builder::{StringBuilder, TimestampMillisecondBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, TimestampMillisecondType, UInt64Type};
use arrow_array::{Array, ArrayRef, Int32Array, RecordBatch, UInt64Array};
use bytes::Bytes;

use crate::model::dead_letters_schema;
use crate::sink::{DeadLetter, SinkError, SinkResult};

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

fn corrupt(what: &str) -> SinkError {
    SinkError::Corrupt(format!("dead-letter segment: {what}"))
}

/// The (topic, partition, offset, key) of every row of a batch holding at least the first
/// four columns of the dead-letters schema.
pub(super) fn coordinates(batch: &RecordBatch) -> SinkResult<Vec<(String, i32, u64, String)>> {
    if batch.num_columns() < 4 {
        return Err(corrupt("too few columns"));
    }
    let topic = batch
        .column(0)
        .as_string_opt::<i32>()
        .ok_or_else(|| corrupt("topic"))?;
    let partition = batch
        .column(1)
        .as_primitive_opt::<Int32Type>()
        .ok_or_else(|| corrupt("partition"))?;
    let offset = batch
        .column(2)
        .as_primitive_opt::<UInt64Type>()
        .ok_or_else(|| corrupt("offset"))?;
    let key = batch
        .column(3)
        .as_string_opt::<i32>()
        .ok_or_else(|| corrupt("key"))?;
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
    let text = |i: usize| {
        batch
            .columns()
            .get(i)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| corrupt("text column"))
    };
    let (event_id, event_type, kind, reason, payload) =
        (text(4)?, text(5)?, text(6)?, text(7)?, text(8)?);
    let received = batch
        .columns()
        .get(9)
        .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>())
        .ok_or_else(|| corrupt("received_at"))?;
    let opt =
        |a: &arrow_array::StringArray, i: usize| (!a.is_null(i)).then(|| a.value(i).to_owned());
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
