//! Envelopes as Arrow `RecordBatch`es, one per raw table: each column of
//! [`RawTable::columns`] filled from each envelope, so the batches have exactly the tables'
//! schemas. Both sinks receive this output, and the aggregates' reference computes from it.

use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, Decimal128Builder, Int32Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, SchemaRef};
use rust_decimal::Decimal;

use super::RawTable;
use super::columns::{Column, Fill};
use crate::Envelope;

/// The cents of an amount validated to have at most two decimal places.
fn cents(v: Decimal) -> i128 {
    let mut v = v;
    v.rescale(2);
    v.mantissa()
}

fn money_builder(data_type: &DataType) -> Decimal128Builder {
    let DataType::Decimal128(precision, scale) = data_type else {
        unreachable!("money columns are Decimal128")
    };
    Decimal128Builder::new()
        .with_precision_and_scale(*precision, *scale)
        .expect("valid decimal type")
}

fn time_builder(data_type: &DataType) -> TimestampMillisecondBuilder {
    let DataType::Timestamp(_, tz) = data_type else {
        unreachable!("time columns are Timestamp")
    };
    TimestampMillisecondBuilder::new().with_timezone_opt(tz.clone())
}

/// One column being built: the Arrow builder of its type and the column's fill.
enum ColumnBuilder {
    EventId(StringBuilder),
    Str(StringBuilder, for<'a> fn(&'a Envelope) -> &'a str),
    OptStr(StringBuilder, for<'a> fn(&'a Envelope) -> Option<&'a str>),
    Int(Int32Builder, fn(&Envelope) -> i32),
    Money(Decimal128Builder, fn(&Envelope) -> Decimal),
    OptMoney(Decimal128Builder, fn(&Envelope) -> Option<Decimal>),
    Time(TimestampMillisecondBuilder, fn(&Envelope) -> i64),
    OptTime(TimestampMillisecondBuilder, fn(&Envelope) -> Option<i64>),
}

impl ColumnBuilder {
    fn new(column: &Column) -> ColumnBuilder {
        let data_type = column.data_type();
        match column.fill() {
            Fill::EventId => ColumnBuilder::EventId(StringBuilder::new()),
            Fill::Str(f) => ColumnBuilder::Str(StringBuilder::new(), f),
            Fill::OptStr(f) => ColumnBuilder::OptStr(StringBuilder::new(), f),
            Fill::Int(f) => ColumnBuilder::Int(Int32Builder::new(), f),
            Fill::Money(f) => ColumnBuilder::Money(money_builder(&data_type), f),
            Fill::OptMoney(f) => ColumnBuilder::OptMoney(money_builder(&data_type), f),
            Fill::Time(f) => ColumnBuilder::Time(time_builder(&data_type), f),
            Fill::OptTime(f) => ColumnBuilder::OptTime(time_builder(&data_type), f),
        }
    }

    fn append(&mut self, env: &Envelope) {
        match self {
            ColumnBuilder::EventId(b) => {
                let mut buf = uuid::Uuid::encode_buffer();
                b.append_value(env.event_id.hyphenated().encode_lower(&mut buf));
            }
            ColumnBuilder::Str(b, f) => b.append_value(f(env)),
            ColumnBuilder::OptStr(b, f) => b.append_option(f(env)),
            ColumnBuilder::Int(b, f) => b.append_value(f(env)),
            ColumnBuilder::Money(b, f) => b.append_value(cents(f(env))),
            ColumnBuilder::OptMoney(b, f) => b.append_option(f(env).map(cents)),
            ColumnBuilder::Time(b, f) => b.append_value(f(env)),
            ColumnBuilder::OptTime(b, f) => b.append_option(f(env)),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::EventId(b) | ColumnBuilder::Str(b, _) => Arc::new(b.finish()),
            ColumnBuilder::OptStr(b, _) => Arc::new(b.finish()),
            ColumnBuilder::Int(b, _) => Arc::new(b.finish()),
            ColumnBuilder::Money(b, _) => Arc::new(b.finish()),
            ColumnBuilder::OptMoney(b, _) => Arc::new(b.finish()),
            ColumnBuilder::Time(b, _) => Arc::new(b.finish()),
            ColumnBuilder::OptTime(b, _) => Arc::new(b.finish()),
        }
    }

    fn len(&self) -> usize {
        match self {
            ColumnBuilder::EventId(b) | ColumnBuilder::Str(b, _) => b.len(),
            ColumnBuilder::OptStr(b, _) => b.len(),
            ColumnBuilder::Int(b, _) => b.len(),
            ColumnBuilder::Money(b, _) => b.len(),
            ColumnBuilder::OptMoney(b, _) => b.len(),
            ColumnBuilder::Time(b, _) => b.len(),
            ColumnBuilder::OptTime(b, _) => b.len(),
        }
    }
}

struct TableBuilder {
    schema: SchemaRef,
    columns: Vec<ColumnBuilder>,
}

impl TableBuilder {
    fn new(table: RawTable) -> TableBuilder {
        TableBuilder {
            schema: table.schema(),
            columns: table.columns().iter().map(ColumnBuilder::new).collect(),
        }
    }

    fn len(&self) -> usize {
        self.columns[0].len()
    }
}

/// Accumulates envelopes as rows of their raw tables.
#[derive(Default)]
pub struct TableRows {
    /// Indexed by the table's place in [`RawTable::ALL`] (a look-up per event, so no hashing);
    /// a table's builders are made when its first row comes.
    tables: [Option<TableBuilder>; RawTable::ALL.len()],
    rows: usize,
}

impl TableRows {
    pub fn new() -> TableRows {
        TableRows::default()
    }

    /// Appends the envelope to its table. The envelope must have passed
    /// `Envelope::decode` (or `DomainEvent::validate`): money fits `Decimal(18, 2)`.
    pub fn push(&mut self, env: &Envelope) {
        let table = RawTable::for_event(env.event_type());
        let builder = self.tables[table as usize].get_or_insert_with(|| TableBuilder::new(table));
        for column in &mut builder.columns {
            column.append(env);
        }
        self.rows += 1;
    }

    /// Rows appended since the last `finish`.
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The largest number of rows waiting for one table.
    pub fn largest_table(&self) -> usize {
        self.tables
            .iter()
            .flatten()
            .map(TableBuilder::len)
            .max()
            .unwrap_or(0)
    }

    /// The accumulated rows, one batch per table that has any (in [`RawTable::ALL`] order),
    /// and resets the builders.
    pub fn finish(&mut self) -> Vec<(RawTable, RecordBatch)> {
        let mut out = Vec::new();
        for table in RawTable::ALL {
            let Some(builder) = &mut self.tables[table as usize] else {
                continue;
            };
            if builder.len() == 0 {
                continue;
            }
            let columns = builder
                .columns
                .iter_mut()
                .map(ColumnBuilder::finish)
                .collect();
            let batch = RecordBatch::try_new(builder.schema.clone(), columns)
                .expect("builders follow the table schema");
            out.push((table, batch));
        }
        self.rows = 0;
        out
    }
}

/// The rows of `envelopes`, batched per table: a convenience for tests and tools.
pub fn to_batches<'a>(
    envelopes: impl IntoIterator<Item = &'a Envelope>,
) -> Vec<(RawTable, RecordBatch)> {
    let mut rows = TableRows::new();
    for env in envelopes {
        rows.push(env);
    }
    rows.finish()
}

#[cfg(test)]
mod tests {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Decimal128Type, Int32Type};

    use super::*;
    use crate::tables::EVENT_ID;
    use crate::{OrderStatus, OrderStatusChanged, ProductPurchased};

    #[test]
    fn every_event_type_becomes_a_row_of_its_table_schema() {
        let page = include_str!("../../../../docs/event-contract.md");
        let examples = page
            .split("```json")
            .skip(1)
            .map(|block| Envelope::decode(block.split("```").next().unwrap().as_bytes()).unwrap());
        for env in examples {
            let batches = to_batches([&env]);
            assert_eq!(batches.len(), 1, "{:?}", env.event_type());
            let (table, batch) = &batches[0];
            assert_eq!(*table, RawTable::for_event(env.event_type()));
            assert_eq!(batch.schema(), table.schema());
            assert_eq!(batch.num_rows(), 1);
            let id = batch
                .column_by_name(EVENT_ID)
                .unwrap()
                .as_string::<i32>()
                .value(0);
            assert_eq!(id, env.event_id.to_string());
        }
    }

    #[test]
    fn money_is_stored_in_cents_and_nulls_stay_null() {
        let purchase = Envelope::new(ProductPurchased {
            order_id: "o1".into(),
            line_no: 2,
            customer_id: "c1".into(),
            product_id: "p1".into(),
            quantity: 3,
            unit_price: "1.5".parse().unwrap(),
            revenue: "4.50".parse().unwrap(),
            currency: "EUR".into(),
        });
        let created = Envelope::new(OrderStatusChanged {
            order_id: "o1".into(),
            customer_id: "c1".into(),
            from: None,
            to: OrderStatus::Placed,
        });
        let batches = to_batches([&purchase, &created, &purchase]);
        // One batch per table, in `RawTable::ALL` order.
        let tables: Vec<RawTable> = batches.iter().map(|(t, _)| *t).collect();
        assert_eq!(
            tables,
            vec![RawTable::OrderStatusChanges, RawTable::ProductPurchases]
        );
        let (_, purchases) = &batches[1];
        assert_eq!(purchases.num_rows(), 2);
        let column = |b: &RecordBatch, name: &str| b.column_by_name(name).unwrap().clone();
        let revenue = column(purchases, "revenue");
        assert_eq!(revenue.as_primitive::<Decimal128Type>().value(0), 450);
        let unit_price = column(purchases, "unit_price");
        assert_eq!(unit_price.as_primitive::<Decimal128Type>().value(0), 150);
        let quantity = column(purchases, "quantity");
        assert_eq!(quantity.as_primitive::<Int32Type>().value(0), 3);
        let (_, changes) = &batches[0];
        assert!(column(changes, "from_status").is_null(0));
    }
}
