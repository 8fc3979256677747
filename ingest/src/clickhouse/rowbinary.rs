//! Rows in ClickHouse's RowBinary format: raw batches encoded column by column in the order
//! of the contract's schema (checked against it, so a batch of another shape is refused, not
//! mis-encoded), and dead letters in the order of the dead-letter table.

use arrow_array::{
    Array, ArrayRef, Decimal128Array, Int32Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow_schema::{DataType, TimeUnit};
use shoplens_contract::tables::{MONEY, RawTable};

use super::conn::corrupt;
use crate::sink::{DeadLetter, SinkResult};

/// Rows in ClickHouse's RowBinary format.
#[derive(Default)]
pub(super) struct RowBinary(pub(super) Vec<u8>);

impl RowBinary {
    pub(super) fn len(&mut self, mut n: usize) {
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

    pub(super) fn bytes(&mut self, v: &[u8]) {
        self.len(v.len());
        self.0.extend_from_slice(v);
    }

    pub(super) fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    pub(super) fn opt_str(&mut self, v: Option<&str>) {
        match v {
            Some(v) => {
                self.0.push(0);
                self.str(v);
            }
            None => self.0.push(1),
        }
    }

    pub(super) fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    pub(super) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    pub(super) fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    pub(super) fn u64(&mut self, v: u64) {
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

pub(super) fn typed<'a, T: Array + 'static>(col: &'a ArrayRef, name: &str) -> SinkResult<&'a T> {
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
pub(super) fn encode_rows(
    table: RawTable,
    batch: &RecordBatch,
    rows: &[usize],
) -> SinkResult<Vec<u8>> {
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

pub(super) fn encode_dead_letter(out: &mut RowBinary, d: &DeadLetter) {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::readback::{money_array, strings};
    use super::*;
    use crate::IngestError;

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
        assert!(matches!(err, IngestError::Corrupt(_)), "{err}");
    }

    #[test]
    fn lengths_are_leb128() {
        let mut out = RowBinary::default();
        out.len(127);
        out.len(128);
        out.len(300);
        assert_eq!(out.0, vec![0x7f, 0x80, 0x01, 0xac, 0x02]);
    }
}
