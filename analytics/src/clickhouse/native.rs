//! ClickHouse's `Native` format decoded straight into Arrow arrays: the answer's blocks,
//! column by column, as ClickHouse holds them in memory, with no text to parse.
//!
//! A block is `VarUInt columns, VarUInt rows`, then per column its name, its type name and
//! its values: fixed-width numbers little-endian one after another, strings each as
//! `VarUInt length` and bytes, `Nullable(T)` as one null byte per row followed by the `T`
//! values (a default where NULL). Every block names its columns and their types, so an
//! answer that is not what was asked (or ClickHouse's error text after the blocks it had
//! sent, which is how an error that happens while answering arrives) fails to decode
//! instead of becoming rows.
//!
//! Blocks arrive split across the body's chunks: [`Blocks`] keeps the bytes of the block
//! being received and decodes it once whole. Whether it is whole is checked again only
//! when the buffer has doubled since the last check, so a large block costs linear time.

use std::sync::Arc;

use arrow_array::ArrowPrimitiveType;
use arrow_array::builder::{BinaryBuilder, StringBuilder};
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{ArrayRef, Decimal128Array, PrimitiveArray, RecordBatch, RecordBatchOptions};
#[cfg(test)]
use arrow_schema::DataType;
use arrow_schema::{Field, Schema, SchemaRef};
use bytes::{Buf, Bytes, BytesMut};
use datafusion::arrow::buffer::NullBuffer;

/// Why a block could not be decoded.
#[derive(Debug, PartialEq)]
pub(super) enum NativeError {
    /// More bytes are needed.
    Incomplete,
    /// Not a block of the expected shape; the message says what was found.
    Malformed(String),
}

fn malformed(msg: impl Into<String>) -> NativeError {
    NativeError::Malformed(msg.into())
}

/// A column's type as ClickHouse names it.
#[derive(Debug, Clone, PartialEq)]
enum ChType {
    Int(u8, bool),
    Float(u8),
    Date,
    DateTime,
    Decimal(u8, i8),
    String,
    FixedString(usize),
    Nullable(Box<ChType>),
}

impl ChType {
    fn parse(name: &str) -> Option<ChType> {
        if let Some(inner) = name
            .strip_prefix("Nullable(")
            .and_then(|r| r.strip_suffix(')'))
        {
            return Some(ChType::Nullable(Box::new(ChType::parse(inner)?)));
        }
        if let Some(args) = name
            .strip_prefix("Decimal(")
            .and_then(|r| r.strip_suffix(')'))
        {
            let (p, s) = args.split_once(',')?;
            return Some(ChType::Decimal(
                p.trim().parse().ok()?,
                s.trim().parse().ok()?,
            ));
        }
        if let Some(n) = name
            .strip_prefix("FixedString(")
            .and_then(|r| r.strip_suffix(')'))
        {
            return Some(ChType::FixedString(n.trim().parse().ok()?));
        }
        Some(match name {
            "Int8" => ChType::Int(1, true),
            "Int16" => ChType::Int(2, true),
            "Int32" => ChType::Int(4, true),
            "Int64" => ChType::Int(8, true),
            "UInt8" => ChType::Int(1, false),
            "UInt16" => ChType::Int(2, false),
            "UInt32" => ChType::Int(4, false),
            "UInt64" => ChType::Int(8, false),
            "Float32" => ChType::Float(4),
            "Float64" => ChType::Float(8),
            "Date" => ChType::Date,
            "DateTime" => ChType::DateTime,
            "String" => ChType::String,
            _ => return None,
        })
    }

    /// Bytes per value, for the fixed-width types.
    fn width(&self) -> Option<usize> {
        match self {
            ChType::Int(w, _) | ChType::Float(w) => Some(usize::from(*w)),
            ChType::Date => Some(2),
            ChType::DateTime => Some(4),
            ChType::Decimal(p, _) => Some(match p {
                0..=9 => 4,
                10..=18 => 8,
                _ => 16,
            }),
            ChType::FixedString(n) => Some(*n),
            ChType::String | ChType::Nullable(_) => None,
        }
    }
}

/// A little reader over a byte slice that says `Incomplete` when it runs out.
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], NativeError> {
        let end = self.at.checked_add(n).ok_or(NativeError::Incomplete)?;
        let bytes = self.buf.get(self.at..end).ok_or(NativeError::Incomplete)?;
        self.at = end;
        Ok(bytes)
    }

    fn varuint(&mut self) -> Result<u64, NativeError> {
        let mut value = 0u64;
        for i in 0..10 {
            let b = self.take(1)?[0];
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed("a length longer than ten bytes"))
    }

    fn len(&mut self) -> Result<usize, NativeError> {
        usize::try_from(self.varuint()?).map_err(|_| malformed("a length beyond memory"))
    }

    fn string(&mut self) -> Result<&'a [u8], NativeError> {
        let n = self.len()?;
        self.take(n)
    }
}

/// The largest block accepted (bytes): ClickHouse sends blocks of `max_block_size` rows
/// (65,536 by default), a few MiB of our rows.
const MAX_BLOCK_BYTES: usize = 512 * 1024 * 1024;

/// Decodes blocks from an answer arriving in chunks.
pub(super) struct Blocks {
    wire: SchemaRef,
    buf: BytesMut,
    /// The buffer's length when a block was last found incomplete.
    tried_at: usize,
}

impl Blocks {
    /// A decoder of blocks whose columns are `wire`'s (names and order); their types are
    /// what the blocks say, and become `wire`'s types later (`ScanQuery::convert`).
    pub(super) fn new(wire: SchemaRef) -> Blocks {
        Blocks {
            wire,
            buf: BytesMut::new(),
            tried_at: 0,
        }
    }

    pub(super) fn push(&mut self, chunk: &Bytes) {
        self.buf.extend_from_slice(chunk);
    }

    /// Whether bytes of an unfinished block are left.
    #[cfg(test)]
    fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The unread bytes, as text (ClickHouse's error after the blocks).
    pub(super) fn rest_as_text(&self) -> String {
        String::from_utf8_lossy(&self.buf[..self.buf.len().min(4096)]).into_owned()
    }

    /// The next whole block, if the buffer holds one; `at_end`: no more bytes will come.
    pub(super) fn next_block(&mut self, at_end: bool) -> Result<Option<RecordBatch>, NativeError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        if !at_end && self.tried_at > 0 && self.buf.len() < self.tried_at.saturating_mul(2) {
            return Ok(None);
        }
        match decode_block(&self.buf, &self.wire) {
            Ok((batch, used)) => {
                self.buf.advance(used);
                self.tried_at = 0;
                Ok(Some(batch))
            }
            Err(NativeError::Incomplete) if !at_end => {
                if self.buf.len() > MAX_BLOCK_BYTES {
                    return Err(malformed("a block larger than 512 MiB"));
                }
                self.tried_at = self.buf.len();
                Ok(None)
            }
            Err(NativeError::Incomplete) => Err(malformed("the answer ended inside a block")),
            Err(e) => Err(e),
        }
    }
}

/// One block from the start of `buf`: its rows, with ClickHouse's types as Arrow's, and how
/// many bytes it took.
fn decode_block(buf: &[u8], wire: &SchemaRef) -> Result<(RecordBatch, usize), NativeError> {
    let mut c = Cursor { buf, at: 0 };
    let columns = c.len()?;
    let rows = c.len()?;
    if columns != wire.fields().len() {
        return Err(malformed(format!(
            "a block of {columns} columns, {} expected",
            wire.fields().len()
        )));
    }
    let mut fields = Vec::with_capacity(columns);
    let mut arrays = Vec::with_capacity(columns);
    for field in wire.fields() {
        let name = c.string()?;
        if name != field.name().as_bytes() {
            return Err(malformed(format!(
                "column `{}` where `{}` was expected",
                String::from_utf8_lossy(&name[..name.len().min(64)]),
                field.name()
            )));
        }
        let type_name = c.string()?;
        let type_name = std::str::from_utf8(type_name)
            .map_err(|_| malformed("a type name that is not text"))?;
        let ty = ChType::parse(type_name)
            .ok_or_else(|| malformed(format!("column `{}` of type {type_name}", field.name())))?;
        let array = column(&mut c, &ty, rows, None)?;
        fields.push(Field::new(field.name(), array.data_type().clone(), true));
        arrays.push(array);
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new_with_options(
        schema,
        arrays,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .map_err(|e| malformed(e.to_string()))?;
    Ok((batch, c.at))
}

/// `rows` values of type `ty`; `nulls` marks the NULL rows of a `Nullable` column.
fn column(
    c: &mut Cursor<'_>,
    ty: &ChType,
    rows: usize,
    nulls: Option<&[u8]>,
) -> Result<ArrayRef, NativeError> {
    let validity = |i: usize| nulls.is_none_or(|n| n[i] == 0);
    Ok(match ty {
        ChType::Nullable(inner) => {
            let map = c.take(rows)?;
            return column(c, inner, rows, Some(map));
        }
        ChType::String => {
            let mut b = StringBuilder::with_capacity(rows, 0);
            for i in 0..rows {
                let s = c.string()?;
                if validity(i) {
                    // ClickHouse's strings are bytes; ours are always written as UTF-8.
                    b.append_value(String::from_utf8_lossy(s));
                } else {
                    b.append_null();
                }
            }
            Arc::new(b.finish())
        }
        ChType::FixedString(n) => {
            let mut b = BinaryBuilder::with_capacity(rows, rows * n);
            for i in 0..rows {
                let v = c.take(*n)?;
                if validity(i) {
                    b.append_value(v);
                } else {
                    b.append_null();
                }
            }
            Arc::new(b.finish())
        }
        ty => {
            let width = ty
                .width()
                .ok_or_else(|| malformed("a type without width"))?;
            let bytes = c.take(width.checked_mul(rows).ok_or(NativeError::Incomplete)?)?;
            let nulls =
                nulls.map(|n| NullBuffer::from(n.iter().map(|&b| b == 0).collect::<Vec<_>>()));
            fixed(ty, bytes, nulls.as_ref())?
        }
    })
}

fn le<const N: usize>(bytes: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    bytes
        .chunks_exact(N)
        .map(|c| <[u8; N]>::try_from(c).unwrap_or([0; N]))
}

fn primitive<T: ArrowPrimitiveType>(
    values: Vec<T::Native>,
    nulls: Option<&NullBuffer>,
) -> ArrayRef {
    Arc::new(PrimitiveArray::<T>::new(values.into(), nulls.cloned()))
}

fn fixed(ty: &ChType, bytes: &[u8], valid: Option<&NullBuffer>) -> Result<ArrayRef, NativeError> {
    Ok(match ty {
        ChType::Int(1, true) => {
            primitive::<Int8Type>(le::<1>(bytes).map(i8::from_le_bytes).collect(), valid)
        }
        ChType::Int(2, true) => {
            primitive::<Int16Type>(le::<2>(bytes).map(i16::from_le_bytes).collect(), valid)
        }
        ChType::Int(4, true) => {
            primitive::<Int32Type>(le::<4>(bytes).map(i32::from_le_bytes).collect(), valid)
        }
        ChType::Int(8, true) => {
            primitive::<Int64Type>(le::<8>(bytes).map(i64::from_le_bytes).collect(), valid)
        }
        ChType::Int(1, false) => primitive::<UInt8Type>(bytes.to_vec(), valid),
        ChType::Int(2, false) | ChType::Date => {
            primitive::<UInt16Type>(le::<2>(bytes).map(u16::from_le_bytes).collect(), valid)
        }
        ChType::Int(4, false) | ChType::DateTime => {
            primitive::<UInt32Type>(le::<4>(bytes).map(u32::from_le_bytes).collect(), valid)
        }
        ChType::Int(8, false) => {
            primitive::<UInt64Type>(le::<8>(bytes).map(u64::from_le_bytes).collect(), valid)
        }
        ChType::Float(4) => {
            primitive::<Float32Type>(le::<4>(bytes).map(f32::from_le_bytes).collect(), valid)
        }
        ChType::Float(8) => {
            primitive::<Float64Type>(le::<8>(bytes).map(f64::from_le_bytes).collect(), valid)
        }
        ChType::Decimal(p, s) => {
            let values: Vec<i128> = match ty.width() {
                Some(4) => le::<4>(bytes)
                    .map(|b| i128::from(i32::from_le_bytes(b)))
                    .collect(),
                Some(8) => le::<8>(bytes)
                    .map(|b| i128::from(i64::from_le_bytes(b)))
                    .collect(),
                _ => le::<16>(bytes).map(i128::from_le_bytes).collect(),
            };
            let array = Decimal128Array::new(values.into(), valid.cloned())
                .with_precision_and_scale((*p).clamp(1, 38), *s)
                .map_err(|e| malformed(e.to_string()))?;
            Arc::new(array)
        }
        other => return Err(malformed(format!("cannot read {other:?}"))),
    })
}

/// The Arrow type a ClickHouse type name decodes to (for tests).
#[cfg(test)]
fn arrow_type(name: &str) -> Option<DataType> {
    let ty = ChType::parse(name)?;
    let bytes = vec![0u8; 64];
    let mut c = Cursor { buf: &bytes, at: 0 };
    column(&mut c, &ty, 1, None)
        .ok()
        .map(|a| a.data_type().clone())
}

#[cfg(test)]
mod tests {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;

    use super::*;

    fn varuint(out: &mut Vec<u8>, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn string(out: &mut Vec<u8>, s: &[u8]) {
        varuint(out, s.len() as u64);
        out.extend_from_slice(s);
    }

    /// A block of (c0 Nullable(String), c1 Int32, c2 Decimal(38, 2)) with two rows.
    fn block() -> Vec<u8> {
        let mut b = Vec::new();
        varuint(&mut b, 3);
        varuint(&mut b, 2);
        string(&mut b, b"c0");
        string(&mut b, b"Nullable(String)");
        b.extend_from_slice(&[0, 1]);
        string(&mut b, "café".as_bytes());
        string(&mut b, b"");
        string(&mut b, b"c1");
        string(&mut b, b"Int32");
        b.extend_from_slice(&7i32.to_le_bytes());
        b.extend_from_slice(&(-3i32).to_le_bytes());
        string(&mut b, b"c2");
        string(&mut b, b"Decimal(38, 2)");
        b.extend_from_slice(&12345i128.to_le_bytes());
        b.extend_from_slice(&(-1i128).to_le_bytes());
        b
    }

    fn wire() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("c0", DataType::Utf8, true),
            Field::new("c1", DataType::Int32, false),
            Field::new("c2", DataType::Decimal128(38, 2), false),
        ]))
    }

    #[test]
    fn a_block_decodes_to_arrow_columns_in_any_split() {
        let bytes = block();
        for split in 0..=bytes.len() {
            let mut blocks = Blocks::new(wire());
            blocks.push(&Bytes::copy_from_slice(&bytes[..split]));
            let mut got = blocks.next_block(false).unwrap();
            if got.is_none() {
                blocks.push(&Bytes::copy_from_slice(&bytes[split..]));
                got = blocks.next_block(true).unwrap();
            }
            let batch = got.expect("a block");
            assert!(!blocks.has_partial());
            assert_eq!(batch.num_rows(), 2);
            let s = batch.column(0).as_string::<i32>();
            assert_eq!(s.value(0), "café");
            assert!(s.is_null(1));
            let i = batch.column(1).as_primitive::<Int32Type>();
            assert_eq!((i.value(0), i.value(1)), (7, -3));
            let d = batch
                .column(2)
                .as_primitive::<arrow_array::types::Decimal128Type>();
            assert_eq!((d.value(0), d.value(1)), (12345, -1));
            assert_eq!(d.data_type(), &DataType::Decimal128(38, 2));
        }
    }

    #[test]
    fn an_error_after_the_blocks_is_not_taken_for_rows() {
        let mut bytes = block();
        bytes.extend_from_slice(b"Code: 241, e.displayText() = DB::Exception: Memory limit");
        let mut blocks = Blocks::new(wire());
        blocks.push(&Bytes::from(bytes));
        assert!(blocks.next_block(true).unwrap().is_some());
        assert!(matches!(
            blocks.next_block(true),
            Err(NativeError::Malformed(_))
        ));
        assert!(blocks.rest_as_text().starts_with("Code: 241"));
        // Other columns than asked for.
        let mut blocks = Blocks::new(Arc::new(Schema::new(vec![Field::new(
            "n",
            DataType::UInt64,
            false,
        )])));
        blocks.push(&Bytes::from(block()));
        assert!(matches!(
            blocks.next_block(true),
            Err(NativeError::Malformed(_))
        ));
    }

    #[test]
    fn clickhouse_types_map_to_arrow_types() {
        assert_eq!(arrow_type("UInt64"), Some(DataType::UInt64));
        assert_eq!(arrow_type("Date"), Some(DataType::UInt16));
        assert_eq!(
            arrow_type("Decimal(18, 2)"),
            Some(DataType::Decimal128(18, 2))
        );
        assert_eq!(arrow_type("Nullable(Int64)"), Some(DataType::Int64));
        assert_eq!(arrow_type("Array(String)"), None);
    }
}
