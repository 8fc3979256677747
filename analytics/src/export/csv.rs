//! The CSV encoder of exports and of the HTTP SQL endpoint's `text/csv` answers.
//!
//! Invariant: its bytes are exactly those of arrow's CSV writer as the export configured it
//! (header on, `,` and `"` with doubled quotes, `\n`, nulls as empty fields, timestamps with a
//! time zone as `%Y-%m-%dT%H:%M:%S%.3fZ`); the tests compare the two on random batches. It is
//! faster because it writes row by row straight into one buffer, with the column types the
//! read model uses (integers, strings, decimals, dates, UTC timestamps) formatted without a
//! dynamic call, a format string or an allocation per value. Any other type, and any value
//! outside the fast paths (years outside 0-9999, a decimal wider than its precision), goes
//! through arrow's own formatter.

use arrow_array::cast::AsArray;
use arrow_array::temporal_conversions::date32_to_datetime;
use arrow_array::types::{
    Date32Type, Decimal128Type, Int8Type, Int16Type, Int32Type, Int64Type,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, BooleanArray, PrimitiveArray, RecordBatch};
use arrow_schema::{ArrowError, DataType, TimeUnit};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

/// The format of timestamps with a time zone (the fast path writes exactly this).
pub const TIMESTAMP_TZ_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.3fZ";

/// The most a batch reserves of its output up front.
const RESERVE_CAP: usize = 1 << 20;

/// Writes batches as CSV; the header goes before the first batch, as arrow's writer does
/// (so an answer with no batch is an empty file).
#[derive(Debug, Default)]
pub struct CsvEncoder {
    header_written: bool,
    /// Formatted text of one value on the slow path.
    scratch: String,
}

impl CsvEncoder {
    pub fn new() -> CsvEncoder {
        CsvEncoder::default()
    }

    /// Appends `batch`'s rows (and the header, the first time) to `out`.
    pub fn write(&mut self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<(), ArrowError> {
        if !self.header_written {
            let schema = batch.schema();
            let start = out.len();
            for (i, field) in schema.fields().iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                field_bytes(out, field.name().as_bytes());
            }
            end_record(out, start);
            self.header_written = true;
        }
        let options = FormatOptions::default()
            .with_null("")
            .with_timestamp_tz_format(Some(TIMESTAMP_TZ_FORMAT));
        let columns = batch
            .columns()
            .iter()
            .map(|a| Column::new(a, &options))
            .collect::<Result<Vec<_>, _>>()?;
        // A guess of the batch's text, capped: a query of a thousand columns must not
        // reserve its whole answer up front.
        out.reserve(
            batch
                .num_rows()
                .saturating_mul(16 * columns.len().max(1))
                .min(RESERVE_CAP),
        );
        let mut days = DayCache::default();
        for row in 0..batch.num_rows() {
            let start = out.len();
            for (i, column) in columns.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                column
                    .write(row, out, &mut days, &mut self.scratch)
                    .map_err(|e| {
                        ArrowError::CsvError(format!(
                            "Error processing row {}, col {}: {e}",
                            row + 1,
                            i + 1
                        ))
                    })?;
            }
            end_record(out, start);
        }
        Ok(())
    }
}

/// Ends a record; a record with no bytes at all (one empty field) is written as `""`, so a
/// reader sees a field, as the csv crate does.
fn end_record(out: &mut Vec<u8>, start: usize) {
    if out.len() == start {
        out.extend_from_slice(b"\"\"");
    }
    out.push(b'\n');
}

/// A field's bytes, quoted when they hold a delimiter, a quote or a line break.
fn field_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    if !bytes
        .iter()
        .any(|&b| matches!(b, b',' | b'"' | b'\n' | b'\r'))
    {
        out.extend_from_slice(bytes);
        return;
    }
    out.push(b'"');
    for &b in bytes {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// One column, with how its values are written.
enum Column<'a> {
    I8(&'a PrimitiveArray<Int8Type>),
    I16(&'a PrimitiveArray<Int16Type>),
    I32(&'a PrimitiveArray<Int32Type>),
    I64(&'a PrimitiveArray<Int64Type>),
    U8(&'a PrimitiveArray<UInt8Type>),
    U16(&'a PrimitiveArray<UInt16Type>),
    U32(&'a PrimitiveArray<UInt32Type>),
    U64(&'a PrimitiveArray<UInt64Type>),
    Bool(&'a BooleanArray),
    Utf8(&'a arrow_array::StringArray),
    LargeUtf8(&'a arrow_array::LargeStringArray),
    Utf8View(&'a arrow_array::StringViewArray),
    Decimal {
        array: &'a PrimitiveArray<Decimal128Type>,
        precision: u8,
        scale: i8,
        slow: ArrayFormatter<'a>,
    },
    Date32 {
        array: &'a PrimitiveArray<Date32Type>,
        slow: ArrayFormatter<'a>,
    },
    /// A timestamp in UTC: units of 1/`per_second` s since the epoch.
    UtcTimestamp {
        values: &'a [i64],
        array: &'a dyn Array,
        per_second: i64,
        slow: ArrayFormatter<'a>,
    },
    Other(ArrayFormatter<'a>),
}

impl<'a> Column<'a> {
    fn new(array: &'a ArrayRef, options: &FormatOptions<'a>) -> Result<Column<'a>, ArrowError> {
        let slow = || ArrayFormatter::try_new(array.as_ref(), options);
        Ok(match array.data_type() {
            t if t.is_nested() => {
                return Err(ArrowError::CsvError(format!(
                    "Nested type {t} is not supported in CSV"
                )));
            }
            DataType::Int8 => Column::I8(array.as_primitive()),
            DataType::Int16 => Column::I16(array.as_primitive()),
            DataType::Int32 => Column::I32(array.as_primitive()),
            DataType::Int64 => Column::I64(array.as_primitive()),
            DataType::UInt8 => Column::U8(array.as_primitive()),
            DataType::UInt16 => Column::U16(array.as_primitive()),
            DataType::UInt32 => Column::U32(array.as_primitive()),
            DataType::UInt64 => Column::U64(array.as_primitive()),
            DataType::Boolean => Column::Bool(array.as_boolean()),
            DataType::Utf8 => Column::Utf8(array.as_string()),
            DataType::LargeUtf8 => Column::LargeUtf8(array.as_string()),
            DataType::Utf8View => Column::Utf8View(array.as_string_view()),
            DataType::Decimal128(precision, scale) => Column::Decimal {
                array: array.as_primitive(),
                precision: *precision,
                scale: *scale,
                slow: slow()?,
            },
            DataType::Date32 => Column::Date32 {
                array: array.as_primitive(),
                slow: slow()?,
            },
            DataType::Timestamp(unit, Some(tz)) if is_utc(tz) => {
                let (values, per_second): (&[i64], i64) = match unit {
                    TimeUnit::Second => (array.as_primitive::<TimestampSecondType>().values(), 1),
                    TimeUnit::Millisecond => (
                        array.as_primitive::<TimestampMillisecondType>().values(),
                        1_000,
                    ),
                    TimeUnit::Microsecond => (
                        array.as_primitive::<TimestampMicrosecondType>().values(),
                        1_000_000,
                    ),
                    TimeUnit::Nanosecond => (
                        array.as_primitive::<TimestampNanosecondType>().values(),
                        1_000_000_000,
                    ),
                };
                Column::UtcTimestamp {
                    values,
                    array: array.as_ref(),
                    per_second,
                    slow: slow()?,
                }
            }
            _ => Column::Other(slow()?),
        })
    }

    fn write(
        &self,
        row: usize,
        out: &mut Vec<u8>,
        days: &mut DayCache,
        scratch: &mut String,
    ) -> Result<(), ArrowError> {
        fn int<P: arrow_array::ArrowPrimitiveType>(
            out: &mut Vec<u8>,
            array: &PrimitiveArray<P>,
            row: usize,
        ) where
            P::Native: itoa::Integer,
        {
            if array.is_valid(row) {
                out.extend_from_slice(itoa::Buffer::new().format(array.value(row)).as_bytes());
            }
        }
        match self {
            Column::I8(a) => int(out, a, row),
            Column::I16(a) => int(out, a, row),
            Column::I32(a) => int(out, a, row),
            Column::I64(a) => int(out, a, row),
            Column::U8(a) => int(out, a, row),
            Column::U16(a) => int(out, a, row),
            Column::U32(a) => int(out, a, row),
            Column::U64(a) => int(out, a, row),
            Column::Bool(a) => {
                if a.is_valid(row) {
                    out.extend_from_slice(if a.value(row) { b"true" } else { b"false" });
                }
            }
            Column::Utf8(a) => {
                if a.is_valid(row) {
                    field_bytes(out, a.value(row).as_bytes());
                }
            }
            Column::LargeUtf8(a) => {
                if a.is_valid(row) {
                    field_bytes(out, a.value(row).as_bytes());
                }
            }
            Column::Utf8View(a) => {
                if a.is_valid(row) {
                    field_bytes(out, a.value(row).as_bytes());
                }
            }
            Column::Decimal {
                array,
                precision,
                scale,
                slow,
            } => {
                if array.is_valid(row) && !decimal(out, array.value(row), *precision, *scale) {
                    slow_value(out, slow, row, scratch)?;
                }
            }
            Column::Date32 { array, slow } => {
                if array.is_valid(row) && !days.write(out, i64::from(array.value(row))) {
                    slow_value(out, slow, row, scratch)?;
                }
            }
            Column::UtcTimestamp {
                values,
                array,
                per_second,
                slow,
            } => {
                if array.is_valid(row) && !timestamp(out, values[row], *per_second, days) {
                    slow_value(out, slow, row, scratch)?;
                }
            }
            Column::Other(slow) => slow_value(out, slow, row, scratch)?,
        }
        Ok(())
    }
}

/// Whether a timestamp's zone is UTC, so its wall-clock time is its UTC time.
fn is_utc(tz: &str) -> bool {
    matches!(tz, "UTC" | "utc" | "+00:00" | "Z" | "Etc/UTC")
}

/// One value through arrow's formatter (quoted if it needs to be).
fn slow_value(
    out: &mut Vec<u8>,
    formatter: &ArrayFormatter<'_>,
    row: usize,
    scratch: &mut String,
) -> Result<(), ArrowError> {
    scratch.clear();
    formatter.value(row).write(scratch)?;
    field_bytes(out, scratch.as_bytes());
    Ok(())
}

/// A decimal as arrow prints it; false (nothing written) when the value has more digits
/// than its precision or the scale is negative, which arrow's formatter handles.
fn decimal(out: &mut Vec<u8>, value: i128, precision: u8, scale: i8) -> bool {
    let mut buffer = itoa::Buffer::new();
    let text = buffer.format(value);
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text),
    };
    if scale < 0 || digits.len() > precision as usize {
        return false;
    }
    let scale = scale as usize;
    if scale == 0 {
        out.extend_from_slice(text.as_bytes());
        return true;
    }
    out.extend_from_slice(sign.as_bytes());
    if digits.len() > scale {
        let (whole, fraction) = digits.split_at(digits.len() - scale);
        out.extend_from_slice(whole.as_bytes());
        out.push(b'.');
        out.extend_from_slice(fraction.as_bytes());
    } else {
        out.extend_from_slice(b"0.");
        out.resize(out.len() + scale - digits.len(), b'0');
        out.extend_from_slice(digits.as_bytes());
    }
    true
}

/// `YYYY-MM-DD` of the last day written: rows of a report often share their day.
#[derive(Default)]
struct DayCache {
    day: Option<i64>,
    text: [u8; 10],
}

impl DayCache {
    /// Writes the day `days` after 1970-01-01 (arrow's conversion of a `Date32`); false
    /// (nothing written) outside years 0-9999, which chrono prints with a sign.
    fn write(&mut self, out: &mut Vec<u8>, days: i64) -> bool {
        if self.day != Some(days) {
            let Some(date) = i32::try_from(days)
                .ok()
                .and_then(date32_to_datetime)
                .map(|t| t.date())
            else {
                return false;
            };
            use chrono::Datelike;
            let year = date.year();
            if !(0..=9999).contains(&year) {
                return false;
            }
            let mut text = [0u8; 10];
            digits(&mut text[0..4], year as u32);
            text[4] = b'-';
            digits(&mut text[5..7], date.month());
            text[7] = b'-';
            digits(&mut text[8..10], date.day());
            self.text = text;
            self.day = Some(days);
        }
        out.extend_from_slice(&self.text);
        true
    }
}

/// `n` as exactly `into.len()` decimal digits, zero-padded.
fn digits(into: &mut [u8], mut n: u32) {
    for b in into.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// A UTC timestamp `value` (in units of 1/`per_second` s) as `YYYY-MM-DDTHH:MM:SS.mmmZ`;
/// false (nothing written) outside years 0-9999.
fn timestamp(out: &mut Vec<u8>, value: i64, per_second: i64, days: &mut DayCache) -> bool {
    let seconds = value.div_euclid(per_second);
    let millis = value.rem_euclid(per_second) * 1000 / per_second;
    let day = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400) as u32;
    if !days.write(out, day) {
        return false;
    }
    let mut text = *b"T00:00:00.000Z";
    digits(&mut text[1..3], of_day / 3600);
    digits(&mut text[4..6], of_day / 60 % 60);
    digits(&mut text[7..9], of_day % 60);
    digits(&mut text[10..13], millis as u32);
    out.extend_from_slice(&text);
    true
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::builder::{
        BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int32Builder,
        Int64Builder, StringBuilder, StringViewBuilder, UInt64Builder,
    };
    use arrow_array::{
        TimestampMicrosecondArray, TimestampMillisecondArray, TimestampNanosecondArray,
        TimestampSecondArray,
    };
    use arrow_schema::{Field, Schema};
    use datafusion::arrow::csv::WriterBuilder;
    use proptest::prelude::*;

    use super::*;

    /// What arrow's CSV writer makes of the batches, configured as the export was.
    fn arrow_csv(batches: &[RecordBatch]) -> Result<Vec<u8>, ArrowError> {
        let mut out = Vec::new();
        {
            let mut writer = WriterBuilder::new()
                .with_header(true)
                .with_timestamp_tz_format(TIMESTAMP_TZ_FORMAT.to_owned())
                .build(&mut out);
            for batch in batches {
                writer.write(batch)?;
            }
        }
        Ok(out)
    }

    fn ours(batches: &[RecordBatch]) -> Result<Vec<u8>, ArrowError> {
        let mut encoder = CsvEncoder::new();
        let mut out = Vec::new();
        for batch in batches {
            encoder.write(batch, &mut out)?;
        }
        Ok(out)
    }

    fn same(batches: &[RecordBatch]) {
        let expected = arrow_csv(batches).map(|b| String::from_utf8(b).unwrap());
        let actual = ours(batches).map(|b| String::from_utf8(b).unwrap());
        match (expected, actual) {
            (Ok(e), Ok(a)) => assert_eq!(a, e),
            (Err(_), Err(_)) => {}
            (e, a) => panic!("arrow: {e:?}\nours: {a:?}"),
        }
    }

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter_with_nullable(
            columns.into_iter().map(|(n, a)| (n.to_owned(), a, true)),
        )
        .unwrap()
    }

    /// Text with the bytes that need quoting, and some that don't.
    fn text() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(proptest::string::string_regex("[a-c ,\"\\r\\n\u{e9}]{0,6}").unwrap())
    }

    fn timestamps() -> impl Strategy<Value = Option<i64>> {
        proptest::option::of(prop_oneof![
            -2_000_000_000_000i64..4_000_000_000_000,
            Just(0i64),
            Just(-1i64),
            any::<i64>(),
        ])
    }

    prop_compose! {
        fn rows()(n in 0usize..12)(
            ints in proptest::collection::vec(proptest::option::of(any::<i64>()), n),
            small in proptest::collection::vec(proptest::option::of(any::<i32>()), n),
            unsigned in proptest::collection::vec(proptest::option::of(any::<u64>()), n),
            strings in proptest::collection::vec(text(), n),
            views in proptest::collection::vec(text(), n),
            money in proptest::collection::vec(proptest::option::of(prop_oneof![
                -1_000_000i128..1_000_000, any::<i64>().prop_map(i128::from), Just(i128::MIN + 1)
            ]), n),
            dates in proptest::collection::vec(proptest::option::of(prop_oneof![
                -800_000i32..3_000_000, any::<i32>()
            ]), n),
            times in proptest::collection::vec(timestamps(), n),
            floats in proptest::collection::vec(proptest::option::of(any::<f64>()), n),
            bools in proptest::collection::vec(proptest::option::of(any::<bool>()), n),
            unit in 0usize..4,
            precision in 1u8..=38,
            scale in -3i8..=12,
        ) -> RecordBatch {
            let mut i = Int64Builder::new();
            ints.iter().for_each(|v| i.append_option(*v));
            let mut s32 = Int32Builder::new();
            small.iter().for_each(|v| s32.append_option(*v));
            let mut u = UInt64Builder::new();
            unsigned.iter().for_each(|v| u.append_option(*v));
            let mut s = StringBuilder::new();
            strings.iter().for_each(|v| s.append_option(v.as_deref()));
            let mut sv = StringViewBuilder::new();
            views.iter().for_each(|v| sv.append_option(v.as_deref()));
            let mut d = Decimal128Builder::new()
                .with_precision_and_scale(precision, scale.min(precision as i8))
                .unwrap();
            money.iter().for_each(|v| d.append_option(*v));
            let mut d32 = Date32Builder::new();
            dates.iter().for_each(|v| d32.append_option(*v));
            let mut f = Float64Builder::new();
            floats.iter().for_each(|v| f.append_option(*v));
            let mut b = BooleanBuilder::new();
            bools.iter().for_each(|v| b.append_option(*v));
            let ts: ArrayRef = match unit {
                0 => Arc::new(TimestampSecondArray::from(times.clone()).with_timezone("UTC")),
                1 => Arc::new(TimestampMillisecondArray::from(times.clone()).with_timezone("UTC")),
                2 => Arc::new(TimestampMicrosecondArray::from(times.clone()).with_timezone("+00:00")),
                _ => Arc::new(TimestampNanosecondArray::from(times.clone()).with_timezone("UTC")),
            };
            let naive: ArrayRef = Arc::new(TimestampMillisecondArray::from(times.clone()));
            let elsewhere: ArrayRef =
                Arc::new(TimestampMillisecondArray::from(times).with_timezone("+05:30"));
            batch(vec![
                ("id", Arc::new(i.finish()) as ArrayRef),
                ("line, no", Arc::new(s32.finish())),
                ("big", Arc::new(u.finish())),
                ("name", Arc::new(s.finish())),
                ("view \"v\"", Arc::new(sv.finish())),
                ("amount", Arc::new(d.finish())),
                ("day", Arc::new(d32.finish())),
                ("at", ts),
                ("naive", naive),
                ("elsewhere", elsewhere),
                ("ratio", Arc::new(f.finish())),
                ("flag", Arc::new(b.finish())),
            ])
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn the_bytes_are_arrows_for_any_batches(first in rows(), second in rows()) {
            same(&[first, second]);
        }

        #[test]
        fn a_single_text_column_writes_empty_fields_as_arrow_does(values in proptest::collection::vec(text(), 0..8)) {
            let mut s = StringBuilder::new();
            values.iter().for_each(|v| s.append_option(v.as_deref()));
            same(&[batch(vec![("only", Arc::new(s.finish()) as ArrayRef)])]);
        }
    }

    #[test]
    fn the_read_models_values_take_the_fast_paths_exactly() {
        let amount = Decimal128Builder::new()
            .with_precision_and_scale(18, 2)
            .unwrap();
        let mut amount = amount;
        for v in [0i128, 5, -5, 1999, -100, 123_456_789] {
            amount.append_value(v);
        }
        let paid: ArrayRef = Arc::new(
            TimestampMillisecondArray::from(vec![
                0,
                1_735_689_599_999,
                -1,
                1_704_067_200_123,
                253_402_300_799_999,
                253_402_300_800_000,
            ])
            .with_timezone("UTC"),
        );
        let b = batch(vec![
            ("amount", Arc::new(amount.finish()) as ArrayRef),
            ("paid_at", paid),
        ]);
        same(std::slice::from_ref(&b));
        let text = String::from_utf8(ours(&[b]).unwrap()).unwrap();
        assert!(
            text.starts_with("amount,paid_at\n0.00,1970-01-01T00:00:00.000Z\n"),
            "{text}"
        );
        assert!(text.contains("-0.05,1969-12-31T23:59:59.999Z"), "{text}");
    }

    #[test]
    fn no_batch_is_an_empty_file_and_an_empty_batch_writes_the_header() {
        same(&[]);
        assert!(ours(&[]).unwrap().is_empty());
        let schema = Arc::new(Schema::new(vec![Field::new("a,b", DataType::Int64, true)]));
        let empty = RecordBatch::new_empty(schema);
        same(std::slice::from_ref(&empty));
        assert_eq!(ours(&[empty]).unwrap(), b"\"a,b\"\n");
    }

    #[test]
    fn nested_columns_are_refused_as_arrow_refuses_them() {
        let list = arrow_array::ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(
            vec![Some(1)],
        )]);
        let b = batch(vec![("l", Arc::new(list) as ArrayRef)]);
        let e = ours(&[b]).unwrap_err();
        assert!(e.to_string().contains("Nested type"), "{e}");
    }
}
