//! The raw event tables the read side stores: their columns, and how an event fills them.
//!
//! Every row is one event: `event_id` (the dedup key) and `occurred_at` come first, then the
//! payload's fields flattened. Money is `Decimal128(18, 2)`, time is UTC milliseconds.
//! Both sinks (ClickHouse and the embedded store) hold exactly these columns.
//!
//! Each table's columns are defined once, in [`columns`]: a name and how an envelope fills
//! the column, which also fixes its Arrow type and nullability. [`RawTable::schema`] is
//! derived from that list and [`TableRows`] fills it, so the schema and the rows cannot
//! disagree.

mod columns;
mod rows;

use std::sync::Arc;

use arrow_schema::{DataType, Schema, SchemaRef};

use crate::EventType;

pub use columns::Column;
pub use rows::{TableRows, to_batches};

/// Precision and scale of every money column.
pub const MONEY: DataType = DataType::Decimal128(18, 2);

/// The first column of every raw table: the event's id, the dedup key.
pub const EVENT_ID: &str = "event_id";

/// The second column of every raw table: when the event happened (the freshness watermark
/// and the aggregates' day).
pub const OCCURRED_AT: &str = "occurred_at";

/// A raw event table of the read model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RawTable {
    Customers,
    Products,
    Orders,
    OrderStatusChanges,
    ProductPurchases,
    Payments,
    Shipments,
}

impl RawTable {
    pub const ALL: [RawTable; 7] = [
        RawTable::Customers,
        RawTable::Products,
        RawTable::Orders,
        RawTable::OrderStatusChanges,
        RawTable::ProductPurchases,
        RawTable::Payments,
        RawTable::Shipments,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RawTable::Customers => "customer_events",
            RawTable::Products => "product_events",
            RawTable::Orders => "orders",
            RawTable::OrderStatusChanges => "order_status_changes",
            RawTable::ProductPurchases => "product_purchases",
            RawTable::Payments => "payment_events",
            RawTable::Shipments => "shipment_events",
        }
    }

    /// The table an event type is stored in.
    pub fn for_event(event_type: EventType) -> RawTable {
        use EventType::*;
        match event_type {
            CustomerRegistered | CustomerUpdated => RawTable::Customers,
            ProductCreated | ProductPriceChanged => RawTable::Products,
            OrderCreated => RawTable::Orders,
            OrderStatusChanged => RawTable::OrderStatusChanges,
            ProductPurchased => RawTable::ProductPurchases,
            PaymentCompleted | PaymentFailed | PaymentRefunded => RawTable::Payments,
            ShipmentCreated | ShipmentLocationUpdated | ShipmentDelivered => RawTable::Shipments,
        }
    }

    /// The table's columns in order: the one definition the schema and the rows follow.
    pub fn columns(self) -> &'static [Column] {
        columns::of(self)
    }

    /// The table's Arrow schema, derived from [`RawTable::columns`].
    pub fn schema(self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns().iter().map(Column::field).collect::<Vec<_>>(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_has_a_table_that_starts_with_the_dedup_key() {
        for t in EventType::ALL {
            let schema = RawTable::for_event(t).schema();
            assert_eq!(schema.field(0).name(), EVENT_ID);
            assert_eq!(schema.field(1).name(), OCCURRED_AT);
        }
        let names: std::collections::HashSet<_> = RawTable::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(names.len(), RawTable::ALL.len());
    }

    #[test]
    fn a_table_is_at_its_own_place_in_all() {
        // `TableRows` indexes its builders by `table as usize`.
        for (i, table) in RawTable::ALL.into_iter().enumerate() {
            assert_eq!(table as usize, i, "{table:?}");
        }
    }

    #[test]
    fn column_names_are_unique_within_a_table() {
        for t in RawTable::ALL {
            let names: std::collections::HashSet<_> =
                t.columns().iter().map(Column::name).collect();
            assert_eq!(names.len(), t.columns().len(), "{}", t.name());
        }
    }
}
