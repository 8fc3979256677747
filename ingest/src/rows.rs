//! Turns validated envelopes into Arrow `RecordBatch`es, one per raw table, in the schemas
//! of [`RawTable::schema`]. This is the only place that knows how an event's fields map to
//! columns; both sinks receive its output.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, Decimal128Builder, Int32Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, SchemaRef};
use rust_decimal::Decimal;
use shoplens_contract::tables::RawTable;
use shoplens_contract::{DomainEvent, Envelope};

/// One cell of a row, borrowed from the envelope.
#[derive(Debug, Clone, Copy)]
enum Cell<'a> {
    Str(Option<&'a str>),
    Int(i32),
    Money(Option<Decimal>),
    Time(Option<i64>),
}

use Cell::*;

fn s(v: &str) -> Cell<'_> {
    Str(Some(v))
}

fn money(v: Decimal) -> Cell<'static> {
    Money(Some(v))
}

/// The cents of an amount validated to have at most two decimal places.
fn cents(v: Decimal) -> i128 {
    let mut v = v;
    v.rescale(2);
    v.mantissa()
}

/// The row an envelope becomes, in its table's column order.
fn row(env: &Envelope) -> (RawTable, Vec<Cell<'_>>) {
    let table = RawTable::for_event(env.event_type());
    let event_type = env.event_type().as_str();
    let mut cells = vec![Str(None), Time(Some(env.occurred_at.timestamp_millis()))];
    match &env.payload {
        DomainEvent::CustomerRegistered(e) => cells.extend([
            s(event_type),
            s(&e.customer_id),
            s(&e.name),
            s(&e.email),
            s(&e.country),
        ]),
        DomainEvent::CustomerUpdated(e) => cells.extend([
            s(event_type),
            s(&e.customer_id),
            s(&e.name),
            s(&e.email),
            s(&e.country),
        ]),
        DomainEvent::ProductCreated(e) => cells.extend([
            s(event_type),
            s(&e.product_id),
            s(&e.sku),
            s(&e.name),
            s(&e.category),
            money(e.price),
            s(&e.currency),
        ]),
        DomainEvent::ProductPriceChanged(e) => cells.extend([
            s(event_type),
            s(&e.product_id),
            Str(None),
            Str(None),
            Str(None),
            money(e.new_price),
            s(&e.currency),
        ]),
        DomainEvent::OrderCreated(e) => cells.extend([
            s(&e.order_id),
            s(&e.customer_id),
            Int(e.lines.len() as i32),
            Int(e.lines.iter().map(|l| l.quantity).sum()),
            money(e.total),
            s(&e.currency),
        ]),
        DomainEvent::OrderStatusChanged(e) => cells.extend([
            s(&e.order_id),
            s(&e.customer_id),
            Str(e.from.map(|f| f.as_str())),
            s(e.to.as_str()),
        ]),
        DomainEvent::ProductPurchased(e) => cells.extend([
            s(&e.order_id),
            Int(e.line_no),
            s(&e.customer_id),
            s(&e.product_id),
            Int(e.quantity),
            money(e.unit_price),
            money(e.revenue),
            s(&e.currency),
        ]),
        DomainEvent::PaymentCompleted(e) => cells.extend([
            s(event_type),
            s(&e.payment_id),
            s(&e.order_id),
            s("Completed"),
            money(e.amount),
            s(&e.currency),
            s(&e.method),
            Str(None),
        ]),
        DomainEvent::PaymentFailed(e) => cells.extend([
            s(event_type),
            s(&e.payment_id),
            s(&e.order_id),
            s("Failed"),
            money(e.amount),
            s(&e.currency),
            s(&e.method),
            s(&e.reason),
        ]),
        DomainEvent::PaymentRefunded(e) => cells.extend([
            s(event_type),
            s(&e.payment_id),
            s(&e.order_id),
            s("Refunded"),
            money(e.amount),
            s(&e.currency),
            Str(None),
            s(&e.reason),
        ]),
        DomainEvent::ShipmentCreated(e) => cells.extend([
            s(event_type),
            s(&e.shipment_id),
            s(&e.order_id),
            s(&e.carrier),
            s(&e.location),
            Time(Some(e.eta.timestamp_millis())),
        ]),
        DomainEvent::ShipmentLocationUpdated(e) => cells.extend([
            s(event_type),
            s(&e.shipment_id),
            s(&e.order_id),
            Str(None),
            s(&e.location),
            Time(Some(e.eta.timestamp_millis())),
        ]),
        DomainEvent::ShipmentDelivered(e) => cells.extend([
            s(event_type),
            s(&e.shipment_id),
            s(&e.order_id),
            Str(None),
            s(&e.location),
            Time(None),
        ]),
    }
    (table, cells)
}

/// An Arrow column builder for one of the types raw tables use.
enum Column {
    Str(StringBuilder),
    Int(Int32Builder),
    Money(Decimal128Builder),
    Time(TimestampMillisecondBuilder),
}

impl Column {
    fn new(data_type: &DataType) -> Column {
        match data_type {
            DataType::Utf8 => Column::Str(StringBuilder::new()),
            DataType::Int32 => Column::Int(Int32Builder::new()),
            DataType::Decimal128(p, s) => Column::Money(
                Decimal128Builder::new()
                    .with_precision_and_scale(*p, *s)
                    .expect("valid decimal type"),
            ),
            DataType::Timestamp(_, tz) => {
                Column::Time(TimestampMillisecondBuilder::new().with_timezone_opt(tz.clone()))
            }
            other => unreachable!("raw tables have no {other} columns"),
        }
    }

    fn append(&mut self, cell: Cell<'_>) {
        match (self, cell) {
            (Column::Str(b), Str(v)) => b.append_option(v),
            (Column::Int(b), Int(v)) => b.append_value(v),
            (Column::Money(b), Money(v)) => b.append_option(v.map(cents)),
            (Column::Time(b), Time(v)) => b.append_option(v),
            _ => unreachable!("row() builds cells in schema order"),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Column::Str(b) => Arc::new(b.finish()),
            Column::Int(b) => Arc::new(b.finish()),
            Column::Money(b) => Arc::new(b.finish()),
            Column::Time(b) => Arc::new(b.finish()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Column::Str(b) => b.len(),
            Column::Int(b) => b.len(),
            Column::Money(b) => b.len(),
            Column::Time(b) => b.len(),
        }
    }
}

struct TableBuilder {
    schema: SchemaRef,
    columns: Vec<Column>,
}

impl TableBuilder {
    fn new(table: RawTable) -> TableBuilder {
        let schema = table.schema();
        let columns = schema
            .fields()
            .iter()
            .map(|f| Column::new(f.data_type()))
            .collect();
        TableBuilder { schema, columns }
    }

    fn len(&self) -> usize {
        self.columns[0].len()
    }
}

/// Accumulates envelopes as rows of their raw tables.
#[derive(Default)]
pub struct TableRows {
    tables: HashMap<RawTable, TableBuilder>,
    rows: usize,
}

impl TableRows {
    pub fn new() -> TableRows {
        TableRows::default()
    }

    /// Appends the envelope to its table. The envelope must have passed
    /// `Envelope::decode` (or `DomainEvent::validate`): money fits `Decimal(18, 2)`.
    pub fn push(&mut self, env: &Envelope) {
        let (table, mut cells) = row(env);
        let event_id = env.event_id.to_string();
        cells[0] = Str(Some(&event_id));
        let builder = self
            .tables
            .entry(table)
            .or_insert_with(|| TableBuilder::new(table));
        debug_assert_eq!(cells.len(), builder.columns.len(), "{table:?}");
        for (column, cell) in builder.columns.iter_mut().zip(cells) {
            column.append(cell);
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
            .values()
            .map(TableBuilder::len)
            .max()
            .unwrap_or(0)
    }

    /// The accumulated rows, one batch per table that has any (in [`RawTable::ALL`] order),
    /// and resets the builders.
    pub fn finish(&mut self) -> Vec<(RawTable, RecordBatch)> {
        let mut out = Vec::new();
        for table in RawTable::ALL {
            let Some(builder) = self.tables.get_mut(&table) else {
                continue;
            };
            if builder.len() == 0 {
                continue;
            }
            let columns = builder.columns.iter_mut().map(Column::finish).collect();
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
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Decimal128Type, Int32Type};
    use shoplens_contract::{OrderStatus, OrderStatusChanged, ProductPurchased};

    use super::*;

    #[test]
    fn every_event_type_becomes_a_row_of_its_table_schema() {
        let page = include_str!("../../docs/event-contract.md");
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
            let id = batch.column(0).as_string::<i32>().value(0);
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
